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

} // namespace

void check_slot_at_start(WorkerContext &w, PGconn *replication_conn, XLogRecPtr audited, XLogRecPtr upstream_end) {
	judge(w, stream::slot_health(replication_conn, w.subscription->slot_name), audited, upstream_end);
}

long check_slot_if_due(WorkerContext &w, XLogRecPtr audited, XLogRecPtr upstream_end) {
	TimestampTz due = TimestampTzPlusMilliseconds(last_check, kCheckMs);
	TimestampTz now = GetCurrentTimestamp();
	if (now < due)
		return static_cast<long>((due - now) / 1000);
	judge(w, read_on_own_connection(w.subscription), audited, upstream_end);
	return kCheckMs;
}

} // namespace logical_audit::worker
