// Writes audit rows of upstream transactions into logical_audit.transaction, .change and .message,
// in batches, each upstream transaction whole in one local transaction (which may hold several of
// them) together with the replication origin's progress.
//
// The writer is plain palloc'd data (no destructors). Rows are buffered and inserted a batch at a
// time straight into the tables and their indexes, as COPY FROM does: no SQL, no per-row planning,
// and memory per batch is bounded.
#pragma once

#include <string_view>

#include "audit/relations.hpp"
#include "pgoutput/messages.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

struct Writer; // opaque

// Creates a writer for the subscription with that id; its memory lives in context. writer_reset runs
// after every ERROR (an error cleanup, see recovery.hpp).
Writer *writer_create(int32 subscription_id, MemoryContext context);

// Starts an upstream transaction, in the open local transaction or in a new one. Its audited_at is
// the current statement start timestamp (the caller sets it when the Begin arrives).
void writer_begin(Writer *writer, const pgoutput::Begin &begin);

// The operation of a change row (stored as a one-letter code, shown by its name, op_name).
enum class Op { Insert, Update, Delete, Truncate, Snapshot };
constexpr int kOps = 5;

// INSERT, UPDATE, DELETE, TRUNCATE or SNAPSHOT.
const char *op_name(Op op);

// One change, as the worker decoded it (NULLs are isnull flags). The writer stores the names as
// the relation's id, and a row_key as the row's latest image and the link to its previous change.
struct ChangeRow {
	Op op;
	Datum schema_name;             // text
	Datum table_name;              // text
	NullableDatum old_row;         // jsonb
	NullableDatum new_row;         // jsonb
	NullableDatum unchanged_toast; // text[]
	NullableDatum changed_columns; // text[]
	NullableDatum row_key;         // jsonb: the row's replica identity key columns, or NULL
};

// Adds one change row (and, for a keyed row, sets its latest image); its Datums are copied before
// the call returns.
void writer_change(Writer *writer, const ChangeRow &row);

// The latest audited image of a row of the relation in the open upstream transaction's
// subscription (logical_audit.row_image, this local transaction's changes included): the values
// its latest change under row_key sent, when that change left the row there (INSERT, UPDATE or
// SNAPSHOT) and no TRUNCATE came after it. Returns 0 when there is none. The image is a copy in the
// current memory context.
Datum writer_latest_image(Writer *writer, const AuditRelation *relation, Datum row_key);

// Records a logical message. A transactional one belongs to the open upstream transaction (its
// 'audit' JSON content is merged into the transaction's annotations); a non-transactional one goes
// into the open local transaction (or a new one), whose origin progress then reaches its LSN.
void writer_message(Writer *writer, const pgoutput::LogicalMessage &message);

// Records the upstream origin name of the open transaction (from an Origin message).
void writer_origin(Writer *writer, const pgoutput::Origin &origin);

// Ends the open upstream transaction: queues its transaction row and makes its end LSN and commit
// time the origin progress of the local transaction, which stays open for more upstream
// transactions until writer_commit_local.
void writer_commit(Writer *writer, const pgoutput::Commit &commit);

// Marks the open upstream transaction as a prepared one (its transaction row shows gid and
// prepare time); rolled_back records a ROLLBACK PREPARED, which has no changes.
void writer_prepared(Writer *writer, std::string_view gid, TimestampTz prepare_time, bool rolled_back);

// Makes the upstream position reach lsn (the end of a PREPARE whose changes are spooled) in the
// open local transaction (or a new one), outside any upstream transaction.
void writer_progress(Writer *writer, XLogRecPtr lsn, TimestampTz time);

// Whether a local transaction is open, holding upstream transactions or messages not yet committed.
bool writer_local_open(const Writer *writer);

// What a local commit covered: the end of its commit record and the upstream position it records.
struct LocalCommit {
	XLogRecPtr local_end;
	XLogRecPtr upstream_lsn;
};

// Inserts the buffered rows and commits the local transaction together with the origin's progress.
// The commit follows synchronous_commit: the upstream position is durable once local_end is flushed.
LocalCommit writer_commit_local(Writer *writer);

// Whether an upstream transaction is open (between writer_begin and writer_commit).
bool writer_in_transaction(const Writer *writer);

// Forgets the open transactions after an error (the caller aborts the local transaction).
void writer_reset(Writer *writer);

} // namespace logical_audit::audit
