// Decodes the v3_two_phase capture (protocol 3, two_phase and streaming on): prepared transactions
// committed or rolled back, and a streamed prepared transaction.
#include "golden.hpp"

#include <gtest/gtest.h>

namespace logical_audit::golden {
namespace {

using namespace pgoutput;

// The shared decoded v3_two_phase stream.
const Stream &two_phase() {
	static const Stream s("v3_two_phase", 3);
	return s;
}

TEST(GoldenV3TwoPhase, MessageSequenceIsPrepareThenFinish) {
	std::string types = two_phase().types();
	// Keepalive, then: prepared and committed; prepared and rolled back; streamed, prepared, committed.
	EXPECT_EQ(types.substr(0, 8), "kbRIIPKb");
	EXPECT_EQ(types.substr(8, 4), "IPrS");
	EXPECT_EQ(types.substr(types.size() - 4), "EpKk");
	EXPECT_TRUE(two_phase().all<Begin>().empty());
	EXPECT_TRUE(two_phase().all<Commit>().empty());
}

TEST(GoldenV3TwoPhase, BeginPrepareAndPrepareAgree) {
	auto begins = two_phase().all<BeginPrepare>();
	auto prepares = two_phase().all<Prepare>();
	ASSERT_EQ(begins.size(), 2u);
	ASSERT_EQ(prepares.size(), 2u);
	const char *gids[] = {"gid_commit", "gid_rollback"};
	for (size_t i = 0; i < 2; i++) {
		EXPECT_EQ(begins[i].gid, gids[i]);
		EXPECT_EQ(prepares[i].gid, gids[i]);
		EXPECT_EQ(begins[i].xid, prepares[i].xid);
		EXPECT_EQ(begins[i].prepare_lsn, prepares[i].prepare_lsn);
		EXPECT_EQ(begins[i].end_lsn, prepares[i].end_lsn);
		EXPECT_EQ(begins[i].prepare_time, prepares[i].prepare_time);
		EXPECT_LT(prepares[i].prepare_lsn, prepares[i].end_lsn);
		EXPECT_EQ(prepares[i].flags, 0);
	}
}

TEST(GoldenV3TwoPhase, PreparedChangesAreSentBeforeThePrepare) {
	auto inserts = two_phase().all<Insert>();
	ASSERT_GE(inserts.size(), 3u);
	EXPECT_EQ(strings(inserts[0].new_tuple), (std::vector<std::string>{"1", "apple"}));
	EXPECT_EQ(strings(inserts[1].new_tuple), (std::vector<std::string>{"2", "pear"}));
	EXPECT_EQ(strings(inserts[2].new_tuple), (std::vector<std::string>{"3", "plum"}));
	EXPECT_EQ(inserts[0].xid, kInvalidXid);
}

TEST(GoldenV3TwoPhase, CommitPreparedNamesTheGidAndXid) {
	auto commits = two_phase().all<CommitPrepared>();
	ASSERT_EQ(commits.size(), 2u);
	Prepare p = two_phase().all<Prepare>().at(0);
	EXPECT_EQ(commits[0].gid, "gid_commit");
	EXPECT_EQ(commits[0].xid, p.xid);
	EXPECT_EQ(commits[0].flags, 0);
	EXPECT_GE(commits[0].commit_lsn, p.end_lsn);
	EXPECT_LT(commits[0].commit_lsn, commits[0].end_lsn);
	EXPECT_GE(commits[0].commit_time, p.prepare_time);
}

TEST(GoldenV3TwoPhase, RollbackPreparedRefersToThePrepare) {
	auto rollbacks = two_phase().all<RollbackPrepared>();
	ASSERT_EQ(rollbacks.size(), 1u);
	Prepare p = two_phase().all<Prepare>().at(1);
	const RollbackPrepared &r = rollbacks[0];
	EXPECT_EQ(r.gid, "gid_rollback");
	EXPECT_EQ(r.xid, p.xid);
	EXPECT_EQ(r.prepare_end_lsn, p.end_lsn);
	EXPECT_EQ(r.prepare_time, p.prepare_time);
	EXPECT_GE(r.rollback_time, r.prepare_time);
	EXPECT_LT(r.prepare_end_lsn, r.rollback_end_lsn);
}

TEST(GoldenV3TwoPhase, LargePreparedTransactionIsStreamedThenStreamPrepared) {
	auto starts = two_phase().all<StreamStart>();
	ASSERT_GE(starts.size(), 2u);
	EXPECT_TRUE(starts[0].first_segment);
	EXPECT_FALSE(starts[1].first_segment);
	auto sp = two_phase().all<StreamPrepare>();
	ASSERT_EQ(sp.size(), 1u);
	EXPECT_EQ(sp[0].gid, "gid_big");
	EXPECT_EQ(sp[0].xid, starts[0].xid);
	EXPECT_EQ(sp[0].flags, 0);
	EXPECT_LT(sp[0].prepare_lsn, sp[0].end_lsn);
	size_t streamed = 0;
	for (const Entry &e : two_phase().entries())
		if (e.stream_xid == starts[0].xid && e.type() == 'I')
			streamed++;
	EXPECT_EQ(streamed, 1000u);
}

TEST(GoldenV3TwoPhase, StreamPreparedTransactionIsCommittedByGid) {
	CommitPrepared c = two_phase().all<CommitPrepared>().at(1);
	StreamPrepare sp = two_phase().all<StreamPrepare>().at(0);
	EXPECT_EQ(c.gid, "gid_big");
	EXPECT_EQ(c.xid, sp.xid);
	EXPECT_GE(c.commit_lsn, sp.end_lsn);
}

} // namespace
} // namespace logical_audit::golden
