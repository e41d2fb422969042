// The launcher: wakes every few seconds, or when create_subscription() or start() wakes it, reads
// the enabled subscriptions of logical_audit.database and starts a worker for each one that has
// none. It never stops workers: stop() and drop_subscription() do that themselves.
#include "worker/launcher.hpp"

#include <cstring>

#include "guc.hpp"
#include "worker/shmem.hpp"
#include "worker/worker.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

namespace {

// Between two rounds; also how long a crashed or failed worker waits before it is started again.
constexpr long kNapMs = 5000;

// A worker this launcher registered; it claims its status slot only once it runs, so until then
// the handle is what prevents starting it twice.
struct StartedWorker {
	int subscription_id;
	BackgroundWorkerHandle *handle;
};

// An enabled subscription, as read in one round.
struct EnabledSubscription {
	int id;
	char *name;
};

StartedWorker *started = nullptr; // in TopMemoryContext
int nstarted = 0;
int started_capacity = 0;

// Forgets the workers that have exited (the postmaster told us through bgw_notify_pid).
void forget_stopped_workers() {
	for (int i = 0; i < nstarted;) {
		pid_t pid;
		if (GetBackgroundWorkerPid(started[i].handle, &pid) == BGWH_STOPPED) {
			pfree(started[i].handle);
			started[i] = started[--nstarted];
		} else
			i++;
	}
}

// Whether a worker serves the subscription, or one registered by this launcher is on its way.
bool has_worker(int subscription_id) {
	for (int i = 0; i < nstarted; i++)
		if (started[i].subscription_id == subscription_id)
			return true;
	return worker_running(subscription_id);
}

// Remembers a registered worker's handle.
void track_worker(int subscription_id, BackgroundWorkerHandle *handle) {
	if (nstarted == started_capacity) {
		int capacity = Max(8, started_capacity * 2);
		size_t bytes = sizeof(StartedWorker) * capacity;
		started = static_cast<StartedWorker *>(started == nullptr ? MemoryContextAlloc(TopMemoryContext, bytes)
		                                                          : repalloc(started, bytes));
		started_capacity = capacity;
	}
	started[nstarted++] = StartedWorker{subscription_id, handle};
}

// Asks the postmaster to start the worker of one subscription; false when no worker slot is free.
bool start_worker(const EnabledSubscription &sub) {
	BackgroundWorker bgw;
	memset(&bgw, 0, sizeof bgw);
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = BGW_NEVER_RESTART; // the launcher restarts it, and only while it is enabled
	strlcpy(bgw.bgw_library_name, "logical_audit", sizeof bgw.bgw_library_name);
	strlcpy(bgw.bgw_function_name, kWorkerFunction, sizeof bgw.bgw_function_name);
	snprintf(bgw.bgw_name, sizeof bgw.bgw_name, "logical_audit worker for subscription %s", sub.name);
	strlcpy(bgw.bgw_type, "logical_audit worker", sizeof bgw.bgw_type);
	bgw.bgw_main_arg = Int32GetDatum(sub.id);
	memcpy(bgw.bgw_extra, &sub.id, sizeof sub.id);
	bgw.bgw_notify_pid = MyProcPid;
	BackgroundWorkerHandle *handle;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	bool registered = RegisterDynamicBackgroundWorker(&bgw, &handle);
	MemoryContextSwitchTo(old);
	if (!registered) {
		ereport(WARNING, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
		                  errmsg("could not start the worker of subscription \"%s\"", sub.name),
		                  errdetail("All background worker slots are in use."),
		                  errhint("Raise max_worker_processes and restart the server. The launcher retries every "
		                          "%ld seconds.",
		                          kNapMs / 1000)));
		return false;
	}
	track_worker(sub.id, handle);
	return true;
}

// Copies the rows of the last SPI query (id, name) into memory of the round.
EnabledSubscription *copy_enabled(MemoryContext round, int *count) {
	auto *subs = static_cast<EnabledSubscription *>(
	    MemoryContextAlloc(round, sizeof(EnabledSubscription) * Max(SPI_processed, 1)));
	for (uint64 i = 0; i < SPI_processed; i++) {
		bool isnull;
		HeapTuple row = SPI_tuptable->vals[i];
		subs[i].id = DatumGetInt32(SPI_getbinval(row, SPI_tuptable->tupdesc, 1, &isnull));
		subs[i].name = MemoryContextStrdup(round, SPI_getvalue(row, SPI_tuptable->tupdesc, 2));
	}
	*count = static_cast<int>(SPI_processed);
	return subs;
}

// Reads the enabled subscriptions, none while the extension does not exist in this database.
EnabledSubscription *read_enabled(MemoryContext round, int *count) {
	EnabledSubscription *subs = nullptr;
	*count = 0;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "reading enabled subscriptions");
	SPI_connect();
	int rc = SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'logical_audit'", true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up extension logical_audit: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1) {
		rc = SPI_execute("SELECT id, name FROM logical_audit.subscription WHERE enabled ORDER BY id", true, 0);
		if (rc != SPI_OK_SELECT)
			elog(ERROR, "could not read subscriptions: %s", SPI_result_code_string(rc));
		subs = copy_enabled(round, count);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, nullptr);
	return subs;
}

// The enabled subscriptions, none when the extension was dropped while they were read (DROP
// EXTENSION commits while the read waits for its lock, then the table is gone).
EnabledSubscription *read_enabled_unless_dropped(MemoryContext round, int *count) {
	MemoryContext caller = CurrentMemoryContext;
	EnabledSubscription *volatile subs = nullptr;
	PG_TRY();
	{ subs = read_enabled(round, count); }
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		ErrorData *edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_UNDEFINED_TABLE)
			PG_RE_THROW();
		FlushErrorState();
		AbortCurrentTransaction();
		pgstat_report_activity(STATE_IDLE, nullptr);
		FreeErrorData(edata);
		*count = 0;
	}
	PG_END_TRY();
	return subs;
}

// One round: starts a worker for every enabled subscription that has none.
void launch_round(MemoryContext round) {
	forget_stopped_workers();
	int count;
	EnabledSubscription *subs = read_enabled_unless_dropped(round, &count);
	for (int i = 0; i < count; i++) {
		if (has_worker(subs[i].id))
			continue;
		if (!start_worker(subs[i]))
			break; // the others would find no free worker slot either
	}
}

} // namespace

void register_launcher() {
	BackgroundWorker bgw;
	memset(&bgw, 0, sizeof bgw);
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	bgw.bgw_restart_time = kNapMs / 1000;
	strlcpy(bgw.bgw_library_name, "logical_audit", sizeof bgw.bgw_library_name);
	strlcpy(bgw.bgw_function_name, "logical_audit_launcher_main", sizeof bgw.bgw_function_name);
	strlcpy(bgw.bgw_name, "logical_audit launcher", sizeof bgw.bgw_name);
	strlcpy(bgw.bgw_type, "logical_audit launcher", sizeof bgw.bgw_type);
	RegisterBackgroundWorker(&bgw);
}

} // namespace logical_audit::worker

void logical_audit_launcher_main(Datum) {
	namespace w = logical_audit::worker;
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(logical_audit::guc_database, nullptr, 0);
	w::publish_launcher();
	MemoryContext round = AllocSetContextCreate(TopMemoryContext, "logical_audit launcher", ALLOCSET_DEFAULT_SIZES);
	for (;;) {
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending) {
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		w::launch_round(round);
		MemoryContextReset(round);
		(void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, w::kNapMs, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
