// The one header that includes PostgreSQL's server headers, for C++.
//
// The server headers have no extern "C" and use a few C-only builtins; this header wraps them and
// replaces those macros with C++ equivalents. Include C++ standard headers before this one.
#pragma once

#include <type_traits>

// The server headers are not -Wextra clean; our code is.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wignored-attributes"

extern "C" {
#include "postgres.h"
}

// __builtin_types_compatible_p exists only in C: check the same thing with type traits.
#undef AssertVariableIsOfType
#define AssertVariableIsOfType(varname, typename)                                                                      \
	static_assert(std::is_same_v<std::remove_cv_t<decltype(varname)>, typename>,                                       \
	              CppAsString(varname) " does not have type " CppAsString(typename))
#undef AssertVariableIsOfTypeMacro
#define AssertVariableIsOfTypeMacro(varname, typename) ((void)0)
#undef unconstify
#define unconstify(underlying_type, expr) const_cast<underlying_type>(expr)
#undef unvolatize
#define unvolatize(underlying_type, expr) const_cast<underlying_type>(expr)

extern "C" {
#include "libpq-fe.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/pg_lsn.h"
#include "utils/timestamp.h"
}

#pragma GCC diagnostic pop
