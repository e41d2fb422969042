-- logical_audit 1.0 -> 1.1: status shows what the worker waits for and the health of its upstream slot
\echo Use "ALTER EXTENSION logical_audit UPDATE TO '1.1'" to load this file. \quit

DROP VIEW logical_audit.status;
DROP FUNCTION logical_audit.worker_status();

-- The running workers, as their shared-memory status slots show them. upstream_slot_wal_status
-- and upstream_slot_safe_wal_size are the upstream slot's wal_status and safe_wal_size, as the
-- worker last read them.
CREATE FUNCTION logical_audit.worker_status(
	OUT subscription_id integer, OUT pid integer, OUT state text,
	OUT received_lsn pg_lsn, OUT flushed_lsn pg_lsn, OUT upstream_lsn pg_lsn,
	OUT last_msg_send_time timestamptz, OUT last_msg_receipt_time timestamptz,
	OUT last_commit_time timestamptz, OUT transactions bigint, OUT changes bigint,
	OUT last_error text, OUT last_error_time timestamptz,
	OUT upstream_slot_wal_status text, OUT upstream_slot_safe_wal_size bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'logical_audit_worker_status'
LANGUAGE C VOLATILE;

-- One row per subscription; the worker's columns are NULL (state 'stopped') when none runs.
-- lag_bytes: upstream WAL not yet audited. wait_event_type and wait_event: what the worker waits
-- for, as pg_stat_activity shows it (Lock while a user's lock holds an audit table). No column
-- shows the conninfo.
CREATE VIEW logical_audit.status AS
SELECT s.name, s.enabled, w.pid, coalesce(w.state, 'stopped') AS state, s.slot_name,
       w.received_lsn, w.flushed_lsn, w.upstream_lsn, w.upstream_lsn - w.flushed_lsn AS lag_bytes,
       w.last_msg_send_time, w.last_msg_receipt_time, w.last_commit_time,
       w.transactions, w.changes, w.last_error, w.last_error_time,
       a.wait_event_type, a.wait_event, w.upstream_slot_wal_status, w.upstream_slot_safe_wal_size
FROM logical_audit.subscription s
LEFT JOIN logical_audit.worker_status() w ON w.subscription_id = s.id
LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = w.pid;

REVOKE ALL ON FUNCTION logical_audit.worker_status() FROM PUBLIC;
REVOKE ALL ON logical_audit.status FROM PUBLIC;
