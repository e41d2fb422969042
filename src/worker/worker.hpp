// The background worker that audits one subscription, and how the launcher starts it.
#pragma once

#include "pg.hpp"

// Entry point of a subscription's worker; bgw_extra holds the subscription id (an int).
extern "C" PGDLLEXPORT void logical_audit_worker_main(Datum arg);

namespace logical_audit::worker {

// The bgw_function_name of the worker.
constexpr const char *kWorkerFunction = "logical_audit_worker_main";

} // namespace logical_audit::worker
