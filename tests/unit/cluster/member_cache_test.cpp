#include "cluster/member_cache.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace zetian::cluster {
namespace {

TEST(MemberCache, FormatThenParseGivesTheMembersBack) {
  const std::vector<CachedMember> members{{"mx1", "10.0.0.1:7946"}, {"mx2", "[2001:db8::2]:7946"}};
  EXPECT_EQ(formatMemberCache(members), "mx1 10.0.0.1:7946\nmx2 [2001:db8::2]:7946\n");
  EXPECT_EQ(parseMemberCache(formatMemberCache(members)), members);
}

TEST(MemberCache, LinesThatDoNotParseAreSkipped) {
  const std::string text =
      "mx1 10.0.0.1:7946\n"
      "garbage\n"
      "mx2 not-an-address\n"
      "mx3 10.0.0.3:0\n"
      " 10.0.0.4:7946\n"
      "mx5 10.0.0.5:7946 trailing\n"
      "mx6 10.0.0.6:7946";  // no final newline: still a line
  EXPECT_EQ(parseMemberCache(text), (std::vector<CachedMember>{{"mx1", "10.0.0.1:7946"}, {"mx6", "10.0.0.6:7946"}}));
}

TEST(MemberCache, NamesWithSpacesOrControlBytesAreNotWritten) {
  EXPECT_EQ(formatMemberCache({{"a b", "10.0.0.1:7946"}, {"ok", "10.0.0.2:7946"}, {"c\nd", "10.0.0.3:7946"}}),
            "ok 10.0.0.2:7946\n");
}

TEST(MemberCache, AtMostTheCapIsKept) {
  std::vector<CachedMember> many;
  for (std::size_t i = 0; i < kMaxCachedMembers + 10; ++i) {
    many.emplace_back("n" + std::to_string(i), "10.0.0.1:" + std::to_string(1000 + i));
  }
  EXPECT_EQ(parseMemberCache(formatMemberCache(many)).size(), kMaxCachedMembers);
  std::string text;
  for (const auto& [id, address] : many) text += id + " " + address + "\n";
  EXPECT_EQ(parseMemberCache(text).size(), kMaxCachedMembers);
}

TEST(MemberCache, WriteThenReadInAStateDirAndAbsentIsEmpty) {
  char pattern[] = "/tmp/zetian-member-cache-XXXXXX";
  const char* dir = mkdtemp(pattern);
  ASSERT_NE(dir, nullptr);
  EXPECT_TRUE(readMemberCache(dir).empty());
  std::string error;
  ASSERT_TRUE(writeMemberCache(dir, "mx1 10.0.0.1:7946\n", &error)) << error;
  EXPECT_EQ(readMemberCache(dir), (std::vector<CachedMember>{{"mx1", "10.0.0.1:7946"}}));
  ASSERT_TRUE(writeMemberCache(dir, "", &error)) << error;
  EXPECT_TRUE(readMemberCache(dir).empty());
  EXPECT_FALSE(std::filesystem::exists(std::string(dir) + "/members.tmp"));
  std::filesystem::remove_all(dir);
  EXPECT_FALSE(writeMemberCache(std::string(dir) + "/gone", "x 10.0.0.1:1\n", &error));
  EXPECT_FALSE(error.empty());
}

}  // namespace
}  // namespace zetian::cluster
