// What DROP EXTENSION logical_audit does beyond dropping the extension's objects.
#pragma once

namespace logical_audit {

// Installs the object access hook that releases the subscriptions' workers, origins and spool
// files when the extension is dropped (from _PG_init).
void install_extension_drop_hook();

} // namespace logical_audit
