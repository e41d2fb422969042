// Upstream tuples as jsonb rows, equal to the upstream's own to_jsonb(row), by the conversions a
// relation's columns were given when it was learnt (relations.hpp).
//
// Scalar timestamptz columns are rendered in UTC whatever the session's TimeZone, but values
// nested in arrays, composites and ranges go through the local to_jsonb, which renders them in
// the session's TimeZone: the caller runs with TimeZone = 'UTC' for the whole row to be in UTC.
#pragma once

#include "audit/relations.hpp"
#include "pgoutput/messages.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

// The jsonb object to_jsonb(row) gives upstream for a tuple. Columns not sent (unchanged TOAST)
// are left out and their names returned in *unchanged_toast as a text[] (isnull when none).
// key_only keeps only the replica identity columns (an old tuple of kind 'K'). Errors name the
// relation and column through the error context.
Datum tuple_to_jsonb(const AuditRelation *relation, const pgoutput::TupleData &tuple, bool key_only,
                     Datum *unchanged_toast, bool *unchanged_isnull);

// The names of the columns whose value differs between a full old tuple and the new one, as a
// text[] (empty when none did). Columns the new tuple did not send (unchanged TOAST) are unchanged.
Datum changed_columns(const AuditRelation *relation, const pgoutput::TupleData &old_tuple,
                      const pgoutput::TupleData &new_tuple);

} // namespace logical_audit::audit
