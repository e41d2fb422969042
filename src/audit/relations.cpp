// Upstream relations and types learnt from Relation and Type messages, and the conversion of their
// tuples (text or binary values) into jsonb rows equal to the upstream's to_jsonb(row).
//
// Every decision that needs the catalogs (which local type, which conversion, which receive and
// output functions) is taken once, when the Relation message arrives; a row then costs only the
// input or receive functions of the columns whose kind needs one. Everything is palloc'd or a
// plain struct: an ERROR's longjmp abandons nothing.
#include "audit/relations.hpp"

#include "audit/binary_oids.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string_view>

#include "pg.hpp"

namespace logical_audit::audit {

namespace po = pgoutput;

// An upstream type's qualified name, from a Type message.
struct TypeName {
	Oid type_id; // hash key
	char *nspname;
	char *typname;
};

// A relation and the memory context that holds it (and its columns' function caches).
struct RelationEntry {
	Oid relation_id; // hash key
	AuditRelation *relation;
	MemoryContext context;
};

struct Relations {
	MemoryContext context;
	HTAB *relations; // upstream relation id -> RelationEntry
	HTAB *types;     // upstream type oid -> TypeName
};

namespace {

// Timestamptz values are rendered at this offset from UTC, in seconds.
const int kUtcOffset = 0;

// Where a conversion is, for the error context.
struct ConversionPlace {
	const AuditRelation *relation;
	const AuditColumn *column; // nullptr while checking the tuple as a whole
};

// Names the relation and column being converted in error reports.
void conversion_error_context(void *arg) {
	const auto *place = static_cast<const ConversionPlace *>(arg);
	const AuditRelation *rel = place->relation;
	if (place->column)
		errcontext("converting column \"%s\" of relation \"%s.%s\"", place->column->name, rel->nspname, rel->relname);
	else
		errcontext("converting a tuple of relation \"%s.%s\"", rel->nspname, rel->relname);
}

// A hash table keyed by an oid, with entries of the given size, living in context.
HTAB *create_oid_hash(const char *name, Size entry_size, MemoryContext context) {
	HASHCTL ctl;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = entry_size;
	ctl.hcxt = context;
	return hash_create(name, 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

// A NUL-terminated copy of a name from the stream, which must be valid in the database encoding
// (names become jsonb keys and SQL text).
char *copy_name(std::string_view s) {
	pg_verifymbstr(s.data(), static_cast<int>(s.size()), false);
	return pnstrdup(s.data(), s.size());
}

// A namespace name from the stream, where an empty one means pg_catalog.
char *copy_namespace(std::string_view s) {
	return copy_name(s.empty() ? std::string_view("pg_catalog") : s);
}

// The local type of that qualified name, or InvalidOid.
Oid type_by_name(const TypeName *name) {
	Oid nsp = get_namespace_oid(name->nspname, true);
	if (!OidIsValid(nsp))
		return InvalidOid;
	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, PointerGetDatum(name->typname), ObjectIdGetDatum(nsp));
}

// The downstream type of an upstream column type: by name when a Type message named it (user
// types, whose oids differ between servers; for a domain pgoutput names its base type), else the
// same oid for a built-in type. InvalidOid when there is none.
Oid find_local_type(const Relations *relations, Oid upstream) {
	auto *name = static_cast<TypeName *>(hash_search(relations->types, &upstream, HASH_FIND, nullptr));
	Oid local = InvalidOid;
	if (name)
		local = type_by_name(name);
	else if (upstream < FirstNormalObjectId && SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(upstream)))
		local = upstream;
	if (OidIsValid(local) && !get_typisdefined(local))
		return InvalidOid; // a shell type has no input function
	return local;
}

// Whether a user type has an explicit cast to json through a function, which to_jsonb uses.
bool has_json_cast(Oid type) {
	Oid cast_function = InvalidOid;
	CoercionPathType path = find_coercion_pathway(JSONOID, type, COERCION_EXPLICIT, &cast_function);
	return path == COERCION_PATH_FUNC && OidIsValid(cast_function);
}

// How to_jsonb renders a value of a (domain-free) local type; mirrors its categories, except that
// ranges go through to_jsonb too so that their timestamptz bounds follow the local TimeZone.
JsonKind kind_of(Oid base) {
	switch (base) {
	case BOOLOID:
		return JsonKind::Bool;
	case INT2OID:
	case INT4OID:
	case INT8OID:
		return JsonKind::Integer;
	case NUMERICOID:
		return JsonKind::Number;
	case FLOAT4OID:
	case FLOAT8OID:
		return JsonKind::Float;
	case DATEOID:
	case TIMESTAMPOID:
	case TIMESTAMPTZOID:
		return JsonKind::DateTime;
	case JSONOID:
	case JSONBOID:
		return JsonKind::Json;
	default:
		break;
	}
	if (OidIsValid(get_element_type(base)) || type_is_rowtype(base))
		return JsonKind::Generic;
	char typtype = get_typtype(base);
	if (typtype == TYPTYPE_RANGE || typtype == TYPTYPE_MULTIRANGE)
		return JsonKind::Generic;
	if (base >= FirstNormalObjectId && has_json_cast(base))
		return JsonKind::Generic;
	return JsonKind::String; // to_jsonb gives the output function's text, which the upstream sent
}

// Binds to_jsonb to the column's type: to_jsonb finds its argument's type in fn_expr.
void bind_to_jsonb(AuditColumn &column, MemoryContext context) {
	fmgr_info_cxt(F_TO_JSONB, &column.to_jsonb, context);
	MemoryContext old = MemoryContextSwitchTo(context);
	List *args = list_make1(makeNullConst(column.base_type, -1, InvalidOid));
	column.to_jsonb.fn_expr = reinterpret_cast<Node *>(
	    makeFuncExpr(F_TO_JSONB, JSONBOID, args, InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL));
	MemoryContextSwitchTo(old);
}

// The upstream type's name for errors: from its Type message, else the local type's, else its oid.
char *type_display_name(const Relations *relations, Oid upstream, Oid local) {
	auto *name = static_cast<TypeName *>(hash_search(relations->types, &upstream, HASH_FIND, nullptr));
	if (name)
		return pstrdup(quote_qualified_identifier(name->nspname, name->typname));
	if (OidIsValid(local))
		return format_type_be(local);
	return psprintf("with oid %u", upstream);
}

// Whether a type's output function reads the settings that output_settings_match checks.
bool output_reads_settings(Oid base) {
	switch (base) {
	case BYTEAOID:    // bytea_output
	case INTERVALOID: // IntervalStyle
	case POINTOID:    // extra_float_digits, as every geometric type
	case LSEGOID:
	case PATHOID:
	case BOXOID:
	case POLYGONOID:
	case LINEOID:
	case CIRCLEOID:
		return true;
	default:
		return false;
	}
}

// Prepares what reads and renders a column's binary values, when its type exists here: the receive
// function, and the output function for the kinds whose jsonb value is the text.
void prepare_binary(AuditColumn &column, MemoryContext context) {
	if (!OidIsValid(column.local_type))
		return;
	int16 typlen;
	bool typbyval;
	char typalign, typdelim;
	Oid receive;
	get_type_io_data(column.local_type, IOFunc_receive, &typlen, &typbyval, &typalign, &typdelim,
	                 &column.receive_ioparam, &receive);
	if (OidIsValid(receive))
		fmgr_info_cxt(receive, &column.receive, context);
	column.check_object_oids = binary_has_object_oids(column.local_type);
	if (column.kind == JsonKind::String) {
		Oid output;
		bool varlena;
		getTypeOutputInfo(column.base_type, &output, &varlena);
		fmgr_info_cxt(output, &column.output, context);
	}
}

// Decides how one column converts and prepares the functions it needs, in context.
void prepare_column(const Relations *relations, AuditColumn &column, const po::RelationColumn &c,
                    MemoryContext context) {
	column.name = copy_name(c.name);
	column.name_len = static_cast<int>(strlen(column.name));
	column.key = c.is_key();
	column.upstream_type = c.type;
	column.typmod = c.typmod;
	column.local_type = find_local_type(relations, c.type);
	column.base_type = OidIsValid(column.local_type) ? getBaseType(column.local_type) : InvalidOid;
	column.kind = OidIsValid(column.base_type) ? kind_of(column.base_type) : JsonKind::String;
	if (column.kind == JsonKind::DateTime || column.kind == JsonKind::Generic) {
		Oid input;
		getTypeInputInfo(column.base_type, &input, &column.input_ioparam);
		fmgr_info_cxt(input, &column.input, context);
	}
	if (column.kind == JsonKind::Generic)
		bind_to_jsonb(column, context);
	column.type_name = type_display_name(relations, c.type, column.local_type);
	prepare_binary(column, context);
}

// Whether a column renders through functions that read DateStyle and similar settings: to_jsonb
// for Generic columns, the output function of a binary value for some types.
bool uses_output_settings(const AuditColumn &column) {
	return column.kind == JsonKind::Generic ||
	       (column.kind == JsonKind::String && OidIsValid(column.base_type) && output_reads_settings(column.base_type));
}

// Whether jsonb orders key a before key b: shorter first, then bytewise, as jsonb objects store them.
bool key_before(const AuditColumn &a, const AuditColumn &b) {
	if (a.name_len != b.name_len)
		return a.name_len < b.name_len;
	return memcmp(a.name, b.name, a.name_len) < 0;
}

// Whether a column's values convert to jsonb scalars (not nested documents).
bool converts_to_scalar(const AuditColumn &column) {
	return column.kind != JsonKind::Json && column.kind != JsonKind::Generic;
}

// Sorts the columns in jsonb key order and decides whether rows can be built directly in it: only
// scalars, and no two columns of the same name (a malformed Relation message could send that).
void order_keys(AuditRelation *rel) {
	rel->key_order = static_cast<int *>(palloc(sizeof(int) * Max(rel->ncolumns, 1)));
	for (int i = 0; i < rel->ncolumns; i++)
		rel->key_order[i] = i;
	const AuditColumn *columns = rel->columns;
	std::sort(rel->key_order, rel->key_order + rel->ncolumns,
	          [columns](int a, int b) { return key_before(columns[a], columns[b]); });
	rel->scalar = true;
	for (int i = 0; i < rel->ncolumns; i++) {
		const AuditColumn &column = columns[rel->key_order[i]];
		if (!converts_to_scalar(column) || (i > 0 && !key_before(columns[rel->key_order[i - 1]], column)))
			rel->scalar = false;
	}
}

// Builds a relation, with its columns, in context.
AuditRelation *build_relation(const Relations *relations, const po::Relation &message, MemoryContext context) {
	MemoryContext old = MemoryContextSwitchTo(context);
	auto *rel = static_cast<AuditRelation *>(palloc0(sizeof(AuditRelation)));
	rel->relation_id = message.relation_id;
	rel->nspname = copy_namespace(message.nspname);
	rel->relname = copy_name(message.relname);
	rel->nspname_text = CStringGetTextDatum(rel->nspname);
	rel->relname_text = CStringGetTextDatum(rel->relname);
	rel->replica_identity = static_cast<char>(message.replica_identity);
	rel->ncolumns = message.columns.size();
	rel->columns = static_cast<AuditColumn *>(palloc0(sizeof(AuditColumn) * Max(rel->ncolumns, 1)));
	int i = 0;
	for (po::RelationColumn c : message.columns) {
		prepare_column(relations, rel->columns[i], c, context);
		rel->uses_output_settings |= uses_output_settings(rel->columns[i]);
		rel->has_row_key |= rel->columns[i++].key;
	}
	// Under FULL the upstream flags every column as key, under NOTHING none: no key names the row.
	rel->has_row_key &=
	    rel->replica_identity == REPLICA_IDENTITY_DEFAULT || rel->replica_identity == REPLICA_IDENTITY_INDEX;
	order_keys(rel);
	MemoryContextSwitchTo(old);
	return rel;
}

// A jsonb string over bytes that live until the row is built; too long a string fails as in to_jsonb.
JsonbValue string_value(const char *s, size_t len) {
	if (len > JENTRY_OFFLENMASK)
		ereport(ERROR, (errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED), errmsg("string too long to represent as jsonb string"),
		                errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
		                          JENTRY_OFFLENMASK)));
	JsonbValue v;
	v.type = jbvString;
	v.val.string.val = const_cast<char *>(s);
	v.val.string.len = static_cast<int>(len);
	return v;
}

// A number as to_jsonb renders a numeric type's output text: a JSON number, or a string for the
// texts with an 'N' or 'n' in them (NaN, Infinity, -Infinity), as to_jsonb decides.
JsonbValue number_value(char *text, size_t len) {
	if (memchr(text, 'N', len) || memchr(text, 'n', len))
		return string_value(text, len);
	JsonbValue v;
	v.type = jbvNumeric;
	v.val.numeric = DatumGetNumeric(
	    DirectFunctionCall3(numeric_in, CStringGetDatum(text), ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	return v;
}

// A float value in the shortest exact form, which float4out/float8out print under the default
// extra_float_digits: a JSON number, or a string for NaN and the infinities.
JsonbValue float_number(double d, bool is_float4) {
	char *out = static_cast<char *>(palloc(DOUBLE_SHORTEST_DECIMAL_LEN + 1));
	if (std::isnan(d))
		strcpy(out, "NaN");
	else if (std::isinf(d))
		strcpy(out, d > 0 ? "Infinity" : "-Infinity");
	else if (is_float4)
		float_to_shortest_decimal_buf(static_cast<float>(d), out);
	else
		double_to_shortest_decimal_buf(d, out);
	return number_value(out, strlen(out));
}

// A float value from its text, printed again as float_number does whatever setting printed it.
JsonbValue float_value(Oid type, const char *text) {
	if (type == FLOAT4OID)
		return float_number(DatumGetFloat4(DirectFunctionCall1(float4in, CStringGetDatum(text))), true);
	return float_number(DatumGetFloat8(DirectFunctionCall1(float8in, CStringGetDatum(text))), false);
}

// An integer as a JSON number.
JsonbValue int64_number(int64 value) {
	JsonbValue v;
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(value);
	return v;
}

// A boolean from boolout's "t" or "f" (other spellings through boolin).
JsonbValue bool_value(std::string_view text) {
	JsonbValue v;
	v.type = jbvBool;
	if (text == "t" || text == "f")
		v.val.boolean = text == "t";
	else
		v.val.boolean = DatumGetBool(DirectFunctionCall1(boolin, CStringGetDatum(pnstrdup(text.data(), text.size()))));
	return v;
}

// An integer column's value: int2/4/8 output is an optional '-' and digits, read here directly (at
// most 18 digits cannot overflow); anything else goes through numeric_in.
JsonbValue integer_value(std::string_view text) {
	size_t i = !text.empty() && text[0] == '-' ? 1 : 0;
	size_t digits = text.size() - i;
	int64 value = 0;
	bool plain = digits >= 1 && digits <= 18;
	for (; plain && i < text.size(); i++) {
		plain = text[i] >= '0' && text[i] <= '9';
		value = value * 10 + (text[i] - '0');
	}
	if (!plain)
		return number_value(pnstrdup(text.data(), text.size()), text.size());
	return int64_number(text[0] == '-' ? -value : value);
}

// The value of n decimal digits at s, or -1 when one is not a digit.
int read_digits(const char *s, int n) {
	int value = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		value = value * 10 + (s[i] - '0');
	}
	return value;
}

// Whether s starts with a valid date "YYYY-MM-DD" of year 1 to 9999, as ISO output writes it.
bool iso_date(const char *s) {
	int year = read_digits(s, 4), month = read_digits(s + 5, 2), day = read_digits(s + 8, 2);
	return s[4] == '-' && s[7] == '-' && year >= 1 && month >= 1 && month <= 12 && day >= 1 &&
	       day <= day_tab[isleap(year) ? 1 : 0][month - 1];
}

// The length of "YYYY-MM-DD HH:MM:SS[.ffffff]" at the start of text (as timestamp output writes
// it in DateStyle ISO), or 0 when text does not start so.
size_t iso_timestamp_length(std::string_view text) {
	const char *s = text.data();
	if (text.size() < 19 || !iso_date(s) || s[10] != ' ' || s[13] != ':' || s[16] != ':')
		return 0;
	int hour = read_digits(s + 11, 2), minute = read_digits(s + 14, 2), second = read_digits(s + 17, 2);
	if (hour < 0 || hour > 23 || minute < 0 || minute > 59 || second < 0 || second > 59)
		return 0;
	size_t end = 19;
	if (end < text.size() && s[end] == '.') {
		size_t digits = 0;
		while (end + 1 + digits < text.size() && digits < 7 && s[end + 1 + digits] >= '0' && s[end + 1 + digits] <= '9')
			digits++;
		if (digits == 0 || digits > 6)
			return 0;
		end += 1 + digits;
	}
	return end;
}

// The ISO 8601 form to_jsonb gives a date or timestamp, written directly from the upstream's ISO
// text when it has the plain form (dates of years 1 to 9999, timestamptz at UTC): the date as it
// is, a 'T' between date and time, "+00:00" for the UTC offset. False when the text has another
// form (infinity, BC, another offset): the caller parses it then.
bool iso_datetime_value(Oid type, std::string_view text, JsonbValue *v) {
	if (type == DATEOID) {
		if (text.size() != 10 || !iso_date(text.data()))
			return false;
		*v = string_value(text.data(), text.size()); // the message outlives the row's construction
		return true;
	}
	size_t length = iso_timestamp_length(text);
	bool utc = type == TIMESTAMPTZOID && length + 3 == text.size() && text.substr(length) == "+00";
	if (length == 0 || (length != text.size() && !utc))
		return false;
	char *out = static_cast<char *>(palloc(length + 7));
	memcpy(out, text.data(), length);
	out[10] = 'T';
	if (utc)
		memcpy(out + length, "+00:00", 6);
	*v = string_value(out, length + (utc ? 6 : 0));
	return true;
}

// A date or timestamp in to_jsonb's ISO 8601 form; timestamptz at UTC.
JsonbValue datetime_value(const AuditColumn &column, std::string_view text) {
	JsonbValue v;
	if (iso_datetime_value(column.base_type, text, &v))
		return v;
	Datum value = InputFunctionCall(const_cast<FmgrInfo *>(&column.input), pnstrdup(text.data(), text.size()),
	                                column.input_ioparam, -1);
	char *out = JsonEncodeDateTime(nullptr, value, column.base_type, &kUtcOffset);
	return string_value(out, strlen(out));
}

// A jsonb document, nested as a value: pushJsonbValue unpacks it (raw scalars included).
JsonbValue nested_value(Datum jsonb) {
	Jsonb *doc = DatumGetJsonbP(jsonb);
	JsonbValue v;
	v.type = jbvBinary;
	v.val.binary.data = &doc->root;
	v.val.binary.len = VARSIZE(doc) - VARHDRSZ;
	return v;
}

// A value of the local type, rendered by to_jsonb bound to that type.
JsonbValue generic_value(const AuditColumn &column, char *text) {
	auto *column_mut = const_cast<AuditColumn *>(&column);
	Datum value = InputFunctionCall(&column_mut->input, text, column.input_ioparam, -1);
	return nested_value(FunctionCall1(&column_mut->to_jsonb, value));
}

// The jsonb value of a column's text, as to_jsonb gives it upstream.
JsonbValue text_to_value(const AuditColumn &column, std::string_view text) {
	pg_verifymbstr(text.data(), static_cast<int>(text.size()), false);
	switch (column.kind) {
	case JsonKind::String:
		return string_value(text.data(), text.size()); // the message outlives the row's construction
	case JsonKind::Bool:
		return bool_value(text);
	case JsonKind::Integer:
		return integer_value(text);
	case JsonKind::Number:
		return number_value(pnstrdup(text.data(), text.size()), text.size());
	case JsonKind::Float:
		return float_value(column.base_type, pnstrdup(text.data(), text.size()));
	case JsonKind::DateTime:
		return datetime_value(column, text);
	case JsonKind::Json:
		return nested_value(DirectFunctionCall1(jsonb_in, CStringGetDatum(pnstrdup(text.data(), text.size()))));
	default:
		return generic_value(column, pnstrdup(text.data(), text.size()));
	}
}

// Rejects a binary value of a column whose type this database cannot receive: a guess at its bytes
// would record a wrong value.
void require_receive(const AuditRelation *relation, const AuditColumn &column) {
	if (OidIsValid(column.receive.fn_oid))
		return;
	ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
	                errmsg("type %s of column \"%s\" of relation \"%s.%s\" cannot be received in binary",
	                       column.type_name, column.name, relation->nspname, relation->relname),
	                OidIsValid(column.local_type) ? errdetail("The type has no binary input function in this database.")
	                                              : errdetail("The type does not exist in this database."),
	                errhint("Create the type in this database, or set the option binary to false.")));
}

// A column's binary value read by the local type's receive function, which must consume all of it.
Datum receive_value(const AuditRelation *relation, const AuditColumn &column, std::string_view bytes) {
	require_receive(relation, column);
	StringInfoData buf;
	buf.len = static_cast<int>(bytes.size());
	buf.maxlen = buf.len + 1;
	buf.cursor = 0;
	buf.data = static_cast<char *>(palloc(buf.maxlen));
	memcpy(buf.data, bytes.data(), bytes.size());
	buf.data[buf.len] = '\0'; // receive functions may rely on the terminator every StringInfo has
	if (column.check_object_oids)
		binary_check_object_oids(column.local_type, buf.data, buf.len);
	Datum value =
	    ReceiveFunctionCall(const_cast<FmgrInfo *>(&column.receive), &buf, column.receive_ioparam, column.typmod);
	if (buf.cursor != buf.len)
		ereport(ERROR, (errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
		                errmsg("incorrect binary data format in column \"%s\" of relation \"%s.%s\"", column.name,
		                       relation->nspname, relation->relname),
		                errdetail("The binary input function of type %s read %d of the %d bytes sent.",
		                          column.type_name, buf.cursor, buf.len)));
	return value;
}

// A numeric as to_jsonb renders it: a JSON number, or its text for NaN and the infinities.
JsonbValue numeric_datum_value(Numeric n) {
	if (numeric_is_nan(n) || numeric_is_inf(n)) {
		char *out = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)));
		return string_value(out, strlen(out));
	}
	JsonbValue v;
	v.type = jbvNumeric;
	v.val.numeric = n;
	return v;
}

// An int2, int4 or int8 value as a JSON number.
JsonbValue integer_datum_value(Oid type, Datum value) {
	if (type == INT2OID)
		return int64_number(DatumGetInt16(value));
	if (type == INT4OID)
		return int64_number(DatumGetInt32(value));
	return int64_number(DatumGetInt64(value));
}

// A json or jsonb value nested as a document (json text parsed as to_jsonb does).
JsonbValue json_datum_value(Oid type, Datum value) {
	if (type == JSONBOID)
		return nested_value(value);
	char *json = TextDatumGetCString(value);
	return nested_value(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

// The jsonb value of a received datum of the local type, the same as text_to_value gives for its text.
JsonbValue datum_to_value(const AuditColumn &column, Datum value) {
	JsonbValue v;
	switch (column.kind) {
	case JsonKind::Bool:
		v.type = jbvBool;
		v.val.boolean = DatumGetBool(value);
		return v;
	case JsonKind::Integer:
		return integer_datum_value(column.base_type, value);
	case JsonKind::Number:
		return numeric_datum_value(DatumGetNumeric(value));
	case JsonKind::Float:
		if (column.base_type == FLOAT4OID)
			return float_number(DatumGetFloat4(value), true);
		return float_number(DatumGetFloat8(value), false);
	case JsonKind::DateTime: {
		char *out = JsonEncodeDateTime(nullptr, value, column.base_type, &kUtcOffset);
		return string_value(out, strlen(out));
	}
	case JsonKind::Json:
		return json_datum_value(column.base_type, value);
	case JsonKind::String: {
		char *out = OutputFunctionCall(const_cast<FmgrInfo *>(&column.output), value);
		return string_value(out, strlen(out));
	}
	default:
		return nested_value(FunctionCall1(const_cast<FmgrInfo *>(&column.to_jsonb), value));
	}
}

// Rejects a tuple whose column count is not the relation's.
void check_tuple_size(const AuditRelation *relation, const po::TupleData &tuple) {
	if (tuple.size() == relation->ncolumns)
		return;
	ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION),
	                errmsg("pgoutput tuple of relation \"%s.%s\" has %d columns, not %d", relation->nspname,
	                       relation->relname, tuple.size(), relation->ncolumns),
	                errdetail("The relation's last Relation message announced %d columns.", relation->ncolumns)));
}

// The jsonb value of one sent column: NULL, text, or binary (a column the upstream cannot send in
// binary comes as text even in binary mode).
JsonbValue column_value(const AuditRelation *relation, const AuditColumn &column, const po::ColumnValue &c) {
	JsonbValue value;
	if (c.kind == po::ColumnKind::Null)
		value.type = jbvNull;
	else if (c.kind == po::ColumnKind::Text)
		value = text_to_value(column, c.data);
	else
		value = datum_to_value(column, receive_value(relation, column, c.data));
	return value;
}

// Pushes "name": value for one sent column into the object under construction.
void push_column(JsonbParseState **state, const AuditRelation *relation, const AuditColumn &column,
                 const po::ColumnValue &c) {
	JsonbValue value = column_value(relation, column, c);
	JsonbValue key = string_value(column.name, column.name_len);
	pushJsonbValue(state, WJB_KEY, &key);
	pushJsonbValue(state, WJB_VALUE, &value);
}

// Adds a column whose value was not sent (unchanged TOAST) to the names collected so far.
void add_unsent(Datum *&names, int &count, const AuditRelation *relation, const AuditColumn &column) {
	if (!names)
		names = static_cast<Datum *>(palloc(sizeof(Datum) * relation->ncolumns));
	names[count++] = CStringGetTextDatum(column.name);
}

// The names collected so far of columns not sent, as a text[].
Datum names_array(Datum *names, int count) {
	return PointerGetDatum(construct_array(names, count, TEXTOID, -1, false, TYPALIGN_INT));
}

} // namespace

Relations *relations_create(MemoryContext context) {
	auto *relations = static_cast<Relations *>(MemoryContextAllocZero(context, sizeof(Relations)));
	relations->context = context;
	relations->relations = create_oid_hash("logical_audit relations", sizeof(RelationEntry), context);
	relations->types = create_oid_hash("logical_audit upstream types", sizeof(TypeName), context);
	return relations;
}

void relations_add_type(Relations *relations, const po::Type &type) {
	MemoryContext old = MemoryContextSwitchTo(relations->context);
	char *nspname = copy_namespace(type.nspname);
	char *typname = copy_name(type.typname);
	MemoryContextSwitchTo(old);
	Oid type_id = type.type_id;
	bool found;
	auto *entry = static_cast<TypeName *>(hash_search(relations->types, &type_id, HASH_ENTER, &found));
	if (found) {
		pfree(entry->nspname);
		pfree(entry->typname);
	}
	entry->nspname = nspname;
	entry->typname = typname;
}

void relations_add(Relations *relations, const po::Relation &relation) {
	// Built under the caller's (short-lived) context, so that an error halfway leaves nothing
	// behind, and moved under the long-lived one once complete, as the relcache does.
	MemoryContext context = AllocSetContextCreate(CurrentMemoryContext, "logical_audit relation", ALLOCSET_SMALL_SIZES);
	AuditRelation *built = build_relation(relations, relation, context);
	MemoryContextSetParent(context, relations->context);
	Oid relation_id = relation.relation_id;
	bool found;
	auto *entry = static_cast<RelationEntry *>(hash_search(relations->relations, &relation_id, HASH_ENTER, &found));
	if (found)
		MemoryContextDelete(entry->context);
	entry->relation = built;
	entry->context = context;
}

namespace {

// Appends a name and its terminating zero byte, as pgoutput sends names.
void append_name(StringInfo out, const char *name) {
	appendBinaryStringInfo(out, name, static_cast<int>(strlen(name)) + 1);
}

// A Type message announcing an upstream type, as pgoutput would send it outside a stream.
void encode_type(StringInfo out, const TypeName &type) {
	pq_sendbyte(out, 'Y');
	pq_sendint32(out, type.type_id);
	append_name(out, type.nspname);
	append_name(out, type.typname);
}

// A Relation message announcing a relation as the audit knows it, as pgoutput would send it.
void encode_relation(StringInfo out, const AuditRelation &relation) {
	pq_sendbyte(out, 'R');
	pq_sendint32(out, relation.relation_id);
	append_name(out, relation.nspname);
	append_name(out, relation.relname);
	pq_sendbyte(out, relation.replica_identity);
	pq_sendint16(out, relation.ncolumns);
	for (int i = 0; i < relation.ncolumns; i++) {
		const AuditColumn &column = relation.columns[i];
		pq_sendbyte(out, column.key ? 1 : 0);
		append_name(out, column.name);
		pq_sendint32(out, column.upstream_type);
		pq_sendint32(out, column.typmod);
	}
}

} // namespace

void relations_describe(const Relations *relations, const AuditRelation *relation, DescribeSink sink, void *arg) {
	StringInfoData out;
	initStringInfo(&out);
	for (int i = 0; i < relation->ncolumns; i++) {
		Oid type_id = relation->columns[i].upstream_type;
		auto *type = static_cast<TypeName *>(hash_search(relations->types, &type_id, HASH_FIND, nullptr));
		if (type == nullptr)
			continue;
		resetStringInfo(&out);
		encode_type(&out, *type);
		sink(arg, reinterpret_cast<const uint8_t *>(out.data), out.len);
	}
	resetStringInfo(&out);
	encode_relation(&out, *relation);
	sink(arg, reinterpret_cast<const uint8_t *>(out.data), out.len);
	pfree(out.data);
}

const AuditRelation *relations_find(const Relations *relations, po::Oid relation_id) {
	Oid key = relation_id;
	auto *entry = static_cast<RelationEntry *>(hash_search(relations->relations, &key, HASH_FIND, nullptr));
	return entry ? entry->relation : nullptr;
}

namespace {

// Whether a column belongs to the row: a key tuple sends the other columns as NULLs, which are not
// part of it.
bool in_row(const AuditColumn &column, bool key_only) {
	return !key_only || column.key;
}

// The object of a row through pushJsonbValue, which sorts keys and unpacks nested documents.
JsonbValue *pushed_object(const AuditRelation *relation, const po::TupleData &tuple, bool key_only,
                          ConversionPlace &place) {
	JsonbParseState *state = nullptr;
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, nullptr);
	const AuditColumn *column = relation->columns;
	for (po::ColumnValue c : tuple) {
		place.column = column;
		if (in_row(*column, key_only) && c.kind != po::ColumnKind::UnchangedToast)
			push_column(&state, relation, *column, c);
		column++;
	}
	return pushJsonbValue(&state, WJB_END_OBJECT, nullptr);
}

// The object of a row of scalars: values converted in column order (so that an error names the
// first bad column), then their pairs written directly in key order (no sort, no copy).
JsonbValue *scalar_object(const AuditRelation *relation, const po::TupleData &tuple, bool key_only,
                          ConversionPlace &place) {
	int n = Max(relation->ncolumns, 1);
	auto *values = static_cast<JsonbValue *>(palloc(sizeof(JsonbValue) * n));
	bool *present = static_cast<bool *>(palloc(sizeof(bool) * n));
	int i = 0;
	for (po::ColumnValue c : tuple) {
		const AuditColumn &column = relation->columns[i];
		present[i] = in_row(column, key_only) && c.kind != po::ColumnKind::UnchangedToast;
		place.column = &column;
		if (present[i])
			values[i] = column_value(relation, column, c);
		i++;
	}
	auto *pairs = static_cast<JsonbPair *>(palloc(sizeof(JsonbPair) * n));
	int npairs = 0;
	for (int k = 0; k < relation->ncolumns; k++) {
		int index = relation->key_order[k];
		if (!present[index])
			continue;
		const AuditColumn &column = relation->columns[index];
		pairs[npairs].key = string_value(column.name, column.name_len);
		pairs[npairs].value = values[index];
		pairs[npairs].order = npairs;
		npairs++;
	}
	auto *object = static_cast<JsonbValue *>(palloc(sizeof(JsonbValue)));
	object->type = jbvObject;
	object->val.object.nPairs = npairs;
	object->val.object.pairs = pairs;
	return object;
}

// The names of the row's columns that were not sent (unchanged TOAST), as a text[], or 0 when none.
Datum unsent_columns(const AuditRelation *relation, const po::TupleData &tuple, bool key_only) {
	Datum *unsent = nullptr;
	int nunsent = 0;
	const AuditColumn *column = relation->columns;
	for (po::ColumnValue c : tuple) {
		if (in_row(*column, key_only) && c.kind == po::ColumnKind::UnchangedToast)
			add_unsent(unsent, nunsent, relation, *column);
		column++;
	}
	return nunsent ? names_array(unsent, nunsent) : (Datum)0;
}

// Whether the session prints values as the upstream's walsender prints the text values of text mode
// (DateStyle ISO, IntervalStyle postgres, shortest floats, bytea in hex): output functions and
// to_jsonb read these settings.
bool output_settings_match() {
	return DateStyle == USE_ISO_DATES && IntervalStyle == INTSTYLE_POSTGRES && extra_float_digits > 0 &&
	       bytea_output == BYTEA_OUTPUT_HEX;
}

// Takes the walsender's output settings for the conversion of one tuple when the session has others
// and the relation reads them; returns the GUC nest level to leave afterwards, or 0 when none was
// entered. An error before the level is left is undone by the transaction's abort.
int enter_output_settings(const AuditRelation *relation) {
	if (!relation->uses_output_settings || output_settings_match())
		return 0;
	int level = NewGUCNestLevel();
	const char *settings[][2] = {
	    {"DateStyle", "ISO"}, {"IntervalStyle", "postgres"}, {"extra_float_digits", "3"}, {"bytea_output", "hex"}};
	for (const auto &setting : settings)
		(void)set_config_option(setting[0], setting[1], PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	return level;
}

} // namespace

Datum tuple_to_jsonb(const AuditRelation *relation, const po::TupleData &tuple, bool key_only, Datum *unchanged_toast,
                     bool *unchanged_isnull) {
	ConversionPlace place{relation, nullptr};
	ErrorContextCallback callback;
	callback.callback = conversion_error_context;
	callback.arg = &place;
	callback.previous = error_context_stack;
	error_context_stack = &callback;

	check_tuple_size(relation, tuple);
	int settings_level = enter_output_settings(relation);
	JsonbValue *row = relation->scalar ? scalar_object(relation, tuple, key_only, place)
	                                   : pushed_object(relation, tuple, key_only, place);
	if (settings_level > 0)
		AtEOXact_GUC(true, settings_level);
	*unchanged_toast = unsent_columns(relation, tuple, key_only);
	*unchanged_isnull = *unchanged_toast == (Datum)0;

	error_context_stack = callback.previous;
	return JsonbPGetDatum(JsonbValueToJsonb(row));
}

Datum changed_columns(const AuditRelation *relation, const po::TupleData &old_tuple, const po::TupleData &new_tuple) {
	Datum *names = static_cast<Datum *>(palloc(sizeof(Datum) * Max(relation->ncolumns, 1)));
	int count = 0, i = 0;
	auto old_column = old_tuple.begin();
	for (po::ColumnValue now : new_tuple) {
		po::ColumnValue before = *old_column;
		++old_column;
		bool same = now.kind == po::ColumnKind::UnchangedToast || (now.kind == before.kind && now.data == before.data);
		if (!same && i < relation->ncolumns)
			names[count++] = CStringGetTextDatum(relation->columns[i].name);
		i++;
	}
	return names_array(names, count);
}

} // namespace logical_audit::audit
