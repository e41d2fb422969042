// The number row_image's index files a row key under (see row_key_hash.hpp).
#include "audit/row_key_hash.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

// The value of a key's only pair; false when the key is not an object of one pair.
bool only_value(Jsonb *key, JsonbValue *value) {
	if (!JB_ROOT_IS_OBJECT(key) || JB_ROOT_COUNT(key) != 1)
		return false;
	JsonbIterator *it = JsonbIteratorInit(&key->root);
	JsonbValue token;
	JsonbIteratorToken r;
	while ((r = JsonbIteratorNext(&it, &token, true)) != WJB_DONE)
		if (r == WJB_VALUE) {
			*value = token;
			return true;
		}
	return false;
}

// The bounds of int8 as numerics, made once (in TopMemoryContext).
Datum bound(bool upper) {
	static Datum bounds[2];
	if (bounds[upper] == (Datum)0) {
		MemoryContext caller = MemoryContextSwitchTo(TopMemoryContext);
		bounds[upper] = NumericGetDatum(int64_to_numeric(upper ? PG_INT64_MAX : PG_INT64_MIN));
		MemoryContextSwitchTo(caller);
	}
	return bounds[upper];
}

// Whether a numeric is an integer within 64 bits, and which.
bool integral(Numeric number, int64 *out) {
	Datum n = NumericGetDatum(number);
	if (DatumGetBool(DirectFunctionCall2(numeric_lt, n, bound(false))) ||
	    DatumGetBool(DirectFunctionCall2(numeric_gt, n, bound(true))))
		return false;
	int64 i = DatumGetInt64(DirectFunctionCall1(numeric_int8, n)); // rounds
	// No digit after the point (the usual key) is an integer; 42.0 is one too, 42.5 is not.
	if (DatumGetInt32(DirectFunctionCall1(numeric_scale, n)) != 0 &&
	    !DatumGetBool(DirectFunctionCall2(numeric_eq, n, NumericGetDatum(int64_to_numeric(i)))))
		return false;
	*out = i;
	return true;
}

} // namespace

int64 row_key_hash(Datum key) {
	Jsonb *jsonb = DatumGetJsonbP(key);
	JsonbValue value;
	int64 number;
	if (only_value(jsonb, &value) && value.type == jbvNumeric && integral(value.val.numeric, &number))
		return number;
	return DatumGetInt64(DirectFunctionCall2(jsonb_hash_extended, key, Int64GetDatum(0)));
}

} // namespace logical_audit::audit
