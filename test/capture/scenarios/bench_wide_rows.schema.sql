-- Table for bench_wide_rows: 20 columns of mixed types.
CREATE TABLE wide (
	id bigint PRIMARY KEY, c_int int, c_small smallint, c_big bigint, c_num numeric(12, 2), c_float float8,
	c_real real, c_bool bool, c_text text, c_varchar varchar(32), c_date date, c_ts timestamptz, c_uuid uuid,
	c_json jsonb, c_ints int[], c_bytea bytea, c_interval interval, c_inet inet, c_char char(4), c_note text);
CREATE PUBLICATION pub_bench FOR TABLE wide;
