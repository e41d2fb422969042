// Malformed input derived from the captured bytes: truncations, corrupted bytes, trailing bytes and
// messages in the wrong state or protocol version must fail cleanly with a useful offset.
#include "golden.hpp"

#include <gtest/gtest.h>

#include <cstring>

namespace logical_audit::golden {
namespace {

using namespace pgoutput;

const Capture kSmallCaptures[] = {{"v1_changes", 1}, {"v1_binary", 1}, {"v2_streaming", 2}, {"v3_two_phase", 3}};

class GoldenTruncation : public ::testing::TestWithParam<Capture> {};

// Checks that every proper prefix of one pgoutput message fails without changing the decoder state.
void expect_prefixes_fail(const Decoder &state, const Bytes &msg) {
	for (size_t n = 0; n < msg.size(); n++) {
		Decoder d = state;
		Message out;
		DecodeError err;
		// A copy of exactly n bytes, so that reading past the prefix is caught by sanitizers.
		std::vector<uint8_t> prefix(msg.begin(), msg.begin() + n);
		ASSERT_FALSE(d.decode(prefix.data(), n, out, err)) << "prefix " << n << " of '" << msg[0] << "'";
		ASSERT_LE(err.offset, n) << err.reason;
		ASSERT_STRNE(err.reason, "");
		ASSERT_EQ(d.stream_xid(), state.stream_xid());
	}
}

TEST_P(GoldenTruncation, EveryProperPrefixOfEveryMessageFails) {
	Stream s(GetParam().name, GetParam().protocol_version);
	Decoder decoder(GetParam().protocol_version);
	for (const Entry &e : s.entries()) {
		if (!e.has_message)
			continue;
		Bytes msg = payload(e);
		expect_prefixes_fail(decoder, msg);
		Message out;
		DecodeError err;
		ASSERT_TRUE(decoder.decode(msg.data(), msg.size(), out, err)) << describe(err);
	}
}

TEST_P(GoldenTruncation, EnvelopePrefixesShorterThanTheHeaderFail) {
	Stream s(GetParam().name, GetParam().protocol_version);
	for (const Bytes &f : s.frames()) {
		// XLogData's payload is the rest of the message, so only its 25-byte header can be cut short.
		size_t limit = f[0] == 'w' ? 25 : f.size();
		for (size_t n = 0; n < limit; n++) {
			std::vector<uint8_t> prefix(f.begin(), f.begin() + n);
			CopyData out;
			DecodeError err;
			ASSERT_FALSE(decode_copy_data(prefix.data(), n, out, err)) << n;
			ASSERT_LE(err.offset, n);
		}
	}
}

INSTANTIATE_TEST_SUITE_P(SmallCaptures, GoldenTruncation, ::testing::ValuesIn(kSmallCaptures),
                         [](const ::testing::TestParamInfo<Capture> &info) { return std::string(info.param.name); });

// The payload of the first message of type t in a capture.
Bytes first_payload(const Stream &s, char t) {
	for (const Entry &e : s.entries())
		if (e.has_message && e.type() == t)
			return payload(e);
	throw std::runtime_error(std::string("no message of type ") + t);
}

// Decodes one message with a fresh protocol-1 decoder, which must reject it; returns the error.
DecodeError rejection(const Bytes &msg) {
	Decoder d(1);
	Message out;
	DecodeError err;
	EXPECT_FALSE(d.decode(msg.data(), msg.size(), out, err)) << "message type '" << msg[0] << "'";
	return err;
}

TEST(GoldenMalformed, UnknownTupleColumnKindFailsAtItsOffset) {
	Stream s("v1_changes", 1);
	Bytes msg = first_payload(s, 'I');
	// 'I', relation id, 'N', column count: the first column kind is at offset 8.
	ASSERT_EQ(msg[5], 'N');
	ASSERT_EQ(msg[8], 't');
	msg[8] = 'x';
	DecodeError err = rejection(msg);
	EXPECT_EQ(err.type, 'I');
	EXPECT_STREQ(err.message, "insert");
	EXPECT_EQ(err.offset, 8u);
	EXPECT_STREQ(err.reason, "unknown tuple column kind");
}

TEST(GoldenMalformed, UnknownColumnKindInALaterColumnNamesThatColumn) {
	Stream s("v1_changes", 1);
	Bytes msg = first_payload(s, 'I');
	// Column 1 is 't', a 4-byte length and its text: column 2's kind follows.
	size_t second = 9 + 4 + (size_t{msg[9]} << 24 | size_t{msg[10]} << 16 | size_t{msg[11]} << 8 | msg[12]);
	ASSERT_EQ(msg[second], 't');
	msg[second] = 0;
	DecodeError err = rejection(msg);
	EXPECT_EQ(err.offset, second);
}

TEST(GoldenMalformed, AppendedByteIsRejectedAsTrailing) {
	Stream s("v1_changes", 1);
	for (char t : std::string("BCORYIUDTM")) {
		Bytes msg = first_payload(s, t);
		size_t size = msg.size();
		msg.push_back(0);
		DecodeError err = rejection(msg);
		EXPECT_EQ(err.offset, size) << t;
		EXPECT_STREQ(err.reason, "unexpected trailing bytes after the message") << t;
	}
}

TEST(GoldenMalformed, AppendedByteToAKeepaliveIsRejected) {
	Stream s("v1_changes", 1);
	Bytes k = s.frames().back();
	k.push_back(0);
	CopyData out;
	DecodeError err;
	ASSERT_FALSE(decode_copy_data(k.data(), k.size(), out, err));
	EXPECT_STREQ(err.message, "keepalive");
	EXPECT_EQ(err.offset, 18u);
}

TEST(GoldenMalformed, StreamStopOnAFreshDecoderFails) {
	Stream s("v2_streaming", 2);
	Bytes stop = first_payload(s, 'E');
	Decoder d(2);
	Message out;
	DecodeError err;
	ASSERT_FALSE(d.decode(stop.data(), stop.size(), out, err));
	EXPECT_EQ(err.type, 'E');
	EXPECT_STREQ(err.message, "stream stop");
	EXPECT_EQ(err.offset, 0u);
	EXPECT_FALSE(d.in_stream());
}

TEST(GoldenMalformed, StreamingMessagesAreRejectedByAVersion1Decoder) {
	Stream s("v2_streaming", 2);
	for (char t : std::string("ScA")) {
		Bytes msg = first_payload(s, t);
		DecodeError err = rejection(msg);
		EXPECT_EQ(err.offset, 0u) << t;
		EXPECT_STREQ(err.reason, "message type not allowed by the negotiated protocol version") << t;
	}
}

TEST(GoldenMalformed, TwoPhaseMessagesAreRejectedByAVersion2Decoder) {
	Stream s("v3_two_phase", 3);
	for (char t : std::string("bPKrp")) {
		Bytes msg = first_payload(s, t);
		Decoder d(2);
		Message out;
		DecodeError err;
		ASSERT_FALSE(d.decode(msg.data(), msg.size(), out, err)) << t;
		EXPECT_EQ(err.offset, 0u) << t;
	}
}

TEST(GoldenMalformed, BeginInsideAStreamFails) {
	Stream v1("v1_changes", 1);
	Stream v2("v2_streaming", 2);
	Bytes start = first_payload(v2, 'S');
	Bytes begin = first_payload(v1, 'B');
	Decoder d(2);
	Message out;
	DecodeError err;
	ASSERT_TRUE(d.decode(start.data(), start.size(), out, err));
	ASSERT_FALSE(d.decode(begin.data(), begin.size(), out, err));
	EXPECT_STREQ(err.reason, "message not allowed inside a streamed transaction");
	EXPECT_TRUE(d.in_stream());
}

TEST(GoldenMalformed, StreamStartWithInvalidXidFailsAtTheXid) {
	Stream s("v2_streaming", 2);
	Bytes start = first_payload(s, 'S');
	std::memset(start.data() + 1, 0, 4);
	Decoder d(2);
	Message out;
	DecodeError err;
	ASSERT_FALSE(d.decode(start.data(), start.size(), out, err));
	EXPECT_EQ(err.offset, 1u);
	EXPECT_FALSE(d.in_stream());
}

TEST(GoldenMalformed, UnknownReplicaIdentityFailsAtItsOffset) {
	Stream s("v1_changes", 1);
	Bytes rel = first_payload(s, 'R');
	// 'R', relation id, "public\0", "accounts\0", then the replica identity.
	size_t at = 5 + std::strlen("public") + 1 + std::strlen("accounts") + 1;
	ASSERT_EQ(rel[at], 'd');
	rel[at] = 'z';
	DecodeError err = rejection(rel);
	EXPECT_EQ(err.offset, at);
}

TEST(GoldenMalformed, WrongNewTupleMarkerFailsAtTheMarker) {
	Stream s("v1_changes", 1);
	Bytes ins = first_payload(s, 'I');
	ins[5] = 'X';
	DecodeError err = rejection(ins);
	EXPECT_EQ(err.offset, 5u);
}

TEST(GoldenMalformed, Version4StreamAbortCarriesAbortLsnAndTime) {
	Stream s("v2_streaming", 2);
	StreamAbort v2 = s.all<StreamAbort>().at(0);
	Bytes msg = first_payload(s, 'A');
	ASSERT_EQ(msg.size(), 9u);
	const uint8_t extra[16] = {0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0, 0x02, 0xb0, 0xd5, 0xd4, 0xe9, 0x40, 0x00};
	msg.insert(msg.end(), extra, extra + 16);
	Decoder d(4);
	Message out;
	DecodeError err;
	ASSERT_TRUE(d.decode(msg.data(), msg.size(), out, err)) << describe(err);
	const auto &a = std::get<StreamAbort>(out);
	EXPECT_EQ(a.xid, v2.xid);
	EXPECT_EQ(a.subxid, v2.subxid);
	EXPECT_TRUE(a.has_abort_info);
	EXPECT_EQ(a.abort_lsn, 0x12345678u);
	EXPECT_EQ(a.abort_time, kJan2024);
	// The same bytes are malformed for protocol 2, which has no abort LSN and time.
	Decoder d2(2);
	EXPECT_FALSE(d2.decode(msg.data(), msg.size(), out, err));
	EXPECT_EQ(err.offset, 9u);
}

TEST(GoldenMalformed, Version4DecoderAcceptsAVersion2StreamAbort) {
	Stream s("v2_streaming", 2);
	Bytes msg = first_payload(s, 'A');
	Decoder d(4);
	Message out;
	DecodeError err;
	ASSERT_TRUE(d.decode(msg.data(), msg.size(), out, err)) << describe(err);
	EXPECT_FALSE(std::get<StreamAbort>(out).has_abort_info);
}

TEST(GoldenMalformed, UnknownCopyDataTypeFails) {
	Stream s("v1_changes", 1);
	Bytes f = s.frames().front();
	f[0] = 'x';
	CopyData out;
	DecodeError err;
	ASSERT_FALSE(decode_copy_data(f.data(), f.size(), out, err));
	EXPECT_EQ(err.offset, 0u);
	EXPECT_STREQ(err.reason, "unknown copy data message type");
}

} // namespace
} // namespace logical_audit::golden
