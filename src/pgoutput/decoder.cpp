// Decoding of pgoutput messages (protocol versions 1-4) and of the replication CopyData envelope.
#include "decoder.hpp"

#include "reader.hpp"

#include <array>
#include <chrono>

namespace logical_audit::pgoutput {

namespace {

// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
constexpr int64_t kPostgresEpochOffsetUs = 946684800LL * 1000000;

// Validates a TupleData at the reader's position and returns a view of its columns.
TupleData read_tuple(Reader &r) {
	uint16_t count = r.u16();
	const uint8_t *first = r.here();
	for (uint32_t i = 0; i < count && !r.failed(); i++) {
		size_t at = r.offset();
		switch (static_cast<ColumnKind>(r.u8())) {
		case ColumnKind::Null:
		case ColumnKind::UnchangedToast:
			break;
		case ColumnKind::Text:
		case ColumnKind::Binary:
			r.take(r.u32());
			break;
		default:
			r.fail_at(at, "unknown tuple column kind");
		}
	}
	return TupleData(first, count);
}

// Reads a tuple marker byte that must equal expected.
void expect_marker(Reader &r, char expected) {
	size_t at = r.offset();
	if (!r.failed() && r.u8() != static_cast<uint8_t>(expected))
		r.fail_at(at, expected == 'N' ? "expected new tuple marker 'N'" : "unexpected tuple marker");
}

// Reads the optional 'K' (key) or 'O' (old row) tuple of an Update or Delete.
OldTuple read_old_tuple(Reader &r, TupleData &tuple, bool required) {
	uint8_t marker = r.failed() || r.remaining() == 0 ? 0 : *r.here();
	if (marker != 'K' && marker != 'O') {
		if (required)
			r.fail("expected old tuple marker 'K' or 'O'");
		return OldTuple::None;
	}
	r.u8();
	tuple = read_tuple(r);
	return static_cast<OldTuple>(marker);
}

Relation read_relation(Reader &r, Xid xid) {
	Relation m{};
	m.xid = xid;
	m.relation_id = r.u32();
	m.nspname = r.cstring();
	m.relname = r.cstring();
	size_t at = r.offset();
	m.replica_identity = static_cast<ReplicaIdentity>(r.u8());
	switch (m.replica_identity) {
	case ReplicaIdentity::Default:
	case ReplicaIdentity::Nothing:
	case ReplicaIdentity::Full:
	case ReplicaIdentity::Index:
		break;
	default:
		r.fail_at(at, "unknown replica identity");
	}
	uint16_t count = r.u16();
	const uint8_t *first = r.here();
	for (uint32_t i = 0; i < count && !r.failed(); i++) {
		r.u8();
		r.cstring();
		r.take(8);
	}
	m.columns = RelationColumns(first, count);
	return m;
}

Type read_type(Reader &r, Xid xid) {
	Type m{};
	m.xid = xid;
	m.type_id = r.u32();
	m.nspname = r.cstring();
	m.typname = r.cstring();
	return m;
}

Insert read_insert(Reader &r, Xid xid) {
	Insert m{};
	m.xid = xid;
	m.relation_id = r.u32();
	expect_marker(r, 'N');
	m.new_tuple = read_tuple(r);
	return m;
}

Update read_update(Reader &r, Xid xid) {
	Update m{};
	m.xid = xid;
	m.relation_id = r.u32();
	m.old_kind = read_old_tuple(r, m.old_tuple, false);
	expect_marker(r, 'N');
	m.new_tuple = read_tuple(r);
	return m;
}

Delete read_delete(Reader &r, Xid xid) {
	Delete m{};
	m.xid = xid;
	m.relation_id = r.u32();
	m.old_kind = read_old_tuple(r, m.old_tuple, true);
	return m;
}

Truncate read_truncate(Reader &r, Xid xid) {
	Truncate m{};
	m.xid = xid;
	uint32_t count = r.u32();
	m.options = r.u8();
	const uint8_t *first = r.here();
	r.take(4 * static_cast<size_t>(count));
	m.relation_ids = RelationIds(first, count);
	return m;
}

LogicalMessage read_message(Reader &r, Xid xid) {
	LogicalMessage m{};
	m.xid = xid;
	m.flags = r.u8();
	m.lsn = r.u64();
	m.prefix = r.cstring();
	m.content = r.bytes(r.u32());
	return m;
}

Begin read_begin(Reader &r) {
	Begin m{};
	m.final_lsn = r.u64();
	m.commit_time = r.i64();
	m.xid = r.u32();
	return m;
}

Commit read_commit(Reader &r) {
	Commit m{};
	m.flags = r.u8();
	m.commit_lsn = r.u64();
	m.end_lsn = r.u64();
	m.commit_time = r.i64();
	return m;
}

Origin read_origin(Reader &r) {
	Origin m{};
	m.commit_lsn = r.u64();
	m.name = r.cstring();
	return m;
}

StreamStart read_stream_start(Reader &r) {
	StreamStart m{};
	size_t at = r.offset();
	m.xid = r.u32();
	m.first_segment = r.u8() == 1;
	if (m.xid == kInvalidXid)
		r.fail_at(at, "stream start with invalid xid");
	return m;
}

StreamCommit read_stream_commit(Reader &r) {
	StreamCommit m{};
	m.xid = r.u32();
	m.flags = r.u8();
	m.commit_lsn = r.u64();
	m.end_lsn = r.u64();
	m.commit_time = r.i64();
	return m;
}

StreamAbort read_stream_abort(Reader &r, int protocol_version) {
	StreamAbort m{};
	m.xid = r.u32();
	m.subxid = r.u32();
	// Version 4 adds the abort LSN and time, but only when streaming is "parallel".
	if (protocol_version >= 4 && r.remaining() == 16) {
		m.has_abort_info = true;
		m.abort_lsn = r.u64();
		m.abort_time = r.i64();
	}
	return m;
}

BeginPrepare read_begin_prepare(Reader &r) {
	BeginPrepare m{};
	m.prepare_lsn = r.u64();
	m.end_lsn = r.u64();
	m.prepare_time = r.i64();
	m.xid = r.u32();
	m.gid = r.cstring();
	return m;
}

template <typename T>
T read_prepare(Reader &r) {
	T m{};
	m.flags = r.u8();
	m.prepare_lsn = r.u64();
	m.end_lsn = r.u64();
	m.prepare_time = r.i64();
	m.xid = r.u32();
	m.gid = r.cstring();
	return m;
}

CommitPrepared read_commit_prepared(Reader &r) {
	CommitPrepared m{};
	m.flags = r.u8();
	m.commit_lsn = r.u64();
	m.end_lsn = r.u64();
	m.commit_time = r.i64();
	m.xid = r.u32();
	m.gid = r.cstring();
	return m;
}

RollbackPrepared read_rollback_prepared(Reader &r) {
	RollbackPrepared m{};
	m.flags = r.u8();
	m.prepare_end_lsn = r.u64();
	m.rollback_end_lsn = r.u64();
	m.prepare_time = r.i64();
	m.rollback_time = r.i64();
	m.xid = r.u32();
	m.gid = r.cstring();
	return m;
}

// Where a message type may appear relative to a streamed block (Stream Start to Stream Stop).
enum class Place { Outside, Inside, Anywhere };

// What the protocol says of one message type: its name, the version that introduced it, and where
// it may appear.
struct Kind {
	const char *name;
	int min_version;
	Place place;
};

constexpr std::array<Kind, 256> make_kinds() {
	std::array<Kind, 256> k{};
	k['B'] = {"begin", 1, Place::Outside};
	k['C'] = {"commit", 1, Place::Outside};
	k['O'] = {"origin", 1, Place::Anywhere};
	k['R'] = {"relation", 1, Place::Anywhere};
	k['Y'] = {"type", 1, Place::Anywhere};
	k['I'] = {"insert", 1, Place::Anywhere};
	k['U'] = {"update", 1, Place::Anywhere};
	k['D'] = {"delete", 1, Place::Anywhere};
	k['T'] = {"truncate", 1, Place::Anywhere};
	k['M'] = {"message", 1, Place::Anywhere};
	k['S'] = {"stream start", 2, Place::Outside};
	k['E'] = {"stream stop", 2, Place::Inside};
	k['c'] = {"stream commit", 2, Place::Outside};
	k['A'] = {"stream abort", 2, Place::Outside};
	k['b'] = {"begin prepare", 3, Place::Outside};
	k['P'] = {"prepare", 3, Place::Outside};
	k['K'] = {"commit prepared", 3, Place::Outside};
	k['r'] = {"rollback prepared", 3, Place::Outside};
	k['p'] = {"stream prepare", 3, Place::Outside};
	return k;
}

constexpr std::array<Kind, 256> kKinds = make_kinds();

// Decodes the body of a message whose type passed check_place.
Message read_body(char type, Reader &r, Xid stream_xid, int protocol_version) {
	// Inside a stream the data messages start with the transaction's xid.
	auto xid = [&]() -> Xid { return stream_xid == kInvalidXid ? kInvalidXid : r.u32(); };
	switch (type) {
	case 'B':
		return read_begin(r);
	case 'C':
		return read_commit(r);
	case 'O':
		return read_origin(r);
	case 'R':
		return read_relation(r, xid());
	case 'Y':
		return read_type(r, xid());
	case 'I':
		return read_insert(r, xid());
	case 'U':
		return read_update(r, xid());
	case 'D':
		return read_delete(r, xid());
	case 'T':
		return read_truncate(r, xid());
	case 'M':
		return read_message(r, xid());
	case 'S':
		return read_stream_start(r);
	case 'E':
		return StreamStop{};
	case 'c':
		return read_stream_commit(r);
	case 'A':
		return read_stream_abort(r, protocol_version);
	case 'b':
		return read_begin_prepare(r);
	case 'P':
		return read_prepare<Prepare>(r);
	case 'K':
		return read_commit_prepared(r);
	case 'r':
		return read_rollback_prepared(r);
	default: // 'p', the only type left that kKinds knows
		return read_prepare<StreamPrepare>(r);
	}
}

// Checks that a message of this type may appear now; sets the reader's failure if not.
void check_place(Reader &r, char type, int protocol_version, bool in_stream) {
	const Kind &kind = kKinds[static_cast<uint8_t>(type)];
	if (kind.name == nullptr)
		r.fail_at(0, "unknown message type");
	else if (protocol_version < kind.min_version)
		r.fail_at(0, "message type not allowed by the negotiated protocol version");
	else if (kind.place == Place::Outside && in_stream)
		r.fail_at(0, "message not allowed inside a streamed transaction");
	else if (kind.place == Place::Inside && !in_stream)
		r.fail_at(0, "stream stop outside a streamed transaction");
}

// Fills error from the reader's failure and returns false.
bool report(const Reader &r, char type, const char *name, DecodeError &error) {
	error.type = type;
	error.message = name;
	error.offset = r.error_offset();
	error.reason = r.reason();
	return false;
}

// Fails the reader when bytes remain after a complete message.
void expect_end(Reader &r) {
	if (!r.failed() && r.remaining() != 0)
		r.fail("unexpected trailing bytes after the message");
}

} // namespace

bool Decoder::decode(const uint8_t *data, size_t size, Message &out, DecodeError &error) {
	Reader r(data, size);
	if (size == 0)
		r.fail("empty message");
	char type = static_cast<char>(r.u8());
	check_place(r, type, protocol_version_, in_stream());
	if (!r.failed()) {
		out = read_body(type, r, stream_xid_, protocol_version_);
		expect_end(r);
	}
	if (r.failed())
		return report(r, type, message_name(type), error);
	if (type == 'S')
		stream_xid_ = std::get<StreamStart>(out).xid;
	else if (type == 'E')
		stream_xid_ = kInvalidXid;
	return true;
}

bool decode_copy_data(const uint8_t *data, size_t size, CopyData &out, DecodeError &error) {
	Reader r(data, size);
	if (size == 0)
		r.fail("empty message");
	char type = static_cast<char>(r.u8());
	const char *name = "copy data";
	if (type == 'w') {
		name = "XLogData";
		XLogData m{};
		m.wal_start = r.u64();
		m.wal_end = r.u64();
		m.send_time = r.i64();
		m.data = r.here();
		m.size = r.remaining();
		out = m;
	} else if (type == 'k') {
		name = "keepalive";
		Keepalive m{};
		m.wal_end = r.u64();
		m.send_time = r.i64();
		m.reply_requested = r.u8() != 0;
		expect_end(r);
		out = m;
	} else {
		r.fail_at(0, "unknown copy data message type");
	}
	return !r.failed() || report(r, type, name, error);
}

void encode_standby_status(uint8_t (&out)[kStandbyStatusSize], Lsn written, Lsn flushed, Lsn applied, Timestamp now,
                           bool reply_requested) {
	uint8_t *p = out;
	auto put = [&p](uint64_t v) {
		for (int shift = 56; shift >= 0; shift -= 8)
			*p++ = static_cast<uint8_t>(v >> shift);
	};
	*p++ = 'r';
	put(written);
	put(flushed);
	put(applied);
	put(static_cast<uint64_t>(now));
	*p = reply_requested ? 1 : 0;
}

Timestamp now_timestamp() {
	auto since_unix = std::chrono::system_clock::now().time_since_epoch();
	return std::chrono::duration_cast<std::chrono::microseconds>(since_unix).count() - kPostgresEpochOffsetUs;
}

const char *message_name(char type) {
	const char *name = kKinds[static_cast<uint8_t>(type)].name;
	return name ? name : "unknown";
}

} // namespace logical_audit::pgoutput
