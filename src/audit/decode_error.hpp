// The ERROR for a pgoutput message the decoder rejected, worded the same wherever it happens: the
// message's name, the reason and the byte offset of the failing read (the caller's error context
// adds where in the stream it was).
#pragma once

#include "pgoutput/messages.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

// Raises it; hint, when given, is the error's hint.
[[noreturn]] void report_decode_error(const pgoutput::DecodeError &error, const char *hint = nullptr);

} // namespace logical_audit::audit
