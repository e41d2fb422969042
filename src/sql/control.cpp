// The SQL functions that control subscriptions: create_subscription, start, stop,
// drop_subscription, and the worker status behind the logical_audit.status view.
//
// They are SECURITY DEFINER (search_path pinned in SQL) and revoked from PUBLIC: a role granted
// EXECUTE manages subscriptions without reading the table that holds conninfos. Everything alive
// across calls that may raise an ERROR is plain data, palloc'd memory or a PGconn pointer.
#include <csignal>
#include <cstring>

#include "guc.hpp"
#include "options.hpp"
#include "audit/spool.hpp"
#include "stream/connection.hpp"
#include "worker/shmem.hpp"
#include "worker/worker.hpp"

#include "pg.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(logical_audit_create_subscription);
PG_FUNCTION_INFO_V1(logical_audit_start);
PG_FUNCTION_INFO_V1(logical_audit_stop);
PG_FUNCTION_INFO_V1(logical_audit_drop_subscription);
PG_FUNCTION_INFO_V1(logical_audit_worker_status);
}

namespace logical_audit {

namespace {

// The arguments of create_subscription, checked.
struct NewSubscription {
	char *name;
	char *conninfo;
	ArrayType *publications;
	char *slot_name;
	bool create_slot;
	bool enabled;
	Jsonb *options_json;
	Options options;
};

bool wake_at_commit = false;
bool xact_callback_registered = false;

// Wakes the launcher (it only sees committed rows) once a transaction that enabled a subscription
// commits.
void act_on_commit(XactEvent event, void *) {
	if (event == XACT_EVENT_COMMIT && wake_at_commit)
		worker::wake_launcher();
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
	    event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		wake_at_commit = false;
}

// Asks for the launcher to be woken when this transaction commits.
void wake_launcher_at_commit() {
	if (!xact_callback_registered)
		RegisterXactCallback(act_on_commit, nullptr);
	xact_callback_registered = true;
	wake_at_commit = true;
}

// Subscriptions need the workers, which exist only when the library is preloaded.
void require_preloaded() {
	if (worker::shmem_ready())
		return;
	ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
	                errmsg("logical_audit is not loaded by shared_preload_libraries"),
	                errdetail("Subscriptions run in background workers that the library starts with the server."),
	                errhint("Add logical_audit to shared_preload_libraries and restart the server.")));
}

// Warns that the launcher does not look at this database's subscriptions.
void warn_if_not_launcher_database(const char *name) {
	char *database = get_database_name(MyDatabaseId);
	if (guc_database == nullptr || database == nullptr || strcmp(database, guc_database) == 0)
		return;
	ereport(WARNING, (errcode(ERRCODE_WARNING), errmsg("the worker of subscription \"%s\" will not start", name),
	                  errdetail("The launcher starts workers only for subscriptions of database \"%s\", set by "
	                            "logical_audit.database.",
	                            guc_database),
	                  errhint("Create the subscription in that database, or set logical_audit.database to this "
	                          "database and restart the server.")));
}

// Rejects a NULL argument.
void require_argument(FunctionCallInfo fcinfo, int argno, const char *what) {
	if (PG_ARGISNULL(argno))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("%s must not be null", what)));
}

// A text argument that must be given and not empty.
char *required_text(FunctionCallInfo fcinfo, int argno, const char *what) {
	require_argument(fcinfo, argno, what);
	char *value = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	if (value[0] == '\0')
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s must not be empty", what)));
	return value;
}

// A subscription name: given, not empty, and at most as long as an identifier, for it names the
// worker, the default slot and the upstream session (application_name), all limited to that.
char *subscription_name(FunctionCallInfo fcinfo) {
	char *name = required_text(fcinfo, 0, "subscription name");
	size_t len = strlen(name);
	if (len >= NAMEDATALEN)
		ereport(ERROR, (errcode(ERRCODE_NAME_TOO_LONG),
		                errmsg("subscription name \"%.*s...\" is too long", pg_mbcliplen(name, len, 20), name),
		                errdetail("The name has %zu bytes; subscription names have at most %d, as identifiers do.", len,
		                          NAMEDATALEN - 1)));
	return name;
}

// A boolean argument that must be given.
bool required_bool(FunctionCallInfo fcinfo, int argno, const char *what) {
	require_argument(fcinfo, argno, what);
	return PG_GETARG_BOOL(argno);
}

// Whether a name is a valid replication slot name, as the upstream will check it.
bool valid_slot_name(const char *name) {
	size_t len = strlen(name);
	if (len == 0 || len >= NAMEDATALEN)
		return false;
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
			return false;
	return true;
}

// The slot name given, or logical_audit_<name>; either must be a valid slot name.
char *choose_slot_name(FunctionCallInfo fcinfo, const char *name) {
	constexpr const char *kRule =
	    "Replication slot names have at most 63 bytes of lower case letters, digits and underscores.";
	if (!PG_ARGISNULL(3)) {
		char *slot_name = pstrdup(NameStr(*PG_GETARG_NAME(3)));
		if (!valid_slot_name(slot_name))
			ereport(ERROR, (errcode(ERRCODE_INVALID_NAME), errmsg("invalid replication slot name \"%s\"", slot_name),
			                errdetail("%s", kRule)));
		return slot_name;
	}
	char *slot_name = psprintf("logical_audit_%s", name);
	if (!valid_slot_name(slot_name))
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_NAME), errmsg("default replication slot name \"%s\" is not valid", slot_name),
		         errdetail("%s", kRule), errhint("Pass a valid slot_name.")));
	return slot_name;
}

// Checks the publication names: a non-empty list of distinct, non-empty names.
void check_publications(ArrayType *publications) {
	if (ARR_NDIM(publications) > 1)
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("publications must be a one-dimensional array")));
	Datum *names;
	bool *nulls;
	int count;
	deconstruct_array(publications, TEXTOID, -1, false, TYPALIGN_INT, &names, &nulls, &count);
	if (count == 0)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("publications must not be empty")));
	for (int i = 0; i < count; i++) {
		if (nulls[i])
			ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("publication names must not be null")));
		char *name = TextDatumGetCString(names[i]);
		if (name[0] == '\0')
			ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("publication names must not be empty")));
		for (int j = 0; j < i; j++)
			if (strcmp(name, TextDatumGetCString(names[j])) == 0)
				ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT),
				                errmsg("publication \"%s\" is listed more than once", name)));
	}
}

// The baseline snapshot is copied as of the slot's creation, so the worker must create the slot.
void check_snapshot_option(const NewSubscription &sub) {
	if (sub.options.snapshot && !sub.create_slot)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("option \"snapshot\" requires create_slot"),
		                errdetail("The existing rows are copied as of the moment the slot is created."),
		                errhint("Pass create_slot => true, with a slot name that does not exist upstream.")));
}

// Reads and checks the arguments of create_subscription.
NewSubscription parse_arguments(FunctionCallInfo fcinfo) {
	NewSubscription sub;
	sub.name = subscription_name(fcinfo);
	sub.conninfo = required_text(fcinfo, 1, "conninfo");
	require_argument(fcinfo, 2, "publications");
	sub.publications = PG_GETARG_ARRAYTYPE_P(2);
	check_publications(sub.publications);
	sub.slot_name = choose_slot_name(fcinfo, sub.name);
	sub.create_slot = required_bool(fcinfo, 4, "create_slot");
	sub.enabled = required_bool(fcinfo, 5, "enabled");
	require_argument(fcinfo, 6, "options");
	sub.options_json = PG_GETARG_JSONB_P(6);
	sub.options = options_from_jsonb(sub.options_json);
	check_snapshot_option(sub);
	return sub;
}

// Runs one SPI statement with parameters that are never NULL; fails on an unexpected result.
void spi_run(const char *sql, int nargs, Oid *types, Datum *values, bool read_only, int expected) {
	int rc = SPI_execute_with_args(sql, nargs, types, values, nullptr, read_only, 0);
	if (rc != expected)
		elog(ERROR, "could not run \"%s\": %s", sql, SPI_result_code_string(rc));
}

// Serializes subscription creation and rejects a name in use. The lock assigns no transaction
// id, so an upstream that is this very server can still build the new slot's snapshot.
void lock_and_check_unique(const char *name) {
	spi_run("LOCK TABLE logical_audit.subscription IN SHARE UPDATE EXCLUSIVE MODE", 0, nullptr, nullptr, false,
	        SPI_OK_UTILITY);
	Oid types[1] = {TEXTOID};
	Datum values[1] = {CStringGetTextDatum(name)};
	spi_run("SELECT 1 FROM logical_audit.subscription WHERE name = $1", 1, types, values, true, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT), errmsg("subscription \"%s\" already exists", name)));
}

// Whether a conninfo sets a non-empty password.
bool conninfo_has_password(const char *conninfo) {
	char *error = nullptr;
	PQconninfoOption *options = PQconninfoParse(conninfo, &error);
	if (options == nullptr) {
		PQfreemem(error);
		return false;
	}
	bool found = false;
	for (PQconninfoOption *o = options; o->keyword != nullptr; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val != nullptr && o->val[0] != '\0')
			found = true;
	PQconninfoFree(options);
	return found;
}

// A non-superuser must not reach servers that trust this server's OS user or its password file:
// the conninfo must hold a password and the upstream must have asked for it.
void require_password(PGconn *conn, const char *conninfo) {
	// GetOuterUserId: the caller (after SET ROLE), not the owner this SECURITY DEFINER runs as.
	if (superuser_arg(GetOuterUserId()))
		return;
	if (conninfo_has_password(conninfo) && PQconnectionUsedPassword(conn))
		return;
	ereport(ERROR, (errcode(ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED), errmsg("password is required"),
	                errdetail("Non-superusers must give a password in the connection string, and the upstream must "
	                          "ask for it.")));
}

// Refuses an existing slot for a baseline snapshot: the copy must start where a new slot does.
void require_new_slot(const NewSubscription &sub) {
	ereport(ERROR, (errcode(ERRCODE_DUPLICATE_OBJECT),
	                errmsg("replication slot \"%s\" already exists upstream", sub.slot_name),
	                errdetail("Option \"snapshot\" copies the existing rows as of the creation of the slot."),
	                errhint("Pass a slot_name that does not exist upstream, or drop that slot upstream.")));
}

// Checks the upstream: it answers IDENTIFY_SYSTEM, has the publications and a pgoutput slot,
// which it creates when asked. With a baseline snapshot the slot must not exist: the worker
// creates it, as the snapshot it exports lasts only while that connection stays idle. Returns
// whether it created the slot.
bool prepare_upstream(PGconn *conn, const NewSubscription &sub) {
	require_password(conn, sub.conninfo);
	(void)stream::identify_system(conn);
	char *missing = stream::missing_publications(conn, sub.publications);
	if (missing != nullptr)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("publications missing upstream: %s", missing),
		                errhint("Create them upstream with CREATE PUBLICATION, or correct the publications.")));
	char plugin[NAMEDATALEN] = "";
	if (stream::slot_exists(conn, sub.slot_name, plugin, sizeof plugin)) {
		if (sub.options.snapshot)
			require_new_slot(sub);
		if (strcmp(plugin, "pgoutput") != 0)
			ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
			                errmsg("replication slot \"%s\" upstream uses plugin \"%s\"", sub.slot_name, plugin),
			                errdetail("The audit reads slots of the pgoutput plugin."),
			                errhint("Pass another slot_name, or drop that slot upstream.")));
		return false;
	}
	if (!sub.create_slot)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
		                errmsg("replication slot \"%s\" does not exist upstream", sub.slot_name),
		                errhint("Pass create_slot => true to create it.")));
	if (sub.options.snapshot)
		return false;
	(void)stream::create_slot(conn, sub.slot_name, {sub.options.two_phase, /* export_snapshot */ false});
	return true;
}

// An int column of the first row of the last SPI result.
int spi_int(int column) {
	bool isnull;
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column, &isnull));
}

// A new subscription id that no replication origin or spool file uses yet: origins are per server
// while ids are per database, and what a dropped installation of the extension left behind (or a
// subscription of another database) must never be taken over.
int new_subscription_id() {
	for (;;) {
		spi_run("SELECT pg_catalog.nextval(pg_catalog.pg_get_serial_sequence('logical_audit.subscription', 'id'))::int",
		        0, nullptr, nullptr, false, SPI_OK_SELECT);
		int id = spi_int(1);
		char origin[NAMEDATALEN];
		worker::origin_name(id, origin);
		if (replorigin_by_name(origin, true) == InvalidRepOriginId && !audit::spool_files_exist(id))
			return id;
	}
}

// Inserts the subscription row under a new id, creates its replication origin (so its progress
// exists from the start) and returns the id.
int insert_subscription(const NewSubscription &sub) {
	int id = new_subscription_id();
	Oid types[7] = {INT4OID, TEXTOID, TEXTOID, TEXTARRAYOID, NAMEOID, BOOLOID, JSONBOID};
	NameData slot_name;
	namestrcpy(&slot_name, sub.slot_name);
	Datum values[7] = {Int32GetDatum(id),
	                   CStringGetTextDatum(sub.name),
	                   CStringGetTextDatum(sub.conninfo),
	                   PointerGetDatum(sub.publications),
	                   NameGetDatum(&slot_name),
	                   BoolGetDatum(sub.enabled),
	                   JsonbPGetDatum(sub.options_json)};
	spi_run("INSERT INTO logical_audit.subscription (id, name, conninfo, publications, slot_name, enabled, options) "
	        "OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7)",
	        7, types, values, false, SPI_OK_INSERT);
	char origin[NAMEDATALEN];
	worker::origin_name(id, origin);
	(void)replorigin_create(origin);
	return id;
}

// After a failure, drops the slot this call created upstream, warning when that fails too.
void drop_created_slot(PGconn *conn, const char *slot_name, MemoryContext context) {
	PG_TRY();
	{ stream::drop_slot(conn, slot_name, true); }
	PG_CATCH();
	{
		MemoryContextSwitchTo(context);
		ErrorData *edata = CopyErrorData();
		FlushErrorState();
		ereport(WARNING, (errcode(edata->sqlerrcode),
		                  errmsg("could not drop replication slot \"%s\" created upstream", slot_name),
		                  errdetail_internal("%s", edata->message),
		                  errhint("Drop it upstream with pg_drop_replication_slot().")));
	}
	PG_END_TRY();
}

// Error cleanup of create_subscription: drops the slot it created, closes the connection and
// raises the error again.
[[noreturn]] void undo_upstream(PGconn *conn, const char *slot_name, bool created, MemoryContext context) {
	if (!created) {
		stream::disconnect(conn);
		PG_RE_THROW();
	}
	MemoryContextSwitchTo(context);
	ErrorData *edata = CopyErrorData();
	FlushErrorState();
	drop_created_slot(conn, slot_name, context);
	stream::disconnect(conn);
	ReThrowError(edata);
}

// Runs an UPDATE or DELETE ... WHERE name = $1 RETURNING id, ...: the subscription must exist.
void modify_subscription(const char *sql, const char *name, int expected) {
	Oid types[1] = {TEXTOID};
	Datum values[1] = {CStringGetTextDatum(name)};
	spi_run(sql, 1, types, values, false, expected);
	if (SPI_processed == 0)
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("subscription \"%s\" does not exist", name)));
}

// Connects to the upstream and drops a slot there, if it exists.
void drop_slot_upstream(const char *conninfo, const char *slot_name) {
	PGconn *conn = stream::connect(conninfo, "logical_audit", true);
	PG_TRY();
	{ stream::drop_slot(conn, slot_name, true); }
	PG_FINALLY();
	{ stream::disconnect(conn); }
	PG_END_TRY();
}

// Drops the upstream slot of a dropped subscription; an unreachable upstream gets a hint.
void drop_subscription_slot(const char *conninfo, const char *slot_name) {
	MemoryContext context = CurrentMemoryContext;
	PG_TRY();
	{ drop_slot_upstream(conninfo, slot_name); }
	PG_CATCH();
	{
		MemoryContextSwitchTo(context);
		ErrorData *edata = CopyErrorData();
		FlushErrorState();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) == ERRCODE_CONNECTION_EXCEPTION && edata->hint == nullptr)
			edata->hint = pstrdup("To drop the subscription without its upstream slot, pass drop_slot => false, "
			                      "then drop the slot upstream with pg_drop_replication_slot().");
		ReThrowError(edata);
	}
	PG_END_TRY();
}

// An LSN column value: NULL until known.
void put_lsn(Datum *values, bool *nulls, int column, XLogRecPtr lsn) {
	values[column] = LSNGetDatum(lsn);
	nulls[column] = lsn == InvalidXLogRecPtr;
}

// A timestamp column value: NULL until known.
void put_time(Datum *values, bool *nulls, int column, TimestampTz time) {
	values[column] = TimestampTzGetDatum(time);
	nulls[column] = time == 0;
}

// The last error as text, cut at a character boundary (the worker truncates by bytes).
void put_error(Datum *values, bool *nulls, int column, worker::WorkerSlot &slot) {
	slot.last_error[worker::kMaxErrorLength - 1] = '\0';
	int len = static_cast<int>(strlen(slot.last_error));
	nulls[column] = len == 0;
	if (len > 0)
		values[column] =
		    PointerGetDatum(cstring_to_text_with_len(slot.last_error, pg_mbcliplen(slot.last_error, len, len)));
}

// Adds one worker's row to the status result. The function's SQL declaration may be an older
// version's, with fewer columns (before ALTER EXTENSION UPDATE): later columns are left out.
void put_slot(ReturnSetInfo *rsinfo, worker::WorkerSlot &slot) {
	constexpr int kColumns = 15;
	Datum values[kColumns];
	bool nulls[kColumns] = {};
	values[0] = Int32GetDatum(slot.subscription_id);
	values[1] = Int32GetDatum(slot.pid);
	values[2] = CStringGetTextDatum(worker::state_name(slot.state));
	put_lsn(values, nulls, 3, slot.received_lsn);
	put_lsn(values, nulls, 4, slot.flushed_lsn);
	put_lsn(values, nulls, 5, slot.upstream_lsn);
	put_time(values, nulls, 6, slot.last_msg_send_time);
	put_time(values, nulls, 7, slot.last_msg_receipt_time);
	put_time(values, nulls, 8, slot.last_commit_time);
	values[9] = Int64GetDatum(slot.transactions);
	values[10] = Int64GetDatum(slot.changes);
	put_error(values, nulls, 11, slot);
	put_time(values, nulls, 12, slot.last_error_time);
	slot.upstream_slot_wal_status[sizeof slot.upstream_slot_wal_status - 1] = '\0';
	values[13] = CStringGetTextDatum(slot.upstream_slot_wal_status);
	nulls[13] = slot.upstream_slot_wal_status[0] == '\0';
	values[14] = Int64GetDatum(slot.upstream_slot_safe_wal_size);
	nulls[14] = slot.upstream_slot_safe_wal_size < 0;
	if (rsinfo->setDesc->natts > kColumns)
		elog(ERROR, "logical_audit.worker_status() declares %d columns, more than %d", rsinfo->setDesc->natts,
		     kColumns);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

} // namespace

} // namespace logical_audit

namespace la = logical_audit;

// SQL: logical_audit.create_subscription(name, conninfo, publications, slot_name, create_slot,
// enabled, options) RETURNS void. Checks everything, upstream included, before inserting the row.
extern "C" Datum logical_audit_create_subscription(PG_FUNCTION_ARGS) {
	la::require_preloaded();
	la::NewSubscription sub = la::parse_arguments(fcinfo);
	MemoryContext context = CurrentMemoryContext;
	SPI_connect();
	la::lock_and_check_unique(sub.name);
	// The slot is created before anything of this transaction takes a transaction id (see
	// lock_and_check_unique); whatever fails after it drops it again.
	PGconn *conn = la::stream::connect(sub.conninfo, "logical_audit", true);
	volatile bool created = false;
	PG_TRY();
	{
		created = la::prepare_upstream(conn, sub);
		(void)la::insert_subscription(sub);
	}
	PG_CATCH();
	{ la::undo_upstream(conn, sub.slot_name, created, context); }
	PG_END_TRY();
	la::stream::disconnect(conn);
	SPI_finish();
	if (sub.enabled) {
		la::warn_if_not_launcher_database(sub.name);
		la::wake_launcher_at_commit();
	}
	PG_RETURN_VOID();
}

// SQL: logical_audit.start(name) RETURNS void. Enables the subscription; the launcher starts its
// worker after commit. A running worker carries on, or retries now if it was waiting to.
extern "C" Datum logical_audit_start(PG_FUNCTION_ARGS) {
	la::require_preloaded();
	char *name = la::required_text(fcinfo, 0, "subscription name");
	SPI_connect();
	la::modify_subscription("UPDATE logical_audit.subscription SET enabled = true WHERE name = $1 RETURNING id", name,
	                        SPI_OK_UPDATE_RETURNING);
	int id = la::spi_int(1);
	SPI_finish();
	la::warn_if_not_launcher_database(name);
	la::wake_launcher_at_commit();
	la::worker::wake_worker(id);
	PG_RETURN_VOID();
}

// SQL: logical_audit.stop(name) RETURNS void. Disables the subscription and ends its worker;
// the slot and the audited position are kept.
extern "C" Datum logical_audit_stop(PG_FUNCTION_ARGS) {
	char *name = la::required_text(fcinfo, 0, "subscription name");
	SPI_connect();
	la::modify_subscription("UPDATE logical_audit.subscription SET enabled = false WHERE name = $1 RETURNING id", name,
	                        SPI_OK_UPDATE_RETURNING);
	int id = la::spi_int(1);
	SPI_finish();
	la::worker::stop_worker(id, name);
	PG_RETURN_VOID();
}

// SQL: logical_audit.drop_subscription(name, drop_slot) RETURNS void. Ends the worker, drops the
// upstream slot when asked, the replication origin and the row; audit rows are kept.
extern "C" Datum logical_audit_drop_subscription(PG_FUNCTION_ARGS) {
	char *name = la::required_text(fcinfo, 0, "subscription name");
	bool drop_slot = la::required_bool(fcinfo, 1, "drop_slot");
	SPI_connect();
	la::modify_subscription("DELETE FROM logical_audit.subscription WHERE name = $1 RETURNING id, conninfo, slot_name",
	                        name, SPI_OK_DELETE_RETURNING);
	int id = la::spi_int(1);
	char *conninfo = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	char *slot_name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3);
	la::worker::prevent_in_transaction_block("logical_audit.drop_subscription()");
	la::worker::stop_worker(id, name);
	if (drop_slot)
		la::drop_subscription_slot(conninfo, slot_name);
	char origin[NAMEDATALEN];
	la::worker::origin_name(id, origin);
	replorigin_drop_by_name(origin, true, false); // waits for a worker still exiting to let it go
	la::audit::spool_remove_subscription_at_commit(id);
	SPI_finish();
	PG_RETURN_VOID();
}

// SQL: logical_audit.worker_status() RETURNS SETOF record: one row per running worker, read from
// shared memory; none when the library is not preloaded.
extern "C" Datum logical_audit_worker_status(PG_FUNCTION_ARGS) {
	InitMaterializedSRF(fcinfo, 0);
	auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
	int count;
	la::worker::WorkerSlot *slots = la::worker::slots_copy(&count);
	for (int i = 0; i < count; i++)
		la::put_slot(rsinfo, slots[i]);
	return (Datum)0;
}
