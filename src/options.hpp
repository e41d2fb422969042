// The options of a subscription, as create_subscription takes them (its options jsonb): one table
// gives each option's name, default and field, for the checks of create_subscription and for the
// worker that reads them back. README's table of options says the same (test/readme_options.sh
// checks it).
#pragma once

#include "pg.hpp"

namespace logical_audit {

struct Options {
	bool messages;    // audit logical messages
	bool streaming;   // large transactions arrive streamed (protocol 2) and are spooled
	bool binary;      // tuple data in binary
	bool two_phase;   // prepared transactions are decoded at PREPARE (protocol 3)
	bool snapshot;    // the existing rows are copied when the slot is created
	bool row_history; // keyed rows keep a latest image and a version chain (changed_columns, history)
};

struct OptionSpec {
	const char *name;
	bool default_value;
	bool Options::*field;
};

inline constexpr OptionSpec kOptionSpecs[] = {
    {"messages", true, &Options::messages},  {"streaming", true, &Options::streaming},
    {"binary", false, &Options::binary},     {"two_phase", false, &Options::two_phase},
    {"snapshot", false, &Options::snapshot}, {"row_history", true, &Options::row_history},
};

// Reads an options object: the defaults for the options it does not give. A key that is no option
// or a value that is not a boolean is an ERROR.
Options options_from_jsonb(const Jsonb *options);

} // namespace logical_audit
