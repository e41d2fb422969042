// The latest image of each upstream row (logical_audit.row_image): the latest change seen under
// the row's key and the row after it. The writer reads it to complete an UPDATE (changed_columns)
// and to link each change to the previous one of its row, and sets it at every keyed change. Its
// size follows the upstream tables, not the history.
//
// Everything a local transaction opens (the table, its indexes, the scan) is allocated in the
// context given to images_open, which the caller resets after the local transaction ends; every
// call on the scan runs in that context (nbtree keeps between calls what it allocates in the
// context current at a call). Rows new to the table wait in a batch (their values in the store's
// own memory) until it is full or images_close, which writes them and releases the rest before a
// commit; after an abort, which releases them, images_forget only forgets them and the batch.
#pragma once

#include "audit/store.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

struct Images; // opaque

// A closed store whose own memory lives in context.
Images *images_create(MemoryContext context);

// What the store says of a row: its latest change and the row after it (0 when that change
// deleted it or moved it to another key); partial when the image lacks unchanged TOASTed values.
struct Image {
	ChangeAt at;
	Datum row; // valid until the next call on the store
	bool partial;
};

// Looks the row with that key up in the open local transaction (its own earlier changes
// included); false when the store has none.
bool images_find(Images *images, MemoryContext txn_context, int32 relation_id, Datum row_key, Image *image);

// Makes at, with row (0 for none), the row's latest change.
void images_set(Images *images, MemoryContext txn_context, int32 relation_id, Datum row_key, const Image &image);

// Writes the batch and releases what the local transaction opened (before its commit).
void images_close(Images *images);

// Forgets it after an abort released it.
void images_forget(Images *images);

} // namespace logical_audit::audit
