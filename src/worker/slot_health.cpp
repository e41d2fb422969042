// The upstream slot's health, read at session start and every kCheckMs while streaming; a lost
// slot stops the audit with a clear error (see slot_health.hpp).
#include "worker/slot_health.hpp"

#include <cstring>

#include "stream/connection.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

namespace {

// How often the slot's health is read while streaming.
constexpr long kCheckMs = 30000;

TimestampTz last_check = 0;

// Publishes a reading and raises the error of a lost (or missing) slot.
void judge(WorkerContext &w, const stream::SlotHealth &health, XLogRecPtr audited, XLogRecPtr upstream_end) {
	last_check = GetCurrentTimestamp();
	slot_set_upstream_slot(w.slot, health.wal_status, health.safe_wal_size);
	if (!health.found || strcmp(health.wal_status, "lost") != 0)
		return;
	w.slot_lost = true;
	ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
	                errmsg("replication slot \"%s\" was invalidated upstream: changes after %X/%X are lost",
	                       w.subscription->slot_name, LSN_FORMAT_ARGS(audited)),
	                errdetail("The upstream removed WAL the slot still needed (max_slot_wal_keep_size). The changes "
	                          "from %X/%X, the audited position, to %X/%X, the upstream's end of WAL then, can no "
	                          "longer be audited.",
	                          LSN_FORMAT_ARGS(audited), LSN_FORMAT_ARGS(upstream_end)),
	                errhint("The audit stops here. To audit from now on, record the gap, then drop the slot upstream "
	                        "and create the subscription again.")));
}

// Reads the slot's health on a plain connection of its own, closed whatever happens.
stream::SlotHealth read_on_own_connection(const Subscription *sub) {
	PGconn *conn = stream::connect(sub->conninfo, sub->name, false);
	stream::SlotHealth health{};
	PG_TRY();
	{ health = stream::slot_health(conn, sub->slot_name); }
	PG_FINALLY();
	{ stream::disconnect(conn); }
	PG_END_TRY();
	return health;
}

// The slot's health read on its own connection; a connection the upstream refuses is a WARNING and
// an unknown reading. Only called outside any transaction, where an ERROR may be caught.
stream::SlotHealth read_or_warn(const Subscription *sub) {
	MemoryContext caller = CurrentMemoryContext;
	stream::SlotHealth health{};
	PG_TRY();
	{ health = read_on_own_connection(sub); }
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		ErrorData *edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_CONNECTION_EXCEPTION || IsTransactionState())
			PG_RE_THROW();
		FlushErrorState();
		ereport(WARNING, (errcode(edata->sqlerrcode),
		                  errmsg("could not read the health of replication slot \"%s\" upstream", sub->slot_name),
		                  errdetail_internal("%s", edata->message)));
		FreeErrorData(edata);
		health = stream::SlotHealth{false, "", -1};
	}
	PG_END_TRY();
	return health;
}

} // namespace

void check_slot_at_start(WorkerContext &w, PGconn *replication_conn, XLogRecPtr audited, XLogRecPtr upstream_end) {
	judge(w, stream::slot_health(replication_conn, w.subscription->slot_name), audited, upstream_end);
}

void check_slot_if_due(WorkerContext &w, XLogRecPtr audited, XLogRecPtr upstream_end) {
	if (!TimestampDifferenceExceeds(last_check, GetCurrentTimestamp(), kCheckMs))
		return;
	last_check = GetCurrentTimestamp();
	judge(w, read_or_warn(w.subscription), audited, upstream_end);
}

} // namespace logical_audit::worker
