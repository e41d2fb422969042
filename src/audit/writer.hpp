// Writes audit rows of upstream transactions into logical_audit.transaction, .change and .message,
// in batches, each upstream transaction in one local transaction together with the replication
// origin's progress.
//
// The writer is plain palloc'd data (no destructors). Rows are buffered and inserted a batch at a
// time straight into the tables and their indexes, as COPY FROM does: no SQL, no per-row planning,
// and memory per batch is bounded.
#pragma once

#include "pgoutput/messages.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

struct Writer; // opaque

// Creates a writer for the named subscription; its memory lives in context.
Writer *writer_create(const char *subscription, MemoryContext context);

// Starts the local transaction of an upstream transaction.
void writer_begin(Writer *writer, const pgoutput::Begin &begin);

// One row of logical_audit.change, as the worker decoded it. NULLs are isnull flags.
struct ChangeRow {
	const char *op; // INSERT, UPDATE, DELETE or TRUNCATE
	const char *schema_name;
	const char *table_name;
	NullableDatum old_row;         // jsonb
	NullableDatum new_row;         // jsonb
	NullableDatum unchanged_toast; // text[]
	NullableDatum changed_columns; // text[]
};

// Adds one change row; its Datums are copied before the call returns.
void writer_change(Writer *writer, const ChangeRow &row);

// Records a logical message. A transactional one belongs to the open upstream transaction (its
// 'audit' JSON content is merged into the transaction's annotations); a non-transactional one is
// written at once in a local transaction of its own, with origin progress just past its LSN.
void writer_message(Writer *writer, const pgoutput::LogicalMessage &message);

// Records the upstream origin name of the open transaction (from an Origin message).
void writer_origin(Writer *writer, const pgoutput::Origin &origin);

// Flushes the batches, inserts the transaction row, sets the replication origin's progress to the
// commit's end LSN and time, and commits the local transaction (durably).
void writer_commit(Writer *writer, const pgoutput::Commit &commit);

// Whether an upstream transaction is open (between writer_begin and writer_commit).
bool writer_in_transaction(const Writer *writer);

// Forgets the open transaction after an error (the caller aborts the local transaction).
void writer_reset(Writer *writer);

} // namespace logical_audit::audit
