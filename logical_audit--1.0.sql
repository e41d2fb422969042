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
CREATE TABLE logical_audit.change (
	subscription     text NOT NULL,
	commit_lsn       pg_lsn NOT NULL,
	ordinal          integer NOT NULL,
	op               text NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'SNAPSHOT')),
	schema_name      text NOT NULL,
	table_name       text NOT NULL,
	old_row          jsonb,
	new_row          jsonb,
	unchanged_toast  text[],
	changed_columns  text[],
	PRIMARY KEY (subscription, commit_lsn, ordinal)
);

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
