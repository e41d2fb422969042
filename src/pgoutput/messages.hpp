// The pgoutput logical replication messages (protocol versions 1 to 4) as value types.
//
// Every struct is trivially destructible and refers to the decoded buffer without copying:
// strings and column values are views, tuples and column lists are re-walked on iteration.
// A decoded message is valid only while the buffer it came from is.
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string_view>
#include <type_traits>
#include <variant>

namespace logical_audit::pgoutput {

using Lsn = uint64_t;
using Xid = uint32_t;
using Oid = uint32_t;
// Microseconds since 2000-01-01 00:00:00 UTC, as PostgreSQL's TimestampTz.
using Timestamp = int64_t;

constexpr Xid kInvalidXid = 0;

// Column kinds in TupleData.
enum class ColumnKind : char { Null = 'n', UnchangedToast = 'u', Text = 't', Binary = 'b' };

struct ColumnValue {
	ColumnKind kind;
	std::string_view data; // empty for Null and UnchangedToast
};

// Walks an already validated region of fixed-shape records; Step reads one record.
template <typename Value, typename Step>
class RecordIterator {
public:
	using iterator_category = std::forward_iterator_tag;
	using value_type = Value;
	using difference_type = std::ptrdiff_t;
	using pointer = const Value *;
	using reference = Value;

	RecordIterator(const uint8_t *pos, uint32_t left) : pos_(pos), left_(left) {}
	Value operator*() const {
		const uint8_t *p = pos_;
		return Step::read(p);
	}
	RecordIterator &operator++() {
		Step::read(pos_);
		left_--;
		return *this;
	}
	bool operator==(const RecordIterator &o) const { return left_ == o.left_; }
	bool operator!=(const RecordIterator &o) const { return left_ != o.left_; }

private:
	const uint8_t *pos_;
	uint32_t left_;
};

// Reads a validated big-endian integer of N bytes and advances p.
template <typename T>
inline T load_be(const uint8_t *&p) {
	T v = 0;
	for (size_t i = 0; i < sizeof(T); i++)
		v = static_cast<T>((v << 8) | p[i]);
	p += sizeof(T);
	return v;
}

struct TupleStep {
	static ColumnValue read(const uint8_t *&p) {
		auto kind = static_cast<ColumnKind>(*p++);
		if (kind != ColumnKind::Text && kind != ColumnKind::Binary)
			return {kind, {}};
		uint32_t len = load_be<uint32_t>(p);
		std::string_view data(reinterpret_cast<const char *>(p), len);
		p += len;
		return {kind, data};
	}
};

// The columns of one tuple (TupleData), in relation order.
class TupleData {
public:
	using iterator = RecordIterator<ColumnValue, TupleStep>;
	TupleData() = default;
	TupleData(const uint8_t *first, uint16_t count) : first_(first), count_(count) {}
	uint16_t size() const { return count_; }
	bool present() const { return first_ != nullptr; }
	iterator begin() const { return iterator(first_, count_); }
	iterator end() const { return iterator(first_, 0); }

private:
	const uint8_t *first_ = nullptr;
	uint16_t count_ = 0;
};

// Column flag bit: the column is part of the replica identity key.
constexpr uint8_t kColumnFlagKey = 1;

struct RelationColumn {
	uint8_t flags;
	std::string_view name;
	Oid type;
	int32_t typmod;
	bool is_key() const { return flags & kColumnFlagKey; }
};

struct RelationColumnStep {
	static RelationColumn read(const uint8_t *&p) {
		RelationColumn c;
		c.flags = *p++;
		c.name = std::string_view(reinterpret_cast<const char *>(p));
		p += c.name.size() + 1;
		c.type = load_be<uint32_t>(p);
		c.typmod = static_cast<int32_t>(load_be<uint32_t>(p));
		return c;
	}
};

class RelationColumns {
public:
	using iterator = RecordIterator<RelationColumn, RelationColumnStep>;
	RelationColumns() = default;
	RelationColumns(const uint8_t *first, uint16_t count) : first_(first), count_(count) {}
	uint16_t size() const { return count_; }
	iterator begin() const { return iterator(first_, count_); }
	iterator end() const { return iterator(first_, 0); }

private:
	const uint8_t *first_ = nullptr;
	uint16_t count_ = 0;
};

// The relation ids of a Truncate message.
class RelationIds {
public:
	RelationIds() = default;
	RelationIds(const uint8_t *first, uint32_t count) : first_(first), count_(count) {}
	uint32_t size() const { return count_; }
	Oid operator[](uint32_t i) const {
		const uint8_t *p = first_ + 4 * static_cast<size_t>(i);
		return load_be<uint32_t>(p);
	}

private:
	const uint8_t *first_ = nullptr;
	uint32_t count_ = 0;
};

// In every message that may appear inside a streamed transaction, xid is that transaction's id
// when the message arrived between Stream Start and Stream Stop, else kInvalidXid. For a change
// made in a subtransaction PostgreSQL sends the subtransaction's xid (the one a later Stream Abort
// names), not the streamed transaction's: Decoder::stream_xid() gives the latter.

struct Begin {
	Lsn final_lsn;
	Timestamp commit_time;
	Xid xid;
};

struct Commit {
	uint8_t flags;
	Lsn commit_lsn;
	Lsn end_lsn;
	Timestamp commit_time;
};

struct Origin {
	Lsn commit_lsn;
	std::string_view name;
};

// Replica identity settings as sent in Relation messages.
enum class ReplicaIdentity : char { Default = 'd', Nothing = 'n', Full = 'f', Index = 'i' };

struct Relation {
	Xid xid;
	Oid relation_id;
	std::string_view nspname; // empty means pg_catalog
	std::string_view relname;
	ReplicaIdentity replica_identity;
	RelationColumns columns;
};

struct Type {
	Xid xid;
	Oid type_id;
	std::string_view nspname;
	std::string_view typname;
};

struct Insert {
	Xid xid;
	Oid relation_id;
	TupleData new_tuple;
};

// Which old tuple an Update or Delete carries: none, the key columns, or the whole old row.
enum class OldTuple : char { None = 0, Key = 'K', Full = 'O' };

struct Update {
	Xid xid;
	Oid relation_id;
	OldTuple old_kind;
	TupleData old_tuple; // present() only when old_kind != None
	TupleData new_tuple;
};

struct Delete {
	Xid xid;
	Oid relation_id;
	OldTuple old_kind;
	TupleData old_tuple;
};

constexpr uint8_t kTruncateCascade = 1;
constexpr uint8_t kTruncateRestartIdentity = 2;

struct Truncate {
	Xid xid;
	uint8_t options;
	RelationIds relation_ids;
};

constexpr uint8_t kMessageTransactional = 1;

struct LogicalMessage {
	Xid xid;
	uint8_t flags;
	Lsn lsn;
	std::string_view prefix;
	std::string_view content;
	bool transactional() const { return flags & kMessageTransactional; }
};

struct StreamStart {
	Xid xid;
	bool first_segment;
};

struct StreamStop {};

struct StreamCommit {
	Xid xid;
	uint8_t flags;
	Lsn commit_lsn;
	Lsn end_lsn;
	Timestamp commit_time;
};

struct StreamAbort {
	Xid xid;
	Xid subxid;
	bool has_abort_info; // protocol 4 with parallel streaming sends the abort LSN and time
	Lsn abort_lsn;
	Timestamp abort_time;
};

struct BeginPrepare {
	Lsn prepare_lsn;
	Lsn end_lsn;
	Timestamp prepare_time;
	Xid xid;
	std::string_view gid;
};

// The fields shared by Prepare and Stream Prepare.
struct PrepareFields {
	uint8_t flags;
	Lsn prepare_lsn;
	Lsn end_lsn;
	Timestamp prepare_time;
	Xid xid;
	std::string_view gid;
};

struct Prepare : PrepareFields {};
struct StreamPrepare : PrepareFields {};

struct CommitPrepared {
	uint8_t flags;
	Lsn commit_lsn;
	Lsn end_lsn;
	Timestamp commit_time;
	Xid xid;
	std::string_view gid;
};

struct RollbackPrepared {
	uint8_t flags;
	Lsn prepare_end_lsn;
	Lsn rollback_end_lsn;
	Timestamp prepare_time;
	Timestamp rollback_time;
	Xid xid;
	std::string_view gid;
};

using Message = std::variant<Begin, Commit, Origin, Relation, Type, Insert, Update, Delete, Truncate, LogicalMessage,
                             StreamStart, StreamStop, StreamCommit, StreamAbort, BeginPrepare, Prepare, StreamPrepare,
                             CommitPrepared, RollbackPrepared>;

static_assert(std::is_trivially_destructible_v<Message>, "messages must be safe to abandon on a longjmp");

// The CopyData messages of a logical replication stream (server to client).
struct XLogData {
	Lsn wal_start;
	Lsn wal_end;
	Timestamp send_time;
	const uint8_t *data; // the pgoutput message
	size_t size;
};

struct Keepalive {
	Lsn wal_end;
	Timestamp send_time;
	bool reply_requested;
};

using CopyData = std::variant<XLogData, Keepalive>;

static_assert(std::is_trivially_destructible_v<CopyData>, "messages must be safe to abandon on a longjmp");

// Where and why decoding failed. reason is a static string.
struct DecodeError {
	char type = 0;            // the message's type byte, 0 when the message was empty
	const char *message = ""; // the message's name, e.g. "insert" or "keepalive"
	size_t offset = 0;        // byte offset of the failing read within the message
	const char *reason = "";
};

} // namespace logical_audit::pgoutput
