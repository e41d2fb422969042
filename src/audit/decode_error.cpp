// The one reporter of decode errors (see decode_error.hpp).
#include "audit/decode_error.hpp"

#include <cstring>

#include "pg.hpp"

namespace logical_audit::audit {

void report_decode_error(const pgoutput::DecodeError &error, const char *hint) {
	bool known = error.type != 0 && strcmp(error.message, "unknown") != 0;
	char *reason = pstrdup(error.reason);
	reason[0] = pg_toupper(static_cast<unsigned char>(reason[0]));
	ereport(ERROR,
	        (errcode(ERRCODE_PROTOCOL_VIOLATION),
	         known ? errmsg("malformed pgoutput %s message", error.message) : errmsg("malformed pgoutput message"),
	         errdetail("%s at byte offset %zu.", reason, error.offset), hint ? errhint("%s", hint) : 0));
	pg_unreachable();
}

} // namespace logical_audit::audit
