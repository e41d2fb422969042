// The baseline snapshot: when the worker creates the subscription's slot, it copies the existing rows
// of every published table as of the slot's consistent point and records each as a change of op
// SNAPSHOT, so the audit starts from a known state, with no gap and no overlap with the stream that
// follows from that point.
//
// The slot is created with an exported snapshot on the replication connection, which then stays
// idle (the export lasts until its next command) while a second, plain connection imports the
// snapshot in a REPEATABLE READ transaction and reads each table through a cursor, a bounded number
// of rows at a time. Rows are built upstream: to_jsonb over the published columns (column lists),
// of the rows the publications' row filters let through, with the replica identity key beside; the
// tables are those pg_publication_tables lists, so publish_via_partition_root decides whether a
// partitioned table is copied as its root or as its leaves, as the stream names them.
//
// Everything is written through the audit writer as one synthetic upstream transaction: commit_lsn
// 0/0 (it sorts before every upstream commit and cannot be one's: a commit record may start exactly
// at the consistent point), end_lsn the consistent point, xid 0, commit_time the upstream's now() in
// the snapshot. It commits in one local transaction with the replication origin's progress at the
// consistent point. An origin still at 0 thus marks a snapshot never committed: a crash halfway
// leaves no rows, and the next attempt drops the slot and starts over.
//
// Everything here is plain data, palloc'd memory or a PGconn pointer; an ERROR unwinds to the
// worker's retry loop, which aborts the local transaction and resets the message context (the
// parent of this file's memory).
#include "audit/writer.hpp"
#include "stream/connection.hpp"
#include "worker/snapshot.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

namespace {

// Rows fetched from the upstream at a time: memory stays bounded whatever the size of a table.
constexpr int kFetchRows = 1000;

constexpr const char *kDeclare = "DECLARE logical_audit_snapshot NO SCROLL CURSOR FOR ";
constexpr const char *kFetch = "FETCH %d FROM logical_audit_snapshot";
constexpr const char *kClose = "CLOSE logical_audit_snapshot";

// The tables to copy, each with the query that reads its rows, built upstream (names quoted by
// the upstream's own rules). A table listed under several publications is copied once: its row
// filters are or-ed (none if one publication has none), its column lists merged. A partition is
// left out when one of its ancestors is listed (publish_via_partition_root): the stream names the
// root then. Generated columns are left out, as pgoutput leaves them out. Partitioned tables are
// read whole, other tables without their inheritance children (which are listed on their own).
// The key is the columns of the primary key (REPLICA IDENTITY DEFAULT) or of the replica identity
// index that are published; none under FULL or NOTHING.
constexpr const char *kTablesQuery = R"sql(
listed AS (
	SELECT c.oid AS relid, c.relkind, c.relreplident, pt.schemaname, pt.tablename, pt.attnames, pt.rowfilter
	FROM pg_catalog.pg_publication_tables pt
	JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname
	JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename
	WHERE pt.pubname IN (SELECT pg_catalog.unnest(names) FROM publications)
), copied AS (
	SELECT relid, relkind, relreplident, schemaname, tablename,
	       CASE WHEN pg_catalog.bool_or(rowfilter IS NULL) THEN NULL
	            ELSE pg_catalog.string_agg('(' || rowfilter || ')', ' OR ') END AS filter
	FROM listed l
	WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_partition_ancestors(l.relid) a
	                  WHERE a.relid <> l.relid AND a.relid IN (SELECT relid FROM listed))
	GROUP BY relid, relkind, relreplident, schemaname, tablename
), shaped AS (
	SELECT t.*,
	       (SELECT pg_catalog.string_agg(pg_catalog.format('b.%I', a.attname), ', ' ORDER BY a.attnum)
	        FROM pg_catalog.pg_attribute a
	        WHERE a.attrelid = t.relid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
	          AND EXISTS (SELECT FROM listed l WHERE l.relid = t.relid AND a.attname = ANY (l.attnames))
	       ) AS columns,
	       (SELECT pg_catalog.string_agg(pg_catalog.format('b.%I', a.attname), ', ' ORDER BY a.attnum)
	        FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_index i ON i.indrelid = a.attrelid
	        WHERE a.attrelid = t.relid AND a.attnum = ANY (i.indkey)
	          AND ((t.relreplident = 'd' AND i.indisprimary) OR (t.relreplident = 'i' AND i.indisreplident))
	          AND EXISTS (SELECT FROM listed l WHERE l.relid = t.relid AND a.attname = ANY (l.attnames))
	       ) AS key
	FROM copied t
)
SELECT schemaname, tablename,
       pg_catalog.format('SELECT pg_catalog.to_jsonb(r.*), %s FROM (SELECT * FROM %s%I.%I%s) b, '
                         'LATERAL (SELECT %s) r%s',
                         CASE WHEN key IS NULL THEN 'NULL' ELSE 'pg_catalog.to_jsonb(k.*)' END,
                         CASE WHEN relkind = 'p' THEN '' ELSE 'ONLY ' END, schemaname, tablename,
                         ' WHERE ' || filter, columns, ', LATERAL (SELECT ' || key || ') k')
FROM shaped
ORDER BY schemaname, tablename
)sql";

// A table to copy: its names (as C strings and as the text Datums of audit rows) and its query.
struct CopiedTable {
	char *schema;
	char *table;
	Datum schema_text;
	Datum table_text;
	char *query;
};

// What a copy recorded, for the log and the status.
struct CopyResult {
	TimestampTz snapshot_time; // the upstream's now() in the snapshot
	int tables;
	int64 rows;
};

// Where the copy is, for the error context.
struct CopyPosition {
	const char *subscription;
	const CopiedTable *table; // nullptr outside a table
};

CopyPosition copying;

// Adds the subscription and the table being copied to every error raised during the snapshot.
void snapshot_error_context(void *) {
	if (copying.table != nullptr)
		errcontext("copying table \"%s.%s\" into the baseline snapshot of subscription \"%s\"", copying.table->schema,
		           copying.table->table, copying.subscription);
	else
		errcontext("taking the baseline snapshot of subscription \"%s\"", copying.subscription);
}

// Starts the upstream transaction that reads the tables, in the exported snapshot; returns the
// upstream's now() in it (the time the transaction started).
TimestampTz import_snapshot(PGconn *conn, const char *snapshot_name) {
	PQclear(stream::exec(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", PGRES_COMMAND_OK));
	PQclear(stream::exec(conn, psprintf("SET TRANSACTION SNAPSHOT %s", quote_literal_cstr(snapshot_name)),
	                     PGRES_COMMAND_OK));
	PGresult *result = stream::exec(conn, "SELECT pg_catalog.now()", PGRES_TUPLES_OK);
	char *now = pstrdup(PQntuples(result) == 1 ? PQgetvalue(result, 0, 0) : "");
	PQclear(result);
	return DatumGetTimestampTz(
	    DirectFunctionCall3(timestamptz_in, CStringGetDatum(now), ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
}

// The query listing the tables of the publications, with their copy queries. (The publication
// names are quoted here without the catalogs: no local transaction is open yet.)
char *tables_query(ArrayType *publications) {
	Datum *names;
	bool *nulls;
	int count;
	deconstruct_array(publications, TEXTOID, -1, false, TYPALIGN_INT, &names, &nulls, &count);
	StringInfoData query;
	initStringInfo(&query);
	appendStringInfoString(&query, "WITH publications(names) AS (SELECT ARRAY[");
	for (int i = 0, listed = 0; i < count; i++)
		if (!nulls[i])
			appendStringInfo(&query, "%s%s", listed++ > 0 ? ", " : "",
			                 quote_literal_cstr(TextDatumGetCString(names[i])));
	appendStringInfo(&query, "]::pg_catalog.text[]), %s", kTablesQuery);
	return query.data;
}

// The tables to copy, read in the snapshot; *count is set to their number.
CopiedTable *list_tables(PGconn *conn, ArrayType *publications, int *count) {
	PGresult *result = stream::exec(conn, tables_query(publications), PGRES_TUPLES_OK);
	int n = PQnfields(result) == 3 ? PQntuples(result) : 0;
	auto *tables = static_cast<CopiedTable *>(palloc0(sizeof(CopiedTable) * (n + 1)));
	for (int i = 0; i < n; i++) {
		tables[i].schema = pstrdup(PQgetvalue(result, i, 0));
		tables[i].table = pstrdup(PQgetvalue(result, i, 1));
		tables[i].query = pstrdup(PQgetvalue(result, i, 2));
	}
	PQclear(result);
	for (int i = 0; i < n; i++) {
		tables[i].schema_text = CStringGetTextDatum(tables[i].schema);
		tables[i].table_text = CStringGetTextDatum(tables[i].table);
	}
	*count = n;
	return tables;
}

// A jsonb Datum from the text the upstream sent.
Datum jsonb_from_text(const char *text) {
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
}

// Records one copied row: its published columns as new_row, its key (text or nullptr) as row_key.
void record_row(WorkerContext &w, const CopiedTable &table, const char *row, const char *key) {
	audit::ChangeRow change = {audit::Op::Snapshot, table.schema_text, table.table_text, {(Datum)0, true},
	                           {(Datum)0, true},    {(Datum)0, true},  {(Datum)0, true}, {(Datum)0, true}};
	change.new_row = {jsonb_from_text(row), false};
	if (key != nullptr && w.subscription->options.row_history)
		change.row_key = {jsonb_from_text(key), false};
	audit::writer_change(w.writer, change);
}

// Records the rows of one FETCH result.
void record_rows(WorkerContext &w, const CopiedTable &table, const PGresult *result) {
	for (int i = 0; i < PQntuples(result); i++) {
		CHECK_FOR_INTERRUPTS();
		record_row(w, table, PQgetvalue(result, i, 0), PQgetisnull(result, i, 1) ? nullptr : PQgetvalue(result, i, 1));
	}
}

// Records the rows of one FETCH result in the batch context, then frees the result and the batch.
void record_batch(WorkerContext &w, const CopiedTable &table, PGresult *result, MemoryContext batch) {
	MemoryContext caller = MemoryContextSwitchTo(batch);
	PG_TRY();
	{ record_rows(w, table, result); }
	PG_CATCH();
	{
		PQclear(result);
		PG_RE_THROW();
	}
	PG_END_TRY();
	PQclear(result);
	MemoryContextSwitchTo(caller);
	MemoryContextReset(batch);
}

// Copies one table through a cursor, kFetchRows rows at a time; returns how many it recorded.
int64 copy_table(WorkerContext &w, PGconn *conn, const CopiedTable &table, MemoryContext batch) {
	copying.table = &table;
	PQclear(stream::exec(conn, psprintf("%s%s", kDeclare, table.query), PGRES_COMMAND_OK));
	char *fetch = psprintf(kFetch, kFetchRows);
	int64 rows = 0;
	for (int fetched = kFetchRows; fetched == kFetchRows;) {
		PGresult *result = stream::exec(conn, fetch, PGRES_TUPLES_OK);
		fetched = PQntuples(result);
		record_batch(w, table, result, batch);
		rows += fetched;
	}
	PQclear(stream::exec(conn, kClose, PGRES_COMMAND_OK));
	copying.table = nullptr;
	return rows;
}

// Reads every published table in the snapshot and records its rows as one upstream transaction
// of the writer, which ends at the consistent point (the local transaction stays open).
void copy_tables(WorkerContext &w, PGconn *conn, const stream::CreatedSlot &slot, CopyResult *copy) {
	copy->snapshot_time = import_snapshot(conn, slot.snapshot_name);
	CopiedTable *tables = list_tables(conn, w.subscription->publications, &copy->tables);
	MemoryContext batch =
	    AllocSetContextCreate(CurrentMemoryContext, "logical_audit snapshot batch", ALLOCSET_DEFAULT_SIZES);
	SetCurrentStatementStartTimestamp(); // audited_at
	audit::writer_begin(w.writer, pgoutput::Begin{InvalidXLogRecPtr, copy->snapshot_time, InvalidTransactionId});
	for (int i = 0; i < copy->tables; i++)
		copy->rows += copy_table(w, conn, tables[i], batch);
	audit::writer_commit(w.writer, pgoutput::Commit{0, InvalidXLogRecPtr, slot.consistent_point, copy->snapshot_time});
}

// Copies the tables on a plain connection of its own, closed whatever happens.
void copy_on_own_connection(WorkerContext &w, const stream::CreatedSlot &slot, CopyResult *copy) {
	const Subscription *sub = w.subscription;
	PGconn *conn = stream::connect(sub->conninfo, psprintf("%s snapshot", sub->name), false);
	PG_TRY();
	{ copy_tables(w, conn, slot, copy); }
	PG_FINALLY();
	{ stream::disconnect(conn); }
	PG_END_TRY();
}

// Commits the snapshot with the origin's progress and waits for the commit to be flushed: streaming
// then starts at the consistent point, after a crash too. Shows the work in the status slot.
void commit_snapshot(WorkerContext &w, const CopyResult &copy) {
	audit::LocalCommit done = audit::writer_commit_local(w.writer);
	XLogFlush(done.local_end);
	w.made_progress = true;
	slot_add_progress(w.slot, {done.upstream_lsn, copy.snapshot_time, 1, copy.rows});
}

// Creates the slot with an exported snapshot, after dropping one a failed attempt left (nothing
// was audited from it: the origin is still at 0).
stream::CreatedSlot create_exporting_slot(PGconn *conn, const Subscription *sub) {
	stream::drop_slot(conn, sub->slot_name, true);
	stream::CreatedSlot slot = stream::create_slot(conn, sub->slot_name, {sub->options.two_phase, true});
	ereport(LOG, (errcode(ERRCODE_SUCCESSFUL_COMPLETION),
	              errmsg("subscription \"%s\" created replication slot \"%s\" and copies the published tables as of "
	                     "%X/%X",
	                     sub->name, sub->slot_name, LSN_FORMAT_ARGS(slot.consistent_point))));
	return slot;
}

} // namespace

XLogRecPtr take_snapshot(WorkerContext &w, PGconn *replication_conn) {
	const Subscription *sub = w.subscription;
	slot_set_state(w.slot, WorkerState::Snapshot);
	copying = {sub->name, nullptr};
	ErrorContextCallback callback;
	callback.callback = snapshot_error_context;
	callback.arg = nullptr;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	MemoryContext caller = MemoryContextSwitchTo(
	    AllocSetContextCreate(w.message_context, "logical_audit snapshot", ALLOCSET_DEFAULT_SIZES));
	stream::CreatedSlot slot = create_exporting_slot(replication_conn, sub);
	CopyResult copy = {0, 0, 0};
	copy_on_own_connection(w, slot, &copy);
	commit_snapshot(w, copy);
	MemoryContextDelete(MemoryContextSwitchTo(caller));

	error_context_stack = callback.previous;
	ereport(LOG, (errcode(ERRCODE_SUCCESSFUL_COMPLETION),
	              errmsg_plural("subscription \"%s\" committed its baseline snapshot: %lld rows of %d table",
	                            "subscription \"%s\" committed its baseline snapshot: %lld rows of %d tables",
	                            copy.tables, sub->name, static_cast<long long>(copy.rows), copy.tables)));
	return slot.consistent_point;
}

} // namespace logical_audit::worker
