// The two pure parts of the Redis Cluster support: the key -> slot function (against
// the answers of a real Redis 7.0 to CLUSTER KEYSLOT, recorded once), and the call rule
// that one server and a cluster both apply to a stage's answers (settleCall).
#include <gtest/gtest.h>

#include <string>

#include "cluster/redis/backend.h"
#include "cluster/redis/key_slot.h"

namespace zetian::cluster::redis {
namespace {

using namespace std::string_literals;

TEST(RedisKeySlot, MatchesRedisForPlainKeys) {
  EXPECT_EQ(crc16Xmodem("123456789"), 0x31C3);  // the CRC's published check value
  EXPECT_EQ(keySlot("foo"), 12182);
  EXPECT_EQ(keySlot("bar"), 5061);
  EXPECT_EQ(keySlot("123456789"), 12739);
  EXPECT_EQ(keySlot("zetian:rule"), 9068);
  EXPECT_EQ(keySlot(""), 0);
}

TEST(RedisKeySlot, HashesOnlyTheFirstNonEmptyHashTag) {
  EXPECT_EQ(keySlot("{user1000}.following"), 3443);
  EXPECT_EQ(keySlot("{user1000}.followers"), 3443);
  EXPECT_EQ(keySlot("foo{bar}{zap}"), 5061);  // "bar"
  EXPECT_EQ(keySlot("foo{{bar}}zap"), 4015);  // "{bar": from the first { to the first } after it
  EXPECT_EQ(keySlot("}{a}"), 15495);          // a } before the { does not close it
}

TEST(RedisKeySlot, AnEmptyOrOpenTagHashesTheWholeKey) {
  EXPECT_EQ(keySlot("foo{}{bar}"), 8363);  // {} is no tag, and the search stops there
  EXPECT_EQ(keySlot("{}"), 15257);
  EXPECT_EQ(keySlot("{"), 4092);
  EXPECT_EQ(keySlot("a{b"), 13340);
}

TEST(RedisKeySlot, KeysAreArbitraryBytes) {
  EXPECT_EQ(keySlot("a\0b"s), 8383);
  EXPECT_EQ(keySlot("zetian:r\0k{x}"s), 16287);  // the store key's NUL, then a tag
  EXPECT_EQ(keySlot("\xff\xfe{\0}"s), 0);        // the tag is one NUL byte
}

wire::LimitItem item(const std::string& key, bool blocking = true) {
  wire::LimitItem i;
  i.key = key;
  i.blocking = blocking;
  return i;
}
wire::LimitOutcome charged(std::uint64_t remaining = 1) { return {wire::ItemResult::Charged, remaining, 0}; }
wire::LimitOutcome denied() { return {wire::ItemResult::Denied, 0, 1000}; }

TEST(RedisSettleCall, AllChargedStandsAsItIs) {
  const auto s = settleCall({item("a"), item("b")}, {charged(4), charged(7)}, std::nullopt);
  ASSERT_FALSE(s.result.failed);
  ASSERT_EQ(s.result.outcomes.size(), 2u);
  EXPECT_EQ(s.result.outcomes[0].result, wire::ItemResult::Charged);
  EXPECT_EQ(s.result.outcomes[0].remaining, 4u);
  EXPECT_EQ(s.result.outcomes[1].remaining, 7u);
  EXPECT_TRUE(s.give_back.empty());
}

TEST(RedisSettleCall, TheFirstBlockingDenialReturnsWhatCameBeforeAndVoidsWhatCameAfter) {
  const auto s = settleCall({item("a"), item("b"), item("c"), item("d")}, {charged(), denied(), charged(), denied()},
                            std::nullopt);
  ASSERT_FALSE(s.result.failed);
  EXPECT_EQ(s.result.outcomes[0].result, wire::ItemResult::Returned);
  EXPECT_EQ(s.result.outcomes[1].result, wire::ItemResult::Denied);
  EXPECT_EQ(s.result.outcomes[2].result, wire::ItemResult::NotEvaluated);
  EXPECT_EQ(s.result.outcomes[3].result, wire::ItemResult::NotEvaluated);
  EXPECT_EQ(s.give_back, (std::vector<std::size_t>{0, 2}));
}

TEST(RedisSettleCall, ANonBlockingDenialDoesNotStopTheCall) {
  const auto s = settleCall({item("a"), item("b", false), item("c")}, {charged(), denied(), charged()}, std::nullopt);
  ASSERT_FALSE(s.result.failed);
  EXPECT_EQ(s.result.outcomes[0].result, wire::ItemResult::Charged);
  EXPECT_EQ(s.result.outcomes[1].result, wire::ItemResult::Denied);
  EXPECT_EQ(s.result.outcomes[2].result, wire::ItemResult::Charged);
  EXPECT_TRUE(s.give_back.empty());
}

TEST(RedisSettleCall, AFailedCallGivesBackEveryCharge) {
  const auto s = settleCall({item("a"), item("b"), item("c")}, {charged(), std::nullopt, charged()},
                            limits::FallbackReason::Unreachable);
  ASSERT_TRUE(s.result.failed);
  EXPECT_EQ(*s.result.failed, limits::FallbackReason::Unreachable);
  EXPECT_TRUE(s.result.outcomes.empty());
  EXPECT_EQ(s.give_back, (std::vector<std::size_t>{0, 2}));
}

TEST(RedisSettleCall, AnItemWithoutAnAnswerFailsTheCall) {
  const auto s = settleCall({item("a"), item("b")}, {charged(), std::nullopt}, std::nullopt);
  ASSERT_TRUE(s.result.failed);
  EXPECT_EQ(*s.result.failed, limits::FallbackReason::Refused);
  EXPECT_EQ(s.give_back, (std::vector<std::size_t>{0}));
}

}  // namespace
}  // namespace zetian::cluster::redis
