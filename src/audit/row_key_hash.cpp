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

// Whether a numeric is an integer within 64 bits, and which.
bool integral(Numeric number, int64 *out) {
	Datum n = NumericGetDatum(number);
	if (DatumGetBool(DirectFunctionCall2(numeric_lt, n, NumericGetDatum(int64_to_numeric(PG_INT64_MIN)))) ||
	    DatumGetBool(DirectFunctionCall2(numeric_gt, n, NumericGetDatum(int64_to_numeric(PG_INT64_MAX)))))
		return false;
	int64 i = DatumGetInt64(DirectFunctionCall1(numeric_int8, n)); // rounds
	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, n, NumericGetDatum(int64_to_numeric(i)))))
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
