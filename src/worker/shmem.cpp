// Shared memory of the extension: the launcher's latch and one status slot per running worker,
// sized by logical_audit.max_workers and guarded by one named LWLock, which only this file takes.
#include "worker/shmem.hpp"

#include <csignal>
#include <cstddef>
#include <cstring>

#include "guc.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

namespace {

constexpr const char *kShmemName = "logical_audit";

// The struct shared by every process of the server.
struct SharedState {
	Latch *launcher_latch; // nullptr when no launcher runs
	pid_t launcher_pid;
	int nslots;
	WorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
};

// How long stop_worker waits for a worker to exit, looking every kStopPollMs.
constexpr long kStopWaitMs = 1000;
constexpr long kStopPollMs = 10;

shmem_request_hook_type prev_shmem_request_hook = nullptr;
shmem_startup_hook_type prev_shmem_startup_hook = nullptr;

// Set in the postmaster by the startup hook and inherited by every child; nullptr without preload.
SharedState *state = nullptr;
LWLock *lock = nullptr;

// Bytes of the shared state for the configured number of slots.
Size shared_size() {
	return add_size(offsetof(SharedState, slots), mul_size(guc_max_workers, sizeof(WorkerSlot)));
}

// Asks the postmaster for our memory and lock (shmem_request_hook).
void request_shmem() {
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
	RequestNamedLWLockTranche(kShmemName, 1);
}

// Finds or initializes the shared state (shmem_startup_hook, again after a crash restart).
void startup_shmem() {
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	bool found;
	state = static_cast<SharedState *>(ShmemInitStruct(kShmemName, shared_size(), &found));
	if (!found) {
		memset(state, 0, shared_size());
		state->nslots = guc_max_workers;
	}
	lock = &GetNamedLWLockTranche(kShmemName)->lock;
	LWLockRelease(AddinShmemInitLock);
}

} // namespace

const char *state_name(WorkerState worker_state) {
	switch (worker_state) {
	case WorkerState::Stopped:
		return "stopped";
	case WorkerState::Connecting:
		return "connecting";
	case WorkerState::Streaming:
		return "streaming";
	case WorkerState::WaitingRetry:
		return "waiting_retry";
	case WorkerState::Error:
		return "error";
	case WorkerState::Snapshot:
		return "snapshot";
	}
	return "unknown";
}

namespace {

// The slot serving a subscription, or nullptr; the caller holds the lock.
WorkerSlot *slot_find(int subscription_id) {
	if (state == nullptr || subscription_id == 0)
		return nullptr;
	for (int i = 0; i < state->nslots; i++)
		if (state->slots[i].subscription_id == subscription_id)
			return &state->slots[i];
	return nullptr;
}

// Unpublishes the launcher when it exits, so nobody sets a latch that is gone.
void unpublish_launcher(int, Datum) {
	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (state->launcher_pid == MyProcPid) {
		state->launcher_latch = nullptr;
		state->launcher_pid = 0;
	}
	LWLockRelease(lock);
}

} // namespace

void shmem_install_hooks() {
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = request_shmem;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = startup_shmem;
}

bool shmem_ready() {
	return state != nullptr;
}

WorkerSlot *slot_claim(int subscription_id, const char *subscription_name, const char *slot_name) {
	if (state == nullptr)
		return nullptr;
	WorkerSlot *claimed = nullptr;
	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (slot_find(subscription_id) == nullptr) {
		for (int i = 0; i < state->nslots && claimed == nullptr; i++)
			if (state->slots[i].subscription_id == 0)
				claimed = &state->slots[i];
	}
	if (claimed != nullptr) {
		memset(claimed, 0, sizeof(WorkerSlot));
		claimed->subscription_id = subscription_id;
		claimed->pid = MyProcPid;
		claimed->state = WorkerState::Connecting;
		namestrcpy(&claimed->subscription_name, subscription_name);
		namestrcpy(&claimed->slot_name, slot_name);
		claimed->upstream_slot_safe_wal_size = -1;
		claimed->latch = MyLatch;
	}
	LWLockRelease(lock);
	return claimed;
}

void slot_release(WorkerSlot *slot) {
	if (state == nullptr || slot == nullptr)
		return;
	LWLockAcquire(lock, LW_EXCLUSIVE);
	// Only the owner frees its slot: a stale pointer must not wipe a slot claimed since.
	if (slot->pid == MyProcPid)
		memset(slot, 0, sizeof(WorkerSlot));
	LWLockRelease(lock);
}

void slot_set_state(WorkerSlot *slot, WorkerState worker_state) {
	LWLockAcquire(lock, LW_EXCLUSIVE);
	slot->state = worker_state;
	LWLockRelease(lock);
}

void slot_set_positions(WorkerSlot *slot, const SlotPositions &p) {
	LWLockAcquire(lock, LW_EXCLUSIVE);
	slot->received_lsn = p.received;
	slot->flushed_lsn = p.flushed;
	slot->upstream_lsn = p.upstream;
	if (p.send_time != 0)
		slot->last_msg_send_time = p.send_time;
	slot->last_msg_receipt_time = p.receipt_time;
	LWLockRelease(lock);
}

void slot_add_progress(WorkerSlot *slot, const SlotProgress &p) {
	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (p.commit_time != 0)
		slot->last_commit_time = p.commit_time;
	slot->transactions += p.transactions;
	slot->changes += p.changes;
	slot->flushed_lsn = p.flushed;
	LWLockRelease(lock);
}

void slot_set_error(WorkerSlot *slot, const char *message) {
	LWLockAcquire(lock, LW_EXCLUSIVE);
	strlcpy(slot->last_error, message, sizeof slot->last_error);
	slot->last_error_time = GetCurrentTimestamp();
	LWLockRelease(lock);
}

void slot_set_upstream_slot(WorkerSlot *slot, const char *wal_status, int64 safe_wal_size) {
	LWLockAcquire(lock, LW_EXCLUSIVE);
	strlcpy(slot->upstream_slot_wal_status, wal_status, sizeof slot->upstream_slot_wal_status);
	slot->upstream_slot_safe_wal_size = safe_wal_size;
	LWLockRelease(lock);
}

WorkerSlot *slots_copy(int *count) {
	*count = 0;
	if (state == nullptr)
		return nullptr;
	auto *copy = static_cast<WorkerSlot *>(palloc(sizeof(WorkerSlot) * state->nslots));
	LWLockAcquire(lock, LW_SHARED);
	for (int i = 0; i < state->nslots; i++)
		if (state->slots[i].subscription_id != 0)
			copy[(*count)++] = state->slots[i];
	LWLockRelease(lock);
	return copy;
}

pid_t worker_pid(int subscription_id) {
	if (state == nullptr)
		return 0;
	LWLockAcquire(lock, LW_SHARED);
	WorkerSlot *slot = slot_find(subscription_id);
	pid_t pid = slot != nullptr ? slot->pid : 0;
	LWLockRelease(lock);
	return pid;
}

bool worker_running(int subscription_id) {
	return worker_pid(subscription_id) != 0;
}

void wake_worker(int subscription_id) {
	if (state == nullptr)
		return;
	LWLockAcquire(lock, LW_SHARED);
	WorkerSlot *slot = slot_find(subscription_id);
	if (slot != nullptr && slot->latch != nullptr)
		SetLatch(slot->latch);
	LWLockRelease(lock);
}

// The slot is released early in the worker's exit; the process ends (and is reaped) a little later.
void stop_worker(int subscription_id, const char *subscription_name) {
	pid_t pid = worker_pid(subscription_id);
	if (pid == 0)
		return;
	(void)kill(pid, SIGTERM);
	for (long waited = 0; waited < kStopWaitMs; waited += kStopPollMs) {
		if (worker_pid(subscription_id) != pid && kill(pid, 0) != 0)
			return;
		(void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, kStopPollMs, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	ereport(WARNING, (errcode(ERRCODE_WARNING),
	                  errmsg("the worker of subscription \"%s\" has not stopped yet", subscription_name),
	                  errdetail("Its process %d was asked to stop and will exit on its own.", static_cast<int>(pid))));
}

void publish_launcher() {
	LWLockAcquire(lock, LW_EXCLUSIVE);
	state->launcher_latch = MyLatch;
	state->launcher_pid = MyProcPid;
	LWLockRelease(lock);
	before_shmem_exit(unpublish_launcher, (Datum)0);
}

void wake_launcher() {
	if (state == nullptr)
		return;
	LWLockAcquire(lock, LW_SHARED);
	if (state->launcher_latch != nullptr)
		SetLatch(state->launcher_latch);
	LWLockRelease(lock);
}

} // namespace logical_audit::worker
