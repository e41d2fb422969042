// The reg* values inside binary values, checked before the value reaches its receive function.
//
// The walk follows the binary forms of array_send, record_send, range_send and multirange_send
// only as far as needed to reach the nested values that may hold reg* values; every length is
// checked against the end of its container. Nothing here has a destructor.
#include "audit/binary_oids.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

// The bytes [pos, end) of a binary value being walked.
struct Region {
	const char *data;
	int pos;
	int end;
};

// Rejects a value whose framing does not fit in it.
[[noreturn]] void broken_framing() {
	ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION), errmsg("incorrect binary data format"),
	                errdetail("A length inside the value runs past its end.")));
	pg_unreachable();
}

// Reads a big-endian 32-bit word and moves past it.
uint32 read_word(Region &r) {
	if (r.end - r.pos < 4)
		broken_framing();
	const auto *p = reinterpret_cast<const unsigned char *>(r.data + r.pos);
	r.pos += 4;
	return (uint32(p[0]) << 24) | (uint32(p[1]) << 16) | (uint32(p[2]) << 8) | uint32(p[3]);
}

// Moves past n bytes.
void skip(Region &r, int64 n) {
	if (n < 0 || n > r.end - r.pos)
		broken_framing();
	r.pos += static_cast<int>(n);
}

// Reads the next length-prefixed value into *value; false for a NULL one (length -1).
bool next_value(Region &r, Region *value) {
	int32 len = static_cast<int32>(read_word(r));
	if (len == -1)
		return false;
	if (len < 0 || len > r.end - r.pos)
		broken_framing();
	*value = Region{r.data, r.pos, r.pos + len};
	r.pos += len;
	return true;
}

// Whether values of the type are the oid of a database object (regclass, regtype...).
bool is_object_reference(Oid type) {
	switch (type) {
	case REGPROCOID:
	case REGPROCEDUREOID:
	case REGOPEROID:
	case REGOPERATOROID:
	case REGCLASSOID:
	case REGCOLLATIONOID:
	case REGTYPEOID:
	case REGROLEOID:
	case REGNAMESPACEOID:
	case REGCONFIGOID:
	case REGDICTIONARYOID:
		return true;
	default:
		return false;
	}
}

// Whether a composite type has a field whose values are or contain reg* values.
bool record_has_object_oids(Oid rowtype) {
	TupleDesc desc = lookup_rowtype_tupdesc(rowtype, -1);
	bool found = false;
	for (int i = 0; i < desc->natts && !found; i++) {
		Form_pg_attribute att = TupleDescAttr(desc, i);
		found = !att->attisdropped && binary_has_object_oids(att->atttypid);
	}
	ReleaseTupleDesc(desc);
	return found;
}

// Accepts an object oid only when it names an object built into PostgreSQL (oid 0 is no object).
void check_object_oid(Oid type, Region r) {
	Oid oid = read_word(r);
	if (oid < FirstUnpinnedObjectId)
		return;
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
	                errmsg("binary %s value names an upstream object by its oid %u", format_type_be(type), oid),
	                errdetail("Only the objects built into PostgreSQL have the same oid in both databases."),
	                errhint("Set the option binary to false to record the object's name.")));
}

void check_value(Oid type, Region r);

// An array: dimension count, flags, element type, a (size, lower bound) pair per dimension, then
// each element with its length.
void check_array(Oid element, Region r) {
	int32 ndim = static_cast<int32>(read_word(r));
	skip(r, 8); // flags, element type
	if (ndim < 0 || ndim > MAXDIM)
		return; // array_recv rejects it
	skip(r, int64(ndim) * 8);
	Region value;
	while (r.pos < r.end)
		if (next_value(r, &value))
			check_value(element, value);
}

// A record: field count, then each (not dropped) field's type oid, length and value.
void check_record(Oid rowtype, Region r) {
	TupleDesc desc = lookup_rowtype_tupdesc(rowtype, -1);
	int32 nfields = static_cast<int32>(read_word(r));
	int field = 0;
	for (int i = 0; i < desc->natts && field < nfields; i++) {
		Form_pg_attribute att = TupleDescAttr(desc, i);
		if (att->attisdropped)
			continue;
		field++;
		skip(r, 4); // the field's type
		Region value;
		if (next_value(r, &value) && binary_has_object_oids(att->atttypid))
			check_value(att->atttypid, value);
	}
	ReleaseTupleDesc(desc);
}

// A range: a flags byte, then the bounds it says are present, each with its length.
void check_range(Oid subtype, Region r) {
	skip(r, 1);
	auto flags = static_cast<unsigned char>(r.data[r.pos - 1]);
	Region value;
	if (RANGE_HAS_LBOUND(flags) && next_value(r, &value))
		check_value(subtype, value);
	if (RANGE_HAS_UBOUND(flags) && next_value(r, &value))
		check_value(subtype, value);
}

// A multirange: the range count, then each range with its length.
void check_multirange(Oid range, Region r) {
	skip(r, 4);
	Region value;
	while (r.pos < r.end)
		if (next_value(r, &value))
			check_value(range, value);
}

// Checks one value of the local type, looking through domains as their binary form does.
void check_value(Oid type, Region r) {
	check_stack_depth();
	Oid base = getBaseType(type);
	if (is_object_reference(base)) {
		check_object_oid(base, r);
		return;
	}
	Oid element = get_element_type(base);
	char typtype = get_typtype(base);
	if (OidIsValid(element))
		check_array(element, r);
	else if (base != RECORDOID && type_is_rowtype(base))
		check_record(base, r);
	else if (typtype == TYPTYPE_RANGE)
		check_range(get_range_subtype(base), r);
	else if (typtype == TYPTYPE_MULTIRANGE)
		check_multirange(get_multirange_range(base), r);
}

} // namespace

bool binary_has_object_oids(Oid type) {
	check_stack_depth();
	Oid base = getBaseType(type);
	if (is_object_reference(base))
		return true;
	Oid element = get_element_type(base);
	if (OidIsValid(element))
		return binary_has_object_oids(element);
	if (base != RECORDOID && type_is_rowtype(base))
		return record_has_object_oids(base);
	char typtype = get_typtype(base);
	if (typtype == TYPTYPE_RANGE)
		return binary_has_object_oids(get_range_subtype(base));
	if (typtype == TYPTYPE_MULTIRANGE)
		return binary_has_object_oids(get_multirange_range(base));
	return false;
}

void binary_check_object_oids(Oid type, const char *data, int len) {
	check_value(type, Region{data, 0, len});
}

} // namespace logical_audit::audit
