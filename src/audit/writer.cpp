// The batched audit writer: upstream transactions become local transactions holding their change,
// message and transaction rows and the replication origin's progress. A local transaction may hold
// several whole upstream transactions (the worker decides when to commit): its origin progress is
// then the end of the last one, so a restart resumes after exactly what it committed.
//
// Rows go straight to the audit tables' time partitions through one batched inserter per table
// (inserter.hpp): no SQL is parsed or planned per row or per transaction, and memory stays bounded
// whatever the size of the upstream transactions. What a local transaction opens lives in
// txn_context, reset at its end. After an ERROR the caller aborts the local transaction, which
// releases locks, pins and snapshots; writer_reset then just forgets them.
//
// Each upstream transaction's rows go to the time partitions of its commit time (store.hpp). Each
// keyed change also sets the latest image of its row (images.hpp), and points at the change that
// was the row's latest before it: history is a chain walked back from the image, and no index of
// the history takes inserts at random keys.
#include <string_view>

#include "audit/writer.hpp"
#include "audit/images.hpp"
#include "audit/inserter.hpp"
#include "recovery.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

namespace po = pgoutput;

// A batch of change or transaction rows is inserted when it holds this many.
constexpr int kBatchRows = 1000;

// The columns the writer fills, by name: the audit tables may gain columns in later versions
// (they are left NULL) and need not keep this order.
enum ChangeColumn {
	kChangeCommitTime,
	kChangeCommitLsn,
	kChangeSubscription,
	kChangeRelation,
	kChangeOrdinal,
	kChangePrevTime,
	kChangePrevLsn,
	kChangePrevOrdinal,
	kChangeMovedTime,
	kChangeMovedLsn,
	kChangeMovedOrdinal,
	kChangeOp,
	kChangeOldRow,
	kChangeNewRow,
	kChangeUnchangedToast,
	kChangeChangedColumns,
	kChangeColumns
};
const char *const kChangeNames[] = {"commit_time", "commit_lsn", "subscription_id", "relation_id",
                                    "ordinal",     "prev_time",  "prev_lsn",        "prev_ordinal",
                                    "moved_time",  "moved_lsn",  "moved_ordinal",   "op",
                                    "old_row",     "new_row",    "unchanged_toast", "changed_columns"};

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
const char *const kTransactionNames[] = {"subscription_id", "xid",    "commit_lsn",   "end_lsn",
                                         "commit_time",     "origin", "change_count", "annotations",
                                         "audited_at",      "gid",    "prepare_time", "rolled_back"};

enum MessageColumn {
	kMsgSubscription,
	kMsgLsn,
	kMsgCommitLsn,
	kMsgTransactional,
	kMsgPrefix,
	kMsgContent,
	kMsgCommitTime,
	kMsgColumns
};
const char *const kMessageNames[] = {"subscription_id", "lsn",     "commit_lsn", "transactional",
                                     "prefix",          "content", "commit_time"};

const TableSpec kSpecs[kTables] = {
    {kChangeTable, kChangeNames, kChangeColumns, kBatchRows},
    {kTransactionTable, kTransactionNames, kTxnColumns, kBatchRows},
    {kMessageTable, kMessageNames, kMsgColumns, 1},
};

} // namespace

struct Writer {
	int32 subscription_id;
	MemoryContext txn_context;
	MemoryContext row_context; // the values of a single message row
	bool local_open;           // a local transaction is open
	bool in_transaction;       // between writer_begin and writer_commit
	XLogRecPtr progress_lsn;   // origin progress of the open local transaction
	TimestampTz progress_time;
	FullTransactionId xid;
	XLogRecPtr final_lsn;
	TimestampTz commit_time; // of the open upstream transaction
	TimestampTz audited_at;  // when the upstream transaction's Begin arrived
	char *origin;            // from an Origin message, or nullptr
	char *gid;               // of a prepared transaction, or nullptr
	TimestampTz prepare_time;
	bool rolled_back;  // a prepared transaction rolled back: recorded without changes
	Datum annotations; // jsonb object, or 0 when none
	int32 ordinal;     // of the latest change
	Inserter *targets[kTables];
	RelationIds *relations; // ids of upstream relations (long-lived, forgotten after an ERROR)
	Images *images;         // opened in txn_context
};

namespace {

// Raises the error for a message that arrives where the protocol does not allow it.
void misplaced(const char *what, bool in_transaction) {
	ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("unexpected pgoutput %s message", what),
	                errdetail("The message arrived %s.",
	                          in_transaction ? "inside an open transaction" : "outside a transaction")));
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
	for (Inserter *t : w->targets)
		inserter_close(t);
	images_close(w->images);
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
	// A non-transactional message has no commit time: it takes the time it is audited.
	TimestampTz time = transactional ? w->commit_time : GetCurrentTimestamp();
	Inserter *t = w->targets[kMessageTable];
	inserter_open(t, w->txn_context, w->subscription_id, time);
	MemoryContext caller = MemoryContextSwitchTo(w->row_context);
	Datum values[kMsgColumns] = {Int32GetDatum(w->subscription_id),
	                             LSNGetDatum(m.lsn),
	                             LSNGetDatum(w->final_lsn),
	                             BoolGetDatum(transactional),
	                             PointerGetDatum(cstring_to_text_with_len(m.prefix.data(), m.prefix.size())),
	                             bytea_datum(m.content),
	                             TimestampTzGetDatum(time)};
	bool isnull[kMsgColumns] = {false, false, !transactional, false, false, false, false};
	inserter_add(t, w->txn_context, values, isnull); // a batch of one: inserted at once
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
	Inserter *t = w->targets[kTransactionTable];
	inserter_open(t, w->txn_context, w->subscription_id, commit.commit_time);
	MemoryContext caller = MemoryContextSwitchTo(inserter_batch(t));
	Datum values[kTxnColumns] = {
	    Int32GetDatum(w->subscription_id),
	    FullTransactionIdGetDatum(w->xid),
	    LSNGetDatum(w->final_lsn),
	    LSNGetDatum(commit.end_lsn),
	    TimestampTzGetDatum(commit.commit_time),
	    w->origin != nullptr ? CStringGetTextDatum(w->origin) : (Datum)0,
	    Int64GetDatum(w->ordinal),
	    copy_varlena(w->annotations, w->annotations == (Datum)0, inserter_bytes(t)),
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
	inserter_add(t, w->txn_context, values, isnull);
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
	for (Inserter *t : w->targets)
		inserter_forget(t);
	images_forget(w->images);
}

// The operation's code in the op column.
char op_code(Op op) {
	static const char codes[kOps] = {'I', 'U', 'D', 'T', 'S'};
	return codes[static_cast<int>(op)];
}

// Whether an UPDATE moved its row to another key: the upstream sent the old key, and it differs.
bool moved_key(const ChangeRow &row) {
	return row.op == Op::Update && !row.row_key.isnull && !row.old_row.isnull &&
	       !DatumGetBool(DirectFunctionCall2(jsonb_eq, row.old_row.value, row.row_key.value));
}

// A link column pair (time, lsn, ordinal) to another change, NULL when there is none.
void set_link(Datum *values, bool *isnull, int first, const Image *to) {
	for (int c = first; c < first + 3; c++)
		isnull[c] = to == nullptr;
	if (to == nullptr)
		return;
	values[first] = TimestampTzGetDatum(to->at.time);
	values[first + 1] = LSNGetDatum(to->at.lsn);
	values[first + 2] = Int32GetDatum(to->at.ordinal);
}

// Links a keyed change to the latest changes of its row (under its key, and under the old key when
// it moved the row) and makes it their latest: the image is the row after it, as the upstream
// sent it, or none after a DELETE (and under the old key of a move).
void link_change(Writer *w, int32 relation_id, const ChangeRow &row, const ChangeAt &at, Datum *values, bool *isnull) {
	Image before;
	bool found = images_find(w->images, w->txn_context, relation_id, row.row_key.value, &before);
	set_link(values, isnull, kChangePrevTime, found ? &before : nullptr);
	Image after = {at, row.op == Op::Delete ? (Datum)0 : row.new_row.value, !row.unchanged_toast.isnull};
	images_set(w->images, w->txn_context, relation_id, row.row_key.value, after);
	if (!moved_key(row)) {
		set_link(values, isnull, kChangeMovedTime, nullptr);
		return;
	}
	found = images_find(w->images, w->txn_context, relation_id, row.old_row.value, &before);
	set_link(values, isnull, kChangeMovedTime, found ? &before : nullptr);
	images_set(w->images, w->txn_context, relation_id, row.old_row.value, Image{at, (Datum)0, false});
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

Writer *writer_create(int32 subscription_id, MemoryContext context) {
	Writer *w = static_cast<Writer *>(MemoryContextAllocZero(context, sizeof(Writer)));
	w->subscription_id = subscription_id;
	w->txn_context = AllocSetContextCreate(context, "logical_audit writer transaction", ALLOCSET_DEFAULT_SIZES);
	w->row_context = AllocSetContextCreate(context, "logical_audit writer row", ALLOCSET_DEFAULT_SIZES);
	for (int k = 0; k < kTables; k++)
		w->targets[k] = inserter_create(&kSpecs[k], context);
	w->relations = relation_ids_create(context);
	w->images = images_create(context);
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
	w->commit_time = begin.commit_time;
	w->audited_at = GetCurrentStatementStartTimestamp(); // what the column's default now() would give
	w->in_transaction = true;
}

void writer_change(Writer *w, const ChangeRow &row) {
	if (!w->in_transaction)
		misplaced(op_name(row.op), false);
	if (w->ordinal == PG_INT32_MAX)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
		                errmsg("upstream transaction has more than %d changes", PG_INT32_MAX)));
	StoredRelation *relation = relation_ids_find(w->relations, w->subscription_id, row.schema_name, row.table_name);
	ChangeAt at = {w->commit_time, w->final_lsn, w->ordinal + 1};
	Datum values[kChangeColumns] = {};
	bool isnull[kChangeColumns] = {};
	if (!row.row_key.isnull)
		link_change(w, relation->id, row, at, values, isnull);
	else
		for (int c = kChangePrevTime; c <= kChangeMovedOrdinal; c++)
			isnull[c] = true;
	if (row.op == Op::Truncate)
		relation_truncated(relation, at);
	Inserter *t = w->targets[kChangeTable];
	inserter_open(t, w->txn_context, w->subscription_id, w->commit_time);
	MemoryContext caller = MemoryContextSwitchTo(inserter_batch(t));
	values[kChangeCommitTime] = TimestampTzGetDatum(at.time);
	values[kChangeCommitLsn] = LSNGetDatum(at.lsn);
	values[kChangeSubscription] = Int32GetDatum(w->subscription_id);
	values[kChangeRelation] = Int32GetDatum(relation->id);
	values[kChangeOrdinal] = Int32GetDatum(at.ordinal);
	values[kChangeOp] = CharGetDatum(op_code(row.op));
	const NullableDatum *varying[] = {&row.old_row, &row.new_row, &row.unchanged_toast, &row.changed_columns};
	for (int i = 0; i < static_cast<int>(lengthof(varying)); i++) {
		values[kChangeOldRow + i] = copy_varlena(varying[i]->value, varying[i]->isnull, inserter_bytes(t));
		isnull[kChangeOldRow + i] = varying[i]->isnull;
	}
	w->ordinal++;
	inserter_add(t, w->txn_context, values, isnull);
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
	StoredRelation *stored =
	    relation_ids_find(w->relations, w->subscription_id, relation->nspname_text, relation->relname_text);
	Image image;
	if (!images_find(w->images, w->txn_context, stored->id, row_key, &image) || image.row == (Datum)0)
		return (Datum)0;
	// A TRUNCATE of the table since ended the row.
	if (stored->truncated && change_before(image.at, stored->truncate))
		return (Datum)0;
	return PointerGetDatum(PG_DETOAST_DATUM_COPY(image.row));
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
	relation_ids_forget(w->relations);
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
