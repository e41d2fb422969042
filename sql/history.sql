-- logical_audit.history() and logical_audit.row_as_of() over audit rows written here directly, in
-- version 1.1's tables, then brought into 1.2's store by ALTER EXTENSION UPDATE:
-- a row's timeline follows its key through INSERT, UPDATE, key changes, DELETE, TRUNCATE and
-- SNAPSHOT; tables without a key (REPLICA IDENTITY FULL) are matched by containment; each
-- subscription keeps its own timeline; bad arguments are clear errors.
\set VERBOSITY default
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION logical_audit VERSION '1.1';
SET TimeZone = 'UTC';

-- Upstream transaction n commits at LSN 0/n00 (hex), n minutes after midnight.
CREATE FUNCTION lsn(n integer) RETURNS pg_lsn LANGUAGE sql AS $$ SELECT ('0/' || to_hex(n * 256))::pg_lsn $$;
CREATE FUNCTION at(n integer) RETURNS timestamptz LANGUAGE sql AS $$
	SELECT '2024-01-01 00:00+00'::timestamptz + n * interval '1 minute'
$$;
INSERT INTO logical_audit.transaction (subscription, xid, commit_lsn, end_lsn, commit_time, change_count)
SELECT sub, (1000 + n)::text::xid8, lsn(n), lsn(n) + 16, at(n), 0
FROM (SELECT 'crm', generate_series(0, 14) UNION ALL SELECT 'erp', generate_series(1, 3)) t(sub, n);
UPDATE logical_audit.transaction SET origin = 'node_a', annotations = '{"user": "alice"}'
WHERE subscription = 'erp' AND commit_lsn = lsn(3);

-- Change rows, with row_key as the worker computes it.
INSERT INTO logical_audit.change (subscription, commit_lsn, ordinal, op, schema_name, table_name, row_key,
                                  old_row, new_row)
SELECT sub, lsn(n), ordinal, op, schema_name, table_name, row_key::jsonb, old_row::jsonb, new_row::jsonb
FROM (VALUES
	-- public.item (primary key id) in subscription crm: row 1 inserted, updated, moved to key 2,
	-- which is updated and deleted; row 1 inserted again, the table truncated twice, row 1
	-- inserted a third time; row 3 copied by the baseline snapshot and updated.
	('crm', 0, 1, 'SNAPSHOT', 'public', 'item', '{"id": 3}', NULL, '{"id": 3, "name": "snap"}'),
	('crm', 1, 1, 'INSERT', 'public', 'item', '{"id": 1}', NULL, '{"id": 1, "name": "a"}'),
	('crm', 1, 2, 'INSERT', 'public', 'item', '{"id": 5}', NULL, '{"id": 5, "name": "other row"}'),
	('crm', 2, 1, 'UPDATE', 'public', 'item', '{"id": 1}', NULL, '{"id": 1, "name": "b"}'),
	('crm', 2, 3, 'UPDATE', 'public', 'item', '{"id": 3}', NULL, '{"id": 3, "name": "snap2"}'),
	('crm', 3, 1, 'UPDATE', 'public', 'item', '{"id": 2}', '{"id": 1}', '{"id": 2, "name": "b"}'),
	('crm', 4, 1, 'UPDATE', 'public', 'item', '{"id": 2}', NULL, '{"id": 2, "name": "c"}'),
	('crm', 5, 1, 'DELETE', 'public', 'item', '{"id": 2}', '{"id": 2}', NULL),
	('crm', 6, 1, 'INSERT', 'public', 'item', '{"id": 1}', NULL, '{"id": 1, "name": "again"}'),
	('crm', 7, 1, 'TRUNCATE', 'public', 'item', NULL, NULL, NULL),
	('crm', 8, 1, 'TRUNCATE', 'public', 'item', NULL, NULL, NULL),
	('crm', 9, 1, 'INSERT', 'public', 'item', '{"id": 1}', NULL, '{"id": 1, "name": "third"}'),
	-- One transaction: row 7 inserted, updated, deleted, then the table truncated.
	('crm', 11, 1, 'INSERT', 'public', 'item', '{"id": 7}', NULL, '{"id": 7, "name": "x"}'),
	('crm', 11, 2, 'UPDATE', 'public', 'item', '{"id": 7}', NULL, '{"id": 7, "name": "y"}'),
	('crm', 11, 3, 'DELETE', 'public', 'item', '{"id": 7}', '{"id": 7}', NULL),
	('crm', 11, 4, 'TRUNCATE', 'public', 'item', NULL, NULL, NULL),
	-- One transaction: row 8 inserted, the table truncated, row 8 inserted again.
	('crm', 12, 1, 'INSERT', 'public', 'item', '{"id": 8}', NULL, '{"id": 8, "name": "first"}'),
	('crm', 12, 2, 'TRUNCATE', 'public', 'item', NULL, NULL, NULL),
	('crm', 12, 3, 'INSERT', 'public', 'item', '{"id": 8}', NULL, '{"id": 8, "name": "second"}'),
	-- The same key in another table and in another schema.
	('crm', 13, 1, 'INSERT', 'public', 'other', '{"id": 1}', NULL, '{"id": 1, "name": "other table"}'),
	('crm', 13, 2, 'INSERT', 'archive', 'item', '{"id": 1}', NULL, '{"id": 1, "name": "other schema"}'),
	('crm', 13, 3, 'TRUNCATE', 'public', 'other', NULL, NULL, NULL),
	-- A composite key (REPLICA IDENTITY USING INDEX).
	('crm', 14, 1, 'INSERT', 'public', 'pair', '{"a": 1, "b": "x"}', NULL, '{"a": 1, "b": "x", "v": 1}'),
	-- public.logbook under REPLICA IDENTITY FULL, no row_key: id 1 inserted, updated, moved to
	-- id 4 (then deleted), inserted again, truncated.
	('crm', 1, 3, 'INSERT', 'public', 'logbook', NULL, NULL, '{"id": 1, "msg": "x"}'),
	('crm', 2, 2, 'INSERT', 'public', 'logbook', NULL, NULL, '{"id": 9, "msg": "x"}'),
	('crm', 4, 2, 'UPDATE', 'public', 'logbook', NULL, '{"id": 1, "msg": "x"}', '{"id": 1, "msg": "y"}'),
	('crm', 5, 2, 'UPDATE', 'public', 'logbook', NULL, '{"id": 1, "msg": "y"}', '{"id": 4, "msg": "y"}'),
	('crm', 6, 2, 'DELETE', 'public', 'logbook', NULL, '{"id": 4, "msg": "y"}', NULL),
	('crm', 8, 2, 'INSERT', 'public', 'logbook', NULL, NULL, '{"id": 1, "msg": "z"}'),
	('crm', 10, 2, 'TRUNCATE', 'public', 'logbook', NULL, NULL, NULL),
	-- Subscription erp audits another upstream that has a public.item too.
	('erp', 1, 1, 'INSERT', 'public', 'item', '{"id": 1}', NULL, '{"id": 1, "name": "erp"}'),
	('erp', 3, 1, 'UPDATE', 'public', 'item', '{"id": 1}', NULL, '{"id": 1, "name": "erp2"}')
) v(sub, n, ordinal, op, schema_name, table_name, row_key, old_row, new_row);
ALTER EXTENSION logical_audit UPDATE;

-- Every column, for a short timeline.
SELECT * FROM logical_audit.history('public', 'item', '{"id": 1}', 'erp');

-- Row 1 of public.item: created, updated, moved to key 2 (the update ends this timeline), created
-- again, truncated (the second truncate is not its: the row was gone), created a third time and
-- truncated again.
SELECT subscription, commit_lsn, ordinal, commit_time, op, old_row, new_row
FROM logical_audit.history('public', 'item', '{"id": 1}', 'crm');
-- Key 2's timeline starts with that key change and ends with the DELETE.
SELECT commit_lsn, ordinal, op, old_row, new_row FROM logical_audit.history('public', 'item', '{"id": 2}', 'crm');
-- A snapshot row starts a timeline; other rows, tables and schemas stay out.
SELECT commit_lsn, ordinal, op, new_row FROM logical_audit.history('public', 'item', '{"id": 3}', 'crm');
SELECT commit_lsn, ordinal, op, new_row FROM logical_audit.history('public', 'other', '{"id": 1}');
SELECT commit_lsn, ordinal, op, new_row FROM logical_audit.history('archive', 'item', '{"id": 1}');
-- In one transaction: a TRUNCATE after the row's DELETE is not in its timeline, one before its
-- next INSERT is.
SELECT commit_lsn, ordinal, op, new_row FROM logical_audit.history('public', 'item', '{"id": 7}', 'crm');
SELECT commit_lsn, ordinal, op, new_row FROM logical_audit.history('public', 'item', '{"id": 8}', 'crm');
-- A key is the whole key, compared as jsonb (1.0 = 1); a part of one or a wrong type names no row.
SELECT count(*) FROM logical_audit.history('public', 'pair', '{"a": 1, "b": "x"}');
SELECT count(*) FROM logical_audit.history('public', 'pair', '{"b": "x", "a": 1.0}');
SELECT count(*) FROM logical_audit.history('public', 'pair', '{"a": 1}');
SELECT count(*) FROM logical_audit.history('public', 'item', '{"id": "1"}');
-- Names are compared exactly.
SELECT count(*) FROM logical_audit.history('public', 'Item', '{"id": 1}');
SELECT count(*) FROM logical_audit.history('nowhere', 'item', '{"id": 1}');
-- Without a subscription: each subscription's timeline in turn.
SELECT subscription, commit_lsn, op, new_row FROM logical_audit.history('public', 'item', '{"id": 1}');
SELECT count(*) FROM logical_audit.history('public', 'item', '{"id": 1}', 'nosuch');

-- A FULL table: containment in the old or the new row; the key change ends id 1's first life and
-- starts id 4's; the TRUNCATE ends its second one.
SELECT commit_lsn, ordinal, op, old_row, new_row FROM logical_audit.history('public', 'logbook', '{"id": 1}');
SELECT commit_lsn, ordinal, op, old_row, new_row FROM logical_audit.history('public', 'logbook', '{"id": 4}');
SELECT count(*) FROM logical_audit.history('public', 'logbook', '{"msg": "x"}');

-- row_as_of: the new_row of the latest change at or before the time, NULL when the row did not
-- exist then (not yet, deleted, moved to another key, truncated).
SELECT n, logical_audit.row_as_of('public', 'item', '{"id": 1}', at(n), 'crm') AS id_1,
       logical_audit.row_as_of('public', 'item', '{"id": 2}', at(n), 'crm') AS id_2,
       logical_audit.row_as_of('public', 'item', '{"id": 3}', at(n), 'crm') AS id_3
FROM generate_series(0, 14) n ORDER BY n;
SELECT logical_audit.row_as_of('public', 'item', '{"id": 1}', at(1) - interval '1 second', 'crm');
SELECT logical_audit.row_as_of('public', 'item', '{"id": 1}', at(2) + interval '30 seconds', 'crm');
SELECT logical_audit.row_as_of('public', 'item', '{"id": 8}', at(12), 'crm');
SELECT logical_audit.row_as_of('public', 'logbook', '{"id": 1}', at(n)) FROM generate_series(1, 10) n;
SELECT logical_audit.row_as_of('public', 'item', '{"id": 1}', at(2), 'erp');
SELECT logical_audit.row_as_of('public', 'item', '{"id": 1}', at(3), 'erp');
SELECT logical_audit.row_as_of('public', 'item', '{"id": 5}', at(3));
SELECT logical_audit.row_as_of('public', 'item', '{"id": 99}', at(3));

-- Errors.
SELECT * FROM logical_audit.history('public', 'item', NULL);
SELECT * FROM logical_audit.history('public', 'item', '[1]');
SELECT * FROM logical_audit.history('public', 'item', '1');
SELECT * FROM logical_audit.history('public', 'item', 'null');
SELECT * FROM logical_audit.history('public', 'item', '{}');
SELECT * FROM logical_audit.history(NULL, 'item', '{"id": 1}');
SELECT * FROM logical_audit.history('public', NULL, '{"id": 1}');
SELECT logical_audit.row_as_of('public', 'item', '{"id": 1}', NULL);
SELECT logical_audit.row_as_of('public', 'item', '"id"', at(1));
SELECT logical_audit.row_as_of('public', 'item', NULL, at(1));
-- Two subscriptions audited the row: row_as_of needs to be told which.
SELECT logical_audit.row_as_of('public', 'item', '{"id": 1}', at(3));

-- The same answers when the indexes serve every lookup (in a new session: no plan is cached).
CREATE FUNCTION answers() RETURNS SETOF text LANGUAGE sql AS $$
	SELECT format('%s.%s %s: %s', k.schema_name, k.table_name, k.key, h)
	FROM (VALUES ('public', 'item', '{"id": 1}'::jsonb), ('public', 'item', '{"id": 2}'), ('public', 'item', '{"id": 3}'),
	             ('public', 'item', '{"id": 7}'), ('public', 'item', '{"id": 8}'), ('public', 'other', '{"id": 1}'),
	             ('public', 'pair', '{"a": 1, "b": "x"}'), ('public', 'logbook', '{"id": 1}')) k(schema_name, table_name, key),
	     LATERAL logical_audit.history(k.schema_name, k.table_name, k.key) h
	UNION ALL
	SELECT format('item %s at %s: %s', id, n, logical_audit.row_as_of('public', 'item', jsonb_build_object('id', id), at(n), 'crm'))
	FROM generate_series(0, 14) n, generate_series(1, 8) id
$$;
CREATE TABLE seen AS SELECT * FROM answers() a;
\c
SET TimeZone = 'UTC';
SET enable_seqscan = off;
SELECT (SELECT count(*) FROM seen) AS answers,
       (SELECT count(*) FROM ((TABLE seen EXCEPT ALL SELECT * FROM answers()) UNION ALL
                              (SELECT * FROM answers() EXCEPT ALL TABLE seen)) d) AS differing;
RESET enable_seqscan;
DROP TABLE seen;
DROP FUNCTION answers();

-- The functions read the store with the caller's privileges: an auditor is granted its tables.
CREATE ROLE regress_la_auditor;
SET ROLE regress_la_auditor;
SELECT count(*) FROM logical_audit.history('public', 'item', '{"id": 1}');
RESET ROLE;
GRANT SELECT ON logical_audit.change, logical_audit.transaction, logical_audit.change_data,
	logical_audit.transaction_data, logical_audit.relation, logical_audit.store, logical_audit.row_image,
	logical_audit.relation_truncate
	TO regress_la_auditor;
SET ROLE regress_la_auditor;
SELECT count(*) FROM logical_audit.history('public', 'item', '{"id": 1}');
SELECT logical_audit.row_as_of('public', 'item', '{"id": 8}', at(14), 'crm');
RESET ROLE;

-- The row_image index files each key under row_key_hash: keys that jsonb calls equal (1 and 1.0
-- among them) must get the same number, or a lookup would miss the row's image.
CREATE TEMP TABLE sample_keys AS
SELECT j::jsonb FROM unnest(ARRAY['{"id": 1}', '{"id": 2}', '{"id": 10}', '{"id": 1.0}', '{"id": -1}',
	'{"id": 1e30}', '{"id": "a"}', '{"id": "b"}', '{"id": "B"}', '{"id": "ab"}', '{"id": ""}', '{"id": null}',
	'{"id": true}', '{"id": false}', '{"a": 1, "b": 2}', '{"a": 1, "b": 3}', '{"a": 2, "b": 1}',
	'{"a": "x", "b": null}', '{"a": "x", "b": 1}', '{"aa": 1}', '{"b": 1}', '{}', '{"id": [1]}',
	'{"id": {"x": 1}}', '{"a": 1, "b": [2]}', '[1]', '1', '"x"', 'null',
	-- long keys, one of them compressed when stored
	jsonb_build_object('id', repeat('x', 300))::text, jsonb_build_object('id', repeat('x', 299) || 'y')::text,
	jsonb_build_object('id', repeat('ab', 3000))::text]) j;
SELECT count(*) AS pairs, count(*) FILTER (WHERE a.j = b.j) AS equal_pairs,
       count(*) FILTER (WHERE a.j = b.j AND logical_audit.row_key_hash(a.j) <> logical_audit.row_key_hash(b.j)) AS disagreements
FROM sample_keys a, sample_keys b;
-- One integral number is its own number (rows numbered in order are filed in order).
SELECT j, logical_audit.row_key_hash(j)::numeric = CASE jsonb_typeof(j->'id') WHEN 'number' THEN (j->>'id')::numeric END
       AS own_number FROM sample_keys
WHERE j::text IN ('{"id": 1}', '{"id": 1.0}', '{"id": -1}', '{"id": "a"}', '{"a": 1, "b": 2}') OR j->'id' = '1e30'
ORDER BY j::text;
DROP TABLE sample_keys;
-- Whatever the statistics say, a row's latest image is found by its key, and each step back its
-- chain is one index lookup in one time partition.
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM logical_audit.row_image i
WHERE i.relation_id = 1 AND i.key_number = logical_audit.row_key_hash('{"id": 1}')
  AND i.row_key = '{"id": 1}';
RESET enable_seqscan;
RESET enable_bitmapscan;
EXPLAIN (COSTS OFF) SELECT * FROM logical_audit.change_data d
WHERE d.subscription_id = 1 AND d.commit_time = at(2) AND d.commit_lsn = lsn(2) AND d.ordinal = 1;
SELECT subscription, audit_table, partition, from_time, to_time FROM logical_audit.partitions
WHERE from_time < '2025-01-01' ORDER BY 1, 2;

DROP EXTENSION logical_audit;
DROP ROLE regress_la_auditor;
DROP FUNCTION lsn(integer), at(integer);
