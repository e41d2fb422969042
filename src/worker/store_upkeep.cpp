// Store upkeep by the worker (see store_upkeep.hpp).
#include "worker/store_upkeep.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

namespace {

// How often a streaming worker keeps its store.
constexpr long kUpkeepMs = 3600 * 1000;

TimestampTz last_upkeep = 0;

// Raises the error of a database whose extension predates the store this module writes.
void check_store_version() {
	if (OidIsValid(get_relname_relid("change_data", get_namespace_oid("logical_audit", false))))
		return;
	ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
	                errmsg("the logical_audit extension in database \"%s\" is older than its module",
	                       get_database_name(MyDatabaseId)),
	                errdetail("This module records into the audit store of version 1.2."),
	                errhint("Run ALTER EXTENSION logical_audit UPDATE in that database; the audit resumes where it "
	                        "stopped.")));
}

} // namespace

void keep_store(WorkerContext &w, bool force) {
	TimestampTz now = GetCurrentTimestamp();
	if (!force && !TimestampDifferenceExceeds(last_upkeep, now, kUpkeepMs))
		return;
	Oid types[1] = {INT4OID};
	Datum values[1] = {Int32GetDatum(w.subscription->id)};
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	check_store_version();
	SPI_connect();
	int rc = SPI_execute_with_args("SELECT logical_audit.maintain_store($1)", 1, types, values, nullptr, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not keep the audit store: %s", SPI_result_code_string(rc));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	last_upkeep = now;
}

} // namespace logical_audit::worker
