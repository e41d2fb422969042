// Shared memory: one slot per running subscription worker, feeding logical_audit.status, plus the
// launcher's latch. Slots are read and written under one named LWLock ("logical_audit").
#pragma once

#include "pg.hpp"

namespace logical_audit::worker {

enum class WorkerState : int { Stopped = 0, Connecting, Streaming, WaitingRetry, Error, Snapshot };

// The status name shown in logical_audit.status.state.
const char *state_name(WorkerState state);

constexpr int kMaxErrorLength = 1024;

struct WorkerSlot {
	int subscription_id; // 0 when the slot is free
	pid_t pid;
	WorkerState state;
	NameData subscription_name;
	NameData slot_name;
	XLogRecPtr received_lsn;
	XLogRecPtr flushed_lsn;
	XLogRecPtr upstream_lsn;
	TimestampTz last_msg_send_time;
	TimestampTz last_msg_receipt_time;
	TimestampTz last_commit_time;
	int64 transactions;
	int64 changes;
	char last_error[kMaxErrorLength];
	TimestampTz last_error_time;
	char upstream_slot_wal_status[16]; // the upstream slot's wal_status, '' until read
	int64 upstream_slot_safe_wal_size; // its safe_wal_size, -1 when unknown or unlimited
	Latch *latch;                      // the worker's latch, to wake it
};

// A slot's upstream positions and message times, as a session publishes them; a send_time of 0
// keeps the one shown.
struct SlotPositions {
	XLogRecPtr received;
	XLogRecPtr flushed;
	XLogRecPtr upstream;
	TimestampTz send_time;
	TimestampTz receipt_time;
};

// What a local commit audited, added to a slot's counters; a commit_time of 0 keeps the one shown.
struct SlotProgress {
	XLogRecPtr flushed;
	TimestampTz commit_time;
	int64 transactions;
	int64 changes;
};

// Installs the shmem request and startup hooks (from _PG_init, with shared_preload_libraries).
void shmem_install_hooks();

// Whether the shared state exists: the library was preloaded.
bool shmem_ready();

// The operations below take the lock themselves; nothing outside this module reads or writes a
// slot or the shared state otherwise.

// Claims a free slot for a subscription in this process, or nullptr when all are taken or one
// already serves the subscription.
WorkerSlot *slot_claim(int subscription_id, const char *subscription_name, const char *slot_name);

// Frees this process's slot (on exit).
void slot_release(WorkerSlot *slot);

// Publishes a worker's state, positions, progress, last error or upstream slot health.
void slot_set_state(WorkerSlot *slot, WorkerState state);
void slot_set_positions(WorkerSlot *slot, const SlotPositions &positions);
void slot_add_progress(WorkerSlot *slot, const SlotProgress &progress);
void slot_set_error(WorkerSlot *slot, const char *message);
void slot_set_upstream_slot(WorkerSlot *slot, const char *wal_status, int64 safe_wal_size);

// A copy of every slot in use (palloc'd), for the status view.
WorkerSlot *slots_copy(int *count);

// The pid of the worker serving a subscription, or 0.
pid_t worker_pid(int subscription_id);

// Whether a worker serves the subscription.
bool worker_running(int subscription_id);

// Wakes the worker serving a subscription, if any: one waiting to retry tries again now.
void wake_worker(int subscription_id);

// Asks the worker serving a subscription to stop (SIGTERM) and waits up to a second for it to be
// gone, warning when it still runs then. The caller has disabled or deleted the subscription's
// row, uncommitted: a worker starting meanwhile reads its row FOR SHARE, so it waits for the
// caller's commit, then finds the row disabled or gone and exits.
void stop_worker(int subscription_id, const char *subscription_name);

// Makes this process the launcher that wake_launcher() wakes, until it exits.
void publish_launcher();

// Wakes the launcher so it starts enabled subscriptions now.
void wake_launcher();

} // namespace logical_audit::worker
