-- logical_audit.pgoutput_to_jsonb decodes real pgoutput slot output into jsonb, and rejects
-- malformed messages with the reason and the byte offset.
\set VERBOSITY default
SET client_min_messages = warning;
CREATE EXTENSION logical_audit;

-- What varies between runs is replaced: relation and type oids by their names, and xids, LSNs
-- and times are dropped (they are checked separately). Long values are abbreviated.
CREATE FUNCTION show_tuple(t jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT jsonb_agg(CASE WHEN length(c->>'value') > 30
	                      THEN jsonb_set(c, '{value}', to_jsonb(left(c->>'value', 6) || '...(' || length(c->>'value') || ' chars)'))
	                      ELSE c END ORDER BY n)
	FROM jsonb_array_elements(t) WITH ORDINALITY AS x(c, n)
$$;
CREATE FUNCTION show(j jsonb) RETURNS jsonb LANGUAGE sql AS $$
	SELECT (j - '{xid,final_lsn,commit_lsn,end_lsn,commit_time,lsn,prepare_lsn,prepare_time,prepare_end_lsn,rollback_end_lsn,rollback_time}'::text[])
		|| CASE WHEN j ? 'relation_id' THEN jsonb_build_object('relation_id', (j->>'relation_id')::oid::regclass::text) ELSE '{}' END
		|| CASE WHEN j ? 'type_oid' THEN jsonb_build_object('type_oid', (j->>'type_oid')::oid::regtype::text) ELSE '{}' END
		|| CASE WHEN j ? 'columns' THEN jsonb_build_object('columns',
			(SELECT jsonb_agg(c || jsonb_build_object('type_oid', (c->>'type_oid')::oid::regtype::text) ORDER BY n)
			 FROM jsonb_array_elements(j->'columns') WITH ORDINALITY AS x(c, n))) ELSE '{}' END
		|| CASE WHEN j ? 'relation_ids' THEN jsonb_build_object('relation_ids',
			(SELECT jsonb_agg(r::oid::regclass::text ORDER BY r::oid::regclass::text)
			 FROM jsonb_array_elements_text(j->'relation_ids') r)) ELSE '{}' END
		|| CASE WHEN j ? 'new_tuple' THEN jsonb_build_object('new_tuple', show_tuple(j->'new_tuple')) ELSE '{}' END
		|| CASE WHEN j ? 'old_tuple' THEN jsonb_build_object('old_tuple', show_tuple(j->'old_tuple')) ELSE '{}' END
$$;

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE person (id int PRIMARY KEY, name text, feeling mood, bio text);
-- bio is stored out of line uncompressed, so an update that leaves it alone sends it as 'u'
ALTER TABLE person ALTER COLUMN bio SET STORAGE EXTERNAL;
CREATE TABLE note (id serial PRIMARY KEY, person_id int REFERENCES person, body text);
CREATE TABLE ledger (k int, v text);
ALTER TABLE ledger REPLICA IDENTITY FULL;
CREATE TABLE tag (name text NOT NULL UNIQUE);
ALTER TABLE tag REPLICA IDENTITY USING INDEX tag_name_key;
CREATE PUBLICATION pub FOR ALL TABLES;
SELECT 'slot' FROM pg_create_logical_replication_slot('audit_slot', 'pgoutput');
SELECT clock_timestamp() AS started \gset

BEGIN;
INSERT INTO person VALUES (1, 'ann', 'happy', repeat('x', 5000)), (2, NULL, 'sad', NULL);
INSERT INTO note (person_id, body) VALUES (1, 'hello');
INSERT INTO tag VALUES ('red');
COMMIT;
UPDATE person SET name = 'anne' WHERE id = 1;
UPDATE person SET id = 3 WHERE id = 2;
BEGIN;
INSERT INTO ledger VALUES (1, 'a');
UPDATE ledger SET v = 'b';
DELETE FROM ledger;
COMMIT;
DELETE FROM note;
DELETE FROM person WHERE id = 3;
SELECT 'sent' FROM pg_logical_emit_message(false, 'audit', '\xdeadbeef'::bytea);
BEGIN;
SELECT 'sent' FROM pg_logical_emit_message(true, 'audit', '{"who": "alice"}');
DELETE FROM tag;
COMMIT;
TRUNCATE person RESTART IDENTITY CASCADE;
TRUNCATE ledger;

CREATE TEMP TABLE change AS
	SELECT n, lsn, xid, data, logical_audit.pgoutput_to_jsonb(data, false, 1) AS j
	FROM pg_logical_slot_peek_binary_changes('audit_slot', NULL, NULL, 'proto_version', '1',
	                                         'publication_names', 'pub', 'messages', 'true')
	WITH ORDINALITY AS c(lsn, xid, data, n);

-- Every message, text mode.
SELECT n, show(j) FROM change ORDER BY n;

-- LSNs look like LSNs and agree with the slot's own columns: begin's final_lsn is the commit's
-- commit_lsn, the commit's end_lsn and a message's lsn are the row's lsn, begin's xid is the row's.
SELECT count(*) AS lsns, bool_and(v ~ '^[0-9A-F]{1,8}/[0-9A-F]{1,8}$') AS all_well_formed
FROM change, jsonb_each_text(j) AS e(k, v) WHERE k LIKE '%lsn';
SELECT j->>'type' AS type,
       bool_and(CASE j->>'type'
                WHEN 'begin' THEN (j->>'xid')::xid = xid AND (j->>'final_lsn')::pg_lsn =
                    (SELECT (c.j->>'commit_lsn')::pg_lsn FROM change c
                     WHERE c.n > change.n AND c.j->>'type' = 'commit' ORDER BY c.n LIMIT 1)
                WHEN 'commit' THEN (j->>'end_lsn')::pg_lsn = lsn
                WHEN 'message' THEN (j->>'lsn')::pg_lsn = lsn END) AS agrees
FROM change WHERE j->>'type' IN ('begin', 'commit', 'message') GROUP BY 1 ORDER BY 1;

-- Times are timestamptz text of this session's TimeZone, begin and commit agree.
SELECT bool_and((j->>'commit_time')::timestamptz BETWEEN :'started' AND clock_timestamp()) AS in_range,
       count(DISTINCT j->>'commit_time') = count(*) / 2 AS begin_and_commit_agree
FROM change WHERE j ? 'commit_time';
SET TimeZone = 'UTC';
SELECT logical_audit.pgoutput_to_jsonb(data, false, 1)->>'commit_time' LIKE '% UTC' AS utc FROM change WHERE n = 1;
SET TimeZone = 'Asia/Tokyo';
SELECT logical_audit.pgoutput_to_jsonb(data, false, 1)->>'commit_time' LIKE '% JST' AS jst FROM change WHERE n = 1;
RESET TimeZone;

-- The same changes in binary mode: the values are the types' send output in hex.
SELECT n, show(logical_audit.pgoutput_to_jsonb(data, false, 1))
FROM pg_logical_slot_peek_binary_changes('audit_slot', NULL, NULL, 'proto_version', '1',
                                         'publication_names', 'pub', 'binary', 'true')
     WITH ORDINALITY AS c(lsn, xid, data, n)
WHERE get_byte(data, 0) IN (ascii('I'), ascii('U'), ascii('D')) ORDER BY n;

SELECT count(*) AS consumed
FROM pg_logical_slot_get_binary_changes('audit_slot', NULL, NULL, 'proto_version', '1',
                                        'publication_names', 'pub', 'messages', 'true');

-- A change replayed from another origin carries an Origin message with that origin's LSN, and
-- its commit time is the origin's.
SELECT 'origin' FROM pg_replication_origin_create('upstream_a');
SELECT 'setup' FROM pg_replication_origin_session_setup('upstream_a');
BEGIN;
SELECT 'setup' FROM pg_replication_origin_xact_setup('0/ABCDEF', '2024-01-02 03:04:05+00');
INSERT INTO ledger VALUES (9, 'from a');
COMMIT;
SELECT 'reset' FROM pg_replication_origin_session_reset();
SET TimeZone = 'UTC';
SELECT logical_audit.pgoutput_to_jsonb(data, false, 1) - '{xid,final_lsn,relation_id}'::text[]
FROM pg_logical_slot_get_binary_changes('audit_slot', NULL, NULL, 'proto_version', '1',
                                        'publication_names', 'pub')
     WITH ORDINALITY AS c(lsn, xid, data, n)
WHERE get_byte(data, 0) IN (ascii('B'), ascii('O'), ascii('I')) ORDER BY n;
RESET TimeZone;

-- Streaming (protocol 2): large transactions arrive in blocks between stream_start and
-- stream_stop, whose data messages carry the xid. in_stream is tracked with a window.
SET logical_decoding_work_mem = '64kB';
INSERT INTO ledger SELECT i, 'row ' || i FROM generate_series(1, 2000) i;
BEGIN;
INSERT INTO ledger SELECT i, 'gone ' || i FROM generate_series(1, 2000) i;
ROLLBACK;
BEGIN;
INSERT INTO ledger SELECT i, 'kept ' || i FROM generate_series(1, 2000) i;
SAVEPOINT s;
INSERT INTO ledger SELECT i, 'undone ' || i FROM generate_series(1, 2000) i;
ROLLBACK TO s;
COMMIT;
CREATE TEMP TABLE streamed AS
	SELECT n, data, in_stream, logical_audit.pgoutput_to_jsonb(data, in_stream, 2) AS j
	FROM (SELECT n, data, coalesce(sum(CASE get_byte(data, 0) WHEN ascii('S') THEN 1 WHEN ascii('E') THEN -1 END)
	                                   OVER (ORDER BY n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) > 0 AS in_stream
	      FROM pg_logical_slot_get_binary_changes('audit_slot', NULL, NULL, 'proto_version', '2',
	                                              'publication_names', 'pub', 'streaming', 'on')
	      WITH ORDINALITY AS c(lsn, xid, data, n)) s;
RESET logical_decoding_work_mem;
-- (How many blocks, and how much of the rolled back work was streamed, depends on memory
-- accounting: those counts are not shown.)
SELECT j->>'type' AS type, in_stream,
       CASE WHEN j->>'type' IN ('stream_start', 'stream_stop', 'insert') THEN 'some' ELSE count(*)::text END AS count,
       bool_and(j ? 'xid') AS has_xid
FROM streamed GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) >= 4000 AS all_committed_rows FROM streamed WHERE j->>'type' = 'insert';
SELECT show(j) - 'subxid' AS message, (j->>'subxid')::xid = (j->>'xid')::xid AS whole_transaction
FROM streamed WHERE j->>'type' IN ('stream_abort', 'stream_commit') ORDER BY n;
SELECT count(DISTINCT j->>'xid') AS streamed_transactions FROM streamed WHERE j->>'type' = 'stream_start';
SELECT show(j) FROM streamed WHERE in_stream AND j->>'type' = 'relation';

-- Two-phase commit (protocol 3): prepared transactions, and a large one that is streamed.
SELECT 'slot' FROM pg_create_logical_replication_slot('prepared_slot', 'pgoutput', false, true);
BEGIN;
INSERT INTO tag VALUES ('green');
PREPARE TRANSACTION 'tx_commit';
COMMIT PREPARED 'tx_commit';
BEGIN;
INSERT INTO tag VALUES ('blue');
PREPARE TRANSACTION 'tx_rollback';
ROLLBACK PREPARED 'tx_rollback';
SET logical_decoding_work_mem = '64kB';
BEGIN;
INSERT INTO ledger SELECT i, 'prepared ' || i FROM generate_series(1, 2000) i;
PREPARE TRANSACTION 'tx_large';
COMMIT PREPARED 'tx_large';
SELECT show(j) FROM (
	SELECT n, logical_audit.pgoutput_to_jsonb(data, in_stream, 3) AS j
	FROM (SELECT n, data, coalesce(sum(CASE get_byte(data, 0) WHEN ascii('S') THEN 1 WHEN ascii('E') THEN -1 END)
	                                   OVER (ORDER BY n ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) > 0 AS in_stream
	      FROM pg_logical_slot_get_binary_changes('prepared_slot', NULL, NULL, 'proto_version', '3',
	                                              'publication_names', 'pub', 'two_phase', 'true', 'streaming', 'on')
	      WITH ORDINALITY AS c(lsn, xid, data, n)) s) d
WHERE j->>'type' NOT IN ('insert', 'stream_start', 'stream_stop', 'relation') ORDER BY n;
RESET logical_decoding_work_mem;
SELECT 'dropped' FROM pg_drop_replication_slot('prepared_slot');

-- Malformed input: each error names the message, the reason and the byte offset.
-- a message cut short
SELECT logical_audit.pgoutput_to_jsonb(substring(data FROM 1 FOR 17), false, 1)
FROM change WHERE j->>'type' = 'insert' ORDER BY n LIMIT 1;
-- an unknown message type (a real commit whose type byte is replaced)
SELECT logical_audit.pgoutput_to_jsonb(overlay(data PLACING '\x7a' FROM 1), false, 1)
FROM change WHERE j->>'type' = 'commit' ORDER BY n LIMIT 1;
-- trailing garbage
SELECT logical_audit.pgoutput_to_jsonb(data || '\x00'::bytea, false, 1) FROM change WHERE j->>'type' = 'commit' ORDER BY n LIMIT 1;
-- an empty message
SELECT logical_audit.pgoutput_to_jsonb('');
-- the real insert of tag 'red' (kind 't' at byte 8, the text at bytes 13-15), altered:
-- an unknown tuple column kind, text that is not UTF-8, text with a NUL byte
CREATE TEMP VIEW red AS SELECT data FROM change WHERE j->>'type' = 'insert' AND j->'new_tuple'->0->>'value' = 'red';
SELECT logical_audit.pgoutput_to_jsonb(overlay(data PLACING '\x78' FROM 9), false, 1) FROM red;
SELECT logical_audit.pgoutput_to_jsonb(overlay(data PLACING '\xc328' FROM 14), false, 1) FROM red;
SELECT logical_audit.pgoutput_to_jsonb(overlay(data PLACING '\x00' FROM 15), false, 1) FROM red;
-- a streamed data message read as if outside a stream, with protocol 2 and with protocol 1
SELECT logical_audit.pgoutput_to_jsonb(data, false, 2) FROM streamed WHERE in_stream AND j->>'type' = 'insert' ORDER BY n LIMIT 1;
SELECT logical_audit.pgoutput_to_jsonb(data, false, 1) FROM streamed WHERE in_stream AND j->>'type' = 'insert' ORDER BY n LIMIT 1;
-- a message outside a stream read as if inside one; a stream_stop read as if outside
SELECT logical_audit.pgoutput_to_jsonb(data, true, 2) FROM change WHERE j->>'type' = 'begin' ORDER BY n LIMIT 1;
SELECT logical_audit.pgoutput_to_jsonb(data, false, 2) FROM streamed WHERE j->>'type' = 'stream_stop' ORDER BY n LIMIT 1;
-- a stream_start read with protocol 1
SELECT logical_audit.pgoutput_to_jsonb(data, false, 1) FROM streamed WHERE j->>'type' = 'stream_start' ORDER BY n LIMIT 1;
-- bad arguments; NULL gives NULL
SELECT logical_audit.pgoutput_to_jsonb('\x45', false, 5);
SELECT logical_audit.pgoutput_to_jsonb('\x45', true, 1);
SELECT logical_audit.pgoutput_to_jsonb(NULL) IS NULL AS is_null;

SELECT 'dropped' FROM pg_drop_replication_slot('audit_slot');
