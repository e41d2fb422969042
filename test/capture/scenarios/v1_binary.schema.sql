-- Table for v1_binary: built-in types sent in binary format.
CREATE TABLE binary_types (i int PRIMARY KEY, b bigint, n numeric, t text, f bool, ts timestamptz, by bytea,
	j jsonb, u uuid, d float8, a int[]);
CREATE PUBLICATION pub_binary FOR TABLE binary_types;
