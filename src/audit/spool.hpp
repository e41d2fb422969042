// Spool files of streamed upstream transactions: the data messages of each streamed chunk are
// appended, as received, to one file per transaction under the data directory, and read back in
// order when the transaction commits. Memory stays flat whatever the size of the transaction.
//
// A file is rewritten from its start when the upstream streams the transaction's first segment
// again (after a reconnect it always does), truncated when a subtransaction aborts, and removed
// after the commit or abort; a session removes its subscription's leftovers when it starts.
// Everything here is plain data (file descriptors and palloc'd memory): after an ERROR the caller
// calls spool_close_files().
#pragma once

#include "pgoutput/messages.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

struct Spool; // opaque

// Creates the spool of a subscription; its memory lives in context.
Spool *spool_create(int subscription_id, MemoryContext context);

// Removes every stream file of the subscription and forgets their transactions (session start).
void spool_remove_all(Spool *spool);

// Starts appending to the transaction's file (Stream Start): a first segment starts it anew.
void spool_open(Spool *spool, pgoutput::Xid xid, bool first_segment);

// Appends one data message of the open transaction; xid is the one the message carries (a
// subtransaction's for a change made in it). lsn is where the message's WAL starts.
void spool_write(Spool *spool, pgoutput::Xid xid, XLogRecPtr lsn, const uint8_t *data, size_t size);

// Stops appending (Stream Stop): the buffered bytes reach the file.
void spool_close(Spool *spool);

// Whether a transaction has streamed chunks not yet committed or aborted.
bool spool_has(const Spool *spool, pgoutput::Xid xid);

// Whether any transaction has streamed chunks not yet committed or aborted.
bool spool_any(const Spool *spool);

// Discards what an aborted subtransaction (subxid != xid) or the whole transaction wrote.
void spool_abort(Spool *spool, pgoutput::Xid xid, pgoutput::Xid subxid);

// Starts reading a transaction's file from its beginning, for its commit.
void spool_replay_start(Spool *spool, pgoutput::Xid xid);

// Reads the next message into memory of the current context; false at the end of the file.
bool spool_replay_next(Spool *spool, XLogRecPtr *lsn, const uint8_t **data, size_t *size);

// Removes the file of a transaction whose replay is done, and forgets it.
void spool_remove(Spool *spool, pgoutput::Xid xid);

// Closes the open file descriptors after an ERROR (the files stay, for spool_remove_all).
void spool_close_files(Spool *spool);

} // namespace logical_audit::audit
