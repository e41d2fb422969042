// The background worker that audits one subscription, and how the launcher starts it.
#pragma once

#include "pg.hpp"

// Entry point of a subscription's worker; bgw_extra holds the subscription id (an int).
extern "C" PGDLLEXPORT void logical_audit_worker_main(Datum arg);

namespace logical_audit::worker {

// The bgw_function_name of the worker.
constexpr const char *kWorkerFunction = "logical_audit_worker_main";

// The replication origin of a subscription: logical_audit_<id>.
void origin_name(int subscription_id, char (&name)[NAMEDATALEN]);

// Refuses to drop a subscription's origin inside a transaction block: the drop clears the origin's
// progress at once, and a rollback would leave the origin without it (the worker would then
// restart from the upstream slot's position, which may be behind what was audited).
void prevent_in_transaction_block(const char *what);

} // namespace logical_audit::worker
