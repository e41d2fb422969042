// Where the writer's rows go in the store: the ids of upstream relations (logical_audit.relation)
// and the time partitions of the audit tables.
//
// A relation's id is looked up, or its row inserted, once per session and cached with the position
// of the relation's latest TRUNCATE; the cache lives in the writer's long-lived context and is
// forgotten after an ERROR (an aborted local transaction may have inserted the row it names).
#pragma once

#include "pg.hpp"

namespace logical_audit::audit {

// A change's position: its upstream transaction's commit time and LSN, and its ordinal there.
struct ChangeAt {
	TimestampTz time;
	XLogRecPtr lsn;
	int32 ordinal;
};

// Whether a is earlier than b in upstream order.
inline bool change_before(const ChangeAt &a, const ChangeAt &b) {
	return a.lsn < b.lsn || (a.lsn == b.lsn && a.ordinal < b.ordinal);
}

struct StoredRelation {
	int32 id;
	bool truncated;    // the relation has a TRUNCATE row
	ChangeAt truncate; // its latest one
};

struct RelationIds; // opaque

// An empty cache whose memory lives in context.
RelationIds *relation_ids_create(MemoryContext context);

// The stored relation of a subscription's upstream table (names as text), made on first use in
// the open local transaction.
StoredRelation *relation_ids_find(RelationIds *ids, int32 subscription_id, Datum schema_name, Datum table_name);

// Records a TRUNCATE of the relation (logical_audit.relation_truncate), in the open local
// transaction, as its latest.
void relation_truncated(StoredRelation *relation, const ChangeAt &at);

// Forgets every cached relation (after an ERROR).
void relation_ids_forget(RelationIds *ids);

// The audit tables whose rows are partitioned by subscription and commit time.
enum TableKind { kChangeTable, kTransactionTable, kMessageTable, kTables };

// A subscription's partition of an audit table (itself partitioned by time), or InvalidOid.
Oid subscription_partition(TableKind kind, int32 subscription_id);

// The time partition of a subscription's partition (open) that holds rows of that commit time,
// and its range in *lower and *upper; InvalidOid when none does.
Oid time_partition(Relation subscription_partition, TimestampTz time, TimestampTz *lower, TimestampTz *upper);

// The name of an audit table in schema logical_audit: change_data, transaction_data, message_data.
const char *audit_table_name(TableKind kind);

// The attribute numbers of the named columns of an audit table or one of its partitions; a
// missing column is an ERROR naming the table.
void column_numbers(Relation rel, const char *const *names, int count, AttrNumber *attno);

// The time partition of an audit table that holds a subscription's rows of that commit time, and
// its range in *lower and *upper; InvalidOid when none does.
Oid partition_holding(TableKind kind, int32 subscription_id, TimestampTz time, TimestampTz *lower, TimestampTz *upper);

// The same, made (with its subscription's partition) when there is none.
Oid partition_for(TableKind kind, int32 subscription_id, TimestampTz time, TimestampTz *lower, TimestampTz *upper);

} // namespace logical_audit::audit
