// The latest-image store (see images.hpp): one index scan of row_image_key_hash per lookup (the
// relation id and the key's row_key_hash, which the store writes in key_number: integer
// comparisons, then the key itself checked on the rows found), SnapshotSelf so that the local transaction's own earlier
// changes count, and an update in place (HOT when the page has room: the table's fillfactor leaves it) per keyed change
// of a row the table holds. Rows new to the table are buffered (pending) and written as COPY
// writes, a batch in one multi-insert, then their index entries; a lookup finds them in the
// buffer first, through a hash table of the batch. The worker is the only writer of its
// relations' rows: it knows, per relation, a number no row is filed above (read from the index
// once, raised by each row it adds), and a key filed above it (the next id of a serial key) is
// new without a lookup.
#include "audit/images.hpp"
#include "audit/inserter.hpp"
#include "audit/row_key_hash.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

constexpr const char *kTable = "row_image";
constexpr const char *kIndex = "row_image_key_hash";

enum Column { kRelationId, kCommitTime, kCommitLsn, kOrdinal, kRowKey, kKeyNumber, kImage, kPartial, kColumns };
const char *const kNames[kColumns] = {"relation_id", "commit_time", "commit_lsn", "ordinal",
                                      "row_key",     "key_number",  "image",      "partial"};

// New rows a batch holds at most.
constexpr int kBatchRows = 1000;

// What the batch's hash table files a pending row under (relation_id and row_key_hash).
struct PendingKey {
	int64 hash;
	int32 relation_id;
	int32 padding; // zero: the hash table compares the whole key
};

// The largest number a row of the relation may be filed under.
struct KeyBound {
	int32 relation_id;
	int64 bound;
};

// The newest pending row under a key; older ones share it through Images::pending_next.
struct PendingEntry {
	PendingKey key;
	int index;
};

} // namespace

struct Images {
	MemoryContext context;
	Relation rel;   // nullptr until opened in the local transaction
	EState *estate; // for index insertion
	ResultRelInfo *rri;
	IndexScanDesc scan;
	TupleTableSlot *found;      // the row found by the latest lookup in the table
	TupleTableSlot *next;       // the row written
	AttrNumber attno[kColumns]; // attribute number of each column
	// The pending rows, in slots kept across local transactions over a copy of the table's
	// descriptor (not reference counted: the slots pin nothing in a resource owner), in
	// slot_context; their hash table and chain in batch_context, reset after each batch.
	MemoryContext slot_context;
	MemoryContext batch_context;
	TupleDesc desc; // nullptr until built
	TupleTableSlot *pending[kBatchRows];
	int nslots;        // slots created so far
	int npending;      // rows buffered
	int *pending_next; // per pending row, the previous one filed under the same key, or -1
	HTAB *pending_index;
	HTAB *bounds; // KeyBound per relation, in context, for the worker's lifetime
	// The latest lookup: the key's number, and where it found the row (the pending row's index,
	// or -1: in found).
	PendingKey looked_up;
	int found_pending;
	// The latest lookup, which the next one of the same key (the same Datum: the writer looks a
	// change's key up, then sets it, within one message) answers without a scan. A write, and an
	// abort, forget it: a Datum of a later message may reuse the address.
	bool remembered;
	int32 remembered_relation;
	Datum remembered_key;
	bool remembered_found;
	int remembered_pending;
};

namespace {

// The index on (relation_id, key_number), among the table's open indexes.
Relation key_index(Images *s) {
	for (int i = 0; i < s->rri->ri_NumIndices; i++)
		if (strcmp(RelationGetRelationName(s->rri->ri_IndexRelationDescs[i]), kIndex) == 0)
			return s->rri->ri_IndexRelationDescs[i];
	ereport(ERROR,
	        (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("audit table logical_audit.%s has no index %s", kTable, kIndex),
	         errhint("Update the logical_audit extension (ALTER EXTENSION logical_audit UPDATE).")));
	return nullptr; // not reached
}

// (Re)builds the pending slots over a copy of the table's descriptor, when they do not match it.
void prepare_pending(Images *s) {
	TupleDesc desc = RelationGetDescr(s->rel);
	if (s->desc != nullptr && equalTupleDescs(s->desc, desc))
		return;
	MemoryContextReset(s->slot_context);
	MemoryContext caller = MemoryContextSwitchTo(s->slot_context);
	s->desc = CreateTupleDescCopyConstr(desc);
	s->nslots = 0;
	MemoryContextSwitchTo(caller);
}

// Opens the table, its indexes and the scan in the local transaction, in txn_context.
void open_images(Images *s, MemoryContext txn_context) {
	if (s->rel != nullptr)
		return;
	MemoryContext caller = MemoryContextSwitchTo(txn_context);
	Oid relid = RangeVarGetRelid(makeRangeVar(const_cast<char *>("logical_audit"), const_cast<char *>(kTable), -1),
	                             RowExclusiveLock, false);
	s->rel = table_open(relid, NoLock);
	column_numbers(s->rel, kNames, kColumns, s->attno);
	insert_state_open(s->rel, &s->estate, &s->rri);
	s->scan = index_beginscan(s->rel, key_index(s), SnapshotSelf, 2, 0);
	s->found = MakeSingleTupleTableSlot(RelationGetDescr(s->rel), table_slot_callbacks(s->rel));
	s->next = MakeSingleTupleTableSlot(RelationGetDescr(s->rel), table_slot_callbacks(s->rel));
	MemoryContextSwitchTo(caller);
	prepare_pending(s);
}

// The batch's hash table, made on first use in the batch's context.
HTAB *pending_index(Images *s) {
	if (s->pending_index != nullptr)
		return s->pending_index;
	HASHCTL ctl;
	ctl.keysize = sizeof(PendingKey);
	ctl.entrysize = sizeof(PendingEntry);
	ctl.hcxt = s->batch_context;
	s->pending_index =
	    hash_create("logical_audit pending row images", kBatchRows, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	s->pending_next = static_cast<int *>(MemoryContextAlloc(s->batch_context, sizeof(int) * kBatchRows));
	return s->pending_index;
}

// The key a pending row is filed under.
PendingKey pending_key(int32 relation_id, Datum row_key) {
	PendingKey key;
	memset(&key, 0, sizeof key);
	key.hash = row_key_hash(row_key);
	key.relation_id = relation_id;
	return key;
}

// The pending row of that key, or -1.
int find_pending(Images *s, const PendingKey &key, Datum row_key) {
	if (s->npending == 0)
		return -1;
	auto *entry = static_cast<PendingEntry *>(hash_search(pending_index(s), &key, HASH_FIND, nullptr));
	for (int i = entry == nullptr ? -1 : entry->index; i >= 0; i = s->pending_next[i]) {
		bool isnull;
		Datum stored = slot_getattr(s->pending[i], s->attno[kRowKey], &isnull);
		if (DatumGetBool(DirectFunctionCall2(jsonb_eq, stored, row_key)))
			return i;
	}
	return -1;
}

// Writes the pending rows: heap tuples in one multi-insert, then their index entries.
void flush_pending(Images *s) {
	if (s->npending == 0)
		return;
	MemoryContext caller = MemoryContextSwitchTo(s->batch_context);
	insert_slots(s->rri, s->estate, s->pending, s->npending, nullptr);
	MemoryContextSwitchTo(caller);
	MemoryContextReset(s->batch_context);
	s->pending_index = nullptr;
	s->pending_next = nullptr;
	s->npending = 0;
	s->remembered = false;
}

// Stores a row's columns into a slot, filed under key.
void store_image(Images *s, TupleTableSlot *slot, const PendingKey &key, Datum row_key, const Image &image) {
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	const Datum values[kColumns] = {Int32GetDatum(key.relation_id),
	                                TimestampTzGetDatum(image.at.time),
	                                LSNGetDatum(image.at.lsn),
	                                Int32GetDatum(image.at.ordinal),
	                                row_key,
	                                Int64GetDatum(key.hash),
	                                image.row,
	                                BoolGetDatum(image.partial)};
	for (int c = 0; c < kColumns; c++) {
		slot->tts_values[s->attno[c] - 1] = values[c];
		slot->tts_isnull[s->attno[c] - 1] = c == kImage && image.row == (Datum)0;
	}
	ExecStoreVirtualTuple(slot);
}

// The relation's bound, read on first use: the number of its row filed last in the index. It
// is remembered only once read (an ERROR on the way leaves no bound that could be too low); an
// abort may leave it above every row, never below.
KeyBound *key_bound(Images *s, MemoryContext txn_context, int32 relation_id) {
	auto *b = static_cast<KeyBound *>(hash_search(s->bounds, &relation_id, HASH_FIND, nullptr));
	if (b != nullptr)
		return b;
	int64 bound = PG_INT64_MIN;
	ScanKeyData key;
	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, InvalidOid, InvalidOid, F_INT4EQ,
	                       Int32GetDatum(relation_id));
	MemoryContext caller = MemoryContextSwitchTo(txn_context);
	IndexScanDesc scan = index_beginscan(s->rel, key_index(s), SnapshotSelf, 1, 0);
	index_rescan(scan, &key, 1, nullptr, 0);
	ExecClearTuple(s->found);
	if (index_getnext_slot(scan, BackwardScanDirection, s->found)) {
		bool isnull;
		bound = DatumGetInt64(slot_getattr(s->found, s->attno[kKeyNumber], &isnull));
	}
	ExecClearTuple(s->found);
	index_endscan(scan);
	MemoryContextSwitchTo(caller);
	b = static_cast<KeyBound *>(hash_search(s->bounds, &relation_id, HASH_ENTER, nullptr));
	b->bound = bound;
	return b;
}

// Buffers a row new to the table, filed under key, and writes the batch when it is full.
void add_pending(Images *s, const PendingKey &key, Datum row_key, const Image &image) {
	int i = s->npending;
	if (i == s->nslots) {
		MemoryContext caller = MemoryContextSwitchTo(s->slot_context);
		s->pending[s->nslots++] = MakeSingleTupleTableSlot(s->desc, &TTSOpsHeapTuple);
		MemoryContextSwitchTo(caller);
	}
	store_image(s, s->pending[i], key, row_key, image);
	ExecMaterializeSlot(s->pending[i]); // its values copied into the slot's memory
	KeyBound *b = static_cast<KeyBound *>(hash_search(s->bounds, &key.relation_id, HASH_FIND, nullptr));
	b->bound = Max(b->bound, key.hash);
	bool exists;
	auto *entry = static_cast<PendingEntry *>(hash_search(pending_index(s), &key, HASH_ENTER, &exists));
	s->pending_next[i] = exists ? entry->index : -1;
	entry->index = i;
	s->npending++;
	if (s->npending == kBatchRows)
		flush_pending(s);
}

// Finds the row of that key, pending (s->found_pending) or in the table (s->found); false when
// there is none.
bool lookup(Images *s, MemoryContext txn_context, int32 relation_id, Datum row_key) {
	open_images(s, txn_context);
	if (s->remembered && s->remembered_relation == relation_id && s->remembered_key == row_key) {
		s->found_pending = s->remembered_pending;
		return s->remembered_found;
	}
	PendingKey key = pending_key(relation_id, row_key);
	s->looked_up = key;
	bool above = key.hash > key_bound(s, txn_context, relation_id)->bound;
	s->found_pending = above ? -1 : find_pending(s, key, row_key);
	bool found = s->found_pending >= 0;
	if (!found && !above) {
		ScanKeyData keys[2];
		ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid, InvalidOid, F_INT4EQ,
		                       Int32GetDatum(relation_id));
		ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid, InvalidOid, F_INT8EQ,
		                       Int64GetDatum(key.hash));
		MemoryContext caller = MemoryContextSwitchTo(txn_context);
		ExecClearTuple(s->found);
		index_rescan(s->scan, keys, 2, nullptr, 0);
		while (!found && index_getnext_slot(s->scan, ForwardScanDirection, s->found)) {
			bool isnull;
			found = DatumGetBool(
			    DirectFunctionCall2(jsonb_eq, slot_getattr(s->found, s->attno[kRowKey], &isnull), row_key));
		}
		MemoryContextSwitchTo(caller);
	}
	s->remembered = true;
	s->remembered_relation = relation_id;
	s->remembered_key = row_key;
	s->remembered_found = found;
	s->remembered_pending = s->found_pending;
	return found;
}

// A column of the row found.
Datum found_value(Images *s, Column c, bool *isnull) {
	TupleTableSlot *slot = s->found_pending >= 0 ? s->pending[s->found_pending] : s->found;
	return slot_getattr(slot, s->attno[c], isnull);
}

} // namespace

Images *images_create(MemoryContext context) {
	Images *s = static_cast<Images *>(MemoryContextAllocZero(context, sizeof(Images)));
	s->context = context;
	s->slot_context = AllocSetContextCreate(context, "logical_audit image slots", ALLOCSET_DEFAULT_SIZES);
	s->batch_context = AllocSetContextCreate(context, "logical_audit image batch", ALLOCSET_DEFAULT_SIZES);
	HASHCTL ctl;
	ctl.keysize = sizeof(int32);
	ctl.entrysize = sizeof(KeyBound);
	ctl.hcxt = context;
	s->bounds = hash_create("logical_audit image key bounds", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return s;
}

bool images_find(Images *s, MemoryContext txn_context, int32 relation_id, Datum row_key, Image *image) {
	if (!lookup(s, txn_context, relation_id, row_key))
		return false;
	bool isnull;
	image->at.time = DatumGetTimestampTz(found_value(s, kCommitTime, &isnull));
	image->at.lsn = DatumGetLSN(found_value(s, kCommitLsn, &isnull));
	image->at.ordinal = DatumGetInt32(found_value(s, kOrdinal, &isnull));
	image->row = found_value(s, kImage, &isnull);
	if (isnull)
		image->row = (Datum)0;
	image->partial = DatumGetBool(found_value(s, kPartial, &isnull));
	return true;
}

void images_set(Images *s, MemoryContext txn_context, int32 relation_id, Datum row_key, const Image &image) {
	bool exists = lookup(s, txn_context, relation_id, row_key);
	s->remembered = false;
	if (!exists) {
		add_pending(s, s->looked_up, row_key, image);
		return;
	}
	store_image(s, s->next, s->looked_up, row_key, image);
	if (s->found_pending >= 0) {
		ExecCopySlot(s->pending[s->found_pending], s->next); // the new values, copied before the old ones are freed
		return;
	}
	MemoryContext caller = MemoryContextSwitchTo(txn_context);
	bool update_indexes = true;
	// A row written earlier in this command is not yet one an update may replace.
	CommandCounterIncrement();
	simple_table_tuple_update(s->rel, &s->found->tts_tid, s->next, GetActiveSnapshot(), &update_indexes);
	if (update_indexes)
		list_free(ExecInsertIndexTuples(s->rri, s->next, s->estate, true, false, nullptr, NIL));
	ResetPerTupleExprContext(s->estate);
	MemoryContextSwitchTo(caller);
}

void images_close(Images *s) {
	if (s->rel == nullptr)
		return;
	flush_pending(s);
	index_endscan(s->scan);
	ExecDropSingleTupleTableSlot(s->found);
	ExecDropSingleTupleTableSlot(s->next);
	insert_state_close(s->estate, s->rri);
	table_close(s->rel, NoLock);
	images_forget(s);
}

void images_forget(Images *s) {
	s->remembered = false;
	s->npending = 0;
	s->pending_index = nullptr;
	s->pending_next = nullptr;
	MemoryContextReset(s->batch_context);
	// The slots may hold half-made tuples: build them again on next use.
	MemoryContextReset(s->slot_context);
	s->desc = nullptr;
	s->nslots = 0;
	s->rel = nullptr;
	s->estate = nullptr;
	s->rri = nullptr;
	s->scan = nullptr;
	s->found = nullptr;
	s->next = nullptr;
}

} // namespace logical_audit::audit
