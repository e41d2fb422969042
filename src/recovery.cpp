// The registry of cleanups run after an ERROR (see recovery.hpp).
#include "recovery.hpp"

#include "pg.hpp"

namespace logical_audit {

namespace {

// A worker registers a handful; more is a programming error.
constexpr int kMaxCleanups = 16;

struct Registered {
	Cleanup cleanup;
	void *arg;
};

Registered cleanups[kMaxCleanups];
int ncleanups = 0;

} // namespace

void on_error_cleanup(Cleanup cleanup, void *arg) {
	if (ncleanups == kMaxCleanups)
		elog(ERROR, "too many error cleanups registered");
	cleanups[ncleanups++] = {cleanup, arg};
}

void run_error_cleanups() {
	for (int i = ncleanups - 1; i >= 0; i--)
		cleanups[i].cleanup(cleanups[i].arg);
}

} // namespace logical_audit
