// The health of the subscription's upstream slot: read when a session starts and periodically
// while it streams, shown in status (upstream_slot_wal_status, upstream_slot_safe_wal_size). A
// slot the upstream invalidated (wal_status lost) can no longer give the changes after the
// audited position: that is an ERROR naming the slot and the lost range, and the worker stops in
// state error rather than start silently from a newer position.
#pragma once

#include "worker/session.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

// Reads the slot's health on the replication connection before streaming starts; audited is the
// position the audit resumes from, upstream_end the upstream's current end of WAL.
void check_slot_at_start(WorkerContext &w, PGconn *replication_conn, XLogRecPtr audited, XLogRecPtr upstream_end);

// Reads it again, on a short plain connection, when the last reading is old enough. Called between
// local transactions: an upstream that refuses that connection is a WARNING, not a reason to end
// the replication session.
void check_slot_if_due(WorkerContext &w, XLogRecPtr audited, XLogRecPtr upstream_end);

} // namespace logical_audit::worker
