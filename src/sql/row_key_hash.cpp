// logical_audit.row_key_hash(jsonb): the number row_image's index files a row key under, for
// queries that look a row's image up as the worker does.
#include "audit/row_key_hash.hpp"

#include "pg.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(logical_audit_row_key_hash);
}

extern "C" Datum logical_audit_row_key_hash(PG_FUNCTION_ARGS) {
	PG_RETURN_INT64(logical_audit::audit::row_key_hash(PG_GETARG_DATUM(0)));
}
