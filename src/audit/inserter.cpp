// Batched inserts into the time partitions of one audit table (see inserter.hpp).
#include "audit/inserter.hpp"

#include <cstring>

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

// A batch is inserted when it holds max_rows rows or this many bytes of row values.
constexpr Size kBatchBytes = 1024 * 1024;

} // namespace

struct Inserter {
	const TableSpec *spec;
	// Kept across local transactions: desc is a copy of the partition's descriptor, not reference
	// counted, so slots over it pin nothing in a resource owner.
	MemoryContext slot_context; // desc, attno, the slots and their materialized tuples
	TupleDesc desc;             // nullptr until built
	AttrNumber *attno;          // attribute number of each of the spec's columns
	TupleTableSlot **slots;
	int nslots; // created so far, up to spec->max_rows
	// The local transaction's: allocated in txn_context.
	Relation rel;            // nullptr when not opened in this local transaction
	EState *estate;          // for index insertion and constraint checks
	ResultRelInfo *rri;      // the relation with its open indexes
	BulkInsertState bistate; // only once a full batch was written
	TimestampTz lower;       // the range of commit times of rel
	TimestampTz upper;
	// The buffered rows.
	MemoryContext batch; // their values
	int nbuffered;
	Size buffered_bytes;
};

namespace {

// (Re)builds the slots over a copy of the partition's descriptor, when they do not match it
// (first use, another partition's layout, or the table changed since).
void prepare_slots(Inserter *in) {
	TupleDesc desc = RelationGetDescr(in->rel);
	if (in->desc != nullptr && equalTupleDescs(in->desc, desc))
		return;
	MemoryContextReset(in->slot_context);
	MemoryContext caller = MemoryContextSwitchTo(in->slot_context);
	in->desc = nullptr;
	in->nslots = 0;
	in->attno = static_cast<AttrNumber *>(palloc(sizeof(AttrNumber) * in->spec->ncolumns));
	column_numbers(in->rel, in->spec->columns, in->spec->ncolumns, in->attno);
	in->slots = static_cast<TupleTableSlot **>(palloc0(sizeof(TupleTableSlot *) * in->spec->max_rows));
	in->desc = CreateTupleDescCopyConstr(desc);
	MemoryContextSwitchTo(caller);
}

// The i-th slot, created on first use in the slots' own context.
TupleTableSlot *slot_at(Inserter *in, int i) {
	if (i == in->nslots) {
		MemoryContext caller = MemoryContextSwitchTo(in->slot_context);
		in->slots[in->nslots++] = MakeSingleTupleTableSlot(in->desc, table_slot_callbacks(in->rel));
		MemoryContextSwitchTo(caller);
	}
	return in->slots[i];
}

// Stores a row given in the spec's column order into a slot (other columns NULL) and checks the
// table's NOT NULL and CHECK constraints, as COPY does for each row.
void store_row(Inserter *in, TupleTableSlot *slot, const Datum *values, const bool *isnull) {
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	for (int c = 0; c < in->spec->ncolumns; c++) {
		slot->tts_values[in->attno[c] - 1] = values[c];
		slot->tts_isnull[in->attno[c] - 1] = isnull[c];
	}
	ExecStoreVirtualTuple(slot);
	if (in->rel->rd_att->constr != nullptr) {
		ExecConstraints(in->rri, slot, in->estate);
		ResetPerTupleExprContext(in->estate);
	}
}

// Writes the buffered rows: heap tuples in one multi-insert, then their index entries (the unique
// checks happen here). A full batch of a table that batches switches it to a bulk-insert state (a
// ring of buffers and a pinned target page), as COPY does; small transactions do without,
// keeping their pages in shared buffers. Then frees the rows' memory.
void flush(Inserter *in, MemoryContext txn_context, bool full) {
	if (in->nbuffered == 0)
		return;
	if (full && in->spec->max_rows > 1 && in->bistate == nullptr) {
		MemoryContext caller = MemoryContextSwitchTo(txn_context);
		in->bistate = GetBulkInsertState();
		MemoryContextSwitchTo(caller);
	}
	MemoryContext caller = MemoryContextSwitchTo(in->batch);
	insert_slots(in->rri, in->estate, in->slots, in->nbuffered, in->bistate);
	MemoryContextSwitchTo(caller);
	MemoryContextReset(in->batch);
	in->nbuffered = 0;
	in->buffered_bytes = 0;
}

// Releases the open partition (its buffered rows inserted by the caller).
void release(Inserter *in) {
	if (in->bistate != nullptr) {
		FreeBulkInsertState(in->bistate);
		table_finish_bulk_insert(in->rel, 0);
	}
	insert_state_close(in->estate, in->rri);
	table_close(in->rel, NoLock);
	in->rel = nullptr;
	in->estate = nullptr;
	in->rri = nullptr;
	in->bistate = nullptr;
}

} // namespace

void insert_state_open(Relation rel, EState **estate, ResultRelInfo **rri) {
	*estate = CreateExecutorState();
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	ExecInitRangeTable(*estate, list_make1(rte));
	*rri = makeNode(ResultRelInfo);
	InitResultRelInfo(*rri, rel, 1, nullptr, 0);
	ExecOpenIndices(*rri, false);
}

void insert_state_close(EState *estate, ResultRelInfo *rri) {
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
}

void insert_slots(ResultRelInfo *rri, EState *estate, TupleTableSlot **slots, int n, BulkInsertState bistate) {
	table_multi_insert(rri->ri_RelationDesc, slots, n, GetCurrentCommandId(true), 0, bistate);
	for (int i = 0; i < n; i++) {
		list_free(ExecInsertIndexTuples(rri, slots[i], estate, false, false, nullptr, NIL));
		ResetPerTupleExprContext(estate);
		ExecClearTuple(slots[i]);
	}
}

Inserter *inserter_create(const TableSpec *spec, MemoryContext context) {
	Inserter *in = static_cast<Inserter *>(MemoryContextAllocZero(context, sizeof(Inserter)));
	in->spec = spec;
	in->slot_context = AllocSetContextCreate(context, "logical_audit inserter slots", ALLOCSET_DEFAULT_SIZES);
	in->batch = AllocSetContextCreate(context, "logical_audit inserter batch", ALLOCSET_DEFAULT_SIZES);
	return in;
}

void inserter_open(Inserter *in, MemoryContext txn_context, int32 subscription_id, TimestampTz time) {
	if (in->rel != nullptr && in->lower <= time && time < in->upper)
		return;
	if (in->rel != nullptr)
		inserter_close(in);
	MemoryContext caller = MemoryContextSwitchTo(txn_context);
	Oid relid = partition_for(in->spec->kind, subscription_id, time, &in->lower, &in->upper);
	in->rel = table_open(relid, RowExclusiveLock);
	if (in->rel->rd_rel->relkind != RELKIND_RELATION)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
		                errmsg("audit partition %s is not a plain table", RelationGetRelationName(in->rel)),
		                errdetail("The audit worker inserts rows directly into the table's heap and indexes.")));
	prepare_slots(in);
	insert_state_open(in->rel, &in->estate, &in->rri);
	MemoryContextSwitchTo(caller);
}

MemoryContext inserter_batch(Inserter *in) {
	return in->batch;
}

Size *inserter_bytes(Inserter *in) {
	return &in->buffered_bytes;
}

void inserter_add(Inserter *in, MemoryContext txn_context, const Datum *values, const bool *isnull) {
	store_row(in, slot_at(in, in->nbuffered), values, isnull);
	in->nbuffered++;
	if (in->nbuffered == in->spec->max_rows || in->buffered_bytes >= kBatchBytes)
		flush(in, txn_context, true);
}

void inserter_close(Inserter *in) {
	if (in->rel == nullptr)
		return;
	flush(in, nullptr, false);
	release(in);
}

void inserter_forget(Inserter *in) {
	in->rel = nullptr;
	in->estate = nullptr;
	in->rri = nullptr;
	in->bistate = nullptr;
	in->nbuffered = 0;
	in->buffered_bytes = 0;
	MemoryContextReset(in->batch);
	// The slots may hold half-made tuples: build them again on next use.
	MemoryContextReset(in->slot_context);
	in->desc = nullptr;
	in->nslots = 0;
}

} // namespace logical_audit::audit
