// The latest-image store (see images.hpp): one index scan of row_image_key_hash per lookup (the
// relation id and row_key_hash of the key: integer comparisons, then the key itself checked on
// the rows found), SnapshotSelf so that the local transaction's own earlier changes count, and an
// update in place (HOT when the page has room: the table's fillfactor leaves it) or an insert per
// keyed change.
#include "audit/images.hpp"
#include "audit/inserter.hpp"
#include "audit/row_key_hash.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

constexpr const char *kTable = "row_image";
constexpr const char *kIndex = "row_image_key_hash";

enum Column { kRelationId, kCommitTime, kCommitLsn, kOrdinal, kRowKey, kImage, kPartial, kColumns };
const char *const kNames[kColumns] = {"relation_id", "commit_time", "commit_lsn", "ordinal",
                                      "row_key",     "image",       "partial"};

} // namespace

struct Images {
	MemoryContext context;
	Relation rel;   // nullptr until opened in the local transaction
	EState *estate; // for index insertion
	ResultRelInfo *rri;
	IndexScanDesc scan;
	TupleTableSlot *found;      // the row found by the latest lookup
	TupleTableSlot *next;       // the row written
	AttrNumber attno[kColumns]; // attribute number of each column
	// The latest lookup, which the next one of the same key (the same Datum: the writer looks a
	// change's key up, then sets it, within one message) answers without a scan. A write, and an
	// abort, forget it: a Datum of a later message may reuse the address.
	bool remembered;
	int32 remembered_relation;
	Datum remembered_key;
	bool remembered_found;
};

namespace {

// The index on (relation_id, row_key_hash(row_key)), among the table's open indexes.
Relation key_index(Images *s) {
	for (int i = 0; i < s->rri->ri_NumIndices; i++)
		if (strcmp(RelationGetRelationName(s->rri->ri_IndexRelationDescs[i]), kIndex) == 0)
			return s->rri->ri_IndexRelationDescs[i];
	ereport(ERROR,
	        (errcode(ERRCODE_UNDEFINED_OBJECT), errmsg("audit table logical_audit.%s has no index %s", kTable, kIndex),
	         errhint("Update the logical_audit extension (ALTER EXTENSION logical_audit UPDATE).")));
	return nullptr; // not reached
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
}

// Reads the row of that key into s->found; false when there is none.
bool lookup(Images *s, MemoryContext txn_context, int32 relation_id, Datum row_key) {
	open_images(s, txn_context);
	if (s->remembered && s->remembered_relation == relation_id && s->remembered_key == row_key)
		return s->remembered_found;
	ScanKeyData keys[2];
	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid, InvalidOid, F_INT4EQ,
	                       Int32GetDatum(relation_id));
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid, InvalidOid, F_INT8EQ,
	                       Int64GetDatum(row_key_hash(row_key)));
	MemoryContext caller = MemoryContextSwitchTo(txn_context);
	ExecClearTuple(s->found);
	index_rescan(s->scan, keys, 2, nullptr, 0);
	bool found = false;
	while (!found && index_getnext_slot(s->scan, ForwardScanDirection, s->found)) {
		bool isnull;
		found =
		    DatumGetBool(DirectFunctionCall2(jsonb_eq, slot_getattr(s->found, s->attno[kRowKey], &isnull), row_key));
	}
	MemoryContextSwitchTo(caller);
	s->remembered = true;
	s->remembered_relation = relation_id;
	s->remembered_key = row_key;
	s->remembered_found = found;
	return found;
}

// A column of the row found.
Datum found_value(Images *s, Column c, bool *isnull) {
	return slot_getattr(s->found, s->attno[c], isnull);
}

} // namespace

Images *images_create(MemoryContext context) {
	Images *s = static_cast<Images *>(MemoryContextAllocZero(context, sizeof(Images)));
	s->context = context;
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
	TupleTableSlot *slot = s->next;
	ExecClearTuple(slot);
	memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	const Datum values[kColumns] = {Int32GetDatum(relation_id),
	                                TimestampTzGetDatum(image.at.time),
	                                LSNGetDatum(image.at.lsn),
	                                Int32GetDatum(image.at.ordinal),
	                                row_key,
	                                image.row,
	                                BoolGetDatum(image.partial)};
	for (int c = 0; c < kColumns; c++) {
		slot->tts_values[s->attno[c] - 1] = values[c];
		slot->tts_isnull[s->attno[c] - 1] = c == kImage && image.row == (Datum)0;
	}
	ExecStoreVirtualTuple(slot);
	MemoryContext caller = MemoryContextSwitchTo(txn_context);
	bool update_indexes = true;
	// A row written earlier in this command is not yet one an update may replace.
	if (exists)
		CommandCounterIncrement();
	if (exists)
		simple_table_tuple_update(s->rel, &s->found->tts_tid, slot, GetActiveSnapshot(), &update_indexes);
	else
		simple_table_tuple_insert(s->rel, slot);
	if (update_indexes)
		list_free(ExecInsertIndexTuples(s->rri, slot, s->estate, exists, false, nullptr, NIL));
	ResetPerTupleExprContext(s->estate);
	MemoryContextSwitchTo(caller);
}

void images_close(Images *s) {
	if (s->rel == nullptr)
		return;
	index_endscan(s->scan);
	ExecDropSingleTupleTableSlot(s->found);
	ExecDropSingleTupleTableSlot(s->next);
	insert_state_close(s->estate, s->rri);
	table_close(s->rel, NoLock);
	images_forget(s);
}

void images_forget(Images *s) {
	s->remembered = false;
	s->rel = nullptr;
	s->estate = nullptr;
	s->rri = nullptr;
	s->scan = nullptr;
	s->found = nullptr;
	s->next = nullptr;
}

} // namespace logical_audit::audit
