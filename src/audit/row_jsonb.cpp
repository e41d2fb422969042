// Upstream tuples (text or binary values) as jsonb rows equal to the upstream's to_jsonb(row),
// following the conversions relations.cpp decided for each column when the Relation message
// arrived: a row costs only the input or receive functions of the columns whose kind needs one.
// Everything is palloc'd in the caller's context: an ERROR's longjmp abandons nothing.
#include "audit/row_jsonb.hpp"

#include <cmath>
#include <cstring>
#include <string_view>

#include "audit/binary_oids.hpp"

#include "pg.hpp"

namespace logical_audit::audit {

namespace po = pgoutput;

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
