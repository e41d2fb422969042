-- logical_audit 1.0: schema and the SQL decoder
\echo Use "CREATE EXTENSION logical_audit" to load this file. \quit

CREATE FUNCTION logical_audit.pgoutput_to_jsonb(data bytea, in_stream boolean DEFAULT false,
                                                proto_version integer DEFAULT 4)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'pgoutput_to_jsonb'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION logical_audit.pgoutput_to_jsonb(bytea, boolean, integer) IS
'decode one pgoutput message, as returned by pg_logical_slot_get_binary_changes, into jsonb';

-- Subscriptions: one row per audited upstream. conninfo may hold a password: the table is
-- readable only by its owner (and through the functions below).
CREATE TABLE logical_audit.subscription (
	id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	name          text NOT NULL UNIQUE CHECK (name <> ''),
	conninfo      text NOT NULL,
	publications  text[] NOT NULL CHECK (cardinality(publications) > 0),
	slot_name     name NOT NULL,
	enabled       boolean NOT NULL DEFAULT true,
	options       jsonb NOT NULL DEFAULT '{}',
	created_at    timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('logical_audit.subscription', '');
SELECT pg_catalog.pg_extension_config_dump('logical_audit.subscription_id_seq', '');

-- One row per audited upstream transaction. A prepared transaction (two-phase) shows its gid and
-- prepare time; one rolled back (ROLLBACK PREPARED) is recorded with rolled_back, no changes, and
-- its PREPARE's LSN as commit_lsn.
CREATE TABLE logical_audit.transaction (
	subscription  text NOT NULL,
	xid           xid8 NOT NULL,
	commit_lsn    pg_lsn NOT NULL,
	end_lsn       pg_lsn NOT NULL,
	commit_time   timestamptz NOT NULL,
	origin        text,
	change_count  bigint NOT NULL,
	annotations   jsonb,
	audited_at    timestamptz NOT NULL DEFAULT now(),
	gid           text,
	prepare_time  timestamptz,
	rolled_back   boolean NOT NULL DEFAULT false,
	PRIMARY KEY (subscription, commit_lsn)
);

-- One row per changed upstream row (and per truncated table), ordinal 1.. in upstream order.
-- Names compare bytewise (COLLATE "C"): they are identifiers, and the index below stays cheap.
-- row_key is the row's replica identity key after the change (the old key for a DELETE), NULL
-- under REPLICA IDENTITY FULL or NOTHING (no usable key) and for TRUNCATE.
CREATE TABLE logical_audit.change (
	subscription     text NOT NULL,
	commit_lsn       pg_lsn NOT NULL,
	ordinal          integer NOT NULL,
	op               text NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'SNAPSHOT')),
	schema_name      text COLLATE "C" NOT NULL,
	table_name       text COLLATE "C" NOT NULL,
	row_key          jsonb,
	old_row          jsonb COMPRESSION lz4,
	new_row          jsonb COMPRESSION lz4,
	unchanged_toast  text[],
	changed_columns  text[],
	PRIMARY KEY (subscription, commit_lsn, ordinal)
);

-- jsonb's own order, computed without jsonb's iterators for the usual row key (an object of
-- scalars): the row_key index below compares a dozen keys for every change row the worker inserts.
CREATE FUNCTION logical_audit.row_key_cmp(jsonb, jsonb) RETURNS integer
LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'logical_audit_row_key_cmp';

-- "Sorts before" in that order, so that a query can ask for the index's order (ORDER BY row_key
-- USING OPERATOR(logical_audit.~<~)): ORDER BY row_key alone means jsonb's default operator class.
CREATE FUNCTION logical_audit.row_key_lt(jsonb, jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN logical_audit.row_key_cmp($1, $2) < 0;

CREATE OPERATOR logical_audit.~<~ (LEFTARG = jsonb, RIGHTARG = jsonb, FUNCTION = logical_audit.row_key_lt);

-- The other operators are jsonb's own, so that row_key = ... can use the index.
CREATE OPERATOR CLASS logical_audit.row_key_ops FOR TYPE jsonb USING btree AS
	OPERATOR 1 logical_audit.~<~ (jsonb, jsonb),
	OPERATOR 2 pg_catalog.<= (jsonb, jsonb),
	OPERATOR 3 pg_catalog.= (jsonb, jsonb),
	OPERATOR 4 pg_catalog.>= (jsonb, jsonb),
	OPERATOR 5 pg_catalog.> (jsonb, jsonb),
	FUNCTION 1 logical_audit.row_key_cmp(jsonb, jsonb);

-- Each row's changes in upstream order, found by its key: the worker reads the latest one (a
-- backward scan stops at it) for changed_columns and unchanged TOAST values, and history() and
-- row_as_of() read them all, with the table's TRUNCATE rows (row_key NULL). Rows without a key
-- stay out: every insert of the worker pays for this index. The subscription comes last: rarely
-- what tells two entries apart, it would cost a comparison at every step of every insert first.
CREATE INDEX change_row_key ON logical_audit.change
	(schema_name, table_name, row_key logical_audit.row_key_ops, commit_lsn, ordinal, subscription)
	WHERE row_key IS NOT NULL OR op = 'TRUNCATE';

-- The updates that changed a row's key, by the old key: they end the old key's timeline. Few rows
-- qualify, so the worker's inserts only evaluate the predicate.
CREATE INDEX change_old_key ON logical_audit.change (subscription, schema_name, table_name, old_row)
	WHERE op = 'UPDATE' AND old_row <> row_key;

-- Logical messages (pg_logical_emit_message) of the upstream; commit_lsn is NULL for
-- non-transactional ones.
CREATE TABLE logical_audit.message (
	subscription   text NOT NULL,
	lsn            pg_lsn NOT NULL,
	commit_lsn     pg_lsn,
	transactional  boolean NOT NULL,
	prefix         text NOT NULL,
	content        bytea NOT NULL,
	PRIMARY KEY (subscription, lsn)
);
SELECT pg_catalog.pg_extension_config_dump('logical_audit.transaction', '');
SELECT pg_catalog.pg_extension_config_dump('logical_audit.change', '');
SELECT pg_catalog.pg_extension_config_dump('logical_audit.message', '');

-- ---------------------------------------------------------------------------------------------
-- Row history, for auditors. A row is named by its replica identity key, a jsonb object such as
-- '{"id": 1}' (row_key's form); rows of a table without one (REPLICA IDENTITY FULL or NOTHING)
-- are matched by containment instead (new_row @> key or old_row @> key), which reads every change
-- row of the subscription: no index serves it.

-- The change rows of one row, in upstream order per subscription, each with whether the row exists
-- after it: the changes under its key (an INSERT, SNAPSHOT, UPDATE or DELETE), the UPDATEs that
-- moved it to another key, and the TRUNCATEs of its table that ended it.
CREATE FUNCTION logical_audit.row_timeline(schema_name text, table_name text, key jsonb,
                                           subscription text DEFAULT NULL)
RETURNS TABLE (change logical_audit.change, row_exists boolean)
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_column
DECLARE
	sub text;
	keyed boolean;
BEGIN
	IF row_timeline.schema_name IS NULL OR row_timeline.table_name IS NULL THEN
		RAISE EXCEPTION 'schema_name and table_name must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF row_timeline.key IS NULL THEN
		RAISE EXCEPTION 'key must not be NULL' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'Name the row by its replica identity key columns, for example ''{"id": 1}''.';
	END IF;
	IF jsonb_typeof(row_timeline.key) <> 'object' THEN
		RAISE EXCEPTION 'key must be a jsonb object, not %', jsonb_typeof(row_timeline.key)
			USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Name the row by its replica identity key columns, for example ''{"id": 1}''.';
	END IF;
	IF row_timeline.key = '{}' THEN
		RAISE EXCEPTION 'key must name at least one column' USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Name the row by its replica identity key columns, for example ''{"id": 1}''.';
	END IF;
	-- The given subscription, or each one that has change rows (one index probe per subscription).
	FOR sub IN
		WITH RECURSIVE subs(name) AS (
			SELECT coalesce(row_timeline.subscription, (SELECT min(c.subscription) FROM logical_audit.change c))
			UNION ALL
			SELECT (SELECT min(c.subscription) FROM logical_audit.change c WHERE c.subscription > subs.name)
			FROM subs WHERE row_timeline.subscription IS NULL AND subs.name IS NOT NULL)
		SELECT subs.name FROM subs WHERE subs.name IS NOT NULL
	LOOP
		-- Whether the table's changes carry a row_key: then they alone name the row. (Ordered so
		-- that the index answers, also for a table whose changes carry none.)
		keyed := (SELECT c.row_key FROM logical_audit.change c
		          WHERE c.subscription = sub AND c.schema_name = row_timeline.schema_name
		            AND c.table_name = row_timeline.table_name AND c.row_key IS NOT NULL
		          ORDER BY c.row_key USING OPERATOR(logical_audit.~<~) LIMIT 1) IS NOT NULL;
		RETURN QUERY
		WITH own AS (
			SELECT c FROM logical_audit.change c
			WHERE keyed AND c.subscription = sub AND c.schema_name = row_timeline.schema_name
			  AND c.table_name = row_timeline.table_name AND c.row_key = row_timeline.key
			UNION ALL
			SELECT c FROM logical_audit.change c
			WHERE keyed AND c.subscription = sub AND c.schema_name = row_timeline.schema_name
			  AND c.table_name = row_timeline.table_name AND c.op = 'UPDATE' AND c.old_row = row_timeline.key
			  AND c.old_row <> c.row_key
			UNION ALL
			SELECT c FROM logical_audit.change c
			WHERE NOT keyed AND c.subscription = sub AND c.schema_name = row_timeline.schema_name
			  AND c.table_name = row_timeline.table_name AND c.row_key IS NULL AND c.op <> 'TRUNCATE'
			  AND (c.new_row @> row_timeline.key OR c.old_row @> row_timeline.key)),
		truncates AS (
			SELECT c FROM logical_audit.change c
			WHERE c.subscription = sub AND c.schema_name = row_timeline.schema_name
			  AND c.table_name = row_timeline.table_name AND c.op = 'TRUNCATE' AND c.row_key IS NULL
			  AND c.commit_lsn >= (SELECT min((o.c).commit_lsn) FROM own o)),
		steps AS (
			SELECT u.c, CASE WHEN (u.c).op IN ('DELETE', 'TRUNCATE') THEN false
			                 ELSE coalesce((u.c).row_key = row_timeline.key, (u.c).new_row @> row_timeline.key, false)
			            END AS exists_after
			FROM (SELECT * FROM own UNION ALL SELECT * FROM truncates) u),
		ordered AS (
			SELECT s.c, s.exists_after,
			       lag(s.exists_after) OVER (ORDER BY (s.c).commit_lsn, (s.c).ordinal) AS existed_before
			FROM steps s)
		-- A TRUNCATE belongs to the timeline when the row existed just before it.
		SELECT o.c, o.exists_after FROM ordered o
		WHERE (o.c).op <> 'TRUNCATE' OR o.existed_before
		ORDER BY (o.c).commit_lsn, (o.c).ordinal;
	END LOOP;
END
$$;

COMMENT ON FUNCTION logical_audit.row_timeline(text, text, jsonb, text) IS
'the change rows of one row (named by its key), in upstream order per subscription, each with whether the row exists after it';

CREATE FUNCTION logical_audit.history(schema_name text, table_name text, key jsonb, subscription text DEFAULT NULL)
RETURNS TABLE (subscription text, commit_lsn pg_lsn, ordinal integer, commit_time timestamptz, xid xid8,
               origin text, op text, old_row jsonb, new_row jsonb, changed_columns text[],
               unchanged_toast text[], annotations jsonb)
LANGUAGE sql STABLE
AS $$
	SELECT (r.change).subscription, (r.change).commit_lsn, (r.change).ordinal, t.commit_time, t.xid, t.origin,
	       (r.change).op, (r.change).old_row, (r.change).new_row, (r.change).changed_columns,
	       (r.change).unchanged_toast, t.annotations
	FROM logical_audit.row_timeline(history.schema_name, history.table_name, history.key, history.subscription) r
	LEFT JOIN logical_audit.transaction t
	       ON t.subscription = (r.change).subscription AND t.commit_lsn = (r.change).commit_lsn
	ORDER BY (r.change).subscription, (r.change).commit_lsn, (r.change).ordinal
$$;

COMMENT ON FUNCTION logical_audit.history(text, text, jsonb, text) IS
'every audited change of one row (named by its key) with its transaction, in upstream commit order per subscription';

CREATE FUNCTION logical_audit.row_as_of(schema_name text, table_name text, key jsonb, at timestamptz,
                                        subscription text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
#variable_conflict use_column
DECLARE
	latest record;
	found_in text;
	result jsonb;
BEGIN
	IF row_as_of.at IS NULL THEN
		RAISE EXCEPTION 'at must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- The row's latest change committed at or before "at", in each subscription that audited it.
	FOR latest IN
		SELECT DISTINCT ON ((r.change).subscription) (r.change).subscription AS name, r.row_exists,
		       (r.change).new_row AS new_row
		FROM logical_audit.row_timeline(row_as_of.schema_name, row_as_of.table_name, row_as_of.key,
		                                row_as_of.subscription) r
		JOIN logical_audit.transaction t ON t.subscription = (r.change).subscription
		                                AND t.commit_lsn = (r.change).commit_lsn
		WHERE t.commit_time <= row_as_of.at
		ORDER BY (r.change).subscription, (r.change).commit_lsn DESC, (r.change).ordinal DESC
	LOOP
		IF found_in IS NOT NULL THEN
			RAISE EXCEPTION 'row % of %.% was audited by more than one subscription', row_as_of.key,
				row_as_of.schema_name, row_as_of.table_name
				USING ERRCODE = 'cardinality_violation',
				DETAIL = format('Subscriptions %s and %s both audited changes of the row.', quote_literal(found_in),
				                quote_literal(latest.name)),
				HINT = 'Name the subscription whose audit to read.';
		END IF;
		found_in := latest.name;
		result := CASE WHEN latest.row_exists THEN latest.new_row END;
	END LOOP;
	RETURN result;
END
$$;

COMMENT ON FUNCTION logical_audit.row_as_of(text, text, jsonb, timestamptz, text) IS
'one row (named by its key) as it was at an upstream commit time: the new_row of its latest change then, NULL when it did not exist';

REVOKE ALL ON logical_audit.subscription FROM PUBLIC;

-- Subscription control. The functions run as the extension's owner (SECURITY DEFINER, with a
-- fixed search_path) and are revoked from PUBLIC: a role granted EXECUTE on them manages
-- subscriptions without being able to read the conninfos in logical_audit.subscription.
CREATE FUNCTION logical_audit.create_subscription(name text, conninfo text, publications text[],
                                                  slot_name name DEFAULT NULL,
                                                  create_slot boolean DEFAULT true,
                                                  enabled boolean DEFAULT true,
                                                  options jsonb DEFAULT '{}')
RETURNS void
AS 'MODULE_PATHNAME', 'logical_audit_create_subscription'
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION logical_audit.create_subscription(text, text, text[], name, boolean, boolean, jsonb) IS
'audit the publications of an upstream through a pgoutput slot (logical_audit_<name> unless given)';

CREATE FUNCTION logical_audit.start(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'logical_audit_start'
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION logical_audit.start(text) IS
'enable a subscription and start its worker (a running worker retries at once if it was waiting to)';

CREATE FUNCTION logical_audit.stop(name text)
RETURNS void
AS 'MODULE_PATHNAME', 'logical_audit_stop'
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION logical_audit.stop(text) IS
'disable a subscription and stop its worker; its slot and audited position are kept';

CREATE FUNCTION logical_audit.drop_subscription(name text, drop_slot boolean DEFAULT true)
RETURNS void
AS 'MODULE_PATHNAME', 'logical_audit_drop_subscription'
LANGUAGE C VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION logical_audit.drop_subscription(text, boolean) IS
'stop a subscription and drop it with its replication origin and, unless drop_slot is false, its upstream slot; audit rows are kept';

-- The running workers, as their shared-memory status slots show them.
CREATE FUNCTION logical_audit.worker_status(
	OUT subscription_id integer, OUT pid integer, OUT state text,
	OUT received_lsn pg_lsn, OUT flushed_lsn pg_lsn, OUT upstream_lsn pg_lsn,
	OUT last_msg_send_time timestamptz, OUT last_msg_receipt_time timestamptz,
	OUT last_commit_time timestamptz, OUT transactions bigint, OUT changes bigint,
	OUT last_error text, OUT last_error_time timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'logical_audit_worker_status'
LANGUAGE C VOLATILE;

-- One row per subscription; the worker's columns are NULL (state 'stopped') when none runs.
-- lag_bytes: upstream WAL not yet audited. No column shows the conninfo.
CREATE VIEW logical_audit.status AS
SELECT s.name, s.enabled, w.pid, coalesce(w.state, 'stopped') AS state, s.slot_name,
       w.received_lsn, w.flushed_lsn, w.upstream_lsn, w.upstream_lsn - w.flushed_lsn AS lag_bytes,
       w.last_msg_send_time, w.last_msg_receipt_time, w.last_commit_time,
       w.transactions, w.changes, w.last_error, w.last_error_time
FROM logical_audit.subscription s
LEFT JOIN logical_audit.worker_status() w ON w.subscription_id = s.id;

-- Everyone may use the schema (the SQL decoder is for all); each object below is granted apart.
GRANT USAGE ON SCHEMA logical_audit TO PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.create_subscription(text, text, text[], name, boolean, boolean, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.start(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.stop(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.drop_subscription(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION logical_audit.worker_status() FROM PUBLIC;
REVOKE ALL ON logical_audit.status FROM PUBLIC;

-- ---------------------------------------------------------------------------------------------
-- The audit rows of a sequence of pgoutput messages, as the worker would record them.
CREATE FUNCTION logical_audit.pgoutput_rows(messages bytea[], proto_version integer DEFAULT 1)
RETURNS TABLE(op text, schema_name text, table_name text, old_row jsonb, new_row jsonb,
              unchanged_toast text[])
AS 'MODULE_PATHNAME', 'pgoutput_rows'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION logical_audit.pgoutput_rows(bytea[], integer) IS
'decode pgoutput messages, in order, into audit rows: one per inserted, updated or deleted row and one per truncated table';
