// The 64-bit number row_image's index files a row key under (logical_audit.row_key_hash): equal for
// keys jsonb calls equal, so a lookup compares integers and then checks the key itself.
#pragma once

#include "pg.hpp"

namespace logical_audit::audit {

// The key's integer when it is one integral number within 64 bits ({"id": 42} -> 42, so rows
// numbered in order are filed in order and an insert lands where the last one did), else jsonb's
// own 64-bit hash of it.
int64 row_key_hash(Datum key);

} // namespace logical_audit::audit
