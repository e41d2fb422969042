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
	Latch *latch; // the worker's latch, to wake it
};

struct SharedState {
	Latch *launcher_latch; // nullptr when no launcher runs
	pid_t launcher_pid;
	int nslots;
	WorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
};

// Installs the shmem request and startup hooks (from _PG_init, with shared_preload_libraries).
void shmem_install_hooks();

// The shared state, or nullptr when the library was not preloaded.
SharedState *shared_state();

// The named LWLock guarding SharedState.
LWLock *shared_lock();

// Claims a free slot for a subscription in this process, or nullptr when all are taken or one
// already serves the subscription. Takes the lock itself.
WorkerSlot *slot_claim(int subscription_id, const char *subscription_name, const char *slot_name);

// Frees this process's slot (on exit). Takes the lock itself.
void slot_release(WorkerSlot *slot);

// The slot serving a subscription, or nullptr; the caller holds the lock.
WorkerSlot *slot_find(int subscription_id);

// Wakes the launcher so it starts enabled subscriptions now.
void wake_launcher();

} // namespace logical_audit::worker
