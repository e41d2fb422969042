// The background worker of one subscription: loads it, takes its status slot and replication
// origin, then runs replication sessions, retrying after errors with exponential backoff (1 s to
// 60 s) while status shows waiting_retry and the error. SIGTERM (stop) ends it at once.
#include "guc.hpp"
#include "recovery.hpp"
#include "worker/session.hpp"
#include "worker/worker.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

namespace {

constexpr long kFirstBackoffMs = 1000;
constexpr long kMaxBackoffMs = 60000;

WorkerSlot *my_slot;

// Reads the subscription row. FOR SHARE waits for a concurrent stop() or drop_subscription() to
// commit, so a worker started in that window sees the row as it ends up: disabled or gone.
Subscription *load_subscription(int id) {
	Subscription *sub = nullptr;
	Oid types[1] = {INT4OID};
	Datum values[1] = {Int32GetDatum(id)};
	SPI_connect();
	int rc = SPI_execute_with_args("SELECT name, conninfo, publications, slot_name::text, options "
	                               "FROM logical_audit.subscription WHERE id = $1 AND enabled FOR SHARE",
	                               1, types, values, nullptr, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read subscription %d: %s", id, SPI_result_code_string(rc));
	if (SPI_processed == 1) {
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
		HeapTuple row = SPI_tuptable->vals[0];
		TupleDesc desc = SPI_tuptable->tupdesc;
		bool isnull;
		sub = static_cast<Subscription *>(palloc0(sizeof(Subscription)));
		sub->id = id;
		sub->name = SPI_getvalue(row, desc, 1);
		sub->conninfo = SPI_getvalue(row, desc, 2);
		sub->publications = DatumGetArrayTypePCopy(SPI_getbinval(row, desc, 3, &isnull));
		sub->slot_name = SPI_getvalue(row, desc, 4);
		sub->options = options_from_jsonb(DatumGetJsonbP(SPI_getbinval(row, desc, 5, &isnull)));
		MemoryContextSwitchTo(old);
	}
	SPI_finish();
	return sub;
}

// Reads the subscription and claims its status slot in one transaction, nullptr when the
// subscription is gone or disabled. Claiming before the row lock is released means a concurrent
// stop() waits for the lock, then finds the slot and signals this worker.
Subscription *read_subscription_and_claim(int id) {
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	Subscription *sub = load_subscription(id);
	if (sub != nullptr)
		my_slot = slot_claim(id, sub->name, sub->slot_name);
	PopActiveSnapshot();
	CommitTransactionCommand();
	return sub;
}

// Sets up the replication origin session of the subscription (creating the origin if needed), so
// that every local commit records the upstream position it covers.
void setup_origin(int id) {
	char name[NAMEDATALEN];
	origin_name(id, name);
	StartTransactionCommand();
	RepOriginId origin = replorigin_by_name(name, true);
	if (origin == InvalidRepOriginId)
		origin = replorigin_create(name);
	CommitTransactionCommand();
#if PG_VERSION_NUM >= 160000
	replorigin_session_setup(origin, 0);
#else
	replorigin_session_setup(origin);
#endif
	replorigin_session_origin = origin;
}

// Frees the status slot when the process exits.
void release_slot(int, Datum) {
	slot_release(my_slot);
	my_slot = nullptr;
}

// Builds the status text of an error: message, detail and where it happened.
void record_error(WorkerSlot *slot, const ErrorData *edata) {
	char text[kMaxErrorLength];
	snprintf(text, sizeof text, "%s%s%s%s%s", edata->message, edata->detail ? " DETAIL: " : "",
	         edata->detail ? edata->detail : "", edata->context ? " CONTEXT: " : "",
	         edata->context ? edata->context : "");
	slot_set_error(slot, text);
}

// Runs one session; on ERROR logs it, aborts the local transaction, runs the error cleanups every
// module registered (recovery.hpp) and records the error in status.
void run_guarded(WorkerContext &w) {
	MemoryContext worker_context = CurrentMemoryContext;
	PG_TRY();
	{ run_session(w); }
	PG_CATCH();
	{
		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(worker_context);
		ErrorData *edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		run_error_cleanups();
		record_error(w.slot, edata);
		FreeErrorData(edata);
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
}

// Waits before the next attempt (in state error, the longest wait, when the slot is lost); the
// latch (set by SIGTERM or start()) cuts the wait short.
void wait_retry(WorkerSlot *slot, long backoff_ms, bool slot_lost) {
	slot_set_state(slot, slot_lost ? WorkerState::Error : WorkerState::WaitingRetry);
	if (slot_lost)
		backoff_ms = kMaxBackoffMs;
	(void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, backoff_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

// Creates what the sessions share: relations, writer, spool and the per-message memory contexts.
WorkerContext make_context(Subscription *sub, WorkerSlot *slot) {
	WorkerContext w{};
	w.subscription = sub;
	w.slot = slot;
	w.relations = audit::relations_create(
	    AllocSetContextCreate(TopMemoryContext, "logical_audit relations", ALLOCSET_DEFAULT_SIZES));
	w.writer = audit::writer_create(
	    sub->id, AllocSetContextCreate(TopMemoryContext, "logical_audit writer", ALLOCSET_DEFAULT_SIZES));
	w.spool = audit::spool_create(
	    sub->id, AllocSetContextCreate(TopMemoryContext, "logical_audit spool", ALLOCSET_DEFAULT_SIZES));
	w.message_context = AllocSetContextCreate(TopMemoryContext, "logical_audit message", ALLOCSET_DEFAULT_SIZES);
	w.replay_context = AllocSetContextCreate(TopMemoryContext, "logical_audit replay", ALLOCSET_DEFAULT_SIZES);
	for (MemoryContext context : {w.message_context, w.replay_context})
		on_error_cleanup([](void *c) { MemoryContextReset(static_cast<MemoryContext>(c)); }, context);
	on_error_cleanup([](void *) { session_cleanup(); }, nullptr);
	return w;
}

// Runs sessions forever, backing off after errors that made no progress.
void retry_loop(WorkerContext &w) {
	long backoff_ms = kFirstBackoffMs;
	for (;;) {
		w.made_progress = false;
		w.slot_lost = false;
		run_guarded(w);
		if (w.made_progress)
			backoff_ms = kFirstBackoffMs;
		wait_retry(w.slot, backoff_ms, w.slot_lost);
		backoff_ms = Min(backoff_ms * 2, kMaxBackoffMs);
	}
}

} // namespace

void origin_name(int subscription_id, char (&name)[NAMEDATALEN]) {
	snprintf(name, sizeof name, "logical_audit_%d", subscription_id);
}

void prevent_in_transaction_block(const char *what) {
	if (IsTransactionBlock())
		ereport(ERROR,
		        (errcode(ERRCODE_ACTIVE_SQL_TRANSACTION), errmsg("%s cannot run inside a transaction block", what),
		         errdetail("Dropping a subscription's replication origin cannot be rolled back."),
		         errhint("Run it on its own, outside BEGIN ... COMMIT.")));
}

} // namespace logical_audit::worker

void logical_audit_worker_main(Datum arg) {
	namespace w = logical_audit::worker;
	int id = DatumGetInt32(arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(logical_audit::guc_database, nullptr, 0);
	// Values nested in arrays, composites and ranges are rendered through to_jsonb: in UTC.
	SetConfigOption("TimeZone", "UTC", PGC_SUSET, PGC_S_OVERRIDE);
	// Local commits do not wait for their WAL flush: the session reports an upstream position as
	// flushed only once the local WAL is flushed past the commit that covers it.
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	before_shmem_exit(w::release_slot, (Datum)0);
	w::Subscription *sub = w::read_subscription_and_claim(id);
	if (sub == nullptr)
		proc_exit(0); // dropped or stopped while the worker was starting
	if (w::my_slot == nullptr) {
		ereport(WARNING, (errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
		                  errmsg("no status slot for subscription \"%s\"", sub->name),
		                  errdetail("Another worker serves it, or all logical_audit.max_workers slots are taken."),
		                  errhint("Raise logical_audit.max_workers and restart the server.")));
		proc_exit(0);
	}
	w::setup_origin(id);
	w::WorkerContext context = w::make_context(sub, w::my_slot);
	w::retry_loop(context);
}
