-- Tables for v1_changes: every replica identity, truncate variants, TOAST and user-defined types.
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE TYPE point3 AS (x float8, y float8, z float8);

CREATE TABLE accounts (id int PRIMARY KEY, owner text NOT NULL, balance numeric(12, 2), note varchar(40));
CREATE TABLE ledger_full (id int, amount numeric, memo text);
ALTER TABLE ledger_full REPLICA IDENTITY FULL;
CREATE TABLE items_idx (id int PRIMARY KEY, sku text NOT NULL, qty int);
CREATE UNIQUE INDEX items_idx_sku ON items_idx (sku);
ALTER TABLE items_idx REPLICA IDENTITY USING INDEX items_idx_sku;
CREATE TABLE events_nothing (id int, what text);
ALTER TABLE events_nothing REPLICA IDENTITY NOTHING;
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
CREATE TABLE typed (id int PRIMARY KEY, m mood, p positive_int, pt point3, ints int[], texts text[], moods mood[],
	nothing text);
CREATE TABLE trunc_a (id int PRIMARY KEY);
CREATE TABLE trunc_b (id int PRIMARY KEY);
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (id int PRIMARY KEY, parent_id int REFERENCES parent (id));
CREATE TABLE seq_t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text);

CREATE PUBLICATION pub_changes FOR TABLE accounts, ledger_full, items_idx, docs, typed, trunc_a, trunc_b, parent,
	child, seq_t;
-- A table without replica identity may only be in publications that do not publish updates or deletes.
CREATE PUBLICATION pub_inserts FOR TABLE events_nothing WITH (publish = 'insert');
