// Loads the golden replication streams captured from PostgreSQL 15 (test/data/*.bin) and decodes them.
//
// A .bin file is a sequence of CopyData messages, each a 4-byte big-endian length followed by the
// message bytes; test/data/README.md describes how they are captured.
#pragma once

#include "pgoutput/decoder.hpp"

#include <cstdint>
#include <fstream>
#include <iterator>
#include <ostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace logical_audit::golden {

using Bytes = std::vector<uint8_t>;

// A capture file and the protocol version it was recorded with.
struct Capture {
	const char *name;
	int protocol_version;
};

// Prints a Capture by its name in test output.
inline void PrintTo(const Capture &c, std::ostream *os) {
	*os << c.name;
}

// Reads test/data/<name>.bin into its CopyData frames.
inline std::vector<Bytes> load_frames(const std::string &name) {
	std::string path = std::string(TEST_DATA_DIR) + "/" + name + ".bin";
	std::ifstream in(path, std::ios::binary);
	if (!in)
		throw std::runtime_error("cannot open " + path);
	Bytes all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
	std::vector<Bytes> frames;
	for (size_t pos = 0; pos < all.size();) {
		if (all.size() - pos < 4)
			throw std::runtime_error(path + ": truncated frame length");
		size_t len =
		    (size_t{all[pos]} << 24) | (size_t{all[pos + 1]} << 16) | (size_t{all[pos + 2]} << 8) | all[pos + 3];
		pos += 4;
		if (all.size() - pos < len)
			throw std::runtime_error(path + ": truncated frame");
		frames.emplace_back(all.begin() + pos, all.begin() + pos + len);
		pos += len;
	}
	return frames;
}

// Describes a decode failure for exception messages.
inline std::string describe(const pgoutput::DecodeError &e) {
	return std::string(e.message) + ": " + e.reason + " at offset " + std::to_string(e.offset);
}

// One decoded CopyData frame; message is set only for XLogData.
struct Entry {
	const Bytes *frame;
	pgoutput::CopyData copy;
	bool has_message = false;
	pgoutput::Message message;
	pgoutput::Xid stream_xid; // the decoder's stream xid after this message
	char type() const { return has_message ? static_cast<char>(std::get<pgoutput::XLogData>(copy).data[0]) : 'k'; }
};

// A whole captured stream, decoded in order by one Decoder. Views in the entries point into frames.
class Stream {
public:
	Stream(const std::string &name, int protocol_version) : frames_(load_frames(name)) {
		pgoutput::Decoder decoder(protocol_version);
		for (const Bytes &f : frames_)
			entries_.push_back(decode_entry(decoder, f));
	}
	Stream(const Stream &) = delete;
	Stream &operator=(const Stream &) = delete;

	const std::vector<Bytes> &frames() const { return frames_; }
	const std::vector<Entry> &entries() const { return entries_; }

	// Every pgoutput message of type T, in stream order.
	template <typename T>
	std::vector<T> all() const {
		std::vector<T> out;
		for (const Entry &e : entries_)
			if (e.has_message && std::holds_alternative<T>(e.message))
				out.push_back(std::get<T>(e.message));
		return out;
	}

	// The pgoutput type bytes of the stream, in order ('k' for keepalives).
	std::string types() const {
		std::string s;
		for (const Entry &e : entries_)
			s += e.type();
		return s;
	}

	// The first Relation message for relname.
	pgoutput::Relation relation(std::string_view relname) const {
		for (const auto &r : all<pgoutput::Relation>())
			if (r.relname == relname)
				return r;
		throw std::runtime_error("no relation message for " + std::string(relname));
	}

	// The keepalives of the stream.
	std::vector<pgoutput::Keepalive> keepalives() const {
		std::vector<pgoutput::Keepalive> out;
		for (const Entry &e : entries_)
			if (const auto *k = std::get_if<pgoutput::Keepalive>(&e.copy))
				out.push_back(*k);
		return out;
	}

private:
	// Decodes one frame, advancing the decoder; throws on malformed input.
	static Entry decode_entry(pgoutput::Decoder &decoder, const Bytes &f) {
		Entry e{&f, {}, false, {}, 0};
		pgoutput::DecodeError err;
		if (!pgoutput::decode_copy_data(f.data(), f.size(), e.copy, err))
			throw std::runtime_error(describe(err));
		if (const auto *x = std::get_if<pgoutput::XLogData>(&e.copy)) {
			if (!decoder.decode(x->data, x->size, e.message, err))
				throw std::runtime_error(describe(err));
			e.has_message = true;
		}
		e.stream_xid = decoder.stream_xid();
		return e;
	}

	std::vector<Bytes> frames_;
	std::vector<Entry> entries_;
};

// The values of a tuple, in column order.
inline std::vector<pgoutput::ColumnValue> columns(const pgoutput::TupleData &t) {
	return std::vector<pgoutput::ColumnValue>(t.begin(), t.end());
}

// The columns of a relation, in order.
inline std::vector<pgoutput::RelationColumn> columns(const pgoutput::RelationColumns &c) {
	return std::vector<pgoutput::RelationColumn>(c.begin(), c.end());
}

// A tuple as strings: text and binary data as is, "<null>" and "<unchanged>" for the other kinds.
inline std::vector<std::string> strings(const pgoutput::TupleData &t) {
	std::vector<std::string> out;
	for (const auto &c : t) {
		if (c.kind == pgoutput::ColumnKind::Null)
			out.push_back("<null>");
		else if (c.kind == pgoutput::ColumnKind::UnchangedToast)
			out.push_back("<unchanged>");
		else
			out.emplace_back(c.data);
	}
	return out;
}

// The pgoutput payload of an XLogData frame.
inline Bytes payload(const Entry &e) {
	const auto &x = std::get<pgoutput::XLogData>(e.copy);
	return Bytes(x.data, x.data + x.size);
}

// 2024-01-01 00:00:00 UTC as a PostgreSQL timestamp (8766 days after 2000-01-01): the scenarios use it,
// and every capture happened after it.
constexpr pgoutput::Timestamp kJan2024 = 8766LL * 86400 * 1000000;

} // namespace logical_audit::golden
