// One replication session of a subscription's worker: connect, stream, audit, until an error.
#pragma once

#include "audit/relations.hpp"
#include "audit/spool.hpp"
#include "audit/writer.hpp"
#include "options.hpp"
#include "worker/shmem.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

// The subscription a worker serves, as read from logical_audit.subscription (palloc'd).
struct Subscription {
	int id;
	char *name;
	char *conninfo;
	ArrayType *publications;
	char *slot_name;
	Options options;
};

// What a session needs and keeps across sessions of the same worker.
struct WorkerContext {
	Subscription *subscription;
	WorkerSlot *slot;
	audit::Relations *relations;
	audit::Writer *writer;
	audit::Spool *spool;
	MemoryContext message_context; // reset after each CopyData message
	MemoryContext replay_context;  // reset after each message read back from a spool file
	bool made_progress;            // set when a session commits or goes idle: the retry backoff restarts
	bool slot_lost;                // the upstream invalidated the slot: the audit cannot go on
};

// Streams from the upstream and audits until an ERROR (which propagates) or shutdown (FATAL).
void run_session(WorkerContext &worker);

// Closes the session's connection and frees its pending buffer, after an ERROR.
void session_cleanup();

} // namespace logical_audit::worker
