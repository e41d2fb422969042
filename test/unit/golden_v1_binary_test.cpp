// Decodes the v1_binary capture (protocol 1, binary on): column values in their binary send format.
#include "golden.hpp"

#include <gtest/gtest.h>

namespace logical_audit::golden {
namespace {

using namespace pgoutput;

// The shared decoded v1_binary stream.
const Stream &binary() {
	static const Stream s("v1_binary", 1);
	return s;
}

// Bytes written as a string, for comparing binary column values.
std::string_view bytes(const char *s, size_t n) {
	return std::string_view(s, n);
}

// The columns of the first insert (the fully populated row).
std::vector<ColumnValue> first_row() {
	return columns(binary().all<Insert>().at(0).new_tuple);
}

TEST(GoldenV1Binary, RelationListsBuiltinColumnTypes) {
	auto cols = columns(binary().relation("binary_types").columns);
	ASSERT_EQ(cols.size(), 11u);
	const Oid expected[] = {23, 20, 1700, 25, 16, 1184, 17, 3802, 2950, 701, 1007};
	for (size_t i = 0; i < cols.size(); i++)
		EXPECT_EQ(cols[i].type, expected[i]) << cols[i].name;
	EXPECT_TRUE(binary().all<Type>().empty());
}

TEST(GoldenV1Binary, EveryNonNullColumnIsBinary) {
	for (const auto &c : first_row())
		EXPECT_EQ(c.kind, ColumnKind::Binary);
}

TEST(GoldenV1Binary, IntegersAreBigEndian) {
	auto row = first_row();
	EXPECT_EQ(row[0].data, bytes("\xff\xff\xff\xfe", 4));                 // int4 -2
	EXPECT_EQ(row[1].data, bytes("\x00\x00\x01\x1f\x71\xfb\x04\xcb", 8)); // int8 1234567890123
}

TEST(GoldenV1Binary, NumericIsSentAsBase10000Digits) {
	// ndigits 2, weight 0, sign positive, dscale 2, digits 3 and 1400: 3.14
	EXPECT_EQ(first_row()[2].data, bytes("\x00\x02\x00\x00\x00\x00\x00\x02\x00\x03\x05\x78", 12));
}

TEST(GoldenV1Binary, TextBoolAndByteaAreRawBytes) {
	auto row = first_row();
	EXPECT_EQ(row[3].data, "hello");
	EXPECT_EQ(row[4].data, bytes("\x01", 1));
	EXPECT_EQ(row[6].data, bytes("\xde\xad\xbe\xef", 4));
}

TEST(GoldenV1Binary, TimestamptzIsMicrosecondsSince2000) {
	std::string_view d = first_row()[5].data;
	ASSERT_EQ(d.size(), 8u);
	const uint8_t *p = reinterpret_cast<const uint8_t *>(d.data());
	EXPECT_EQ(load_be<int64_t>(p), kJan2024);
}

TEST(GoldenV1Binary, JsonbUuidFloatAndArrayUseTheirSendFormats) {
	auto row = first_row();
	EXPECT_EQ(row[7].data, "\x01{\"k\": [1, 2]}"); // jsonb version 1, then the text
	EXPECT_EQ(row[8].data, bytes("\xa0\xee\xbc\x99\x9c\x0b\x4e\xf8\xbb\x6d\x6b\xb9\xbd\x38\x0a\x11", 16));
	EXPECT_EQ(row[9].data, bytes("\x3f\xe0\x00\x00\x00\x00\x00\x00", 8)); // 0.5
	// One dimension, no nulls, element type int4, 3 elements from 1, then length-prefixed elements.
	EXPECT_EQ(row[10].data, bytes("\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x17\x00\x00\x00\x03\x00\x00\x00\x01"
	                              "\x00\x00\x00\x04\x00\x00\x00\x01\x00\x00\x00\x04\x00\x00\x00\x02"
	                              "\x00\x00\x00\x04\x00\x00\x00\x03",
	                              44));
}

TEST(GoldenV1Binary, NullsStayNullInBinaryMode) {
	auto row = columns(binary().all<Insert>().at(1).new_tuple);
	ASSERT_EQ(row.size(), 11u);
	EXPECT_EQ(row[0].kind, ColumnKind::Binary);
	EXPECT_EQ(row[0].data, bytes("\x00\x00\x00\x07", 4));
	for (size_t i = 1; i < row.size(); i++)
		EXPECT_EQ(row[i].kind, ColumnKind::Null) << i;
}

TEST(GoldenV1Binary, UpdateAndDeleteUseBinaryToo) {
	auto updates = binary().all<Update>();
	ASSERT_EQ(updates.size(), 1u);
	auto row = columns(updates[0].new_tuple);
	EXPECT_EQ(row[3].data, "world");
	EXPECT_EQ(row[9].data, bytes("\xbf\xf4\x00\x00\x00\x00\x00\x00", 8)); // -1.25
	auto deletes = binary().all<Delete>();
	ASSERT_EQ(deletes.size(), 1u);
	EXPECT_EQ(deletes[0].old_kind, OldTuple::Key);
	auto key = columns(deletes[0].old_tuple);
	EXPECT_EQ(key[0].kind, ColumnKind::Binary);
	EXPECT_EQ(key[0].data, bytes("\x00\x00\x00\x07", 4));
	EXPECT_EQ(key[1].kind, ColumnKind::Null);
}

} // namespace
} // namespace logical_audit::golden
