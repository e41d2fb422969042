// Checks the CopyData envelope of every capture (XLogData and keepalives), the standby status update
// layout, that the benchmark captures decode completely, and that the captures cover every message
// type PostgreSQL 15 can send.
#include "golden.hpp"

#include <gtest/gtest.h>

#include <set>

namespace logical_audit::golden {
namespace {

using namespace pgoutput;

const Capture kCaptures[] = {
    {"v1_changes", 1},           {"v1_binary", 1},       {"v2_streaming", 2},      {"v3_two_phase", 3},
    {"bench_narrow_inserts", 1}, {"bench_wide_rows", 1}, {"bench_updates_full", 1}};

class GoldenEnvelope : public ::testing::TestWithParam<Capture> {};

TEST_P(GoldenEnvelope, XLogDataStartEqualsEndAndIsMonotonicForChanges) {
	Stream s(GetParam().name, GetParam().protocol_version);
	Lsn last = 0;
	for (const Entry &e : s.entries()) {
		const auto *x = std::get_if<XLogData>(&e.copy);
		if (x == nullptr)
			continue;
		EXPECT_EQ(x->wal_start, x->wal_end);
		EXPECT_GT(x->send_time, kJan2024);
		// Schema messages (Relation, Type) are sent with no LSN; the others move forward.
		if (x->wal_start == 0) {
			EXPECT_TRUE(e.type() == 'R' || e.type() == 'Y' || e.type() == 'B') << e.type();
			continue;
		}
		EXPECT_GE(x->wal_start, last);
		last = x->wal_start;
	}
}

TEST_P(GoldenEnvelope, CaptureEndsWithAKeepaliveAtOrPastTheLastData) {
	Stream s(GetParam().name, GetParam().protocol_version);
	ASSERT_FALSE(s.entries().empty());
	const auto *k = std::get_if<Keepalive>(&s.entries().back().copy);
	ASSERT_NE(k, nullptr);
	Lsn last = 0;
	for (const Entry &e : s.entries())
		if (const auto *x = std::get_if<XLogData>(&e.copy))
			last = std::max(last, x->wal_start);
	EXPECT_GE(k->wal_end, last);
	EXPECT_FALSE(k->reply_requested);
	EXPECT_GT(k->send_time, kJan2024);
	EXPECT_EQ(s.frames().back().size(), 18u);
}

TEST_P(GoldenEnvelope, CaptureEndsOutsideAnyTransaction) {
	Stream s(GetParam().name, GetParam().protocol_version);
	EXPECT_EQ(s.entries().back().stream_xid, kInvalidXid);
	std::string types = s.types();
	size_t last = types.find_last_not_of('k');
	ASSERT_NE(last, std::string::npos);
	EXPECT_NE(std::string("CcAKrpM").find(types[last]), std::string::npos) << types[last];
}

INSTANTIATE_TEST_SUITE_P(AllCaptures, GoldenEnvelope, ::testing::ValuesIn(kCaptures),
                         [](const ::testing::TestParamInfo<Capture> &info) { return std::string(info.param.name); });

TEST(GoldenKeepalive, FieldsSitAtTheirOffsets) {
	Stream s("v1_changes", 1);
	const Bytes &f = s.frames().back();
	const auto &k = std::get<Keepalive>(s.entries().back().copy);
	ASSERT_EQ(f[0], 'k');
	const uint8_t *p = f.data() + 1;
	EXPECT_EQ(load_be<uint64_t>(p), k.wal_end);
	EXPECT_EQ(load_be<int64_t>(p), k.send_time);
	EXPECT_EQ(*p, 0);
}

TEST(GoldenKeepalive, StandbyStatusEchoesTheKeepaliveLsnInTheSameByteOrder) {
	Stream s("v1_changes", 1);
	const Bytes &ka = s.frames().back();
	Lsn lsn = std::get<Keepalive>(s.entries().back().copy).wal_end;
	uint8_t status[kStandbyStatusSize];
	Timestamp now = now_timestamp();
	encode_standby_status(status, lsn, lsn, lsn, now, true);
	EXPECT_EQ(status[0], 'r');
	for (int field = 0; field < 3; field++)
		EXPECT_TRUE(std::equal(ka.begin() + 1, ka.begin() + 9, status + 1 + 8 * field)) << field;
	const uint8_t *p = status + 25;
	EXPECT_EQ(load_be<int64_t>(p), now);
	EXPECT_EQ(status[33], 1);
	EXPECT_GT(now, std::get<Keepalive>(s.entries().back().copy).send_time);
}

TEST(GoldenBench, NarrowInsertsDecodeToTwentyThousandRows) {
	Stream s("bench_narrow_inserts", 1);
	auto inserts = s.all<Insert>();
	ASSERT_EQ(inserts.size(), 20000u);
	EXPECT_EQ(s.all<Begin>().size(), 20u);
	EXPECT_EQ(s.all<Commit>().size(), 20u);
	EXPECT_EQ(strings(inserts[0].new_tuple),
	          (std::vector<std::string>{"1", "1", "c4ca4238a0b923820dcc509a6f75849b", "2024-01-01 00:00:01+00"}));
}

TEST(GoldenBench, WideRowsHaveTwentyColumns) {
	Stream s("bench_wide_rows", 1);
	auto inserts = s.all<Insert>();
	ASSERT_EQ(inserts.size(), 2000u);
	EXPECT_EQ(s.relation("wide").columns.size(), 20u);
	for (const Insert &i : inserts)
		ASSERT_EQ(i.new_tuple.size(), 20u);
	EXPECT_EQ(columns(inserts[4].new_tuple)[19].kind, ColumnKind::Null); // id 5: c_note is NULL
}

TEST(GoldenBench, FullIdentityUpdatesCarryOldRows) {
	Stream s("bench_updates_full", 1);
	auto updates = s.all<Update>();
	ASSERT_EQ(updates.size(), 10000u);
	EXPECT_EQ(s.all<Commit>().size(), 10u);
	for (const Update &u : updates)
		ASSERT_EQ(u.old_kind, OldTuple::Full);
	EXPECT_EQ(strings(updates[0].old_tuple), (std::vector<std::string>{"1", "0", "counter 1"}));
	EXPECT_EQ(strings(updates[0].new_tuple), (std::vector<std::string>{"1", "1", "counter 1"}));
}

TEST(GoldenCoverage, CapturesContainEveryMessageTypePostgres15Sends) {
	std::set<char> seen;
	for (const Capture &c : kCaptures) {
		Stream s(c.name, c.protocol_version);
		for (char t : s.types())
			seen.insert(t);
	}
	for (char t : std::string("BCORYIUDTMSEcAbPKrpk"))
		EXPECT_TRUE(seen.count(t)) << t;
}

} // namespace
} // namespace logical_audit::golden
