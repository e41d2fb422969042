-- logical_audit 1.0: schema and the SQL decoder
\echo Use "CREATE EXTENSION logical_audit" to load this file. \quit

CREATE FUNCTION logical_audit.pgoutput_to_jsonb(data bytea, in_stream boolean DEFAULT false,
                                                proto_version integer DEFAULT 4)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'pgoutput_to_jsonb'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION logical_audit.pgoutput_to_jsonb(bytea, boolean, integer) IS
'decode one pgoutput message, as returned by pg_logical_slot_get_binary_changes, into jsonb';
