// libFuzzer target over the pgoutput decoder and the CopyData envelope.
//
// Input: one byte choosing the protocol version, then frames of a 4-byte big-endian length and a
// CopyData message, as in the captured streams of test/data. A frame that is not a valid CopyData
// message is decoded as a bare pgoutput message. One decoder sees all frames, so the stream state
// (inside or outside a streamed transaction) is fuzzed too.
#include "pgoutput/decoder.hpp"

#include <cstddef>
#include <cstdint>

using namespace logical_audit::pgoutput;

namespace {

// Reads every view of a decoded message so the sanitizers check what validation promised.
struct Toucher {
	size_t sum = 0;
	void tuple(const TupleData &t) {
		for (ColumnValue c : t)
			sum += c.data.size() + static_cast<size_t>(c.kind);
	}
	void operator()(const Relation &m) {
		for (RelationColumn c : m.columns)
			sum += c.name.size() + c.type + c.flags;
	}
	void operator()(const Insert &m) { tuple(m.new_tuple); }
	void operator()(const Update &m) {
		tuple(m.old_tuple);
		tuple(m.new_tuple);
	}
	void operator()(const Delete &m) { tuple(m.old_tuple); }
	void operator()(const Truncate &m) {
		for (uint32_t i = 0; i < m.relation_ids.size(); i++)
			sum += m.relation_ids[i];
	}
	template <typename T>
	void operator()(const T &) {}
};

// Decodes one pgoutput message and touches its contents.
void decode_one(Decoder &decoder, const uint8_t *data, size_t size, Toucher &toucher) {
	Message message;
	DecodeError error;
	if (decoder.decode(data, size, message, error))
		std::visit(toucher, message);
	else if (error.offset > size)
		__builtin_trap();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
	if (size < 1)
		return 0;
	Decoder decoder((data[0] & 3) + 1);
	Toucher toucher;
	size_t pos = 1;
	while (size - pos >= 4) {
		size_t len =
		    (size_t(data[pos]) << 24) | (size_t(data[pos + 1]) << 16) | (size_t(data[pos + 2]) << 8) | data[pos + 3];
		pos += 4;
		if (len > size - pos)
			len = size - pos;
		CopyData copy;
		DecodeError error;
		if (decode_copy_data(data + pos, len, copy, error)) {
			if (auto *x = std::get_if<XLogData>(&copy))
				decode_one(decoder, x->data, x->size, toucher);
		} else {
			decode_one(decoder, data + pos, len, toucher);
		}
		pos += len;
	}
	return toucher.sum == 1 ? 1 : 0;
}
