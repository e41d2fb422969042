-- Table for bench_narrow_inserts.
CREATE TABLE narrow (id bigint PRIMARY KEY, n int, md5 text, ts timestamptz);
CREATE PUBLICATION pub_bench FOR TABLE narrow;
