// logical_audit.pgoutput_to_jsonb(data, in_stream, proto_version): one pgoutput message, as
// pg_logical_slot_get_binary_changes returns it, decoded into a jsonb object.
//
// The object is built token by token with pushJsonbValue. Everything in scope while PostgreSQL
// may raise an error is trivially destructible (the decoded message is a set of views into the
// bytea), so an ereport's longjmp abandons nothing.
#include "audit/decode_error.hpp"
#include "pgoutput/decoder.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <variant>

#include "pg.hpp"

extern "C" {
PG_FUNCTION_INFO_V1(pgoutput_to_jsonb);
}

namespace logical_audit {

namespace {

namespace po = pgoutput;

// The decoder only needs to know it is inside a stream: every streamed data message carries its
// own xid, and the one of the enclosing Stream Start is not known here.
constexpr po::Xid kUnknownStreamXid = 0xFFFFFFFF;

// The jsonb object under construction and what its error reports need.
struct Builder {
	JsonbParseState *state;
	const uint8_t *base; // the message's first byte, to turn views into byte offsets
	const char *message; // the message's name, for errors
	bool in_stream;      // data messages then carry an xid
};

// Pushes a structural token (begin/end of an object or array).
void push(Builder &b, JsonbIteratorToken token) {
	pushJsonbValue(&b.state, token, nullptr);
}

// A jsonb string over bytes that live until the jsonb is built.
JsonbValue string_value(const char *s, size_t len) {
	JsonbValue v;
	v.type = jbvString;
	v.val.string.val = const_cast<char *>(s);
	v.val.string.len = static_cast<int>(len);
	return v;
}

// A jsonb number.
JsonbValue number_value(int64 n) {
	JsonbValue v;
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(n);
	return v;
}

// A jsonb boolean.
JsonbValue bool_value(bool flag) {
	JsonbValue v;
	v.type = jbvBool;
	v.val.boolean = flag;
	return v;
}

// A jsonb null.
JsonbValue null_value() {
	JsonbValue v;
	v.type = jbvNull;
	return v;
}

// Pushes key: value into the current object.
void put(Builder &b, const char *key, JsonbValue value) {
	JsonbValue k = string_value(key, strlen(key));
	pushJsonbValue(&b.state, WJB_KEY, &k);
	pushJsonbValue(&b.state, WJB_VALUE, &value);
}

// Pushes key and opens the array or object that is its value.
void open(Builder &b, const char *key, JsonbIteratorToken token) {
	JsonbValue k = string_value(key, strlen(key));
	pushJsonbValue(&b.state, WJB_KEY, &k);
	push(b, token);
}

// Raises the protocol violation error for the message being converted.
void report_malformed(const Builder &b, const char *detail) {
	ereport(ERROR, (errcode(ERRCODE_PROTOCOL_VIOLATION), errmsg("malformed pgoutput %s message", b.message),
	                errdetail_internal("%s", detail)));
}

// Raises an error for text that holds a NUL byte or is invalid in the database encoding.
void report_bad_text(const Builder &b, std::string_view s, int valid, const char *what) {
	size_t offset = static_cast<size_t>(reinterpret_cast<const uint8_t *>(s.data()) - b.base) + valid;
	if (s[valid] == '\0')
		report_malformed(b, psprintf("The %s contains a NUL byte at byte offset %zu.", what, offset));
	report_malformed(b, psprintf("The %s is not valid in encoding \"%s\" at byte offset %zu.", what,
	                             GetDatabaseEncodingName(), offset));
}

// Whether s is text of the database encoding without NUL bytes; valid gets the good prefix length.
bool is_valid_text(std::string_view s, int &valid) {
	valid = pg_encoding_verifymbstr(GetDatabaseEncoding(), s.data(), static_cast<int>(s.size()));
	return static_cast<size_t>(valid) == s.size();
}

// Validates s as text (what names it in errors) and returns it as a jsonb string.
JsonbValue text_value(const Builder &b, std::string_view s, const char *what) {
	int valid;
	if (!is_valid_text(s, valid))
		report_bad_text(b, s, valid, what);
	return string_value(s.data(), s.size());
}

// Pushes key: a text field of the message, which must be valid in the database encoding.
void put_text(Builder &b, const char *key, std::string_view s) {
	put(b, key, text_value(b, s, key));
}

// Pushes a namespace name; pgoutput sends an empty one for pg_catalog.
void put_namespace(Builder &b, std::string_view nspname) {
	if (nspname.empty())
		put_text(b, "namespace", "pg_catalog");
	else
		put_text(b, "namespace", nspname);
}

// Bytes in bytea's hex output form, "\x0a1b...".
JsonbValue hex_value(std::string_view bytes) {
	char *hex = static_cast<char *>(palloc(2 * bytes.size() + 3));
	hex[0] = '\\';
	hex[1] = 'x';
	uint64 len = hex_encode(bytes.data(), bytes.size(), hex + 2);
	return string_value(hex, len + 2);
}

// Pushes key: an LSN in the %X/%X form of pg_lsn.
void put_lsn(Builder &b, const char *key, po::Lsn lsn) {
	char *text = psprintf("%X/%X", static_cast<uint32>(lsn >> 32), static_cast<uint32>(lsn));
	put(b, key, string_value(text, strlen(text)));
}

// Pushes key: a timestamp as timestamptz_out prints it in the session's TimeZone.
void put_time(Builder &b, const char *key, po::Timestamp t) {
	if (!TIMESTAMP_NOT_FINITE(t) && !IS_VALID_TIMESTAMP(t))
		report_malformed(b, psprintf("The %s %lld is out of the range of timestamps.", key, static_cast<long long>(t)));
	char *text = DatumGetCString(DirectFunctionCall1(timestamptz_out, TimestampTzGetDatum(t)));
	put(b, key, string_value(text, strlen(text)));
}

// Pushes key: an xid or oid as a number.
void put_number(Builder &b, const char *key, uint32 n) {
	put(b, key, number_value(n));
}

// Pushes the message's "type".
void put_type(Builder &b, const char *type) {
	put(b, "type", string_value(type, strlen(type)));
}

// Pushes the xid that data messages carry inside a streamed transaction.
void put_stream_xid(Builder &b, po::Xid xid) {
	if (b.in_stream)
		put_number(b, "xid", xid);
}

// The one-letter name of a tuple column kind, as a static string.
const char *kind_name(po::ColumnKind kind) {
	switch (kind) {
	case po::ColumnKind::Null:
		return "n";
	case po::ColumnKind::UnchangedToast:
		return "u";
	case po::ColumnKind::Text:
		return "t";
	default:
		return "b";
	}
}

// Validates a text column value; the error names the tuple and the column number.
JsonbValue column_text(const Builder &b, const char *tuple, int column, std::string_view s) {
	int valid;
	if (!is_valid_text(s, valid))
		report_bad_text(b, s, valid, psprintf("text of column %d of %s", column, tuple));
	return string_value(s.data(), s.size());
}

// Pushes one column of a tuple as {"kind": ..., "value": ...}; an unchanged TOAST value has no value.
void push_column(Builder &b, const char *tuple, int column, const po::ColumnValue &c) {
	push(b, WJB_BEGIN_OBJECT);
	put(b, "kind", string_value(kind_name(c.kind), 1));
	if (c.kind == po::ColumnKind::Text)
		put(b, "value", column_text(b, tuple, column, c.data));
	else if (c.kind == po::ColumnKind::Binary)
		put(b, "value", hex_value(c.data));
	else if (c.kind == po::ColumnKind::Null)
		put(b, "value", null_value());
	push(b, WJB_END_OBJECT);
}

// Pushes key: a tuple as an array of columns.
void put_tuple(Builder &b, const char *key, const po::TupleData &tuple) {
	open(b, key, WJB_BEGIN_ARRAY);
	int column = 0;
	for (po::ColumnValue c : tuple)
		push_column(b, key, ++column, c);
	push(b, WJB_END_ARRAY);
}

// Pushes the old tuple of an Update or Delete and which kind it is, when there is one.
void put_old_tuple(Builder &b, po::OldTuple kind, const po::TupleData &tuple) {
	if (kind == po::OldTuple::None)
		return;
	const char *name = kind == po::OldTuple::Key ? "key" : "full";
	put(b, "old_kind", string_value(name, strlen(name)));
	put_tuple(b, "old_tuple", tuple);
}

// The name of a replica identity setting, as a static string.
const char *replica_identity_name(po::ReplicaIdentity identity) {
	switch (identity) {
	case po::ReplicaIdentity::Default:
		return "default";
	case po::ReplicaIdentity::Nothing:
		return "nothing";
	case po::ReplicaIdentity::Full:
		return "full";
	default:
		return "index";
	}
}

// Pushes the columns of a Relation message.
void put_columns(Builder &b, const po::RelationColumns &columns) {
	open(b, "columns", WJB_BEGIN_ARRAY);
	for (po::RelationColumn c : columns) {
		push(b, WJB_BEGIN_OBJECT);
		put_text(b, "name", c.name);
		put_number(b, "type_oid", c.type);
		put(b, "type_modifier", number_value(c.typmod));
		put(b, "key", bool_value(c.is_key()));
		push(b, WJB_END_OBJECT);
	}
	push(b, WJB_END_ARRAY);
}

// Begin: final_lsn, commit_time, xid.
void push_fields(Builder &b, const po::Begin &m) {
	put_type(b, "begin");
	put_lsn(b, "final_lsn", m.final_lsn);
	put_time(b, "commit_time", m.commit_time);
	put_number(b, "xid", m.xid);
}

// Commit: flags, commit_lsn, end_lsn, commit_time.
void push_fields(Builder &b, const po::Commit &m) {
	put_type(b, "commit");
	put_number(b, "flags", m.flags);
	put_lsn(b, "commit_lsn", m.commit_lsn);
	put_lsn(b, "end_lsn", m.end_lsn);
	put_time(b, "commit_time", m.commit_time);
}

// Origin: commit_lsn (on the origin server) and name.
void push_fields(Builder &b, const po::Origin &m) {
	put_type(b, "origin");
	put_lsn(b, "commit_lsn", m.commit_lsn);
	put_text(b, "name", m.name);
}

// Relation: relation_id, namespace, relation, replica_identity, columns.
void push_fields(Builder &b, const po::Relation &m) {
	put_type(b, "relation");
	put_stream_xid(b, m.xid);
	put_number(b, "relation_id", m.relation_id);
	put_namespace(b, m.nspname);
	put_text(b, "relation", m.relname);
	const char *identity = replica_identity_name(m.replica_identity);
	put(b, "replica_identity", string_value(identity, strlen(identity)));
	put_columns(b, m.columns);
}

// Type: type_oid, namespace, type_name.
void push_fields(Builder &b, const po::Type &m) {
	put_type(b, "type");
	put_stream_xid(b, m.xid);
	put_number(b, "type_oid", m.type_id);
	put_namespace(b, m.nspname);
	put_text(b, "type_name", m.typname);
}

// Insert: relation_id, new_tuple.
void push_fields(Builder &b, const po::Insert &m) {
	put_type(b, "insert");
	put_stream_xid(b, m.xid);
	put_number(b, "relation_id", m.relation_id);
	put_tuple(b, "new_tuple", m.new_tuple);
}

// Update: relation_id, old_kind and old_tuple when sent, new_tuple.
void push_fields(Builder &b, const po::Update &m) {
	put_type(b, "update");
	put_stream_xid(b, m.xid);
	put_number(b, "relation_id", m.relation_id);
	put_old_tuple(b, m.old_kind, m.old_tuple);
	put_tuple(b, "new_tuple", m.new_tuple);
}

// Delete: relation_id, old_kind, old_tuple.
void push_fields(Builder &b, const po::Delete &m) {
	put_type(b, "delete");
	put_stream_xid(b, m.xid);
	put_number(b, "relation_id", m.relation_id);
	put_old_tuple(b, m.old_kind, m.old_tuple);
}

// Truncate: options {cascade, restart_identity}, relation_ids.
void push_fields(Builder &b, const po::Truncate &m) {
	put_type(b, "truncate");
	put_stream_xid(b, m.xid);
	open(b, "options", WJB_BEGIN_OBJECT);
	put(b, "cascade", bool_value(m.options & po::kTruncateCascade));
	put(b, "restart_identity", bool_value(m.options & po::kTruncateRestartIdentity));
	push(b, WJB_END_OBJECT);
	open(b, "relation_ids", WJB_BEGIN_ARRAY);
	for (uint32 i = 0; i < m.relation_ids.size(); i++) {
		JsonbValue id = number_value(m.relation_ids[i]);
		pushJsonbValue(&b.state, WJB_ELEM, &id);
	}
	push(b, WJB_END_ARRAY);
}

// Logical message: transactional, lsn, prefix, content (text when valid, else hex).
void push_fields(Builder &b, const po::LogicalMessage &m) {
	put_type(b, "message");
	put_stream_xid(b, m.xid);
	put(b, "transactional", bool_value(m.transactional()));
	put_lsn(b, "lsn", m.lsn);
	put_text(b, "prefix", m.prefix);
	int valid;
	put(b, "content",
	    is_valid_text(m.content, valid) ? string_value(m.content.data(), m.content.size()) : hex_value(m.content));
}

// Stream Start: xid, first_segment.
void push_fields(Builder &b, const po::StreamStart &m) {
	put_type(b, "stream_start");
	put_number(b, "xid", m.xid);
	put(b, "first_segment", bool_value(m.first_segment));
}

// Stream Stop: no field.
void push_fields(Builder &b, const po::StreamStop &) {
	put_type(b, "stream_stop");
}

// Stream Commit: xid, flags, commit_lsn, end_lsn, commit_time.
void push_fields(Builder &b, const po::StreamCommit &m) {
	put_type(b, "stream_commit");
	put_number(b, "xid", m.xid);
	put_number(b, "flags", m.flags);
	put_lsn(b, "commit_lsn", m.commit_lsn);
	put_lsn(b, "end_lsn", m.end_lsn);
	put_time(b, "commit_time", m.commit_time);
}

// Stream Abort: xid, subxid, and abort_lsn and abort_time when sent (protocol 4).
void push_fields(Builder &b, const po::StreamAbort &m) {
	put_type(b, "stream_abort");
	put_number(b, "xid", m.xid);
	put_number(b, "subxid", m.subxid);
	if (!m.has_abort_info)
		return;
	put_lsn(b, "abort_lsn", m.abort_lsn);
	put_time(b, "abort_time", m.abort_time);
}

// Begin Prepare: prepare_lsn, end_lsn, prepare_time, xid, gid.
void push_fields(Builder &b, const po::BeginPrepare &m) {
	put_type(b, "begin_prepare");
	put_lsn(b, "prepare_lsn", m.prepare_lsn);
	put_lsn(b, "end_lsn", m.end_lsn);
	put_time(b, "prepare_time", m.prepare_time);
	put_number(b, "xid", m.xid);
	put_text(b, "gid", m.gid);
}

// The keys Prepare and Stream Prepare share: flags, prepare_lsn, end_lsn, prepare_time, xid, gid.
void push_prepare(Builder &b, const char *type, const po::PrepareFields &m) {
	put_type(b, type);
	put_number(b, "flags", m.flags);
	put_lsn(b, "prepare_lsn", m.prepare_lsn);
	put_lsn(b, "end_lsn", m.end_lsn);
	put_time(b, "prepare_time", m.prepare_time);
	put_number(b, "xid", m.xid);
	put_text(b, "gid", m.gid);
}

// Prepare: the keys of push_prepare.
void push_fields(Builder &b, const po::Prepare &m) {
	push_prepare(b, "prepare", m);
}

// Stream Prepare: the keys of push_prepare.
void push_fields(Builder &b, const po::StreamPrepare &m) {
	push_prepare(b, "stream_prepare", m);
}

// Commit Prepared: flags, commit_lsn, end_lsn, commit_time, xid, gid.
void push_fields(Builder &b, const po::CommitPrepared &m) {
	put_type(b, "commit_prepared");
	put_number(b, "flags", m.flags);
	put_lsn(b, "commit_lsn", m.commit_lsn);
	put_lsn(b, "end_lsn", m.end_lsn);
	put_time(b, "commit_time", m.commit_time);
	put_number(b, "xid", m.xid);
	put_text(b, "gid", m.gid);
}

// Rollback Prepared: flags, prepare_end_lsn, rollback_end_lsn, prepare_time, rollback_time, xid, gid.
void push_fields(Builder &b, const po::RollbackPrepared &m) {
	put_type(b, "rollback_prepared");
	put_number(b, "flags", m.flags);
	put_lsn(b, "prepare_end_lsn", m.prepare_end_lsn);
	put_lsn(b, "rollback_end_lsn", m.rollback_end_lsn);
	put_time(b, "prepare_time", m.prepare_time);
	put_time(b, "rollback_time", m.rollback_time);
	put_number(b, "xid", m.xid);
	put_text(b, "gid", m.gid);
}

// Pushes the fields of whichever alternative the message holds; get_if cannot throw.
template <size_t I = 0>
void push_message(Builder &b, const po::Message &message) {
	if constexpr (I < std::variant_size_v<po::Message>) {
		if (const auto *m = std::get_if<I>(&message))
			push_fields(b, *m);
		else
			push_message<I + 1>(b, message);
	}
}

// Converts a decoded message into a jsonb object.
Jsonb *message_to_jsonb(const po::Message &message, const uint8_t *base, char type, bool in_stream) {
	Builder b{nullptr, base, po::message_name(type), in_stream};
	push(b, WJB_BEGIN_OBJECT);
	push_message(b, message);
	JsonbValue *result = pushJsonbValue(&b.state, WJB_END_OBJECT, nullptr);
	return JsonbValueToJsonb(result);
}

// Decodes data as one message with the given settings; false with error filled when malformed.
bool decode(const uint8_t *data, size_t size, bool in_stream, int proto_version, po::Message &out,
            po::DecodeError &error) {
	po::Decoder decoder(proto_version);
	if (in_stream)
		decoder.resume_stream(kUnknownStreamXid);
	return decoder.decode(data, size, out, error);
}

// Runs the decoder behind a catch-all so that no C++ exception reaches PostgreSQL's frames.
bool decode_guarded(const uint8_t *data, size_t size, bool in_stream, int proto_version, po::Message &out,
                    po::DecodeError &error, bool &threw) {
	threw = false;
	try {
		return decode(data, size, in_stream, proto_version, out, error);
	} catch (...) {
		threw = true;
		return false;
	}
}

// Whether the message decodes with other settings, to suggest them in a hint.
bool decodes_with(const uint8_t *data, size_t size, bool in_stream, int proto_version) {
	po::Message message;
	po::DecodeError error;
	bool threw;
	return decode_guarded(data, size, in_stream, proto_version, message, error, threw);
}

// A hint for a message that failed to decode, or nullptr.
const char *decode_hint(const uint8_t *data, size_t size, bool in_stream, int proto_version, bool known) {
	if (size > 0 && !known)
		return psprintf("The first byte, 0x%02x, is not a pgoutput message type of protocol versions 1 to 4.", data[0]);
	if (proto_version >= 2 && decodes_with(data, size, !in_stream, proto_version))
		return in_stream ? "The message decodes outside a streamed transaction: pass in_stream => false."
		                 : "The message decodes inside a streamed transaction: pass in_stream => true.";
	for (int version = proto_version + 1; version <= 4; version++)
		if (decodes_with(data, size, in_stream, version))
			return psprintf("The message decodes with proto_version %d: pass the proto_version the changes were read "
			                "with.",
			                version);
	return nullptr;
}

// Raises the error for a message the decoder rejected, with a hint at the settings it decodes with.
void report_rejected(const po::DecodeError &e, const uint8_t *data, size_t size, bool in_stream, int proto_version) {
	bool known = e.type != 0 && strcmp(e.message, "unknown") != 0;
	audit::report_decode_error(e, decode_hint(data, size, in_stream, proto_version, known));
}

// Rejects settings no pgoutput stream can have.
void check_arguments(bool in_stream, int32 proto_version) {
	if (proto_version < 1 || proto_version > 4)
		ereport(ERROR,
		        (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("proto_version %d is not supported", proto_version),
		         errhint("pgoutput protocol versions 1 to 4 are supported.")));
	if (in_stream && proto_version < 2)
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("in_stream requires proto_version 2 or later"),
		                errdetail("Protocol version %d has no streamed transactions.", proto_version)));
}

} // namespace

} // namespace logical_audit

// SQL: logical_audit.pgoutput_to_jsonb(data bytea, in_stream boolean, proto_version integer) RETURNS jsonb.
extern "C" Datum pgoutput_to_jsonb(PG_FUNCTION_ARGS) {
	namespace po = logical_audit::pgoutput;
	bytea *data = PG_GETARG_BYTEA_PP(0);
	bool in_stream = PG_GETARG_BOOL(1);
	int32 proto_version = PG_GETARG_INT32(2);
	logical_audit::check_arguments(in_stream, proto_version);

	const auto *bytes = reinterpret_cast<const uint8_t *>(VARDATA_ANY(data));
	size_t size = VARSIZE_ANY_EXHDR(data);
	po::Message message;
	po::DecodeError error;
	bool threw;
	if (!logical_audit::decode_guarded(bytes, size, in_stream, proto_version, message, error, threw)) {
		if (threw)
			ereport(ERROR,
			        (errcode(ERRCODE_INTERNAL_ERROR), errmsg("unexpected C++ exception in the pgoutput decoder")));
		logical_audit::report_rejected(error, bytes, size, in_stream, proto_version);
	}
	PG_RETURN_JSONB_P(logical_audit::message_to_jsonb(message, bytes, static_cast<char>(bytes[0]), in_stream));
}
