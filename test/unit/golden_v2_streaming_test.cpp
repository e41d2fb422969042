// Decodes the v2_streaming capture (protocol 2, streaming on): transactions larger than
// logical_decoding_work_mem sent in Stream Start/Stop blocks, then committed or aborted.
#include "golden.hpp"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace logical_audit::golden {
namespace {

using namespace pgoutput;

// The shared decoded v2_streaming stream.
const Stream &streaming() {
	static const Stream s("v2_streaming", 2);
	return s;
}

// The distinct streamed transactions, in order of their first Stream Start.
std::vector<Xid> stream_xids() {
	std::vector<Xid> out;
	for (const StreamStart &s : streaming().all<StreamStart>())
		if (out.empty() || out.back() != s.xid)
			out.push_back(s.xid);
	return out;
}

// The number of Stream Start blocks per transaction.
std::map<Xid, int> blocks_per_xid() {
	std::map<Xid, int> out;
	for (const StreamStart &s : streaming().all<StreamStart>())
		out[s.xid]++;
	return out;
}

// The wire xids of the Inserts streamed for the transaction xid, in order.
std::vector<Insert> inserts_in_stream(Xid xid) {
	std::vector<Insert> out;
	for (const Entry &e : streaming().entries())
		if (e.stream_xid == xid && e.has_message && std::holds_alternative<Insert>(e.message))
			out.push_back(std::get<Insert>(e.message));
	return out;
}

TEST(GoldenV2Streaming, ThreeTransactionsAreStreamedAndNoneSentWhole) {
	EXPECT_EQ(stream_xids().size(), 3u);
	EXPECT_TRUE(streaming().all<Begin>().empty());
	EXPECT_TRUE(streaming().all<Commit>().empty());
}

TEST(GoldenV2Streaming, LargeTransactionIsSplitIntoSeveralBlocks) {
	Xid first = stream_xids().at(0);
	EXPECT_GE(blocks_per_xid()[first], 2);
	auto inserts = inserts_in_stream(first);
	ASSERT_EQ(inserts.size(), 1500u);
	EXPECT_EQ(strings(inserts.front().new_tuple), (std::vector<std::string>{"1", "r1"}));
	EXPECT_EQ(strings(inserts.back().new_tuple), (std::vector<std::string>{"1500", "r1500"}));
}

TEST(GoldenV2Streaming, OnlyTheFirstBlockOfATransactionIsFirstSegment) {
	std::set<Xid> seen;
	for (const StreamStart &s : streaming().all<StreamStart>()) {
		EXPECT_EQ(s.first_segment, seen.count(s.xid) == 0) << s.xid;
		seen.insert(s.xid);
	}
}

TEST(GoldenV2Streaming, StartAndStopAlternate) {
	std::string types = streaming().types();
	char expect = 'S';
	for (char t : types) {
		if (t != 'S' && t != 'E')
			continue;
		EXPECT_EQ(t, expect);
		expect = expect == 'S' ? 'E' : 'S';
	}
	EXPECT_EQ(expect, 'S');
	EXPECT_EQ(streaming().all<StreamStop>().size(), streaming().all<StreamStart>().size());
}

TEST(GoldenV2Streaming, DataMessagesInsideABlockCarryAnXid) {
	for (const Entry &e : streaming().entries()) {
		if (!e.has_message || e.stream_xid == kInvalidXid)
			continue;
		if (const auto *r = std::get_if<Relation>(&e.message)) {
			EXPECT_NE(r->xid, kInvalidXid);
		}
		if (const auto *i = std::get_if<Insert>(&e.message)) {
			EXPECT_NE(i->xid, kInvalidXid);
		}
	}
}

TEST(GoldenV2Streaming, TransactionalMessageIsStreamedWithTheTransactionXid) {
	auto msgs = streaming().all<LogicalMessage>();
	ASSERT_EQ(msgs.size(), 1u);
	EXPECT_TRUE(msgs[0].transactional());
	EXPECT_EQ(msgs[0].prefix, "stream");
	EXPECT_EQ(msgs[0].content, "inside a streamed transaction");
	EXPECT_EQ(msgs[0].xid, stream_xids().at(0));
}

TEST(GoldenV2Streaming, StreamCommitXidsAreTheCommittedStreams) {
	auto commits = streaming().all<StreamCommit>();
	ASSERT_EQ(commits.size(), 2u);
	auto xids = stream_xids();
	EXPECT_EQ(commits[0].xid, xids[0]);
	EXPECT_EQ(commits[1].xid, xids[1]);
	for (const auto &c : commits) {
		EXPECT_EQ(c.flags, 0);
		EXPECT_LT(c.commit_lsn, c.end_lsn);
		EXPECT_GT(c.commit_time, kJan2024);
	}
}

TEST(GoldenV2Streaming, RolledBackSubtransactionIsAbortedBySubxid) {
	auto aborts = streaming().all<StreamAbort>();
	ASSERT_EQ(aborts.size(), 2u);
	Xid second = stream_xids().at(1);
	EXPECT_EQ(aborts[0].xid, second);
	EXPECT_NE(aborts[0].subxid, second);
	EXPECT_GT(aborts[0].subxid, second);
	EXPECT_FALSE(aborts[0].has_abort_info);
}

TEST(GoldenV2Streaming, ChangesOfASubtransactionCarryTheSubtransactionXid) {
	// After ROLLBACK TO SAVEPOINT the savepoint is re-established: its rows get yet another subxid.
	Xid second = stream_xids().at(1);
	auto inserts = inserts_in_stream(second);
	ASSERT_FALSE(inserts.empty());
	EXPECT_EQ(inserts.front().xid, second);
	EXPECT_EQ(strings(inserts.back().new_tuple), (std::vector<std::string>{"3210", "s3210"}));
	EXPECT_GT(inserts.back().xid, streaming().all<StreamAbort>().at(0).subxid);
	bool aborted_subxid_seen = false;
	for (const Insert &i : inserts)
		aborted_subxid_seen |= i.xid == streaming().all<StreamAbort>().at(0).subxid;
	EXPECT_TRUE(aborted_subxid_seen);
}

TEST(GoldenV2Streaming, RolledBackTransactionIsAbortedWithSubxidEqualToXid) {
	auto aborts = streaming().all<StreamAbort>();
	ASSERT_EQ(aborts.size(), 2u);
	Xid third = stream_xids().at(2);
	EXPECT_EQ(aborts[1].xid, third);
	EXPECT_EQ(aborts[1].subxid, third);
	EXPECT_EQ(streaming().types().substr(streaming().types().size() - 3), "EAk");
}

TEST(GoldenV2Streaming, StreamCommitAndAbortComeOutsideBlocks) {
	for (const Entry &e : streaming().entries()) {
		char t = e.type();
		if (t == 'c' || t == 'A') {
			EXPECT_EQ(e.stream_xid, kInvalidXid) << t;
		}
	}
}

} // namespace
} // namespace logical_audit::golden
