// The batched audit writer: upstream transactions become local transactions holding their change,
// message and transaction rows and the replication origin's progress. A local transaction may hold
// several whole upstream transactions (the worker decides when to commit): its origin progress is
// then the end of the last one, so a restart resumes after exactly what it committed.
//
// Rows go straight to the table AM, the way COPY FROM inserts: change and transaction rows are
// buffered in tuple slots and written with table_multi_insert, then their index entries with
// ExecInsertIndexTuples. No SQL is parsed or planned per row or per transaction. The primary keys
// are enforced as usual by the unique indexes, so a row written twice is an ERROR, never a silent
// duplicate; NOT NULL and CHECK constraints are checked per row. Like any direct heap insert this
// fires no trigger (so a foreign key or a user's trigger on an audit table would not act) and
// checks no privilege: the worker writes as the extension's owner.
//
// The slots live as long as the writer, over a copy of each table's tuple descriptor (checked
// against the table at each local transaction): making and dropping them per transaction would
// pin and unpin the relation's descriptor in the resource owner once per slot. What a local
// transaction opens (relations, executor state) lives in txn_context; the Datums of buffered rows
// in each table's batch context, reset after each batch: memory stays bounded whatever the size of
// the upstream transactions. After an ERROR the caller aborts the local transaction, which
// releases locks, pins and snapshots; writer_reset then just forgets them.
//
// writer_latest_image reads a row's latest change back: first among the buffered change rows,
// through a hash of (schema, table, row_key) built only when a lookup needs it (a workload of
// inserts never pays for it), then in the table through the change_row_key index, backwards from
// the row's newest entry. That index scan uses SnapshotSelf, which sees the rows this very local
// transaction inserted in earlier batches without a new snapshot or command counter.
#include <string_view>

#include "audit/writer.hpp"
#include "recovery.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

namespace po = pgoutput;

// A batch is inserted when it holds this many rows or this many bytes of row values.
constexpr int kBatchRows = 1000;
constexpr Size kBatchBytes = 1024 * 1024;

constexpr const char *kSchema = "logical_audit";

// The columns the writer fills, by name: the audit tables may gain columns in later versions
// (they are left NULL) and need not keep this order.
enum ChangeColumn {
	kChangeSubscription,
	kChangeCommitLsn,
	kChangeOrdinal,
	kChangeOp,
	kChangeSchemaName,
	kChangeTableName,
	kChangeOldRow,
	kChangeNewRow,
	kChangeUnchangedToast,
	kChangeChangedColumns,
	kChangeRowKey,
	kChangeColumns
};
const char *const kChangeNames[] = {"subscription",    "commit_lsn",      "ordinal", "op",
                                    "schema_name",     "table_name",      "old_row", "new_row",
                                    "unchanged_toast", "changed_columns", "row_key"};

// The index writer_latest_image reads, and its columns in order: a search gives all but the
// order columns (commit_lsn, ordinal); subscription, rarely a discriminator, comes last, where
// the index filters on it without comparing it on every insert.
constexpr const char *kRowKeyIndex = "change_row_key";
const ChangeColumn kRowKeyIndexColumns[] = {kChangeSchemaName, kChangeTableName, kChangeRowKey,
                                            kChangeCommitLsn,  kChangeOrdinal,   kChangeSubscription};
const int kRowKeySearchAttnos[] = {1, 2, 3, 6};
constexpr int kRowKeySearchColumns = lengthof(kRowKeySearchAttnos);

// Buckets of the hash of buffered change rows: a power of two, twice the rows a batch holds.
constexpr int kKeyBuckets = 2048;

enum TransactionColumn {
	kTxnSubscription,
	kTxnXid,
	kTxnCommitLsn,
	kTxnEndLsn,
	kTxnCommitTime,
	kTxnOrigin,
	kTxnChangeCount,
	kTxnAnnotations,
	kTxnAuditedAt,
	kTxnGid,
	kTxnPrepareTime,
	kTxnRolledBack,
	kTxnColumns
};
const char *const kTransactionNames[] = {"subscription", "xid",    "commit_lsn",   "end_lsn",
                                         "commit_time",  "origin", "change_count", "annotations",
                                         "audited_at",   "gid",    "prepare_time", "rolled_back"};

enum MessageColumn {
	kMsgSubscription,
	kMsgLsn,
	kMsgCommitLsn,
	kMsgTransactional,
	kMsgPrefix,
	kMsgContent,
	kMsgColumns
};
const char *const kMessageNames[] = {"subscription", "lsn", "commit_lsn", "transactional", "prefix", "content"};

// The audit tables, indexed by TableKind.
enum TableKind { kChangeTable, kTransactionTable, kMessageTable, kTables };

struct TableSpec {
	const char *name;
	const char *const *columns;
	int ncolumns;
	int max_slots; // rows buffered at most before an insert
};

const TableSpec kSpecs[kTables] = {
    {"change", kChangeNames, kChangeColumns, kBatchRows},
    {"transaction", kTransactionNames, kTxnColumns, kBatchRows},
    {"message", kMessageNames, kMsgColumns, 1},
};

// The slots of an audit table, kept across local transactions. desc is a copy of the table's
// descriptor, not reference counted, so slots over it pin nothing in a resource owner.
struct TargetSlots {
	MemoryContext context; // desc, attindex, the slots and their materialized tuples
	TupleDesc desc;        // nullptr until built
	int *attindex;         // attribute index of each of the spec's columns
	TupleTableSlot **slots;
	int nslots;                // created so far, up to spec.max_slots
	TupleTableSlot *read_slot; // rows read back from the table (latest images), or nullptr
};

// One audit table: its slots, what the open local transaction opened of it, its buffered rows.
// rel, estate, rri, bistate and key_scan belong to the local transaction: allocated in txn_context
// (reset at its commit), released by close_target before the commit, or by the abort (which
// releases pins, locks and scans) and forgotten by writer_reset after an ERROR.
struct Target {
	TargetSlots s;
	Relation rel;            // nullptr when not opened in this local transaction
	EState *estate;          // for index insertion and constraint checks
	ResultRelInfo *rri;      // the relation with its open indexes
	BulkInsertState bistate; // only once a full batch was written
	IndexScanDesc key_scan;  // the change table's latest-image lookups, once one needed it; owned by
	                         // txn_context, and every call on it runs there (see indexed_change)
	MemoryContext batch;     // the buffered rows' values
	int nbuffered;           // rows waiting in the slots
	Size buffered_bytes;
};

// The buffered change rows by (schema, table, row_key): buckets[h % kKeyBuckets] is 1 + the newest
// hashed slot of hash h, older[slot] 1 + the next older one in its bucket (0 ends a chain). Rows
// are hashed lazily, up to the latest buffered one, when a lookup needs them.
struct BufferedKeys {
	int nhashed; // buffered rows hashed so far (rows without a row_key are skipped)
	int buckets[kKeyBuckets];
	int older[kBatchRows];
	uint32 hashes[kBatchRows];
};

} // namespace

struct Writer {
	Datum subscription; // text
	Datum ops[kOps];    // the operations' names as text, by Op
	MemoryContext txn_context;
	MemoryContext row_context; // the values of a single message row
	bool local_open;           // a local transaction is open
	bool in_transaction;       // between writer_begin and writer_commit
	XLogRecPtr progress_lsn;   // origin progress of the open local transaction
	TimestampTz progress_time;
	FullTransactionId xid;
	XLogRecPtr final_lsn;
	TimestampTz audited_at; // when the upstream transaction's Begin arrived
	char *origin;           // from an Origin message, or nullptr
	char *gid;              // of a prepared transaction, or nullptr
	TimestampTz prepare_time;
	bool rolled_back;  // a prepared transaction rolled back: recorded without changes
	Datum annotations; // jsonb object, or 0 when none
	int32 ordinal;     // of the latest change
	Target targets[kTables];
	BufferedKeys keys; // of the change table's buffered rows
};

namespace {

// Raises the error for a message that arrives where the protocol does not allow it.
void misplaced(const char *what, bool in_transaction) {
	ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("unexpected pgoutput %s message", what),
	                errdetail("The message arrived %s.",
	                          in_transaction ? "inside an open transaction" : "outside a transaction")));
}

// Finds the attribute index of each column the writer fills; a missing one is an ERROR.
int *map_columns(TupleDesc desc, const TableSpec &spec) {
	int *attindex = static_cast<int *>(palloc(sizeof(int) * spec.ncolumns));
	for (int c = 0; c < spec.ncolumns; c++) {
		attindex[c] = -1;
		for (int i = 0; i < desc->natts && attindex[c] < 0; i++) {
			Form_pg_attribute att = TupleDescAttr(desc, i);
			if (!att->attisdropped && strcmp(NameStr(att->attname), spec.columns[c]) == 0)
				attindex[c] = i;
		}
		if (attindex[c] < 0)
			ereport(ERROR, (errcode(ERRCODE_UNDEFINED_COLUMN),
			                errmsg("audit table %s.%s has no column \"%s\"", kSchema, spec.name, spec.columns[c]),
			                errhint("Reinstall or update the logical_audit extension.")));
	}
	return attindex;
}

// Builds the executor state that index insertion and constraint checks need, as COPY does.
void init_executor(Target *t) {
	t->estate = CreateExecutorState();
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(t->rel);
	rte->relkind = t->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(t->estate, list_make1(rte));
	t->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(t->rri, t->rel, 1, nullptr, 0);
	ExecOpenIndices(t->rri, false);
}

// (Re)builds a table's slots over a copy of its descriptor, when they do not match it (first use,
// or the table changed since).
void prepare_slots(Target *t, const TableSpec &spec) {
	TupleDesc desc = RelationGetDescr(t->rel);
	if (t->s.desc != nullptr && equalTupleDescs(t->s.desc, desc))
		return;
	MemoryContextReset(t->s.context);
	MemoryContext caller = MemoryContextSwitchTo(t->s.context);
	t->s.desc = nullptr;
	t->s.nslots = 0;
	t->s.read_slot = nullptr;
	int *attindex = map_columns(desc, spec);
	t->s.slots = static_cast<TupleTableSlot **>(palloc0(sizeof(TupleTableSlot *) * spec.max_slots));
	t->s.attindex = attindex;
	t->s.desc = CreateTupleDescCopyConstr(desc);
	MemoryContextSwitchTo(caller);
}

// The audit table of that kind, opened (by name, in RowExclusiveLock) once per local transaction.
Target *open_target(Writer *w, TableKind kind) {
	Target *t = &w->targets[kind];
	if (t->rel != nullptr)
		return t;
	const TableSpec &spec = kSpecs[kind];
	MemoryContext caller = MemoryContextSwitchTo(w->txn_context);
	Oid relid = RangeVarGetRelid(makeRangeVar(const_cast<char *>(kSchema), const_cast<char *>(spec.name), -1),
	                             RowExclusiveLock, false);
	t->rel = table_open(relid, NoLock);
	if (t->rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("audit table %s.%s is not a plain table", kSchema, spec.name),
		                errdetail("The audit worker inserts rows directly into the table's heap and indexes.")));
	prepare_slots(t, spec);
	init_executor(t);
	MemoryContextSwitchTo(caller);
	return t;
}

// The i-th slot of a table, created on first use in the slots' own context.
TupleTableSlot *target_slot(Target *t, int i) {
	if (i == t->s.nslots) {
		MemoryContext caller = MemoryContextSwitchTo(t->s.context);
		t->s.slots[t->s.nslots++] = MakeSingleTupleTableSlot(t->s.desc, table_slot_callbacks(t->rel));
		MemoryContextSwitchTo(caller);
	}
	return t->s.slots[i];
}

// Stores a row given in the spec's column order into a slot (unknown columns NULL) and checks
// the table's NOT NULL and CHECK constraints, as COPY does for each row.
void store_row(Target *t, TupleTableSlot *slot, int ncolumns, const Datum *values, const bool *isnull) {
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	for (int c = 0; c < ncolumns; c++) {
		slot->tts_values[t->s.attindex[c]] = values[c];
		slot->tts_isnull[t->s.attindex[c]] = isnull[c];
	}
	ExecStoreVirtualTuple(slot);
	if (t->rel->rd_att->constr != nullptr) {
		ExecConstraints(t->rri, slot, t->estate);
		ResetPerTupleExprContext(t->estate);
	}
}

// Writes the first n slots of a table: heap tuples in one multi-insert, then their index entries
// (the unique check of the primary key happens here).
void insert_slots(Target *t, int n) {
	table_multi_insert(t->rel, t->s.slots, n, GetCurrentCommandId(true), 0, t->bistate);
	for (int i = 0; i < n; i++) {
		List *recheck = ExecInsertIndexTuples(t->rri, t->s.slots[i], t->estate, false, false, nullptr, NIL);
		list_free(recheck);
		ResetPerTupleExprContext(t->estate);
		ExecClearTuple(t->s.slots[i]);
	}
}

// Forgets the hash of buffered change rows (they were inserted, or dropped after an error).
void forget_buffered_keys(BufferedKeys *keys) {
	if (keys->nhashed == 0)
		return;
	memset(keys->buckets, 0, sizeof(keys->buckets));
	keys->nhashed = 0;
}

// Inserts a table's buffered rows, then frees their memory. A full batch switches the table to a
// bulk-insert state (a ring of buffers and a pinned target page), as COPY does; small
// transactions do without, keeping their pages in shared buffers.
void flush_rows(Writer *w, Target *t, bool full) {
	if (t->nbuffered == 0)
		return;
	if (full && t->bistate == nullptr) {
		MemoryContext caller = MemoryContextSwitchTo(w->txn_context);
		t->bistate = GetBulkInsertState();
		MemoryContextSwitchTo(caller);
	}
	MemoryContext caller = MemoryContextSwitchTo(t->batch);
	insert_slots(t, t->nbuffered);
	MemoryContextSwitchTo(caller);
	MemoryContextReset(t->batch);
	t->nbuffered = 0;
	t->buffered_bytes = 0;
	if (t == &w->targets[kChangeTable])
		forget_buffered_keys(&w->keys);
}

// Stores a row (values copied by the caller into the table's batch context) in the next slot of a
// table and inserts the batch when it is full.
void buffer_row(Writer *w, Target *t, int ncolumns, const Datum *values, const bool *isnull, TableKind kind) {
	store_row(t, target_slot(t, t->nbuffered), ncolumns, values, isnull);
	t->nbuffered++;
	if (t->nbuffered == kSpecs[kind].max_slots || t->buffered_bytes >= kBatchBytes)
		flush_rows(w, t, true);
}

// Releases what a table held in the local transaction (before its commit; locks stay until then).
void close_target(Target *t) {
	if (t->key_scan != nullptr)
		index_endscan(t->key_scan);
	if (t->bistate != nullptr) {
		FreeBulkInsertState(t->bistate);
		table_finish_bulk_insert(t->rel, 0);
	}
	ExecCloseIndices(t->rri);
	FreeExecutorState(t->estate);
	table_close(t->rel, NoLock);
	t->rel = nullptr;
	t->estate = nullptr;
	t->rri = nullptr;
	t->bistate = nullptr;
	t->key_scan = nullptr;
}

// Starts a local transaction with an active snapshot (type input and domain checks may need one).
void start_local() {
	MemoryContext caller = CurrentMemoryContext;
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	MemoryContextSwitchTo(caller);
}

// Commits the local transaction together with the origin's progress. The commit waits for its
// WAL flush as synchronous_commit says: the caller reports the upstream position as durable only
// once the local commit record is flushed.
LocalCommit commit_local(Writer *w) {
	MemoryContext caller = CurrentMemoryContext;
	for (Target &t : w->targets)
		flush_rows(w, &t, false);
	for (Target &t : w->targets)
		if (t.rel != nullptr)
			close_target(&t);
	replorigin_session_origin_lsn = w->progress_lsn;
	replorigin_session_origin_timestamp = w->progress_time;
	PopActiveSnapshot();
	CommitTransactionCommand();
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = 0;
	MemoryContextSwitchTo(caller);
	MemoryContextReset(w->txn_context);
	LocalCommit done = {XactLastCommitEnd, w->progress_lsn};
	w->local_open = false;
	w->progress_lsn = InvalidXLogRecPtr;
	w->progress_time = 0;
	return done;
}

// Opens the local transaction that upstream transactions and messages are written in, if needed.
void open_local(Writer *w) {
	if (w->local_open)
		return;
	start_local();
	w->local_open = true;
}

// A flat copy of a varlena Datum in the current context; 0 stays 0 (NULL).
Datum copy_varlena(Datum value, bool isnull, Size *bytes) {
	if (isnull)
		return (Datum)0;
	*bytes += VARSIZE_ANY(DatumGetPointer(value));
	return datumCopy(value, false, -1);
}

// A bytea Datum holding a copy of the bytes.
Datum bytea_datum(std::string_view bytes) {
	bytea *result = static_cast<bytea *>(palloc(VARHDRSZ + bytes.size()));
	SET_VARSIZE(result, VARHDRSZ + bytes.size());
	memcpy(VARDATA(result), bytes.data(), bytes.size());
	return PointerGetDatum(result);
}

// Inserts one logical_audit.message row; commit_lsn is NULL for a non-transactional message.
void insert_message(Writer *w, const po::LogicalMessage &m, bool transactional) {
	// The prefix comes from the upstream as bytes: a text column needs it valid here.
	pg_verifymbstr(m.prefix.data(), static_cast<int>(m.prefix.size()), false);
	Target *t = open_target(w, kMessageTable);
	MemoryContext caller = MemoryContextSwitchTo(w->row_context);
	Datum values[kMsgColumns] = {w->subscription,
	                             LSNGetDatum(m.lsn),
	                             LSNGetDatum(w->final_lsn),
	                             BoolGetDatum(transactional),
	                             PointerGetDatum(cstring_to_text_with_len(m.prefix.data(), m.prefix.size())),
	                             bytea_datum(m.content)};
	bool isnull[kMsgColumns] = {false, false, !transactional, false, false, false};
	store_row(t, target_slot(t, 0), kMsgColumns, values, isnull);
	insert_slots(t, 1);
	MemoryContextSwitchTo(caller);
	MemoryContextReset(w->row_context);
}

// Whether an error raised by jsonb_in means the content is not acceptable JSON (rather than a
// cancel, out of memory or the like, which must propagate).
bool is_bad_json_error(int sqlerrcode) {
	return ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_DATA_EXCEPTION ||
	       ERRCODE_TO_CATEGORY(sqlerrcode) == ERRCODE_PROGRAM_LIMIT_EXCEEDED;
}

// Runs jsonb_in on text in a subtransaction: JSON that lexes fine can still fail (a number beyond
// numeric's range, nesting deeper than the stack allows). Returns 0 when it failed that way.
Datum jsonb_in_or_null(Writer *w, char *text) {
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile Datum result = (Datum)0;
	BeginInternalSubTransaction(nullptr);
	MemoryContextSwitchTo(w->txn_context);
	PG_TRY();
	{
		result = DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(w->txn_context);
		ErrorData *edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		CurrentResourceOwner = owner;
		if (!is_bad_json_error(edata->sqlerrcode))
			ReThrowError(edata);
		FreeErrorData(edata);
		result = (Datum)0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	CurrentResourceOwner = owner;
	return result;
}

// Merges an 'audit' message's content into the transaction's annotations when it is a JSON
// object: a later key overrides an earlier one. Other content is only recorded as a message.
void merge_annotations(Writer *w, std::string_view content) {
	if (memchr(content.data(), '\0', content.size()) != nullptr ||
	    !pg_verifymbstr(content.data(), static_cast<int>(content.size()), true))
		return;
	MemoryContext caller = MemoryContextSwitchTo(w->txn_context);
	char *text = pnstrdup(content.data(), content.size());
	Datum json = jsonb_in_or_null(w, text);
	if (json != (Datum)0 && JB_ROOT_IS_OBJECT(DatumGetJsonbP(json)))
		w->annotations = w->annotations == (Datum)0 ? json : DirectFunctionCall2(jsonb_concat, w->annotations, json);
	pfree(text);
	MemoryContextSwitchTo(caller);
}

// Buffers the logical_audit.transaction row of the open upstream transaction.
void insert_transaction(Writer *w, const po::Commit &commit) {
	Target *t = open_target(w, kTransactionTable);
	MemoryContext caller = MemoryContextSwitchTo(t->batch);
	Datum values[kTxnColumns] = {
	    w->subscription,
	    FullTransactionIdGetDatum(w->xid),
	    LSNGetDatum(w->final_lsn),
	    LSNGetDatum(commit.end_lsn),
	    TimestampTzGetDatum(commit.commit_time),
	    w->origin != nullptr ? CStringGetTextDatum(w->origin) : (Datum)0,
	    Int64GetDatum(w->ordinal),
	    copy_varlena(w->annotations, w->annotations == (Datum)0, &t->buffered_bytes),
	    TimestampTzGetDatum(w->audited_at),
	    w->gid != nullptr ? CStringGetTextDatum(w->gid) : (Datum)0,
	    TimestampTzGetDatum(w->prepare_time),
	    BoolGetDatum(w->rolled_back),
	};
	bool isnull[kTxnColumns] = {false,
	                            false,
	                            false,
	                            false,
	                            false,
	                            w->origin == nullptr,
	                            false,
	                            w->annotations == (Datum)0,
	                            false,
	                            w->gid == nullptr,
	                            w->gid == nullptr,
	                            false};
	buffer_row(w, t, kTxnColumns, values, isnull, kTransactionTable);
	MemoryContextSwitchTo(caller);
}

// Forgets the upstream transaction's state once it ended (committed or aborted).
void end_transaction(Writer *w) {
	w->in_transaction = false;
	w->origin = nullptr;
	w->gid = nullptr;
	w->prepare_time = 0;
	w->rolled_back = false;
	w->annotations = (Datum)0;
	w->ordinal = 0;
}

// Forgets the buffered rows and what a local transaction opened (after an abort released them).
void forget_targets(Writer *w) {
	for (Target &t : w->targets) {
		t.rel = nullptr;
		t.estate = nullptr;
		t.rri = nullptr;
		t.bistate = nullptr;
		t.key_scan = nullptr;
		t.nbuffered = 0;
		t.buffered_bytes = 0;
		MemoryContextReset(t.batch);
		// The slots may hold half-made tuples: build them again on next use.
		MemoryContextReset(t.s.context);
		t.s.desc = nullptr;
		t.s.nslots = 0;
		t.s.read_slot = nullptr;
	}
	forget_buffered_keys(&w->keys);
}

// Whether a text Datum holds the same bytes as another.
bool same_text(Datum a, Datum b) {
	text *x = DatumGetTextPP(a), *y = DatumGetTextPP(b);
	return VARSIZE_ANY_EXHDR(x) == VARSIZE_ANY_EXHDR(y) &&
	       memcmp(VARDATA_ANY(x), VARDATA_ANY(y), VARSIZE_ANY_EXHDR(x)) == 0;
}

// The hash of a text Datum's bytes.
uint32 text_hash(Datum value) {
	text *t = DatumGetTextPP(value);
	return hash_bytes(reinterpret_cast<const unsigned char *>(VARDATA_ANY(t)), VARSIZE_ANY_EXHDR(t));
}

// The hash of a row's identity (its table's names and its key), consistent with jsonb equality.
uint32 key_hash(Datum schema_name, Datum table_name, Datum row_key) {
	uint32 hash = DatumGetUInt32(DirectFunctionCall1(jsonb_hash, row_key));
	hash = hash_combine(hash, text_hash(schema_name));
	return hash_combine(hash, text_hash(table_name));
}

// The value of one of the writer's columns in a buffered change row.
Datum buffered_value(const Target *t, const TupleTableSlot *slot, ChangeColumn column, bool *isnull) {
	*isnull = slot->tts_isnull[t->s.attindex[column]];
	return slot->tts_values[t->s.attindex[column]];
}

// Links the buffered change rows not hashed yet into the buckets, oldest first, so that each
// bucket starts at its newest row.
void hash_buffered(BufferedKeys *keys, const Target *t) {
	for (; keys->nhashed < t->nbuffered; keys->nhashed++) {
		int i = keys->nhashed;
		const TupleTableSlot *slot = t->s.slots[i];
		bool isnull;
		Datum row_key = buffered_value(t, slot, kChangeRowKey, &isnull);
		if (isnull)
			continue;
		keys->hashes[i] = key_hash(buffered_value(t, slot, kChangeSchemaName, &isnull),
		                           buffered_value(t, slot, kChangeTableName, &isnull), row_key);
		int bucket = keys->hashes[i] & (kKeyBuckets - 1);
		keys->older[i] = keys->buckets[bucket];
		keys->buckets[bucket] = i + 1;
	}
}

// Whether a buffered change row is one of that relation's row with that key.
bool buffered_row_is(const Target *t, const TupleTableSlot *slot, const AuditRelation *relation, Datum row_key) {
	bool isnull;
	return same_text(buffered_value(t, slot, kChangeTableName, &isnull), relation->relname_text) &&
	       same_text(buffered_value(t, slot, kChangeSchemaName, &isnull), relation->nspname_text) &&
	       DatumGetBool(DirectFunctionCall2(jsonb_eq, buffered_value(t, slot, kChangeRowKey, &isnull), row_key));
}

// The newest buffered change row of the relation's row with that key, or nullptr.
const TupleTableSlot *buffered_change(Writer *w, const Target *t, const AuditRelation *relation, Datum row_key) {
	BufferedKeys *keys = &w->keys;
	hash_buffered(keys, t);
	uint32 hash = key_hash(relation->nspname_text, relation->relname_text, row_key);
	for (int i = keys->buckets[hash & (kKeyBuckets - 1)] - 1; i >= 0; i = keys->older[i] - 1)
		if (keys->hashes[i] == hash && buffered_row_is(t, t->s.slots[i], relation, row_key))
			return t->s.slots[i];
	return nullptr;
}

// The image a change row leaves of its row: its new_row, or 0 after a DELETE.
Datum image_of(Datum op, Datum new_row, bool new_row_isnull) {
	text *name = DatumGetTextPP(op);
	bool deleted = VARSIZE_ANY_EXHDR(name) == 6 && memcmp(VARDATA_ANY(name), "DELETE", 6) == 0;
	return deleted || new_row_isnull ? (Datum)0 : new_row;
}

// Whether an index is a valid btree over the columns writer_latest_image relies on, in order.
bool fits_row_key_index(const Target *t, Relation index) {
	int ncolumns = lengthof(kRowKeyIndexColumns);
	if (index->rd_rel->relam != BTREE_AM_OID || !index->rd_index->indisvalid || index->rd_index->indnkeyatts < ncolumns)
		return false;
	for (int i = 0; i < ncolumns; i++)
		if (index->rd_index->indkey.values[i] != t->s.attindex[kRowKeyIndexColumns[i]] + 1)
			return false;
	return true;
}

// The change table's row_key index, among the indexes the local transaction opened.
Relation row_key_index(const Target *t) {
	for (int i = 0; i < t->rri->ri_NumIndices; i++) {
		Relation index = t->rri->ri_IndexRelationDescs[i];
		if (strcmp(RelationGetRelationName(index), kRowKeyIndex) == 0 && fits_row_key_index(t, index))
			return index;
	}
	ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
	                errmsg("audit table %s.change has no valid index %s", kSchema, kRowKeyIndex),
	                errdetail("The audit worker reads each row's latest change through a btree index on "
	                          "(schema_name, table_name, row_key, commit_lsn, ordinal, subscription)."),
	                errhint("Reinstall or update the logical_audit extension.")));
	return nullptr; // not reached
}

// The local transaction's scan of the row_key index, begun at its first lookup.
IndexScanDesc key_scan(Writer *w, Target *t) {
	if (t->key_scan == nullptr) {
		MemoryContext caller = MemoryContextSwitchTo(w->txn_context);
		t->key_scan = index_beginscan(t->rel, row_key_index(t), SnapshotSelf, kRowKeySearchColumns, 0);
		MemoryContextSwitchTo(caller);
	}
	return t->key_scan;
}

// The slot that change rows are read back into, created on first use with the other slots.
TupleTableSlot *read_slot(Target *t) {
	if (t->s.read_slot == nullptr) {
		MemoryContext caller = MemoryContextSwitchTo(t->s.context);
		t->s.read_slot = MakeSingleTupleTableSlot(t->s.desc, table_slot_callbacks(t->rel));
		MemoryContextSwitchTo(caller);
	}
	return t->s.read_slot;
}

// Reads the newest change row in the table of the relation's row with that key into slot (rows of
// this local transaction included); false when there is none.
bool indexed_change(Writer *w, Target *t, const AuditRelation *relation, Datum row_key, TupleTableSlot *slot) {
	IndexScanDesc scan = key_scan(w, t);
	const Datum values[kRowKeySearchColumns] = {relation->nspname_text, relation->relname_text, row_key,
	                                            w->subscription};
	const RegProcedure equals[kRowKeySearchColumns] = {F_TEXTEQ, F_TEXTEQ, F_JSONB_EQ, F_TEXTEQ};
	ScanKeyData keys[kRowKeySearchColumns];
	for (int i = 0; i < kRowKeySearchColumns; i++) {
		int attno = kRowKeySearchAttnos[i];
		ScanKeyEntryInitialize(&keys[i], 0, attno, BTEqualStrategyNumber, InvalidOid,
		                       scan->indexRelation->rd_indcollation[attno - 1], equals[i], values[i]);
	}
	// The scan lives in txn_context, and nbtree allocates what it keeps between calls (the array
	// of killed entries, made when a lookup meets the dead entries an aborted attempt left) in the
	// context current at the call: run every call in the scan's own context, never in the
	// per-message one that is reset under it.
	MemoryContext caller = MemoryContextSwitchTo(w->txn_context);
	index_rescan(scan, keys, kRowKeySearchColumns, nullptr, 0);
	// Entries of one key are ordered by (commit_lsn, ordinal): the first one backwards is the newest.
	bool found = index_getnext_slot(scan, BackwardScanDirection, slot);
	MemoryContextSwitchTo(caller);
	return found;
}

// The image the newest change row in the table leaves of the row, copied out of the buffer page.
Datum indexed_image(Writer *w, Target *t, const AuditRelation *relation, Datum row_key) {
	TupleTableSlot *slot = read_slot(t);
	Datum image = (Datum)0;
	if (indexed_change(w, t, relation, row_key, slot)) {
		bool op_isnull, new_row_isnull;
		Datum op = slot_getattr(slot, t->s.attindex[kChangeOp] + 1, &op_isnull);
		Datum new_row = slot_getattr(slot, t->s.attindex[kChangeNewRow] + 1, &new_row_isnull);
		image = image_of(op, new_row, new_row_isnull);
		if (image != (Datum)0)
			image = PointerGetDatum(PG_DETOAST_DATUM_COPY(image));
	}
	ExecClearTuple(slot);
	return image;
}

} // namespace

const char *op_name(Op op) {
	switch (op) {
	case Op::Insert:
		return "INSERT";
	case Op::Update:
		return "UPDATE";
	case Op::Delete:
		return "DELETE";
	case Op::Truncate:
		return "TRUNCATE";
	case Op::Snapshot:
		return "SNAPSHOT";
	}
	return "unknown";
}

Writer *writer_create(const char *subscription, MemoryContext context) {
	Writer *w = static_cast<Writer *>(MemoryContextAllocZero(context, sizeof(Writer)));
	MemoryContext caller = MemoryContextSwitchTo(context);
	w->subscription = PointerGetDatum(cstring_to_text(subscription));
	for (int i = 0; i < kOps; i++)
		w->ops[i] = CStringGetTextDatum(op_name(static_cast<Op>(i)));
	MemoryContextSwitchTo(caller);
	w->txn_context = AllocSetContextCreate(context, "logical_audit writer transaction", ALLOCSET_DEFAULT_SIZES);
	w->row_context = AllocSetContextCreate(context, "logical_audit writer row", ALLOCSET_DEFAULT_SIZES);
	for (Target &t : w->targets) {
		t.batch = AllocSetContextCreate(context, "logical_audit writer batch", ALLOCSET_DEFAULT_SIZES);
		t.s.context = AllocSetContextCreate(context, "logical_audit writer slots", ALLOCSET_DEFAULT_SIZES);
	}
	on_error_cleanup([](void *writer) { writer_reset(static_cast<Writer *>(writer)); }, w);
	return w;
}

void writer_begin(Writer *w, const po::Begin &begin) {
	if (w->in_transaction)
		misplaced("begin", true);
	open_local(w);
	// pgoutput sends a 32-bit xid without its epoch: it is stored as-is in the xid8 column, as the
	// full transaction id of epoch 0 (so two upstream transactions may show the same xid after a
	// wraparound; commit_lsn is what identifies a transaction).
	w->xid = FullTransactionIdFromEpochAndXid(0, begin.xid);
	w->final_lsn = begin.final_lsn;
	w->audited_at = GetCurrentStatementStartTimestamp(); // what the column's default now() would give
	w->in_transaction = true;
}

void writer_change(Writer *w, const ChangeRow &row) {
	if (!w->in_transaction)
		misplaced(op_name(row.op), false);
	if (w->ordinal == PG_INT32_MAX)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("upstream transaction has more than %d changes", PG_INT32_MAX)));
	Target *t = open_target(w, kChangeTable);
	MemoryContext caller = MemoryContextSwitchTo(t->batch);
	Datum values[kChangeColumns] = {
	    w->subscription,
	    LSNGetDatum(w->final_lsn),
	    Int32GetDatum(w->ordinal + 1),
	    w->ops[static_cast<int>(row.op)],
	    copy_varlena(row.schema_name, false, &t->buffered_bytes), // a new Relation message frees the names
	    copy_varlena(row.table_name, false, &t->buffered_bytes),
	    copy_varlena(row.old_row.value, row.old_row.isnull, &t->buffered_bytes),
	    copy_varlena(row.new_row.value, row.new_row.isnull, &t->buffered_bytes),
	    copy_varlena(row.unchanged_toast.value, row.unchanged_toast.isnull, &t->buffered_bytes),
	    copy_varlena(row.changed_columns.value, row.changed_columns.isnull, &t->buffered_bytes),
	    copy_varlena(row.row_key.value, row.row_key.isnull, &t->buffered_bytes),
	};
	bool isnull[kChangeColumns] = {false,
	                               false,
	                               false,
	                               false,
	                               false,
	                               false,
	                               row.old_row.isnull,
	                               row.new_row.isnull,
	                               row.unchanged_toast.isnull,
	                               row.changed_columns.isnull,
	                               row.row_key.isnull};
	w->ordinal++;
	buffer_row(w, t, kChangeColumns, values, isnull, kChangeTable);
	MemoryContextSwitchTo(caller);
}

void writer_message(Writer *w, const po::LogicalMessage &message) {
	if (message.transactional()) {
		if (!w->in_transaction)
			misplaced("transactional logical", false);
		insert_message(w, message, true);
		if (message.prefix == "audit")
			merge_annotations(w, message.content);
		return;
	}
	// Inside an upstream transaction (which pgoutput does not do) the row simply commits with it.
	if (w->in_transaction) {
		insert_message(w, message, false);
		return;
	}
	// Alone, it makes the origin's progress reach its LSN, which is the end of its WAL record: the
	// walsender skips non-transactional messages whose record starts before the start position, so
	// a restart does not send it again. (Not lsn + 1: a commit record starting exactly at lsn would
	// then be skipped too.) The upstream sends no time for such a message.
	open_local(w);
	insert_message(w, message, false);
	w->progress_lsn = Max(w->progress_lsn, message.lsn);
}

void writer_origin(Writer *w, const po::Origin &origin) {
	if (!w->in_transaction)
		misplaced("origin", false);
	pg_verifymbstr(origin.name.data(), static_cast<int>(origin.name.size()), false);
	MemoryContext caller = MemoryContextSwitchTo(w->txn_context);
	w->origin = pnstrdup(origin.name.data(), origin.name.size());
	MemoryContextSwitchTo(caller);
}

void writer_commit(Writer *w, const po::Commit &commit) {
	if (!w->in_transaction)
		misplaced("commit", false);
	if (commit.commit_lsn != w->final_lsn)
		ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION),
		                errmsg("commit LSN %X/%X differs from the final LSN %X/%X of the transaction's begin",
		                       LSN_FORMAT_ARGS(commit.commit_lsn), LSN_FORMAT_ARGS(w->final_lsn))));
	insert_transaction(w, commit);
	w->progress_lsn = Max(w->progress_lsn, commit.end_lsn);
	w->progress_time = commit.commit_time;
	end_transaction(w);
}

void writer_prepared(Writer *w, std::string_view gid, TimestampTz prepare_time, bool rolled_back) {
	if (!w->in_transaction)
		misplaced("prepare", false);
	pg_verifymbstr(gid.data(), static_cast<int>(gid.size()), false);
	MemoryContext caller = MemoryContextSwitchTo(w->txn_context);
	w->gid = pnstrdup(gid.data(), gid.size());
	MemoryContextSwitchTo(caller);
	w->prepare_time = prepare_time;
	w->rolled_back = rolled_back;
}

void writer_progress(Writer *w, XLogRecPtr lsn, TimestampTz time) {
	if (w->in_transaction)
		misplaced("prepare", true);
	open_local(w);
	w->progress_lsn = Max(w->progress_lsn, lsn);
	w->progress_time = time;
}

Datum writer_latest_image(Writer *w, const AuditRelation *relation, Datum row_key) {
	if (!w->in_transaction)
		elog(ERROR, "latest image looked up outside an upstream transaction");
	Target *t = open_target(w, kChangeTable);
	if (const TupleTableSlot *slot = buffered_change(w, t, relation, row_key)) {
		bool op_isnull, new_row_isnull;
		Datum op = buffered_value(t, slot, kChangeOp, &op_isnull);
		Datum new_row = buffered_value(t, slot, kChangeNewRow, &new_row_isnull);
		return image_of(op, new_row, new_row_isnull);
	}
	return indexed_image(w, t, relation, row_key);
}

bool writer_local_open(const Writer *w) {
	return w->local_open;
}

LocalCommit writer_commit_local(Writer *w) {
	if (w->in_transaction)
		elog(ERROR, "local commit inside an upstream transaction");
	if (!w->local_open)
		return {InvalidXLogRecPtr, InvalidXLogRecPtr};
	return commit_local(w);
}

bool writer_in_transaction(const Writer *w) {
	return w->in_transaction;
}

void writer_reset(Writer *w) {
	// The abort released relations, locks, pins, snapshots: only forget them here.
	forget_targets(w);
	end_transaction(w);
	w->local_open = false;
	w->progress_lsn = InvalidXLogRecPtr; // the aborted transaction's progress is not made
	w->progress_time = 0;
	replorigin_session_origin_lsn = InvalidXLogRecPtr;
	replorigin_session_origin_timestamp = 0;
	MemoryContextReset(w->row_context);
	MemoryContextReset(w->txn_context);
}

} // namespace logical_audit::audit
