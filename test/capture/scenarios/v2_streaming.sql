-- Workload for v2_streaming (protocol 2, streaming on).

-- A large transaction streamed in several chunks, with a transactional message, then committed.
BEGIN;
INSERT INTO big SELECT i, 'r' || i FROM generate_series(1, 1000) AS i;
SELECT pg_logical_emit_message(true, 'stream', 'inside a streamed transaction');
INSERT INTO big SELECT i, 'r' || i FROM generate_series(1001, 1500) AS i;
COMMIT;

-- A streamed subtransaction rolled back to its savepoint, then the transaction committed.
BEGIN;
INSERT INTO big SELECT i, 's' || i FROM generate_series(2001, 2600) AS i;
SAVEPOINT sp;
INSERT INTO big SELECT i, 's' || i FROM generate_series(2601, 3200) AS i;
ROLLBACK TO SAVEPOINT sp;
INSERT INTO big SELECT i, 's' || i FROM generate_series(3201, 3210) AS i;
COMMIT;

-- A streamed transaction rolled back entirely.
BEGIN;
INSERT INTO big SELECT i, 'a' || i FROM generate_series(4001, 4800) AS i;
ROLLBACK;
