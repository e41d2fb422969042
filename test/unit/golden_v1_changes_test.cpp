// Decodes the v1_changes capture (protocol 1, messages on) and checks the values PostgreSQL 15 sent.
#include "golden.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace logical_audit::golden {
namespace {

using namespace pgoutput;
using Strings = std::vector<std::string>;

constexpr Oid kInt4 = 23, kText = 25, kNumeric = 1700, kVarchar = 1043, kInt4Array = 1007, kTextArray = 1009;

// The shared decoded v1_changes stream.
const Stream &changes() {
	static const Stream s("v1_changes", 1);
	return s;
}

// The data messages of type T for the relation named relname, in order.
template <typename T>
std::vector<T> for_relation(std::string_view relname) {
	Oid id = changes().relation(relname).relation_id;
	std::vector<T> out;
	for (const T &m : changes().all<T>())
		if (m.relation_id == id)
			out.push_back(m);
	return out;
}

TEST(GoldenV1Changes, RelationCarriesNamespaceNameIdentityAndColumns) {
	Relation r = changes().relation("accounts");
	EXPECT_EQ(r.nspname, "public");
	EXPECT_EQ(r.replica_identity, ReplicaIdentity::Default);
	EXPECT_EQ(r.xid, kInvalidXid);
	auto cols = columns(r.columns);
	ASSERT_EQ(cols.size(), 4u);
	EXPECT_EQ(cols[0].name, "id");
	EXPECT_TRUE(cols[0].is_key());
	EXPECT_EQ(cols[0].type, kInt4);
	EXPECT_EQ(cols[0].typmod, -1);
	EXPECT_EQ(cols[1].name, "owner");
	EXPECT_FALSE(cols[1].is_key());
	EXPECT_EQ(cols[1].type, kText);
	EXPECT_EQ(cols[2].name, "balance");
	EXPECT_EQ(cols[2].type, kNumeric);
	EXPECT_EQ(cols[2].typmod, (12 << 16 | 2) + 4); // numeric(12,2)
	EXPECT_EQ(cols[3].name, "note");
	EXPECT_EQ(cols[3].type, kVarchar);
	EXPECT_EQ(cols[3].typmod, 40 + 4); // varchar(40)
}

TEST(GoldenV1Changes, ReplicaIdentityFullFlagsEveryColumnAsKey) {
	Relation r = changes().relation("ledger_full");
	EXPECT_EQ(r.replica_identity, ReplicaIdentity::Full);
	for (const auto &c : columns(r.columns))
		EXPECT_TRUE(c.is_key()) << c.name;
}

TEST(GoldenV1Changes, ReplicaIdentityIndexFlagsOnlyIndexColumns) {
	Relation r = changes().relation("items_idx");
	EXPECT_EQ(r.replica_identity, ReplicaIdentity::Index);
	auto cols = columns(r.columns);
	ASSERT_EQ(cols.size(), 3u);
	EXPECT_FALSE(cols[0].is_key());
	EXPECT_EQ(cols[1].name, "sku");
	EXPECT_TRUE(cols[1].is_key());
	EXPECT_FALSE(cols[2].is_key());
}

TEST(GoldenV1Changes, ReplicaIdentityNothingHasNoKeyColumns) {
	Relation r = changes().relation("events_nothing");
	EXPECT_EQ(r.replica_identity, ReplicaIdentity::Nothing);
	for (const auto &c : columns(r.columns))
		EXPECT_FALSE(c.is_key()) << c.name;
	auto inserts = for_relation<Insert>("events_nothing");
	ASSERT_EQ(inserts.size(), 1u);
	EXPECT_EQ(strings(inserts[0].new_tuple), (Strings{"1", "boot"}));
}

TEST(GoldenV1Changes, InsertsCarryTextValuesAndNulls) {
	auto inserts = for_relation<Insert>("accounts");
	ASSERT_GE(inserts.size(), 2u);
	EXPECT_EQ(strings(inserts[0].new_tuple), (Strings{"1", "alice", "100.50", "first"}));
	EXPECT_EQ(strings(inserts[1].new_tuple), (Strings{"2", "bob", "<null>", "<null>"}));
	auto cols = columns(inserts[1].new_tuple);
	EXPECT_EQ(cols[2].kind, ColumnKind::Null);
	EXPECT_TRUE(cols[2].data.empty());
	EXPECT_EQ(cols[0].kind, ColumnKind::Text);
}

TEST(GoldenV1Changes, UpdateWithoutKeyChangeHasNoOldTuple) {
	auto updates = for_relation<Update>("accounts");
	ASSERT_EQ(updates.size(), 2u);
	EXPECT_EQ(updates[0].old_kind, OldTuple::None);
	EXPECT_FALSE(updates[0].old_tuple.present());
	EXPECT_EQ(strings(updates[0].new_tuple), (Strings{"1", "alice", "75.25", "first"}));
}

TEST(GoldenV1Changes, KeyChangingUpdateSendsOldKeyWithNullsElsewhere) {
	auto updates = for_relation<Update>("accounts");
	ASSERT_EQ(updates.size(), 2u);
	EXPECT_EQ(updates[1].old_kind, OldTuple::Key);
	EXPECT_EQ(strings(updates[1].old_tuple), (Strings{"2", "<null>", "<null>", "<null>"}));
	EXPECT_EQ(strings(updates[1].new_tuple), (Strings{"3", "bob", "<null>", "<null>"}));
}

TEST(GoldenV1Changes, DeleteSendsOldKey) {
	auto deletes = for_relation<Delete>("accounts");
	ASSERT_EQ(deletes.size(), 1u);
	EXPECT_EQ(deletes[0].old_kind, OldTuple::Key);
	EXPECT_EQ(strings(deletes[0].old_tuple), (Strings{"3", "<null>", "<null>", "<null>"}));
}

TEST(GoldenV1Changes, ReplicaIdentityFullSendsWholeOldRow) {
	auto updates = for_relation<Update>("ledger_full");
	ASSERT_EQ(updates.size(), 1u);
	EXPECT_EQ(updates[0].old_kind, OldTuple::Full);
	EXPECT_EQ(strings(updates[0].old_tuple), (Strings{"1", "10.00", "coffee"}));
	EXPECT_EQ(strings(updates[0].new_tuple), (Strings{"1", "12.00", "coffee"}));
	auto deletes = for_relation<Delete>("ledger_full");
	ASSERT_EQ(deletes.size(), 1u);
	EXPECT_EQ(deletes[0].old_kind, OldTuple::Full);
	EXPECT_EQ(strings(deletes[0].old_tuple), (Strings{"2", "20.00", "<null>"}));
}

TEST(GoldenV1Changes, ReplicaIdentityIndexSendsOldKeyOnlyWhenKeyChanges) {
	auto updates = for_relation<Update>("items_idx");
	ASSERT_EQ(updates.size(), 2u);
	EXPECT_EQ(updates[0].old_kind, OldTuple::None);
	EXPECT_EQ(strings(updates[0].new_tuple), (Strings{"1", "SKU-1", "6"}));
	EXPECT_EQ(updates[1].old_kind, OldTuple::Key);
	EXPECT_EQ(strings(updates[1].old_tuple), (Strings{"<null>", "SKU-1", "<null>"}));
	auto deletes = for_relation<Delete>("items_idx");
	ASSERT_EQ(deletes.size(), 1u);
	EXPECT_EQ(strings(deletes[0].old_tuple), (Strings{"<null>", "SKU-2", "<null>"}));
}

TEST(GoldenV1Changes, UnchangedToastedColumnIsSentAsUnchanged) {
	auto inserts = for_relation<Insert>("docs");
	ASSERT_EQ(inserts.size(), 1u);
	auto body = columns(inserts[0].new_tuple)[2];
	EXPECT_EQ(body.kind, ColumnKind::Text);
	EXPECT_EQ(body.data.size(), 400u * 32);
	EXPECT_EQ(body.data.substr(0, 32), "c4ca4238a0b923820dcc509a6f75849b"); // md5('1')
	auto updates = for_relation<Update>("docs");
	ASSERT_EQ(updates.size(), 1u);
	auto cols = columns(updates[0].new_tuple);
	ASSERT_EQ(cols.size(), 3u);
	EXPECT_EQ(cols[1].data, "manual v2");
	EXPECT_EQ(cols[2].kind, ColumnKind::UnchangedToast);
	EXPECT_TRUE(cols[2].data.empty());
}

// The Type message whose type_id is oid.
Type type_by_id(Oid oid) {
	for (const Type &t : changes().all<Type>())
		if (t.type_id == oid)
			return t;
	throw std::runtime_error("no type message for oid " + std::to_string(oid));
}

TEST(GoldenV1Changes, TypeMessagesDescribeUserDefinedColumnTypes) {
	auto cols = columns(changes().relation("typed").columns);
	ASSERT_EQ(cols.size(), 8u);
	EXPECT_EQ(type_by_id(cols[1].type).typname, "mood");
	EXPECT_EQ(type_by_id(cols[1].type).nspname, "public");
	EXPECT_EQ(type_by_id(cols[3].type).typname, "point3");
	EXPECT_EQ(type_by_id(cols[6].type).typname, "_mood");
	// A domain is announced under its own oid but with its base type's name, in pg_catalog ("").
	EXPECT_EQ(type_by_id(cols[2].type).typname, "int4");
	EXPECT_EQ(type_by_id(cols[2].type).nspname, "");
	// Built-in types, arrays of them included, get no Type message.
	EXPECT_EQ(cols[4].type, kInt4Array);
	EXPECT_EQ(cols[5].type, kTextArray);
	EXPECT_EQ(changes().all<Type>().size(), 4u);
}

TEST(GoldenV1Changes, TypeMessagesPrecedeTheirRelation) {
	std::string types = changes().types();
	size_t first_type = types.find('Y');
	ASSERT_NE(first_type, std::string::npos);
	EXPECT_EQ(types.substr(first_type, 5), "YYYYR");
}

TEST(GoldenV1Changes, EnumCompositeAndArrayValuesAreText) {
	auto inserts = for_relation<Insert>("typed");
	ASSERT_EQ(inserts.size(), 1u);
	EXPECT_EQ(strings(inserts[0].new_tuple),
	          (Strings{"1", "happy", "42", "(1.5,-2,0)", "{1,2,3}", "{a,\"b c\",NULL}", "{sad,ok}", "<null>"}));
}

TEST(GoldenV1Changes, TransactionalMessageCarriesPrefixContentAndFlag) {
	auto msgs = changes().all<LogicalMessage>();
	ASSERT_EQ(msgs.size(), 2u);
	EXPECT_TRUE(msgs[0].transactional());
	EXPECT_EQ(msgs[0].flags, kMessageTransactional);
	EXPECT_EQ(msgs[0].prefix, "audit");
	EXPECT_EQ(msgs[0].content, R"({"event": "login", "user": "carol"})");
	EXPECT_EQ(msgs[0].xid, kInvalidXid);
	EXPECT_NE(msgs[0].lsn, 0u);
}

TEST(GoldenV1Changes, NonTransactionalMessageComesOutsideAnyTransaction) {
	auto msgs = changes().all<LogicalMessage>();
	ASSERT_EQ(msgs.size(), 2u);
	EXPECT_FALSE(msgs[1].transactional());
	EXPECT_EQ(msgs[1].prefix, "audit.nontx");
	EXPECT_EQ(msgs[1].content, "heartbeat");
	std::string types = changes().types();
	size_t second = types.find('M', types.find('M') + 1);
	EXPECT_EQ(types.substr(second - 1, 3), "CMB");
}

TEST(GoldenV1Changes, OriginFollowsBeginWithNameAndOriginLsn) {
	auto origins = changes().all<Origin>();
	ASSERT_EQ(origins.size(), 1u);
	EXPECT_EQ(origins[0].name, "audit_origin");
	EXPECT_EQ(origins[0].commit_lsn, 0xABCDEFu);
	std::string types = changes().types();
	EXPECT_EQ(types[types.find('O') - 1], 'B');
	// The origin's commit timestamp set with pg_replication_origin_xact_setup becomes the commit time.
	size_t begin_index = std::count(types.begin(), types.begin() + types.find('O'), 'B') - 1;
	EXPECT_EQ(changes().all<Begin>()[begin_index].commit_time, kJan2024);
}

TEST(GoldenV1Changes, TruncateOfTwoTablesListsBoth) {
	auto truncates = changes().all<Truncate>();
	ASSERT_EQ(truncates.size(), 3u);
	EXPECT_EQ(truncates[0].options, 0);
	ASSERT_EQ(truncates[0].relation_ids.size(), 2u);
	EXPECT_EQ(truncates[0].relation_ids[0], changes().relation("trunc_a").relation_id);
	EXPECT_EQ(truncates[0].relation_ids[1], changes().relation("trunc_b").relation_id);
}

TEST(GoldenV1Changes, TruncateCascadeSetsCascadeBitAndListsChild) {
	Truncate t = changes().all<Truncate>().at(1);
	EXPECT_EQ(t.options, kTruncateCascade);
	ASSERT_EQ(t.relation_ids.size(), 2u);
	EXPECT_EQ(t.relation_ids[0], changes().relation("parent").relation_id);
	EXPECT_EQ(t.relation_ids[1], changes().relation("child").relation_id);
}

TEST(GoldenV1Changes, TruncateRestartIdentitySetsRestartBit) {
	Truncate t = changes().all<Truncate>().at(2);
	EXPECT_EQ(t.options, kTruncateRestartIdentity);
	ASSERT_EQ(t.relation_ids.size(), 1u);
	EXPECT_EQ(t.relation_ids[0], changes().relation("seq_t").relation_id);
}

TEST(GoldenV1Changes, BeginFinalLsnMatchesCommitLsn) {
	auto begins = changes().all<Begin>();
	auto commits = changes().all<Commit>();
	ASSERT_EQ(begins.size(), commits.size());
	ASSERT_GT(begins.size(), 10u);
	for (size_t i = 0; i < begins.size(); i++) {
		EXPECT_EQ(begins[i].final_lsn, commits[i].commit_lsn) << i;
		EXPECT_EQ(begins[i].commit_time, commits[i].commit_time) << i;
		EXPECT_NE(begins[i].xid, kInvalidXid) << i;
		EXPECT_LT(commits[i].commit_lsn, commits[i].end_lsn) << i;
		EXPECT_EQ(commits[i].flags, 0) << i;
		if (i > 0) {
			EXPECT_GT(begins[i].xid, begins[i - 1].xid) << i;
		}
	}
}

TEST(GoldenV1Changes, TransactionsAreBalancedAndNeverStreamed) {
	int depth = 0;
	for (const Entry &e : changes().entries()) {
		char t = e.type();
		depth += t == 'B' ? 1 : t == 'C' ? -1 : 0;
		ASSERT_TRUE(depth == 0 || depth == 1);
		EXPECT_EQ(e.stream_xid, kInvalidXid);
	}
	EXPECT_EQ(depth, 0);
}

} // namespace
} // namespace logical_audit::golden
