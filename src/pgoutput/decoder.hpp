// Decoder for pgoutput messages and the CopyData envelope of a logical replication stream.
#pragma once

#include "messages.hpp"

namespace logical_audit::pgoutput {

// Decodes the pgoutput messages of one replication stream, in order.
//
// The protocol is stateful in one way: between Stream Start and Stream Stop, the data messages
// (Relation, Type, Insert, Update, Delete, Truncate, Message) carry the streamed transaction's
// xid. The decoder tracks that, and rejects messages the negotiated protocol version cannot send.
class Decoder {
public:
	explicit Decoder(int protocol_version = 4) : protocol_version_(protocol_version) {}

	// Decodes one message into out. On malformed input returns false, fills error and leaves
	// the stream state as it was.
	bool decode(const uint8_t *data, size_t size, Message &out, DecodeError &error);

	bool in_stream() const { return stream_xid_ != kInvalidXid; }
	Xid stream_xid() const { return stream_xid_; }
	int protocol_version() const { return protocol_version_; }

	// Forgets the stream state, as a new connection starts outside any stream.
	void reset() { stream_xid_ = kInvalidXid; }

	// Continues inside the streamed block of transaction xid (valid), whose Stream Start was
	// decoded elsewhere: the next data messages are read with their leading xid.
	void resume_stream(Xid xid) { stream_xid_ = xid; }

private:
	int protocol_version_;
	Xid stream_xid_ = kInvalidXid;
};

// Decodes one CopyData message received from a walsender: XLogData ('w') or keepalive ('k').
bool decode_copy_data(const uint8_t *data, size_t size, CopyData &out, DecodeError &error);

// A standby status update ('r') is this many bytes.
constexpr size_t kStandbyStatusSize = 34;

// Encodes a standby status update into out.
void encode_standby_status(uint8_t (&out)[kStandbyStatusSize], Lsn written, Lsn flushed, Lsn applied, Timestamp now,
                           bool reply_requested);

// The current time as a PostgreSQL timestamp.
Timestamp now_timestamp();

// A lowercase name for a pgoutput message type byte ("insert", "stream commit"), or "unknown".
const char *message_name(char type);

} // namespace logical_audit::pgoutput
