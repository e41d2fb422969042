// The baseline snapshot of a subscription (option "snapshot"): the existing rows of every published
// table, copied once, when the worker creates the slot, as of the slot's consistent point.
#pragma once

#include "worker/session.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

// Creates the subscription's slot on the replication connection (dropping one left by an attempt
// that never committed), records every published row as a SNAPSHOT change of one synthetic upstream
// transaction, and commits it with the replication origin's progress at the slot's consistent
// point, flushed. Returns that point, where streaming starts on the same connection. An ERROR
// leaves nothing committed: the origin stays at 0 and the next attempt starts over.
XLogRecPtr take_snapshot(WorkerContext &w, PGconn *replication_conn);

} // namespace logical_audit::worker
