-- Workload for v3_two_phase (protocol 3, two_phase on, streaming on).

BEGIN;
INSERT INTO orders VALUES (1, 'apple'), (2, 'pear');
PREPARE TRANSACTION 'gid_commit';
COMMIT PREPARED 'gid_commit';

BEGIN;
INSERT INTO orders VALUES (3, 'plum');
PREPARE TRANSACTION 'gid_rollback';
ROLLBACK PREPARED 'gid_rollback';

-- Larger than logical_decoding_work_mem: streamed, then a Stream Prepare.
BEGIN;
INSERT INTO orders SELECT i, 'bulk ' || i FROM generate_series(1001, 2000) AS i;
PREPARE TRANSACTION 'gid_big';
COMMIT PREPARED 'gid_big';
