// The batched inserter of one audit table: rows go straight to the table AM of the time
// partition that holds their commit time, the way COPY FROM inserts: buffered in tuple slots,
// written with table_multi_insert, then their index entries with ExecInsertIndexTuples. No SQL is
// parsed or planned per row. Unique indexes are enforced as usual (a row written twice is an
// ERROR), NOT NULL and CHECK constraints are checked per row; like any direct heap insert this
// fires no trigger and checks no privilege.
//
// The slots live as long as the inserter, over a copy of the partition's tuple descriptor (checked
// against it whenever a partition is opened): making and dropping them per transaction would pin
// and unpin the descriptor in the resource owner once per slot. What a local transaction opens
// (relation, executor state, bulk-insert state) lives in the txn_context given to inserter_open,
// which the caller resets after the local transaction ends; the buffered rows' values live in the
// inserter's batch context, reset after each batch. After an ERROR the abort releases locks and
// pins; inserter_forget then only forgets them.
#pragma once

#include "audit/store.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

// An audit table as the writer fills it: the columns it gives values for, in its own order (the
// table may have more, left NULL, in any order), and how many rows a batch holds at most.
struct TableSpec {
	TableKind kind;
	const char *const *columns;
	int ncolumns;
	int max_rows;
};

struct Inserter; // opaque

// The executor state that index insertion and constraint checks on rel need, as COPY builds it,
// in the current memory context; insert_state_close releases it.
void insert_state_open(Relation rel, EState **estate, ResultRelInfo **rri);
void insert_state_close(EState *estate, ResultRelInfo *rri);

// Writes n rows held in slots as COPY does: their heap tuples in one multi-insert, then their
// index entries (unique checks here); the slots are left empty.
void insert_slots(ResultRelInfo *rri, EState *estate, TupleTableSlot **slots, int n, BulkInsertState bistate);

// An inserter whose own memory lives in context.
Inserter *inserter_create(const TableSpec *spec, MemoryContext context);

// Makes the time partition that holds rows of that commit time the one rows go to, opened (in
// RowExclusiveLock) in the local transaction; rows buffered for another partition are inserted
// first.
void inserter_open(Inserter *in, MemoryContext txn_context, int32 subscription_id, TimestampTz time);

// The context the values of the next row are copied into, until its batch is inserted; the
// caller adds the bytes it copied to *inserter_bytes.
MemoryContext inserter_batch(Inserter *in);
Size *inserter_bytes(Inserter *in);

// Buffers a row of the open partition, given in the spec's column order, and inserts the batch
// when it is full (rows or bytes).
void inserter_add(Inserter *in, MemoryContext txn_context, const Datum *values, const bool *isnull);

// Inserts the buffered rows and releases what the local transaction opened (before its commit;
// locks stay until then).
void inserter_close(Inserter *in);

// Forgets the buffered rows and what the local transaction opened (after an abort released them).
void inserter_forget(Inserter *in);

} // namespace logical_audit::audit
