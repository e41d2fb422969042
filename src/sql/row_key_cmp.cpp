// logical_audit.row_key_cmp(jsonb, jsonb): the btree comparison of the row key indexes of versions
// 1.0 to 1.2 (1.3 finds images by a hash; the function stays for the install scripts of 1.0).
//
// It orders jsonb values exactly as jsonb's own comparison does (so the index serves jsonb's =, <,
// ... operators), but reads the common row key, an object of scalar values, straight from the
// container instead of through jsonb's iterators, which allocate on every call: every change row
// the worker inserts costs a dozen such comparisons. Any other shape goes to jsonb's comparison.
#include "pg.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(logical_audit_row_key_cmp);
}

namespace logical_audit::sql {

namespace {

// The answer of jsonb's comparison itself, for values the fast path does not read.
int jsonb_order(Jsonb *a, Jsonb *b) {
	return compareJsonbContainers(&a->root, &b->root);
}

// Strings compare as jsonb compares them: in the database's default collation.
int string_order(const char *a, int a_len, const char *b, int b_len) {
	if (a_len == b_len && memcmp(a, b, a_len) == 0)
		return 0;
	return varstr_cmp(a, a_len, b, b_len, DEFAULT_COLLATION_OID);
}

// The JsonbValue type of a scalar entry (jsonb orders values of different types by it).
enum jbvType scalar_type(JEntry entry) {
	if (JBE_ISNULL(entry))
		return jbvNull;
	if (JBE_ISSTRING(entry))
		return jbvString;
	if (JBE_ISNUMERIC(entry))
		return jbvNumeric;
	return jbvBool;
}

// Compares the values of entry index in two objects (both scalars), as jsonb does.
int scalar_order(JsonbContainer *a, JsonbContainer *b, int index, const char *a_base, const char *b_base) {
	JEntry ea = a->children[index], eb = b->children[index];
	enum jbvType ta = scalar_type(ea), tb = scalar_type(eb);
	if (ta != tb)
		return ta > tb ? 1 : -1;
	uint32 a_off = getJsonbOffset(a, index), b_off = getJsonbOffset(b, index);
	switch (ta) {
	case jbvString:
		return string_order(a_base + a_off, getJsonbLength(a, index), b_base + b_off, getJsonbLength(b, index));
	case jbvNumeric:
		return DatumGetInt32(DirectFunctionCall2(numeric_cmp, PointerGetDatum(a_base + INTALIGN(a_off)),
		                                         PointerGetDatum(b_base + INTALIGN(b_off))));
	case jbvBool:
		return JBE_ISBOOL_TRUE(ea) == JBE_ISBOOL_TRUE(eb) ? 0 : (JBE_ISBOOL_TRUE(ea) ? 1 : -1);
	default:
		return 0; // two nulls
	}
}

// Whether both objects hold only scalar values (then the fast path can read them all).
bool flat_objects(JsonbContainer *a, JsonbContainer *b, int pairs) {
	for (int i = pairs; i < 2 * pairs; i++)
		if (JBE_ISCONTAINER(a->children[i]) || JBE_ISCONTAINER(b->children[i]))
			return false;
	return true;
}

// jsonb's order of two objects of scalars: the number of pairs, then key and value, pair by pair.
int row_key_order(Jsonb *a, Jsonb *b) {
	if (!JB_ROOT_IS_OBJECT(a) || !JB_ROOT_IS_OBJECT(b))
		return jsonb_order(a, b);
	int pairs = JB_ROOT_COUNT(a);
	if (pairs != static_cast<int>(JB_ROOT_COUNT(b)))
		return pairs > static_cast<int>(JB_ROOT_COUNT(b)) ? 1 : -1;
	if (!flat_objects(&a->root, &b->root, pairs))
		return jsonb_order(a, b);
	const char *a_base = reinterpret_cast<const char *>(&a->root.children[2 * pairs]);
	const char *b_base = reinterpret_cast<const char *>(&b->root.children[2 * pairs]);
	for (int i = 0; i < pairs; i++) {
		int order = scalar_order(&a->root, &b->root, i, a_base, b_base); // the keys (strings)
		if (order == 0)
			order = scalar_order(&a->root, &b->root, pairs + i, a_base, b_base);
		if (order != 0)
			return order;
	}
	return 0;
}

// Room for a short key, with the 4-byte alignment jsonb's reader needs.
union KeyBuffer {
	char data[256];
	int32 align;
};

// The jsonb a datum holds, with a 4-byte header: a short one (as index tuples hold them) copied
// into buffer rather than into palloc'd memory as detoasting would, the rest detoasted.
Jsonb *jsonb_of(Datum datum, KeyBuffer *buffer) {
	struct varlena *value = reinterpret_cast<struct varlena *>(DatumGetPointer(datum));
	if (!VARATT_IS_SHORT(value) || VARSIZE_SHORT(value) - VARHDRSZ_SHORT + VARHDRSZ > sizeof buffer->data)
		return DatumGetJsonbP(datum);
	Size size = VARSIZE_SHORT(value) - VARHDRSZ_SHORT;
	SET_VARSIZE(buffer->data, size + VARHDRSZ);
	memcpy(VARDATA(buffer->data), VARDATA_SHORT(value), size);
	return reinterpret_cast<Jsonb *>(buffer->data);
}

// Frees what jsonb_of detoasted into palloc'd memory.
void release(Jsonb *jsonb, Datum datum, const KeyBuffer *buffer) {
	const char *copy = reinterpret_cast<const char *>(jsonb);
	if (copy != DatumGetPointer(datum) && copy != buffer->data)
		pfree(jsonb);
}

} // namespace

} // namespace logical_audit::sql

extern "C" Datum logical_audit_row_key_cmp(PG_FUNCTION_ARGS) {
	using namespace logical_audit::sql;
	KeyBuffer a_buffer, b_buffer;
	Jsonb *a = jsonb_of(PG_GETARG_DATUM(0), &a_buffer);
	Jsonb *b = jsonb_of(PG_GETARG_DATUM(1), &b_buffer);
	int order = row_key_order(a, b);
	release(a, PG_GETARG_DATUM(0), &a_buffer);
	release(b, PG_GETARG_DATUM(1), &b_buffer);
	PG_RETURN_INT32(order);
}
