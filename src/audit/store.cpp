// Relation ids and time partitions of the store (see store.hpp).
#include "audit/store.hpp"

#include <cstring>

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

constexpr const char *kSchema = "logical_audit";
const char *const kPartitioned[kTables] = {"change_data", "transaction_data", "message_data"};

// The cache key: an upstream relation's names, zero-padded (identifiers are at most 63 bytes).
struct RelationKey {
	char schema_name[NAMEDATALEN];
	char table_name[NAMEDATALEN];
};

struct RelationEntry {
	RelationKey key;
	StoredRelation relation;
};

// Copies a text Datum into a fixed-size name; a longer one is an ERROR (it cannot be an identifier).
void copy_name(Datum name, char *into) {
	text *t = DatumGetTextPP(name);
	size_t len = VARSIZE_ANY_EXHDR(t);
	if (len >= NAMEDATALEN)
		ereport(ERROR, (errcode(ERRCODE_NAME_TOO_LONG),
		                errmsg("upstream relation name is longer than %d bytes", NAMEDATALEN - 1)));
	memcpy(into, VARDATA_ANY(t), len);
}

// Runs a query of the store that returns at most one row; returns whether it returned one.
bool query_row(const char *sql, int nargs, Oid *types, Datum *values, bool read_only) {
	int rc = SPI_execute_with_args(sql, nargs, types, values, nullptr, read_only, 1);
	if (rc < 0)
		elog(ERROR, "store query failed: %s", SPI_result_code_string(rc));
	return SPI_processed > 0;
}

// A column of the row query_row returned.
Datum row_value(int column, bool *isnull) {
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column, isnull);
}

// Reads (or makes) the relation's row and its latest TRUNCATE into relation.
void load_relation(StoredRelation *relation, int32 subscription_id, Datum schema_name, Datum table_name) {
	Oid types[3] = {INT4OID, TEXTOID, TEXTOID};
	Datum values[3] = {Int32GetDatum(subscription_id), schema_name, table_name};
	bool isnull;
	SPI_connect();
	query_row("WITH made AS (INSERT INTO logical_audit.relation (subscription_id, schema_name, table_name) "
	          "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING id) "
	          "SELECT id FROM made UNION ALL SELECT id FROM logical_audit.relation "
	          "WHERE subscription_id = $1 AND schema_name = $2 AND table_name = $3",
	          3, types, values, false);
	relation->id = DatumGetInt32(row_value(1, &isnull));
	values[0] = Int32GetDatum(relation->id);
	relation->truncated = query_row("SELECT commit_time, commit_lsn, ordinal FROM logical_audit.relation_truncate "
	                                "WHERE relation_id = $1 ORDER BY commit_lsn DESC, ordinal DESC LIMIT 1",
	                                1, types, values, true);
	if (relation->truncated)
		relation->truncate = {DatumGetTimestampTz(row_value(1, &isnull)), DatumGetLSN(row_value(2, &isnull)),
		                      DatumGetInt32(row_value(3, &isnull))};
	SPI_finish();
}

// Opens a partitioned table's partition that holds value (its key's single column), in
// AccessShareLock; InvalidOid when none does. For a range, *lower and *upper get its bounds.
Oid child_for(Relation parent, Datum value, TimestampTz *lower, TimestampTz *upper) {
	PartitionKey key = RelationGetPartitionKey(parent);
	PartitionDesc desc = RelationGetPartitionDesc(parent, true);
	PartitionBoundInfo bounds = desc->boundinfo;
	if (bounds == nullptr || desc->nparts == 0)
		return InvalidOid;
	bool equal = false;
	int index = -1;
	if (key->strategy == PARTITION_STRATEGY_LIST) {
		int offset = partition_list_bsearch(key->partsupfunc, key->partcollation, bounds, value, &equal);
		if (offset >= 0 && equal)
			index = bounds->indexes[offset];
	} else {
		int offset = partition_range_datum_bsearch(key->partsupfunc, key->partcollation, bounds, 1, &value, &equal);
		index = bounds->indexes[offset + 1];
		if (index >= 0) {
			*lower = DatumGetTimestampTz(bounds->datums[offset][0]);
			*upper = DatumGetTimestampTz(bounds->datums[offset + 1][0]);
		}
	}
	return index >= 0 ? desc->oids[index] : InvalidOid;
}

} // namespace

const char *audit_table_name(TableKind kind) {
	return kPartitioned[kind];
}

void column_numbers(Relation rel, const char *const *names, int count, AttrNumber *attno) {
	for (int c = 0; c < count; c++) {
		attno[c] = get_attnum(RelationGetRelid(rel), names[c]);
		if (attno[c] == InvalidAttrNumber)
			ereport(ERROR,
			        (errcode(ERRCODE_UNDEFINED_COLUMN),
			         errmsg("audit table %s.%s has no column \"%s\"", kSchema, RelationGetRelationName(rel), names[c]),
			         errhint("Update the logical_audit extension (ALTER EXTENSION logical_audit UPDATE).")));
	}
}

Oid subscription_partition(TableKind kind, int32 subscription_id) {
	Oid root_id = get_relname_relid(kPartitioned[kind], get_namespace_oid(kSchema, false));
	if (!OidIsValid(root_id))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
		                errmsg("audit table %s.%s does not exist", kSchema, kPartitioned[kind]),
		                errhint("Update the logical_audit extension (ALTER EXTENSION logical_audit UPDATE).")));
	Relation root = table_open(root_id, AccessShareLock);
	TimestampTz unused;
	Oid middle_id = child_for(root, Int32GetDatum(subscription_id), &unused, &unused);
	table_close(root, NoLock);
	return middle_id;
}

Oid time_partition(Relation subscription_partition, TimestampTz time, TimestampTz *lower, TimestampTz *upper) {
	return child_for(subscription_partition, TimestampTzGetDatum(time), lower, upper);
}

Oid partition_holding(TableKind kind, int32 subscription_id, TimestampTz time, TimestampTz *lower, TimestampTz *upper) {
	Oid middle_id = subscription_partition(kind, subscription_id);
	if (!OidIsValid(middle_id))
		return InvalidOid;
	Relation middle = table_open(middle_id, AccessShareLock);
	Oid leaf = time_partition(middle, time, lower, upper);
	table_close(middle, NoLock);
	return leaf;
}

namespace {

// Makes the partitions for (subscription, time), with logical_audit.create_partitions.
void create_partitions(int32 subscription_id, TimestampTz time) {
	Oid types[2] = {INT4OID, TIMESTAMPTZOID};
	Datum values[2] = {Int32GetDatum(subscription_id), TimestampTzGetDatum(time)};
	SPI_connect();
	query_row("SELECT logical_audit.create_partitions($1, $2)", 2, types, values, false);
	SPI_finish();
	CommandCounterIncrement();
}

} // namespace

struct RelationIds {
	HTAB *hash;
	MemoryContext context;
};

RelationIds *relation_ids_create(MemoryContext context) {
	RelationIds *ids = static_cast<RelationIds *>(MemoryContextAllocZero(context, sizeof(RelationIds)));
	ids->context = context;
	return ids;
}

StoredRelation *relation_ids_find(RelationIds *ids, int32 subscription_id, Datum schema_name, Datum table_name) {
	if (ids->hash == nullptr) {
		HASHCTL info = {};
		info.keysize = sizeof(RelationKey);
		info.entrysize = sizeof(RelationEntry);
		info.hcxt = ids->context;
		ids->hash = hash_create("logical_audit relation ids", 64, &info, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	RelationKey key = {};
	copy_name(schema_name, key.schema_name);
	copy_name(table_name, key.table_name);
	bool found;
	RelationEntry *entry = static_cast<RelationEntry *>(hash_search(ids->hash, &key, HASH_FIND, &found));
	if (found)
		return &entry->relation;
	StoredRelation relation = {};
	load_relation(&relation, subscription_id, schema_name, table_name);
	entry = static_cast<RelationEntry *>(hash_search(ids->hash, &key, HASH_ENTER, &found));
	entry->relation = relation;
	return &entry->relation;
}

void relation_truncated(StoredRelation *relation, const ChangeAt &at) {
	Oid types[4] = {INT4OID, LSNOID, INT4OID, TIMESTAMPTZOID};
	Datum values[4] = {Int32GetDatum(relation->id), LSNGetDatum(at.lsn), Int32GetDatum(at.ordinal),
	                   TimestampTzGetDatum(at.time)};
	SPI_connect();
	query_row("INSERT INTO logical_audit.relation_truncate (relation_id, commit_lsn, ordinal, commit_time) "
	          "VALUES ($1, $2, $3, $4)",
	          4, types, values, false);
	SPI_finish();
	relation->truncated = true;
	relation->truncate = at;
}

void relation_ids_forget(RelationIds *ids) {
	if (ids->hash != nullptr)
		hash_destroy(ids->hash);
	ids->hash = nullptr;
}

Oid partition_for(TableKind kind, int32 subscription_id, TimestampTz time, TimestampTz *lower, TimestampTz *upper) {
	Oid leaf = partition_holding(kind, subscription_id, time, lower, upper);
	if (OidIsValid(leaf))
		return leaf;
	create_partitions(subscription_id, time);
	leaf = partition_holding(kind, subscription_id, time, lower, upper);
	if (!OidIsValid(leaf))
		ereport(ERROR, (errcode(ERRCODE_UNDEFINED_TABLE),
		                errmsg("no partition of %s.%s holds subscription %d's rows of %s", kSchema, kPartitioned[kind],
		                       subscription_id, timestamptz_to_str(time))));
	return leaf;
}

} // namespace logical_audit::audit
