// Shared memory of the extension: the launcher's latch and one status slot per running worker,
// sized by logical_audit.max_workers and guarded by one named LWLock.
#include "worker/shmem.hpp"

#include <cstddef>
#include <cstring>

#include "guc.hpp"

#include "pg.hpp"

namespace logical_audit::worker {

namespace {

constexpr const char *kShmemName = "logical_audit";

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

void shmem_install_hooks() {
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = request_shmem;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = startup_shmem;
}

SharedState *shared_state() {
	return state;
}

LWLock *shared_lock() {
	return lock;
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

WorkerSlot *slot_find(int subscription_id) {
	if (state == nullptr || subscription_id == 0)
		return nullptr;
	for (int i = 0; i < state->nslots; i++)
		if (state->slots[i].subscription_id == subscription_id)
			return &state->slots[i];
	return nullptr;
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
