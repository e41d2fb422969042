// Store upkeep by the worker (see store_upkeep.hpp).
#include "worker/store_upkeep.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

namespace {

// How often a streaming worker keeps its store.
constexpr long kUpkeepMs = 3600 * 1000;

TimestampTz last_upkeep = 0;

// The extension version whose store this module records into.
constexpr const char *kStoreVersion = "1.3";

// Raises the error of a database whose extension is at another version than the store this
// module records into (in an open SPI connection).
void check_store_version() {
	int rc = SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'logical_audit'", true, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the version of the logical_audit extension: %s", SPI_result_code_string(rc));
	const char *version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	int order = strverscmp(version, kStoreVersion);
	if (order == 0)
		return;
	ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
	                errmsg("the logical_audit extension in database \"%s\" is %s than its module",
	                       get_database_name(MyDatabaseId), order < 0 ? "older" : "newer"),
	                errdetail("The extension is at version %s; this module records into the audit store of version %s.",
	                          version, kStoreVersion),
	                order < 0 ? errhint("Run ALTER EXTENSION logical_audit UPDATE in that database; the audit resumes "
	                                    "where it stopped.")
	                          : errhint("Install the module of version %s or later.", version)));
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
	SPI_connect();
	check_store_version();
	int rc = SPI_execute_with_args("SELECT logical_audit.maintain_store($1)", 1, types, values, nullptr, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not keep the audit store: %s", SPI_result_code_string(rc));
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	last_upkeep = now;
}

} // namespace logical_audit::worker
