// The extension's settings, all under the reserved prefix logical_audit.
#include "guc.hpp"

#include "pg.hpp"

namespace logical_audit {

int guc_max_workers = 8;
char *guc_database = nullptr;

void define_gucs() {
	// PostgreSQL refuses (FATAL) PGC_POSTMASTER settings defined after startup, and both only
	// matter to the launcher and shared memory, which exist only with shared_preload_libraries.
	if (!process_shared_preload_libraries_in_progress)
		return;
	DefineCustomIntVariable("logical_audit.max_workers", "Maximum number of subscription workers running at once.",
	                        "Each running subscription takes one status slot in shared memory.", &guc_max_workers, 8, 1,
	                        1024, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
	DefineCustomStringVariable("logical_audit.database", "Database in which the launcher looks for subscriptions.",
	                           "Create the extension in this database.", &guc_database, "postgres", PGC_POSTMASTER, 0,
	                           nullptr, nullptr, nullptr);
	MarkGUCPrefixReserved("logical_audit");
}

} // namespace logical_audit
