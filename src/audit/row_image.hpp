// What a change row says beyond its decoded tuples: the key of its row (row_key) and, for an
// UPDATE, which columns changed (changed_columns).
//
// Under REPLICA IDENTITY FULL the old row answers. Otherwise the upstream sends at most the old
// key, and the answer comes from the latest audited image of the row (the values its latest change
// sent), which the writer looks up by key; without one changed_columns stays NULL. The unchanged
// TOASTed values the upstream did not send are never copied into new_row: they stay named in
// unchanged_toast and are resolved from earlier changes when read.
#pragma once

#include "audit/relations.hpp"
#include "audit/row_jsonb.hpp"
#include "audit/writer.hpp"
#include "pgoutput/messages.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

// Completes a change row whose old_row, new_row and unchanged_toast were converted from the
// tuples of an INSERT (new tuple), UPDATE (old tuple when sent, new tuple) or DELETE (old tuple):
// sets row_key and, for an UPDATE, changed_columns. Looks the image up only for an UPDATE without a
// full old row. Without row_history (a subscription's option) the row has no row_key and no image
// is looked up: only a full old row gives changed_columns.
void complete_change(Writer *writer, const AuditRelation *relation, ChangeRow &row, pgoutput::OldTuple old_kind,
                     const pgoutput::TupleData &old_tuple, const pgoutput::TupleData *new_tuple, bool row_history);

} // namespace logical_audit::audit
