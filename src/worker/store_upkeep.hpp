// The upkeep of the subscription's audit store, done by its worker: time partitions made ahead of
// need, retention applied (logical_audit.maintain_store), when a session starts and every hour.
#pragma once

#include "worker/session.hpp"

namespace logical_audit::worker {

// Keeps the store now (when a session starts) or, when force is false, if the last upkeep is an
// hour old. Runs in a transaction of its own: call it between local transactions.
void keep_store(WorkerContext &w, bool force);

} // namespace logical_audit::worker
