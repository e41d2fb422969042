// Spool files of streamed and prepared upstream transactions: the data messages of each streamed
// chunk (or of a transaction being prepared) are appended, as received, to one file per
// transaction under the data directory, and read back in order when the transaction commits.
// Memory stays flat whatever the size of the transaction.
//
// A stream file is rewritten from its start when the upstream streams the transaction's first
// segment again (after a reconnect it always does), truncated when a subtransaction aborts, and
// removed after the commit or abort; a session removes its subscription's leftovers when it
// starts, and an idle one sweeps any it finds. A prepared transaction's file is made durable at its
// PREPARE, describes every relation it touches, and is kept, across sessions and restarts, until
// its COMMIT PREPARED or ROLLBACK PREPARED is audited.
// Everything here is plain data (file descriptors and palloc'd memory): after an ERROR the error
// cleanups call spool_close_files().
#pragma once

#include "pgoutput/messages.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

struct Spool; // opaque

// Creates the spool of a subscription; its memory lives in context. spool_close_files runs after
// every ERROR (an error cleanup, see recovery.hpp).
Spool *spool_create(int subscription_id, MemoryContext context);

// Removes every stream file of the subscription and forgets their transactions (session start).
// Prepared transactions' files stay.
void spool_remove_all(Spool *spool);

// Starts appending to the transaction's file (Stream Start, Begin Prepare, or before a Stream
// Prepare): a first segment starts it anew.
void spool_open(Spool *spool, pgoutput::Xid xid, bool first_segment);

// Appends one message of the open transaction; xid is the one the message carries (a
// subtransaction's for a change made in it), lsn where its WAL starts, in_stream whether it came
// inside a stream block (and so carries its xid).
void spool_write(Spool *spool, pgoutput::Xid xid, XLogRecPtr lsn, const uint8_t *data, size_t size, bool in_stream);

// Notes that the open transaction's file carries the shape of a relation (its Relation message,
// written by the caller); true the first time, when the caller must write it. A prepared
// transaction's file describes every relation it touches: its COMMIT PREPARED may come in a later
// session, which knows nothing of the relations announced before the PREPARE.
bool spool_describe(Spool *spool, Oid relation_id);

// Stops appending (Stream Stop): the buffered bytes reach the file.
void spool_close(Spool *spool);

// The xids of the subscription's prepared transactions' files (palloc'd).
pgoutput::Xid *spool_prepared_xids(Spool *spool, int *count);

// Removes the subscription's stream files of transactions not in progress in this session: none
// should exist, and one that does (left by a path that failed to remove it) would never go.
void spool_sweep(Spool *spool);

// Whether any transaction has streamed chunks not yet committed or aborted.
bool spool_any(const Spool *spool);

// Discards what an aborted subtransaction (subxid != xid) or the whole transaction wrote.
void spool_abort(Spool *spool, pgoutput::Xid xid, pgoutput::Xid subxid);

// Makes the open transaction's file durable as a prepared transaction's, and closes it.
void spool_prepare(Spool *spool, pgoutput::Xid xid);

// Starts reading a transaction's stream (or prepared) file from its beginning; false when there
// is none.
bool spool_replay_start(Spool *spool, pgoutput::Xid xid, bool prepared);

// Reads the next message into memory of the current context; false at the end of the file.
bool spool_replay_next(Spool *spool, XLogRecPtr *lsn, const uint8_t **data, size_t *size, bool *in_stream);

// Removes the stream (or prepared) file of a transaction whose replay is done, and forgets it.
void spool_remove(Spool *spool, pgoutput::Xid xid, bool prepared);

// Removes every spool file of a dropped subscription, prepared ones included, once the current
// transaction commits. That raises no error: a file it cannot remove stays (and is logged).
void spool_remove_subscription_at_commit(int subscription_id);

// Whether any spool file of that subscription id exists (a new subscription must not get the id of
// one whose files were left behind).
bool spool_files_exist(int subscription_id);

// Closes the open file descriptors after an ERROR (the files stay, for spool_remove_all).
void spool_close_files(Spool *spool);

} // namespace logical_audit::audit
