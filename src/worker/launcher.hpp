// The launcher: a static background worker that keeps a worker running for every enabled
// subscription, and so restarts them after the server restarts.
#pragma once

#include "pg.hpp"

// Entry point of the launcher.
extern "C" PGDLLEXPORT void logical_audit_launcher_main(Datum arg);

namespace logical_audit::worker {

// Registers the launcher with the postmaster; from _PG_init under shared_preload_libraries.
void register_launcher();

} // namespace logical_audit::worker
