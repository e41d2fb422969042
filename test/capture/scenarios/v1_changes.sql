-- Workload for v1_changes (protocol 1, messages on).

-- Replica identity DEFAULT (primary key): plain update, key-changing update, delete.
INSERT INTO accounts VALUES (1, 'alice', 100.50, 'first'), (2, 'bob', NULL, NULL);
UPDATE accounts SET balance = 75.25 WHERE id = 1;
UPDATE accounts SET id = 3 WHERE id = 2;
DELETE FROM accounts WHERE id = 3;

-- Replica identity FULL: the whole old row travels with updates and deletes.
INSERT INTO ledger_full VALUES (1, 10.00, 'coffee'), (2, 20.00, NULL);
UPDATE ledger_full SET amount = 12.00 WHERE id = 1;
DELETE FROM ledger_full WHERE id = 2;

-- Replica identity USING INDEX on sku.
INSERT INTO items_idx VALUES (1, 'SKU-1', 5);
UPDATE items_idx SET qty = 6 WHERE id = 1;
UPDATE items_idx SET sku = 'SKU-2' WHERE id = 1;
DELETE FROM items_idx WHERE id = 1;

-- Replica identity NOTHING: inserts only.
INSERT INTO events_nothing VALUES (1, 'boot');

-- An out-of-line TOASTed value left unchanged by an update.
INSERT INTO docs SELECT 1, 'manual', string_agg(md5(i::text), '') FROM generate_series(1, 400) AS i;
UPDATE docs SET title = 'manual v2' WHERE id = 1;

-- Enum, domain, composite and array columns, and NULLs.
INSERT INTO typed VALUES (1, 'happy', 42, ROW(1.5, -2, 0), '{1,2,3}', '{"a","b c",NULL}', '{sad,ok}', NULL);

-- Logical messages: transactional (with a change) and not.
BEGIN;
INSERT INTO accounts VALUES (10, 'carol', 1.00, 'with message');
SELECT pg_logical_emit_message(true, 'audit', '{"event": "login", "user": "carol"}');
COMMIT;
SELECT pg_logical_emit_message(false, 'audit.nontx', 'heartbeat');

-- A transaction replayed from a replication origin.
SELECT pg_replication_origin_create('audit_origin');
SELECT pg_replication_origin_session_setup('audit_origin');
BEGIN;
SELECT pg_replication_origin_xact_setup('0/ABCDEF', '2024-01-01 00:00:00+00');
INSERT INTO accounts VALUES (20, 'from origin', 0, NULL);
COMMIT;
SELECT pg_replication_origin_session_reset();

-- Truncates: two tables at once, CASCADE, RESTART IDENTITY.
INSERT INTO trunc_a VALUES (1);
INSERT INTO trunc_b VALUES (1);
INSERT INTO parent VALUES (1);
INSERT INTO child VALUES (1, 1);
INSERT INTO seq_t (v) VALUES ('x');
TRUNCATE trunc_a, trunc_b;
TRUNCATE parent CASCADE;
TRUNCATE seq_t RESTART IDENTITY;
