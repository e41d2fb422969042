// The extension's settings (logical_audit.*), defined in guc.cpp.
#pragma once

namespace logical_audit {

// logical_audit.max_workers (PGC_POSTMASTER): shared-memory slots for subscription workers.
extern int guc_max_workers;

// logical_audit.database (PGC_POSTMASTER): where the launcher looks for subscriptions.
extern char *guc_database;

// Defines the settings; from _PG_init.
void define_gucs();

} // namespace logical_audit
