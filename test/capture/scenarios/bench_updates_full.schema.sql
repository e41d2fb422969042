-- Table for bench_updates_full: replica identity FULL, populated before the slot exists.
CREATE TABLE counters (id int, n int, label text);
ALTER TABLE counters REPLICA IDENTITY FULL;
INSERT INTO counters SELECT i, 0, 'counter ' || i FROM generate_series(1, 1000) AS i;
CREATE PUBLICATION pub_bench FOR TABLE counters;
