// row_key and changed_columns of change rows, from the old row or the latest audited image of the
// row. Unchanged TOAST values are not copied: they are resolved when read.
//
// Values are compared as jsonb values (numbers by value, nested documents as jsonb compares them):
// the image is jsonb, and the new row's values are already converted to jsonb. Everything here is
// palloc'd in the caller's (per-message) context.
#include "audit/row_image.hpp"

#include <cstring>

#include "pg.hpp"

namespace logical_audit::audit {

namespace {

namespace po = pgoutput;

// The key columns of a new tuple as a jsonb object. A key column the tuple did not send (an
// unchanged TOASTed key, for which the upstream sends the old key) takes its value from old_key;
// 0 when there is none to take it from.
Datum new_key(const AuditRelation *relation, const po::TupleData &tuple, Datum old_key) {
	Datum unsent;
	bool all_sent;
	Datum key = tuple_to_jsonb(relation, tuple, true, &unsent, &all_sent);
	if (all_sent)
		return key;
	if (old_key == (Datum)0)
		return (Datum)0;
	return DirectFunctionCall2(jsonb_concat, old_key, key);
}

// The row_key of a change: the new tuple's key, or the old key of a DELETE; NULL without a key.
NullableDatum row_key_of(const AuditRelation *relation, const ChangeRow &row, po::OldTuple old_kind,
                         const po::TupleData *new_tuple) {
	if (!relation->has_row_key)
		return {(Datum)0, true};
	Datum old_key = old_kind == po::OldTuple::Key && !row.old_row.isnull ? row.old_row.value : (Datum)0;
	Datum key = new_tuple != nullptr ? new_key(relation, *new_tuple, old_key) : old_key;
	return {key, key == (Datum)0};
}

// Whether two jsonb values are equal as jsonb compares them.
bool same_value(const JsonbValue &a, const JsonbValue &b) {
	if (a.type != b.type)
		return false;
	switch (a.type) {
	case jbvNull:
		return true;
	case jbvBool:
		return a.val.boolean == b.val.boolean;
	case jbvString:
		return a.val.string.len == b.val.string.len &&
		       memcmp(a.val.string.val, b.val.string.val, a.val.string.len) == 0;
	case jbvNumeric:
		return DatumGetBool(
		    DirectFunctionCall2(numeric_eq, NumericGetDatum(a.val.numeric), NumericGetDatum(b.val.numeric)));
	case jbvBinary:
		return compareJsonbContainers(a.val.binary.data, b.val.binary.data) == 0;
	default:
		return false;
	}
}

// The value of a column in a jsonb row, or nullptr when the row lacks it.
const JsonbValue *column_in(Jsonb *row, const AuditColumn &column, JsonbValue *value) {
	return getKeyJsonValueFromContainer(&row->root, column.name, column.name_len, value);
}

// Whether a column's value in the new row differs from the image's; a column the image lacks
// (added upstream since, or unsent then) counts as changed.
bool column_changed(Jsonb *now, Jsonb *before, const AuditColumn &column) {
	JsonbValue new_value, old_value;
	const JsonbValue *a = column_in(now, column, &new_value);
	const JsonbValue *b = column_in(before, column, &old_value);
	return a == nullptr || b == nullptr || !same_value(*a, *b);
}

// The names of the columns an UPDATE changed compared with the image of the row, in column order,
// as a text[]. A column the new tuple did not send (unchanged TOAST) is unchanged.
Datum changed_from_image(const AuditRelation *relation, const po::TupleData &new_tuple, Datum new_row, Datum image) {
	Jsonb *now = DatumGetJsonbP(new_row);
	Jsonb *before = DatumGetJsonbP(image);
	Datum *names = static_cast<Datum *>(palloc(sizeof(Datum) * Max(relation->ncolumns, 1)));
	int count = 0, i = 0;
	for (po::ColumnValue c : new_tuple) {
		const AuditColumn &column = relation->columns[i++];
		if (c.kind != po::ColumnKind::UnchangedToast && column_changed(now, before, column))
			names[count++] = CStringGetTextDatum(column.name);
	}
	return PointerGetDatum(construct_array(names, count, TEXTOID, -1, false, TYPALIGN_INT));
}

// Completes an UPDATE from its full old row (REPLICA IDENTITY FULL): no lookup needed.
void complete_from_old_row(const AuditRelation *relation, ChangeRow &row, const po::TupleData &old_tuple,
                           const po::TupleData &new_tuple) {
	(void)relation;
	row.changed_columns = {changed_columns(relation, old_tuple, new_tuple), false};
}

// Completes an UPDATE from the latest image of its row, looked up by the old key when the upstream
// sent one (the key changed), else by the new one.
void complete_from_image(Writer *writer, const AuditRelation *relation, ChangeRow &row, po::OldTuple old_kind,
                         const po::TupleData &new_tuple) {
	if (row.row_key.isnull)
		return;
	Datum key = old_kind == po::OldTuple::Key && !row.old_row.isnull ? row.old_row.value : row.row_key.value;
	Datum image = writer_latest_image(writer, relation, key);
	if (image == (Datum)0)
		return;
	row.changed_columns = {changed_from_image(relation, new_tuple, row.new_row.value, image), false};
}

} // namespace

void complete_change(Writer *writer, const AuditRelation *relation, ChangeRow &row, po::OldTuple old_kind,
                     const po::TupleData &old_tuple, const po::TupleData *new_tuple, bool row_history) {
	row.row_key = row_history ? row_key_of(relation, row, old_kind, new_tuple) : NullableDatum{(Datum)0, true};
	if (new_tuple == nullptr || row.new_row.isnull || row.op != Op::Update)
		return;
	if (old_kind == po::OldTuple::Full)
		complete_from_old_row(relation, row, old_tuple, *new_tuple);
	else if (row_history)
		complete_from_image(writer, relation, row, old_kind, *new_tuple);
}

} // namespace logical_audit::audit
