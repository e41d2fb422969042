// The extension's module: PostgreSQL's magic block and load-time setup.
#include "guc.hpp"
#include "sql/extension_drop.hpp"
#include "worker/launcher.hpp"
#include "worker/shmem.hpp"

#include "pg.hpp"

extern "C" {
PG_MODULE_MAGIC;

PGDLLEXPORT void _PG_init(void);
}

// Defines the settings, watches for DROP EXTENSION and, when preloaded, shared memory and the launcher. Loaded later
// (by the SQL decoder, say), the module works without workers: create_subscription() then says why.
void _PG_init(void) {
	logical_audit::define_gucs();
	logical_audit::install_extension_drop_hook();
	if (!process_shared_preload_libraries_in_progress)
		return;
	logical_audit::worker::shmem_install_hooks();
	logical_audit::worker::register_launcher();
}
