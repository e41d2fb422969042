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

-- One row per audited upstream transaction.
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
