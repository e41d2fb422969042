// Recovery after an ERROR in the worker, in one place: each module that keeps state across a
// session's messages registers how to forget it when it creates that state; the worker's retry
// loop aborts the local transaction, then runs every registered cleanup, newest first. No caller
// needs to know another module's leftovers.
#pragma once

namespace logical_audit {

using Cleanup = void (*)(void *arg);

// Registers a cleanup to run after every ERROR of this process's sessions.
void on_error_cleanup(Cleanup cleanup, void *arg);

// Runs the registered cleanups, newest first (after the local transaction was aborted).
void run_error_cleanups();

} // namespace logical_audit
