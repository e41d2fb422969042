-- logical_audit.pgoutput_rows turns real pgoutput slot output into the audit rows the worker
-- records: new_row equals to_jsonb(row) for a column of every built-in type family (timestamptz
-- in UTC whatever the session's TimeZone), old rows follow the replica identity, unchanged TOAST
-- columns are named and left out, TRUNCATE gives a row per table, and bad input is an error.
\set VERBOSITY default
SET client_min_messages = warning;
CREATE EXTENSION logical_audit;
-- Audited tables live in rows_test, which is published; the test's own tables in rows_work.
CREATE SCHEMA rows_test;
CREATE SCHEMA rows_work;
SET search_path = rows_test, rows_work, public;
-- The worker's upstream connection uses DateStyle ISO, IntervalStyle postgres and
-- extra_float_digits 3; this session decodes in a TimeZone far from UTC to show that the rows
-- come out in UTC all the same.
SET DateStyle = ISO;
SET IntervalStyle = postgres;
SET extra_float_digits = 3;
SET TimeZone = 'America/New_York';

-- The error of a statement as SQLSTATE and message, with oids (5 digits and more) replaced by N.
CREATE FUNCTION rows_work.error_of(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	state text;
	message text;
	detail text;
	context text;
BEGIN
	EXECUTE query;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
	                        context = PG_EXCEPTION_CONTEXT;
	RETURN state || ': ' || regexp_replace(message, '[0-9]{5,}', 'N', 'g')
		|| coalesce(E'\nDETAIL: ' || nullif(detail, ''), '')
		|| coalesce(E'\nCONTEXT: ' || nullif(array_to_string(ARRAY(
			SELECT line FROM regexp_split_to_table(context, E'\n') AS line
			WHERE line ~ '^(converting|pgoutput message)'), ' / '), ''), '');
END
$$;

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE pair AS (a int, b text, at timestamptz);
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE DOMAIN label AS text;
CREATE TABLE every_type (
	id int PRIMARY KEY,
	b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, m money,
	t text, vc varchar(10), c char(5), nm name, ba bytea, ch "char",
	d date, tm time, ttz timetz, ts timestamp, tstz timestamptz, iv interval,
	u uuid, j json, jb jsonb, x xml,
	ip inet, cd cidr, mac macaddr, mac8 macaddr8,
	pt point, ln line, ls lseg, bx box, pa path, pg polygon, ci circle,
	bt bit(4), vb varbit, tv tsvector, tq tsquery,
	r4 int4range, rtz tstzrange, rd daterange, mr int4multirange,
	ai int[], at text[], a2 int[], atz timestamptz[], af float8[], an numeric[],
	o oid, rc regclass, rt regtype, lsn pg_lsn,
	comp pair, md mood, dom posint, lbl label, amd mood[], acomp pair[]
);
CREATE PUBLICATION rows_pub FOR TABLES IN SCHEMA rows_test;
SELECT 'slot' FROM pg_create_logical_replication_slot('rows_slot', 'pgoutput');

-- The messages of everything committed since the last call, in order.
CREATE FUNCTION rows_work.capture() RETURNS bytea[] LANGUAGE sql AS $$
	SELECT array_agg(data ORDER BY n)
	FROM pg_logical_slot_get_binary_changes('rows_slot', NULL, NULL, 'proto_version', '1',
	                                        'publication_names', 'rows_pub') WITH ORDINALITY AS c(lsn, xid, data, n)
$$;
-- The same messages without consuming them, with column values in binary or text form.
CREATE FUNCTION rows_work.peek(in_binary boolean) RETURNS bytea[] LANGUAGE sql AS $$
	SELECT array_agg(data ORDER BY n)
	FROM pg_logical_slot_peek_binary_changes('rows_slot', NULL, NULL, 'proto_version', '1', 'binary', in_binary::text,
	                                         'publication_names', 'rows_pub') WITH ORDINALITY AS c(lsn, xid, data, n)
$$;

INSERT INTO every_type VALUES
	(1, true, 32767, -2147483648, 9223372036854775807, 1.5, 0.1, 12.340, '$1,234.56',
	 'text "quoted" \ back', 'varchar', 'ch', 'a name', '\x00ff10', 'q',
	 '2024-02-29', '13:45:01.5', '13:45:01+02', '2024-02-29 13:45:01.123456', '2024-07-01 12:00:00+00',
	 '1 year 2 mons 3 days 04:05:06.7',
	 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"b": 1, "a": [1, 2.50, "x"], "b": 2}', '{"k": {"n": 1.50}}',
	 '<a href="x">t</a>',
	 '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03', '08:00:2b:01:02:03:04:05',
	 '(1,2)', '{1,-1,0}', '[(0,0),(1,1)]', '((0,0),(1,1))', '[(0,0),(1,1),(2,0)]', '((0,0),(1,1),(2,0))',
	 '<(0,0),1.5>',
	 B'1010', B'110', 'a fat:2 cat', 'fat & (rat | cat)',
	 '[1,10)', '[2024-01-01 00:00:00+00,2024-06-01 00:00:00+00)', '[2024-01-01,2024-02-01)', '{[1,3), [5,7)}',
	 '{1,NULL,3}', '{"a","b \"q\"",NULL,"NULL",""}', '{{1,2},{3,4}}',
	 '{"2024-01-01 00:00:00+00","infinity",NULL}', '{1.5,NaN,-Infinity}', '{1.10,NaN}',
	 4000000000, 'every_type', 'timestamptz', '16/B374D848',
	 (7, 'seven', '2024-12-24 18:00:00+01'), 'happy', 42, 'labelled', '{sad,ok}',
	 ARRAY[(1, 'one', NULL)::pair, NULL]),
	(3, false, -32768, 0, -9223372036854775808, 'NaN', 'Infinity', 'NaN', '-$0.01',
	 E'multi\nline\ttab ünïcødé ☃', '', 'x', '', '\x', E'\\',
	 'infinity', '24:00:00', '00:00:00-14:59', '-infinity', 'infinity', '-178000000 years',
	 '00000000-0000-0000-0000-000000000000', '5', '"a string"', '<empty/>',
	 '::1', '::/0', '00:00:00:00:00:00', '00:00:00:ff:fe:00:00:00',
	 '(-0,1e300)', '{0,1,0}', '[(1e-300,0),(0,0)]', '((1,1),(1,1))', '((0,0),(1,1))', '((0,0))', '<(0,0),0>',
	 B'0000', B'', '', 'x',
	 'empty', '(,)', '[-infinity,infinity]', '{}',
	 '{}', '{}', '{{{1}}}', '{}', '{-0,1e300,5e-324}', '{}',
	 0, 'pg_class', 'integer[]', '0/0',
	 (NULL, NULL, NULL), 'sad', 1, '', '{}', '{}'),
	(4, true, 0, 1, 2, '-Infinity', '-0', '-Infinity', '0',
	 'x', 'y', 'z', 'n', '\xdeadbeef', 'z',
	 '0044-03-15 BC', '00:00', '23:59:59.999999+14:59', '0044-03-15 12:00:00 BC', '0044-03-15 12:00:00+00 BC',
	 '-1 days +02:03',
	 'ffffffff-ffff-ffff-ffff-ffffffffffff', 'null', 'null', '<?xml version="1.0"?><r/>',
	 '2001:db8::1/64', '2001:db8::/32', 'ff:ff:ff:ff:ff:ff', 'ff:ff:ff:ff:ff:ff:ff:ff',
	 '(1.25,-3.5)', '{1,0,-3}', '[(0,0),(0,1)]', '((3,4),(1,2))', '[(0,0)]', '((1,2),(3,4),(5,0))', '<(1,1),3>',
	 B'1111', B'10101010101', 'the quick:1A brown:2B,3C fox', '!a <-> b',
	 '[,5]', '[2024-03-10 06:59:59+00,2024-03-10 07:00:01+00]', '(,2000-01-01)', '{[1,2], [10,)}',
	 '[0:2]={7,8,9}', '{"with,comma","{braces}"," spaced "}', '{{NULL,1},{2,NULL}}',
	 '{"0044-03-15 12:00:00+00 BC","2024-03-10 07:00:00+00"}', '{}', '{123456789012345678901234567890.123456789}',
	 4294967295, '-', '"char"', 'FFFFFFFF/FFFFFFFF',
	 (-1, 'a "quoted" text, (with parens)', 'infinity'), 'ok', 2147483647, 'x',
	 '{happy,NULL}', ARRAY[(2, NULL, '2024-07-01 00:00:00+00')::pair]);
INSERT INTO every_type (id) VALUES (2);
INSERT INTO every_type (id, f4, f8, n, d, ts, tstz, j, jb, af) VALUES
	(5, 3.4028235e38, 1e300, 123456789012345678901234567890.123456789012345678901234567890, '1999-12-31',
	 '1999-12-31 23:59:59.999999', '2000-01-01 04:59:59.999999+00', '[]', '{}', '{1.4e-45,1e-310}');
INSERT INTO every_type (id, f4, f8, n, j, jb) VALUES
	(6, 1.4e-45, 5e-324, -0.000000000000000000000000000001, '[1e5, 1E-2, -0, 0.10]', '[1e5, 1E-2, -0, 0.10]');

-- What the upstream's to_jsonb(row) gives, computed in UTC; then the rows from the slot.
SET TimeZone = 'UTC';
CREATE TABLE rows_work.expected AS SELECT id, to_jsonb(e) AS row FROM every_type e;
SET TimeZone = 'America/New_York';
CREATE TABLE rows_work.every_type_messages AS SELECT capture() AS messages;
CREATE TABLE rows_work.got AS SELECT * FROM logical_audit.pgoutput_rows((SELECT messages FROM every_type_messages));

-- Every row compared: no column may differ (compared as jsonb text, so 1.0 differs from 1).
SELECT count(*) AS rows_compared,
       count(*) FILTER (WHERE g.new_row::text = e.row::text) AS rows_equal
FROM expected e JOIN got g ON g.table_name = 'every_type' AND (g.new_row->>'id')::int = e.id;
SELECT e.id, k AS column_name, e.row->k AS to_jsonb, g.new_row->k AS pgoutput_rows
FROM expected e JOIN got g ON g.table_name = 'every_type' AND (g.new_row->>'id')::int = e.id
CROSS JOIN LATERAL jsonb_object_keys(e.row || g.new_row) AS k
WHERE (e.row->k)::text IS DISTINCT FROM (g.new_row->k)::text
ORDER BY 1, 2;
SELECT op, schema_name, table_name, old_row, unchanged_toast, count(*) FROM got GROUP BY 1, 2, 3, 4, 5;
-- A few values as they come out.
SELECT new_row->'id' AS id, new_row->'f8' AS f8, new_row->'n' AS n, new_row->'tstz' AS tstz,
       new_row->'d' AS d, new_row->'jb' AS jb
FROM got WHERE new_row->>'id' IN ('1', '2', '3', '4') ORDER BY (new_row->>'id')::int;
SELECT jsonb_pretty(new_row - '{pg,pa,ls,bx,ln,ci,pt}'::text[]) FROM got WHERE new_row->>'id' = '1';
-- pgoutput names a domain's base type, in pg_catalog, under the domain's own oid.
SELECT j->>'type_oid' = 'posint'::regtype::oid::text AS domain_oid, j->>'namespace' AS namespace,
       j->>'type_name' AS type_name
FROM every_type_messages, unnest(messages) m, logical_audit.pgoutput_to_jsonb(m, false, 1) j
WHERE j->>'type' = 'type' AND j->>'type_oid' IN ('posint'::regtype::oid::text, 'label'::regtype::oid::text)
ORDER BY 3;

-- Replica identity: DEFAULT sends the key when it changes and on delete, FULL the whole old row.
CREATE TABLE rid_default (id int PRIMARY KEY, v text, w int);
CREATE TABLE rid_full (id int, v text, at timestamptz);
ALTER TABLE rid_full REPLICA IDENTITY FULL;
CREATE TABLE shape (id int, v text);
SELECT cardinality(capture()) > 0 AS skipped;
INSERT INTO rid_default VALUES (1, 'a', 10);
INSERT INTO rid_full VALUES (1, 'a', '2024-01-01 12:00:00+00');
UPDATE rid_default SET v = 'b';
UPDATE rid_default SET id = 2;
DELETE FROM rid_default;
UPDATE rid_full SET v = 'b';
DELETE FROM rid_full;
SELECT op, table_name, old_row, new_row, unchanged_toast FROM logical_audit.pgoutput_rows(capture());

-- An unchanged TOASTed column is named in unchanged_toast and left out of new_row, never NULL.
CREATE TABLE toasty (id int PRIMARY KEY, name text, bio text, notes text);
ALTER TABLE toasty ALTER COLUMN bio SET STORAGE EXTERNAL, ALTER COLUMN notes SET STORAGE EXTERNAL;
INSERT INTO toasty VALUES (1, 'ann', repeat('x', 5000), repeat('y', 5000));
UPDATE toasty SET name = 'anne';
UPDATE toasty SET bio = 'short';
SELECT op, old_row, new_row - 'bio' - 'notes' AS new_row, length(new_row->>'bio') AS bio_length,
       new_row ? 'notes' AS has_notes, unchanged_toast
FROM logical_audit.pgoutput_rows(capture());

-- TRUNCATE of several tables: one row each; a relation changed midstream keeps its new shape.
TRUNCATE rid_default, rid_full, toasty;
INSERT INTO shape VALUES (2, 'before');
ALTER TABLE shape ADD COLUMN extra numeric DEFAULT 1.50;
INSERT INTO shape VALUES (3, 'after');
ALTER TABLE shape DROP COLUMN v;
INSERT INTO shape VALUES (4);
SELECT op, table_name, old_row, new_row FROM logical_audit.pgoutput_rows(capture()) ORDER BY op, table_name, new_row->>'id';

-- User types that do not exist downstream are kept in their text form.
CREATE TYPE gone_pair AS (a int, at timestamptz);
CREATE TYPE gone_mood AS ENUM ('meh');
CREATE TABLE gone (id int, p gone_pair, ps gone_pair[], m gone_mood);
INSERT INTO gone VALUES (1, (1, '2024-01-01 00:00:00+00'), ARRAY[(2, NULL)::gone_pair], 'meh');
CREATE TABLE rows_work.gone_binary_messages AS SELECT peek(true) AS messages;
CREATE TABLE rows_work.gone_messages AS SELECT capture() AS messages;
DROP TABLE gone;
DROP TYPE gone_pair, gone_mood;
SELECT op, new_row FROM logical_audit.pgoutput_rows((SELECT messages FROM gone_messages));
-- Their binary values cannot be read without the type: an error names the column and the type.
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows((SELECT messages FROM gone_binary_messages))$$);

-- Protocol 2: a large transaction arrives streamed, in blocks, and gives the same rows.
SET logical_decoding_work_mem = '64kB';
INSERT INTO shape (id) SELECT g FROM generate_series(10, 3009) g;
CREATE TABLE rows_work.streamed_messages AS
	SELECT array_agg(data ORDER BY n) AS messages
	FROM pg_logical_slot_get_binary_changes('rows_slot', NULL, NULL, 'proto_version', '2', 'streaming', 'on',
	                                        'publication_names', 'rows_pub') WITH ORDINALITY AS c(lsn, xid, data, n);
RESET logical_decoding_work_mem;
SELECT count(*) FILTER (WHERE get_byte(m, 0) = ascii('S')) > 0 AS was_streamed
FROM streamed_messages, unnest(messages) m;
SELECT op, count(*), count(DISTINCT new_row->'id') AS distinct_ids, min((new_row->>'id')::int), max((new_row->>'id')::int),
       count(*) FILTER (WHERE new_row = jsonb_build_object('id', new_row->'id', 'extra', 1.50)) AS as_expected
FROM logical_audit.pgoutput_rows((SELECT messages FROM streamed_messages), 2) GROUP BY op;
-- read with protocol 1, the streamed messages do not decode
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows((SELECT messages FROM streamed_messages))$$);

-- Binary mode (pgoutput's option binary): values come in their types' binary form, are read with
-- this database's receive functions and give the same rows as their text form, old and new rows
-- alike, even when this session prints values otherwise than the upstream's walsender would.
ALTER TABLE every_type REPLICA IDENTITY FULL;
-- (a regclass value is an oid: only built-in objects have the same one in both databases)
UPDATE every_type SET rc = 'pg_class' WHERE rc = 'every_type'::regclass;
SELECT cardinality(capture()) > 0 AS skipped;
UPDATE every_type SET id = id + 100;
DELETE FROM every_type;
CREATE TABLE rows_work.text_rows AS SELECT * FROM logical_audit.pgoutput_rows(peek(false)) WITH ORDINALITY;
SET DateStyle = 'SQL, DMY';
SET IntervalStyle = iso_8601;
SET extra_float_digits = 0;
SET bytea_output = escape;
CREATE TABLE rows_work.binary_rows AS SELECT * FROM logical_audit.pgoutput_rows(peek(true)) WITH ORDINALITY;
SET DateStyle = ISO;
SET IntervalStyle = postgres;
SET extra_float_digits = 3;
RESET bytea_output;
SELECT count(*) AS text_rows, count(b.*) AS binary_rows,
       count(*) FILTER (WHERE b.old_row::text IS NOT DISTINCT FROM t.old_row::text
                          AND b.new_row::text IS NOT DISTINCT FROM t.new_row::text) AS rows_equal
FROM text_rows t LEFT JOIN binary_rows b USING (ordinality);
SELECT t.ordinality, k AS column_name, t.old_row->k AS text_old, b.old_row->k AS binary_old,
       t.new_row->k AS text_new, b.new_row->k AS binary_new
FROM text_rows t JOIN binary_rows b USING (ordinality)
CROSS JOIN LATERAL jsonb_object_keys(coalesce(t.old_row, '{}') || coalesce(t.new_row, '{}')) AS k
WHERE (t.old_row->k)::text IS DISTINCT FROM (b.old_row->k)::text
   OR (t.new_row->k)::text IS DISTINCT FROM (b.new_row->k)::text
ORDER BY 1, 2;
SELECT op, count(*) FROM binary_rows GROUP BY op ORDER BY op;
-- The old rows of the update are the rows as to_jsonb gave them, the regclass value apart.
SELECT count(*) AS rows_compared, count(*) FILTER (WHERE b.old_row = e.row || '{"rc": "pg_class"}') AS rows_equal
FROM expected e JOIN binary_rows b ON b.op = 'UPDATE' AND (b.old_row->>'id')::int = e.id
WHERE e.row->>'rc' = 'every_type';
SELECT count(*) AS rows_compared, count(*) FILTER (WHERE b.old_row = e.row) AS rows_equal
FROM expected e JOIN binary_rows b ON b.op = 'UPDATE' AND (b.old_row->>'id')::int = e.id
WHERE e.row->>'rc' IS DISTINCT FROM 'every_type';
SELECT cardinality(capture()) > 0 AS consumed;
-- A reg* value naming an object of the upstream by an oid of its own is an error, not a guess.
INSERT INTO every_type (id, rc, rt) VALUES (7, 'every_type', 'integer');
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(peek(true))$$);
SELECT cardinality(capture()) > 0 AS consumed;
INSERT INTO every_type (id, rt) VALUES (8, 'mood');
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(peek(true))$$);
SELECT cardinality(capture()) > 0 AS consumed;
-- so is one nested in an array; an array of built-in objects only decodes
CREATE TABLE refs (id int, rcs regclass[]);
INSERT INTO refs VALUES (1, ARRAY['pg_class', NULL, '-']::regclass[]);
SELECT op, new_row FROM logical_audit.pgoutput_rows(peek(true));
SELECT cardinality(capture()) > 0 AS consumed;
INSERT INTO refs VALUES (2, ARRAY['pg_type', 'refs']::regclass[]);
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(peek(true))$$);
SELECT cardinality(capture()) > 0 AS consumed;
DROP TABLE refs;

-- Errors.
INSERT INTO rid_default VALUES (5, 'e', 50);
CREATE TABLE rows_work.bad_input AS SELECT capture() AS messages;
-- a change whose Relation message was not passed
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(
	(SELECT array_agg(m) FROM bad_input, unnest(messages) m WHERE get_byte(m, 0) = ascii('I')))$$);
-- a truncated message
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(
	(SELECT array_agg(CASE WHEN get_byte(m, 0) = ascii('I') THEN substring(m FROM 1 FOR length(m) - 2) ELSE m END
	        ORDER BY n)
	 FROM bad_input, unnest(messages) WITH ORDINALITY AS x(m, n)))$$);
-- an insert with more columns than its relation
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(
	(SELECT array_agg(CASE WHEN get_byte(m, 0) = ascii('I') THEN overlay(m PLACING '\x0004' FROM 7) || '\x6e' ELSE m END
	        ORDER BY n)
	 FROM bad_input, unnest(messages) WITH ORDINALITY AS x(m, n)))$$);
-- a value its type rejects: the context names the column
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(
	(SELECT array_agg(CASE WHEN get_byte(m, 0) = ascii('I')
	                       THEN overlay(m PLACING convert_to('5x', 'UTF8') FROM length(m) - 1) ELSE m END
	        ORDER BY n)
	 FROM bad_input, unnest(messages) WITH ORDINALITY AS x(m, n)))$$);
-- text that is not valid UTF-8
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(
	(SELECT array_agg(CASE WHEN get_byte(m, 0) = ascii('I') THEN overlay(m PLACING '\xff' FROM length(m)) ELSE m END
	        ORDER BY n)
	 FROM bad_input, unnest(messages) WITH ORDINALITY AS x(m, n)))$$);
-- a binary value longer than its type's binary input function reads (an int4 of 5 bytes)
INSERT INTO rid_default VALUES (6, 'f', 60);
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(
	(SELECT array_agg(CASE WHEN get_byte(data, 0) = ascii('I')
	                       THEN overlay(data PLACING '\x000000050000003c00' FROM length(data) - 7) ELSE data END
	                  ORDER BY n)
	 FROM pg_logical_slot_get_binary_changes('rows_slot', NULL, NULL, 'proto_version', '1', 'binary', 'true',
	                                         'publication_names', 'rows_pub') WITH ORDINALITY AS c(lsn, xid, data, n)))$$);
-- a NULL message, an unknown protocol version; a NULL array gives no row
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows(ARRAY[NULL::bytea])$$);
SELECT error_of($$SELECT * FROM logical_audit.pgoutput_rows('{}', 5)$$);
SELECT count(*) FROM logical_audit.pgoutput_rows(NULL);
SELECT count(*) FROM logical_audit.pgoutput_rows('{}');
-- the session's TimeZone is left as it was
SHOW TimeZone;

SELECT 'dropped' FROM pg_drop_replication_slot('rows_slot');
DROP PUBLICATION rows_pub;
RESET search_path;
DROP SCHEMA rows_test, rows_work CASCADE;
DROP EXTENSION logical_audit;
