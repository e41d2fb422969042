// logical_audit.version_chain(subscription_id, commit_time, commit_lsn, ordinal, key): the change
// rows of one row's version chain, from the given change back to its first, in one call. Each step
// finds the time partition that holds the linked change (its commit time is in the link) in the
// subscription's partition, opened once, and reads it through that partition's (commit_lsn,
// ordinal) index: no planning per step, and a cost that follows the row's own changes, not the
// history held.
//
// Everything is palloc'd in the call's memory context; the relations a walk opens stay open until
// its end, the scan of a step until the step's end; an ERROR releases them with the transaction.
#include "audit/store.hpp"

#include "pg.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(logical_audit_version_chain);
}

namespace logical_audit {

namespace {

using audit::ChangeAt;

// The columns of change_data a step reads, by name.
enum Column {
	kTime,
	kLsn,
	kOrdinal,
	kOp,
	kOldRow,
	kPrevTime,
	kPrevLsn,
	kPrevOrdinal,
	kMovedTime,
	kMovedLsn,
	kMovedOrdinal,
	kColumns
};
const char *const kNames[kColumns] = {"commit_time", "commit_lsn", "ordinal",      "op",
                                      "old_row",     "prev_time",  "prev_lsn",     "prev_ordinal",
                                      "moved_time",  "moved_lsn",  "moved_ordinal"};

// The leaf's index whose first columns are (commit_lsn, ordinal), opened in AccessShareLock.
Relation lsn_index(Relation leaf, const AttrNumber *attno) {
	List *indexes = RelationGetIndexList(leaf);
	ListCell *lc;
	foreach (lc, indexes) {
		Relation index = index_open(lfirst_oid(lc), AccessShareLock);
		if (index->rd_index->indnkeyatts >= 2 && index->rd_index->indkey.values[0] == attno[kLsn] &&
		    index->rd_index->indkey.values[1] == attno[kOrdinal] && index->rd_rel->relam == BTREE_AM_OID)
			return index;
		index_close(index, NoLock);
	}
	ereport(ERROR, (errcode(ERRCODE_UNDEFINED_OBJECT),
	                errmsg("audit partition %s has no index on (commit_lsn, ordinal)", RelationGetRelationName(leaf)),
	                errhint("Update the logical_audit extension (ALTER EXTENSION logical_audit UPDATE).")));
	return nullptr; // not reached
}

// What a walk keeps open: the subscription's partition of change_data, and the time partition
// (with its index and column numbers) of the latest step, which the next step often needs again.
struct Walk {
	Relation parent;
	Oid leaf_id;
	Relation leaf;
	Relation index;
	AttrNumber attno[kColumns];
};

// Makes the time partition that holds `at` the walk's current one; false when no kept partition
// holds it (retention dropped it, or it was detached).
bool enter_partition(Walk &walk, const ChangeAt &at) {
	TimestampTz lower, upper;
	Oid leaf_id = audit::time_partition(walk.parent, at.time, &lower, &upper);
	if (!OidIsValid(leaf_id))
		return false;
	if (leaf_id == walk.leaf_id)
		return true;
	// The locks stay until the end of the transaction, as a query's would.
	if (walk.leaf != nullptr) {
		index_close(walk.index, NoLock);
		table_close(walk.leaf, NoLock);
	}
	walk.leaf = table_open(leaf_id, AccessShareLock);
	walk.leaf_id = leaf_id;
	audit::column_numbers(walk.leaf, kNames, kColumns, walk.attno);
	walk.index = lsn_index(walk.leaf, walk.attno);
	return true;
}

// Reads the change at `at` into slot (made over the partition's descriptor in the current
// context); false when no kept partition holds it or the partition lacks it.
bool read_change(Walk &walk, const ChangeAt &at, TupleTableSlot **slot) {
	if (!enter_partition(walk, at))
		return false;
	ScanKeyData keys[2];
	ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_PG_LSN_EQ, LSNGetDatum(at.lsn));
	ScanKeyInit(&keys[1], 2, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(at.ordinal));
	*slot = MakeSingleTupleTableSlot(RelationGetDescr(walk.leaf), table_slot_callbacks(walk.leaf));
	IndexScanDesc scan = index_beginscan(walk.leaf, walk.index, GetActiveSnapshot(), 2, 0);
	index_rescan(scan, keys, 2, nullptr, 0);
	bool found = index_getnext_slot(scan, ForwardScanDirection, *slot);
	if (found)
		slot_getallattrs(*slot);
	else
		ExecDropSingleTupleTableSlot(*slot);
	index_endscan(scan);
	return found;
}

// The link (time, lsn, ordinal) starting at column first, or false when it is NULL.
bool link_at(TupleTableSlot *slot, const AttrNumber *attno, int first, ChangeAt *to) {
	bool isnull;
	Datum time = slot_getattr(slot, attno[first], &isnull);
	if (isnull)
		return false;
	to->time = DatumGetTimestampTz(time);
	to->lsn = DatumGetLSN(slot_getattr(slot, attno[first + 1], &isnull));
	to->ordinal = DatumGetInt32(slot_getattr(slot, attno[first + 2], &isnull));
	return true;
}

// The change before this one in the chain of key: under the old key when this UPDATE moved the
// row away from key, else under its own key. False at the chain's start.
bool previous(TupleTableSlot *slot, const AttrNumber *attno, Datum key, ChangeAt *to) {
	bool isnull;
	bool moved_away = DatumGetChar(slot_getattr(slot, attno[kOp], &isnull)) == 'U';
	if (moved_away) {
		Datum old_row = slot_getattr(slot, attno[kOldRow], &isnull);
		moved_away = !isnull && DatumGetBool(DirectFunctionCall2(jsonb_eq, old_row, key));
	}
	return link_at(slot, attno, moved_away ? kMovedTime : kPrevTime, to);
}

// Puts the change row into the result, in the result's (change_data's) column order.
void emit(ReturnSetInfo *rsinfo, TupleTableSlot *slot) {
	TupleDesc result = rsinfo->setDesc;
	TupleDesc leaf = slot->tts_tupleDescriptor;
	Datum *values = static_cast<Datum *>(palloc(sizeof(Datum) * result->natts));
	bool *nulls = static_cast<bool *>(palloc(sizeof(bool) * result->natts));
	for (int i = 0; i < result->natts; i++) {
		nulls[i] = true;
		values[i] = (Datum)0;
		const char *name = NameStr(TupleDescAttr(result, i)->attname);
		for (int j = 0; j < leaf->natts; j++)
			if (!TupleDescAttr(leaf, j)->attisdropped && strcmp(NameStr(TupleDescAttr(leaf, j)->attname), name) == 0) {
				values[i] = slot->tts_values[j];
				nulls[i] = slot->tts_isnull[j];
				break;
			}
	}
	tuplestore_putvalues(rsinfo->setResult, result, values, nulls);
	pfree(values);
	pfree(nulls);
}

} // namespace

} // namespace logical_audit

extern "C" Datum logical_audit_version_chain(PG_FUNCTION_ARGS) {
	using namespace logical_audit;
	InitMaterializedSRF(fcinfo, 0);
	auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
	int32 subscription_id = PG_GETARG_INT32(0);
	ChangeAt at = {PG_GETARG_TIMESTAMPTZ(1), PG_GETARG_LSN(2), PG_GETARG_INT32(3)};
	Datum key = PG_GETARG_DATUM(4);
	Oid parent_id = audit::subscription_partition(audit::kChangeTable, subscription_id);
	if (!OidIsValid(parent_id))
		return (Datum)0;
	Walk walk = {table_open(parent_id, AccessShareLock), InvalidOid, nullptr, nullptr, {}};
	TupleTableSlot *slot = nullptr;
	while (read_change(walk, at, &slot)) {
		CHECK_FOR_INTERRUPTS();
		emit(rsinfo, slot);
		ChangeAt before;
		bool more = previous(slot, walk.attno, key, &before);
		ExecDropSingleTupleTableSlot(slot);
		if (!more)
			break;
		// A link goes back in upstream order: anything else is a broken chain, not a loop to follow.
		if (!audit::change_before(before, at))
			ereport(ERROR, (errcode(ERRCODE_DATA_CORRUPTED),
			                errmsg("version chain of subscription %d goes forward from %X/%X ordinal %d",
			                       subscription_id, LSN_FORMAT_ARGS(at.lsn), at.ordinal)));
		at = before;
	}
	if (walk.leaf != nullptr) {
		index_close(walk.index, NoLock);
		table_close(walk.leaf, NoLock);
	}
	table_close(walk.parent, NoLock);
	return (Datum)0;
}
