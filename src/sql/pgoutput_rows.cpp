// logical_audit.pgoutput_rows(messages, proto_version): a sequence of pgoutput messages decoded,
// in order, into the rows the audit records: one per inserted, updated or deleted row and one per
// truncated table, with old and new rows as the upstream's to_jsonb(row) gives them.
//
// Relation and Type messages are learnt with the audit's own Relations, so this function shows
// exactly what the worker would write. Everything in scope while PostgreSQL may raise an error is
// trivially destructible (decoded messages are views into the bytea elements).
#include "audit/decode_error.hpp"
#include "audit/relations.hpp"
#include "audit/row_jsonb.hpp"
#include "pgoutput/decoder.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <variant>

#include "pg.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(pgoutput_rows);
}

namespace logical_audit {

namespace {

namespace po = pgoutput;
using audit::AuditRelation;
using audit::Relations;

// The output columns of pgoutput_rows.
enum OutputColumn { kOp, kSchemaName, kTableName, kOldRow, kNewRow, kUnchangedToast, kOutputColumns };

// The state of one call: where rows go and what the stream taught so far.
struct RowsState {
	ReturnSetInfo *rsinfo;
	Relations *relations;
	int message_number; // 1-based position in the array, for the error context
	int message_count;
};

// Names the message being decoded in error reports.
void message_error_context(void *arg) {
	const auto *state = static_cast<const RowsState *>(arg);
	errcontext("pgoutput message %d of %d", state->message_number, state->message_count);
}

// Runs the decoder behind a catch-all so that no C++ exception reaches PostgreSQL's frames.
bool decode_guarded(po::Decoder &decoder, const uint8_t *data, size_t size, po::Message &out, po::DecodeError &error,
                    bool &threw) {
	threw = false;
	try {
		return decoder.decode(data, size, out, error);
	} catch (...) {
		threw = true;
		return false;
	}
}

// The relation a change names, which a Relation message must have announced.
const AuditRelation *find_relation(const RowsState &state, po::Oid relation_id, const char *message) {
	const AuditRelation *relation = audit::relations_find(state.relations, relation_id);
	if (!relation)
		ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION),
		                errmsg("pgoutput %s message for unknown relation %u", message, relation_id),
		                errdetail("No Relation message with this relation id came before it."),
		                errhint("Pass every message of the stream from its start, Relation messages included.")));
	return relation;
}

// Adds one output row; old and new rows are converted from their tuples when present.
void emit(RowsState &state, const char *op, const AuditRelation *relation, po::OldTuple old_kind,
          const po::TupleData &old_tuple, const po::TupleData *new_tuple) {
	Datum values[kOutputColumns];
	bool nulls[kOutputColumns];
	memset(nulls, true, sizeof(nulls));
	values[kOp] = CStringGetTextDatum(op);
	values[kSchemaName] = CStringGetTextDatum(relation->nspname);
	values[kTableName] = CStringGetTextDatum(relation->relname);
	nulls[kOp] = nulls[kSchemaName] = nulls[kTableName] = false;
	Datum ignored_toast;
	bool ignored_isnull;
	if (old_kind != po::OldTuple::None) {
		values[kOldRow] =
		    audit::tuple_to_jsonb(relation, old_tuple, old_kind == po::OldTuple::Key, &ignored_toast, &ignored_isnull);
		nulls[kOldRow] = false;
	}
	if (new_tuple) {
		values[kNewRow] =
		    audit::tuple_to_jsonb(relation, *new_tuple, false, &values[kUnchangedToast], &nulls[kUnchangedToast]);
		nulls[kNewRow] = false;
	}
	tuplestore_putvalues(state.rsinfo->setResult, state.rsinfo->setDesc, values, nulls);
}

// Insert: the new row.
void emit_insert(RowsState &state, const po::Insert &m) {
	const AuditRelation *relation = find_relation(state, m.relation_id, "insert");
	emit(state, "INSERT", relation, po::OldTuple::None, po::TupleData(), &m.new_tuple);
}

// Update: the old row (full or key) when sent, and the new row.
void emit_update(RowsState &state, const po::Update &m) {
	const AuditRelation *relation = find_relation(state, m.relation_id, "update");
	emit(state, "UPDATE", relation, m.old_kind, m.old_tuple, &m.new_tuple);
}

// Delete: the old row (full or key).
void emit_delete(RowsState &state, const po::Delete &m) {
	const AuditRelation *relation = find_relation(state, m.relation_id, "delete");
	emit(state, "DELETE", relation, m.old_kind, m.old_tuple, nullptr);
}

// Truncate: one row per truncated relation, without rows.
void emit_truncate(RowsState &state, const po::Truncate &m) {
	for (uint32 i = 0; i < m.relation_ids.size(); i++) {
		const AuditRelation *relation = find_relation(state, m.relation_ids[i], "truncate");
		emit(state, "TRUNCATE", relation, po::OldTuple::None, po::TupleData(), nullptr);
	}
}

// Learns from or emits the rows of one decoded message; other messages carry no rows.
void handle_message(RowsState &state, const po::Message &message) {
	if (const auto *m = std::get_if<po::Relation>(&message))
		audit::relations_add(state.relations, *m);
	else if (const auto *t = std::get_if<po::Type>(&message))
		audit::relations_add_type(state.relations, *t);
	else if (const auto *i = std::get_if<po::Insert>(&message))
		emit_insert(state, *i);
	else if (const auto *u = std::get_if<po::Update>(&message))
		emit_update(state, *u);
	else if (const auto *d = std::get_if<po::Delete>(&message))
		emit_delete(state, *d);
	else if (const auto *tr = std::get_if<po::Truncate>(&message))
		emit_truncate(state, *tr);
}

// Decodes one bytea message with the stream's decoder and handles it.
void decode_message(RowsState &state, po::Decoder &decoder, Datum element) {
	bytea *data = DatumGetByteaPP(element);
	const auto *bytes = reinterpret_cast<const uint8_t *>(VARDATA_ANY(data));
	size_t size = VARSIZE_ANY_EXHDR(data);
	po::Message message;
	po::DecodeError error;
	bool threw;
	if (!decode_guarded(decoder, bytes, size, message, error, threw)) {
		if (threw)
			ereport(ERROR,
			        (errcode(ERRCODE_INTERNAL_ERROR), errmsg("unexpected C++ exception in the pgoutput decoder")));
		audit::report_decode_error(error);
	}
	handle_message(state, message);
}

// Rejects a protocol version pgoutput does not have.
void check_proto_version(int32 proto_version) {
	if (proto_version < 1 || proto_version > 4)
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("proto_version %d is not supported", proto_version),
		         errhint("pgoutput protocol versions 1 to 4 are supported.")));
}

// Decodes every message in order, each in a memory context reset after it.
void decode_messages(RowsState &state, int proto_version, const Datum *elements, const bool *element_nulls) {
	MemoryContext per_message =
	    AllocSetContextCreate(CurrentMemoryContext, "pgoutput_rows message", ALLOCSET_DEFAULT_SIZES);
	ErrorContextCallback callback;
	callback.callback = message_error_context;
	callback.arg = &state;
	callback.previous = error_context_stack;
	error_context_stack = &callback;
	po::Decoder decoder(proto_version);
	for (int i = 0; i < state.message_count; i++) {
		state.message_number = i + 1;
		if (element_nulls[i])
			ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("pgoutput message must not be null")));
		MemoryContext old = MemoryContextSwitchTo(per_message);
		decode_message(state, decoder, elements[i]);
		MemoryContextSwitchTo(old);
		MemoryContextReset(per_message);
	}
	error_context_stack = callback.previous;
	MemoryContextDelete(per_message);
}

} // namespace

} // namespace logical_audit

// SQL: logical_audit.pgoutput_rows(messages bytea[], proto_version integer) RETURNS TABLE(op, schema_name,
// table_name, old_row, new_row, unchanged_toast).
extern "C" Datum pgoutput_rows(PG_FUNCTION_ARGS) {
	ArrayType *messages = PG_GETARG_ARRAYTYPE_P(0);
	int32 proto_version = PG_GETARG_INT32(1);
	logical_audit::check_proto_version(proto_version);
	InitMaterializedSRF(fcinfo, 0);

	Datum *elements;
	bool *element_nulls;
	int count;
	deconstruct_array(messages, BYTEAOID, -1, false, TYPALIGN_INT, &elements, &element_nulls, &count);

	// Render timestamptz values nested in arrays, composites and ranges in UTC, as the worker
	// does; the setting is undone at the end of the call, or by the abort after an error.
	int nest_level = NewGUCNestLevel();
	set_config_option("TimeZone", "UTC", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);

	MemoryContext relations_context =
	    AllocSetContextCreate(CurrentMemoryContext, "pgoutput_rows relations", ALLOCSET_DEFAULT_SIZES);
	logical_audit::RowsState state{reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo),
	                               logical_audit::audit::relations_create(relations_context), 0, count};
	logical_audit::decode_messages(state, proto_version, elements, element_nulls);
	MemoryContextDelete(relations_context);
	AtEOXact_GUC(true, nest_level);
	return (Datum)0;
}
