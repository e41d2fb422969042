// Object oids inside binary values: a reg* value (regclass, regtype...) is in binary the oid of an
// upstream object. Only the objects built into PostgreSQL have the same oid in every database, so
// any other is an ERROR rather than the name of whatever object has that oid here. Text mode sends
// the name instead.
//
// (Array and record values name their element and field types by oid too. The receive functions
// of PostgreSQL 15's current minor releases accept a user type's oid that differs from the local
// one and read the value as the local type, which the audit matched by name: nothing to do here.)
#pragma once

#include "pg.hpp"

namespace logical_audit::audit {

// Whether binary values of the local type are or contain reg* values (arrays, records, ranges).
bool binary_has_object_oids(Oid type);

// Rejects a binary value of the local type (len bytes at data) holding a reg* value that names an
// object not built into PostgreSQL. A value whose framing is broken is an ERROR too; the type's
// receive function checks everything else.
void binary_check_object_oids(Oid type, const char *data, int len);

} // namespace logical_audit::audit
