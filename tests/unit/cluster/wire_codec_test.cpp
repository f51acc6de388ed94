#include "cluster/wire/codec.h"

#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <new>
#include <set>
#include <utility>
#include <stdexcept>
#include <string>
#include <vector>

#include "tests/unit/cluster/allocation_counter.h"

namespace zetian::cluster::wire {
namespace {

Nonce patternNonce(std::uint8_t seed) {
  Nonce n{};
  for (std::size_t i = 0; i < n.size(); ++i) n[i] = static_cast<std::uint8_t>(seed + i * 7);
  return n;
}

Member member(std::string id, NodeStatus status, std::uint64_t incarnation) {
  return Member{id, id + ".example.net:7946", "eu-west", status, incarnation};
}

// A store key as the limiter builds it: rule name, NUL, key value.
std::string storeKey(std::string_view rule, std::string_view value) {
  std::string key(rule);
  key.push_back('\0');
  key.append(value);
  return key;
}

LimitItem item(std::string key, std::uint64_t cost = 1, bool blocking = true) {
  return LimitItem{LimitOp::Charge, std::move(key), 2, 100, 3'600'000'000'000, 10, cost, blocking, "ip:192.0.2.1"};
}

// The largest item: every string and number at its bound.
LimitItem largestItem(std::size_t i) {
  std::string key(kMaxStringBytes, 'k');
  key[0] = static_cast<char>(i & 0xff);
  key[1] = '\0';
  return LimitItem{LimitOp::Refund, key, kMaxAlgorithm, ~std::uint64_t{0},
                   std::numeric_limits<std::int64_t>::max(), ~std::uint64_t{0}, ~std::uint64_t{0}, true, std::string(kMaxPlacementBytes, 'p')};
}

// `calls` calls sharing `items_per_call` items each, built by make(i) for the i-th item.
template <typename Make>
LimitRequest requestOf(std::size_t calls, std::size_t items_per_call, Make make) {
  LimitRequest m;
  std::size_t n = 0;
  for (std::size_t c = 0; c < calls; ++c) {
    LimitCall call{1000 + c, {}};
    for (std::size_t i = 0; i < items_per_call; ++i) call.items.push_back(make(n++));
    m.calls.push_back(std::move(call));
  }
  return m;
}

LimitReply replyOf(std::size_t answers, std::size_t outcomes_per_answer) {
  LimitReply m;
  for (std::size_t a = 0; a < answers; ++a) {
    LimitAnswer answer{~std::uint64_t{0} - a, CallStatus::Ok, {}};
    for (std::size_t i = 0; i < outcomes_per_answer; ++i) {
      answer.outcomes.push_back(LimitOutcome{static_cast<ItemResult>(i % (kMaxItemResult + 1)),
                                             ~std::uint64_t{0} - i,
                                             std::numeric_limits<std::int64_t>::max()});
    }
    m.answers.push_back(std::move(answer));
  }
  return m;
}

SyncedBucket bucket(std::string key, double level, std::int64_t stamp_age_ns) {
  return SyncedBucket{std::move(key), 1, 100, 60'000'000'000, 20, level, 7, stamp_age_ns, true, "ip:2001:db8::1"};
}

BucketSync largestSync() {
  BucketSync m{SyncReason::Handoff, ~std::uint64_t{0}, false, {}};
  for (std::size_t i = 0; i < kMaxSyncBuckets; ++i) {
    std::string key(kMaxStringBytes, 'b');
    key[0] = static_cast<char>(i & 0xff);
    m.buckets.push_back(SyncedBucket{key, kMaxAlgorithm, ~std::uint64_t{0},
                                     std::numeric_limits<std::int64_t>::max(), ~std::uint64_t{0},
                                     std::numeric_limits<double>::max(), ~std::uint64_t{0},
                                     std::numeric_limits<std::int64_t>::min(), true, std::string(kMaxPlacementBytes, 'p')});
  }
  return m;
}

std::vector<Message> sampleMessages() {
  const std::string longest(kMaxStringBytes, 'x');
  std::vector<Member> many;
  for (std::size_t i = 0; i < kMaxMembers; ++i) {
    many.push_back(Member{longest, longest, longest,
                          static_cast<NodeStatus>(i % (kMaxNodeStatus + 1)), ~std::uint64_t{0} - i});
  }
  return {
      Hello{"mx1", "10.0.0.1:7946", "prod", "eu-west", patternNonce(1), 1'790'000'000'123},
      Hello{},
      Hello{longest, longest, longest, longest, patternNonce(0xf0), ~std::uint64_t{0}},
      Challenge{patternNonce(2), patternNonce(3)},
      Challenge{},
      Response{patternNonce(4), patternNonce(5)},
      Heartbeat{42, 1'790'000'000'123, 17, 2'500},
      Heartbeat{~std::uint64_t{0}, ~std::uint64_t{0}, ~std::uint32_t{0}, ~std::uint32_t{0},
                kHeartbeatMaintenance},
      Heartbeat{},
      Goodbye{"shutting down"},
      Goodbye{""},
      Goodbye{longest},
      MemberList{},
      MemberList{{member("mx1", NodeStatus::Active, 3), member("mx2", NodeStatus::Suspect, 0),
                  member("mx3", NodeStatus::Maintenance, 9)}},
      MemberList{many},
      ProbeRequest{7, "mx2"},
      ProbeRequest{},
      ProbeRequest{~std::uint64_t{0}, longest},
      ProbeAck{7, "mx2", true},
      ProbeAck{8, "mx3", false},
      ProbeAck{~std::uint64_t{0}, longest, true},
      Hello{"mx1", "a", "prod", "eu", patternNonce(6), 5, 0xffff, ~std::uint64_t{0}},
      LimitRequest{{LimitCall{1, {item(storeKey("client_ip", "192.0.2.1"))}},
                    LimitCall{2, {item(storeKey("per_sender", "a@b"), 3, false),
                                  LimitItem{LimitOp::Refund, storeKey("r", "k"), 0, 5, 0, 0, 1, false, ""}}}}},
      LimitRequest{{LimitCall{0, {LimitItem{}}}}},
      requestOf(1, kMaxLimitItemsPerCall, largestItem),
      requestOf(kMaxLimitItemsPerFrame / kMaxLimitItemsPerCall, kMaxLimitItemsPerCall, largestItem),
      requestOf(kMaxLimitCalls, kMaxLimitItemsPerFrame / kMaxLimitCalls, largestItem),
      LimitReply{{LimitAnswer{1, CallStatus::Ok, {LimitOutcome{ItemResult::Charged, 9, 0}}},
                  LimitAnswer{2, CallStatus::Refused, {}},
                  LimitAnswer{3, CallStatus::Ok,
                              {LimitOutcome{ItemResult::Returned, 4, 0},
                               LimitOutcome{ItemResult::Denied, 0, 1'500'000'000},
                               LimitOutcome{ItemResult::NotEvaluated, 0, 0},
                               LimitOutcome{ItemResult::Refunded, 10, 0}}}}},
      LimitReply{{LimitAnswer{0, CallStatus::Ok, {LimitOutcome{}}}}},
      replyOf(kMaxLimitItemsPerFrame / kMaxLimitItemsPerCall, kMaxLimitItemsPerCall),
      replyOf(kMaxLimitCalls, kMaxLimitItemsPerFrame / kMaxLimitCalls),
      LimitReply{std::vector<LimitAnswer>(kMaxLimitCalls, LimitAnswer{5, CallStatus::Refused, {}})},
      BucketSync{},
      BucketSync{SyncReason::Replication, 17, true,
                 {bucket(storeKey("a", "b"), 0.0, 0), bucket(storeKey("c", "d"), 2.75, -250'000'000),
                  bucket(storeKey("e", "f"), std::numeric_limits<double>::denorm_min(), 1'000'000'000),
                  SyncedBucket{}}},
      largestSync(),
      RaftControl{RaftControlKind::Reply, 7, kRaftAccepted, 42, 3, 5, 19, ""},
      RaftControl{RaftControlKind::Propose, ~std::uint64_t{0}, 0, ~std::uint64_t{0}, ~std::uint64_t{0},
                  ~std::uint64_t{0}, ~std::uint64_t{0}, std::string(kMaxRaftControlText, 't')},
  };
}

// A small frame of each type, for the byte-by-byte tests.
std::vector<Message> smallMessages() {
  return {
      Hello{"mx1", "10.0.0.1:7946", "prod", "eu", patternNonce(1), 5},
      Challenge{patternNonce(2), patternNonce(3)},
      Response{patternNonce(4), patternNonce(5)},
      Heartbeat{42, 1'790'000'000'123, 17, 2'500},
      Goodbye{"bye"},
      MemberList{{member("mx1", NodeStatus::Active, 3), member("mx2", NodeStatus::Left, 1)}},
      ProbeRequest{3, "mx2"},
      ProbeAck{3, "mx2", true},
      LimitRequest{{LimitCall{1, {item(storeKey("r", "k"))}},
                    LimitCall{2, {item(storeKey("s", "k"), 2, false), item(storeKey("t", "k"))}}}},
      LimitReply{{LimitAnswer{1, CallStatus::Ok, {LimitOutcome{ItemResult::Denied, 0, 30}}},
                  LimitAnswer{2, CallStatus::Refused, {}}}},
      BucketSync{SyncReason::Handoff, 4, false,
                 {bucket(storeKey("r", "k"), 1.5, -3), bucket(storeKey("s", "k"), 0, 9)}},
      RaftControl{RaftControlKind::Change, 2, 0, 9, 1, 4, 0, "remove 7"},
  };
}

std::string frame(std::uint32_t length, std::string body) {
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((length >> shift) & 0xff));
  return out + body;
}

std::string rawFrame(std::uint8_t version, std::uint8_t type, const std::string& payload) {
  std::string body;
  body.push_back(static_cast<char>(version));
  body.push_back(static_cast<char>(type));
  body += payload;
  return frame(static_cast<std::uint32_t>(body.size()), body);
}

// An Ok decode must be canonical: re-encoding gives back exactly the consumed bytes.
void expectCanonical(std::string_view input, const DecodeResult& r) {
  ASSERT_EQ(r.status, DecodeStatus::Ok);
  EXPECT_EQ(encode(r.message), input.substr(0, r.bytes_consumed));
}

TEST(WireCodec, EveryMessageTypeRoundTripsIncludingEmptyAndMaximalFields) {
  for (const Message& m : sampleMessages()) {
    const std::string bytes = encode(m);
    ASSERT_LE(bytes.size() - kLengthPrefixBytes, kMaxFrameBytes);
    const DecodeResult r = decode(bytes);
    ASSERT_EQ(r.status, DecodeStatus::Ok) << r.detail;
    EXPECT_EQ(r.bytes_consumed, bytes.size());
    EXPECT_EQ(r.message, m);
    EXPECT_EQ(typeOf(r.message), typeOf(m));
  }
}

TEST(WireCodec, FrameHeaderIsBigEndianLengthThenVersionThenType) {
  const std::string bytes = encode(Goodbye{"ab"});
  EXPECT_EQ(bytes, std::string("\x00\x00\x00\x06\x01\x05\x00\x02" "ab", 10));
}

TEST(WireCodec, HeartbeatIntegersAreBigEndianThenTheFlagsByteThenKeysOwned) {
  const std::string bytes = encode(Heartbeat{0x0102030405060708, 0x1112131415161718, 0x21222324, 0x31323334,
                                             kHeartbeatMaintenance, 0x41424344});
  const std::string payload = bytes.substr(kLengthPrefixBytes + 2);
  EXPECT_EQ(payload, std::string("\x01\x02\x03\x04\x05\x06\x07\x08"
                                 "\x11\x12\x13\x14\x15\x16\x17\x18"
                                 "\x21\x22\x23\x24\x31\x32\x33\x34\x01"
                                 "\x41\x42\x43\x44",
                                 29));
}

TEST(WireCodec, EveryStrictPrefixOfAValidFrameNeedsMoreBytes) {
  for (const Message& m : smallMessages()) {
    const std::string bytes = encode(m);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
      const DecodeResult r = decode(std::string_view(bytes).substr(0, n));
      ASSERT_EQ(r.status, DecodeStatus::NeedMore) << "prefix " << n;
      EXPECT_GT(r.bytes_needed, 0u);
      EXPECT_LE(n + r.bytes_needed, bytes.size());
    }
  }
}

TEST(WireCodec, NeedMoreAtTheLengthPrefixReportsTheMissingPrefixBytes) {
  EXPECT_EQ(decode("").bytes_needed, 4u);
  EXPECT_EQ(decode(std::string(3, '\0')).bytes_needed, 1u);
  const std::string bytes = encode(Goodbye{"ab"});
  EXPECT_EQ(decode(std::string_view(bytes).substr(0, 4)).bytes_needed, 6u);
}

TEST(WireCodec, DecodesOnlyTheFirstFrameAndLeavesTheRest) {
  const std::string first = encode(Heartbeat{1, 2, 3, 4});
  const std::string second = encode(Goodbye{"later"});
  const std::string both = first + second;
  const DecodeResult r = decode(both);
  ASSERT_EQ(r.status, DecodeStatus::Ok);
  EXPECT_EQ(r.bytes_consumed, first.size());
  EXPECT_EQ(r.message, Message(Heartbeat{1, 2, 3, 4}));
  const DecodeResult next = decode(std::string_view(both).substr(r.bytes_consumed));
  ASSERT_EQ(next.status, DecodeStatus::Ok);
  EXPECT_EQ(next.message, Message(Goodbye{"later"}));
}

TEST(WireCodec, PayloadCutShortWithAConsistentLengthIsTruncated) {
  for (const Message& m : smallMessages()) {
    const std::string bytes = encode(m);
    const std::string body = bytes.substr(kLengthPrefixBytes);
    for (std::size_t keep = 2; keep < body.size(); ++keep) {
      const std::string cut = frame(static_cast<std::uint32_t>(keep), body.substr(0, keep));
      const DecodeResult r = decode(cut);
      ASSERT_EQ(r.status, DecodeStatus::Error) << "kept " << keep;
      EXPECT_EQ(r.error, DecodeError::Truncated) << r.detail;
    }
  }
}

TEST(WireCodec, LengthTooSmallForVersionAndTypeIsTruncated) {
  for (std::uint32_t length : {0u, 1u}) {
    const DecodeResult r = decode(frame(length, std::string(length, '\x01')));
    ASSERT_EQ(r.status, DecodeStatus::Error);
    EXPECT_EQ(r.error, DecodeError::Truncated);
  }
}

TEST(WireCodec, EverySingleByteCorruptionIsAnErrorOrACanonicalOtherMessage) {
  for (const Message& m : smallMessages()) {
    const std::string bytes = encode(m);
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      for (int flip : {0x01, 0x80, 0xff}) {
        std::string corrupt = bytes;
        corrupt[i] = static_cast<char>(corrupt[i] ^ flip);
        const DecodeResult r = decode(corrupt);
        if (r.status == DecodeStatus::Ok) {
          EXPECT_NE(r.message, m) << "byte " << i;
          expectCanonical(corrupt, r);
        } else if (r.status == DecodeStatus::Error) {
          EXPECT_FALSE(r.detail.empty());
        } else {
          EXPECT_GT(r.bytes_needed, 0u);  // the length grew past the buffer
        }
      }
    }
  }
}

TEST(WireCodec, OversizedLengthIsRefusedFromThePrefixAlone) {
  const DecodeResult r = decode(frame(static_cast<std::uint32_t>(kMaxFrameBytes + 1), ""));
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::Oversized);
  const DecodeResult huge = decode(std::string("\xff\xff\xff\xff", 4));
  ASSERT_EQ(huge.status, DecodeStatus::Error);
  EXPECT_EQ(huge.error, DecodeError::Oversized);
}

TEST(WireCodec, LengthAtTheBoundIsAcceptedAsIncomplete) {
  const DecodeResult r = decode(frame(static_cast<std::uint32_t>(kMaxFrameBytes), "\x01\x05"));
  ASSERT_EQ(r.status, DecodeStatus::NeedMore);
  EXPECT_EQ(r.bytes_needed, kMaxFrameBytes - 2);
}

TEST(WireCodec, UnknownHeartbeatFlagsAreRefused) {
  std::string bytes = encode(Heartbeat{1, 2, 3, 4, kHeartbeatMaintenance});
  bytes[bytes.size() - 5] = static_cast<char>(0x80);  // the flags byte, before keys_owned
  const DecodeResult r = decode(bytes);
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::BadValue);
  EXPECT_THROW(encode(Heartbeat{1, 2, 3, 4, 0x02}), std::invalid_argument);
}

TEST(WireCodec, UnknownMessageTypeIsRefused) {
  for (std::uint8_t type : {0, 14, 0xff}) {
    const DecodeResult r = decode(rawFrame(kProtocolVersion, type, ""));
    ASSERT_EQ(r.status, DecodeStatus::Error);
    EXPECT_EQ(r.error, DecodeError::UnknownType);
  }
}

TEST(WireCodec, OtherProtocolVersionIsRefused) {
  std::string bytes = encode(Heartbeat{});
  for (std::uint8_t version : {0, 2, 0xff}) {
    bytes[kLengthPrefixBytes] = static_cast<char>(version);
    const DecodeResult r = decode(bytes);
    ASSERT_EQ(r.status, DecodeStatus::Error);
    EXPECT_EQ(r.error, DecodeError::BadVersion);
  }
}

TEST(WireCodec, BytesAfterTheLastFieldInsideTheFrameAreRefused) {
  std::string body = encode(Goodbye{"x"}).substr(kLengthPrefixBytes) + "!";
  const DecodeResult r = decode(frame(static_cast<std::uint32_t>(body.size()), body));
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::TrailingBytes);
}

TEST(WireCodec, MemberStatusOutOfRangeIsABadValue) {
  std::string bytes = encode(MemberList{{member("a", NodeStatus::Active, 1)}});
  const std::size_t status_at = bytes.size() - 8 - 1;
  bytes[status_at] = static_cast<char>(kMaxNodeStatus + 1);
  const DecodeResult r = decode(bytes);
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::BadValue);
}

TEST(WireCodec, StringLongerThanTheLimitIsABadValue) {
  const std::string payload = std::string("\x04\x01", 2) + std::string(kMaxStringBytes + 1, 'y');
  const DecodeResult r = decode(rawFrame(kProtocolVersion, 5, payload));
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::BadValue);
}

TEST(WireCodec, MemberCountAboveTheLimitIsRefusedWithoutAllocating) {
  const std::string bytes = rawFrame(kProtocolVersion, 6, std::string("\xff\xff", 2));
  g_counted_bytes = 0;
  g_counting = true;
  const DecodeResult r = decode(bytes);
  g_counting = false;
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::BadValue);
  EXPECT_LT(g_counted_bytes.load(), 256u);  // the error text only
}

TEST(WireCodec, MemberCountTheFrameCannotHoldIsRefusedWithoutAllocating) {
  const std::string bytes =
      rawFrame(kProtocolVersion, 6, std::string("\x01\x00", 2) + std::string(20, '\0'));
  g_counted_bytes = 0;
  g_counting = true;
  const DecodeResult r = decode(bytes);
  g_counting = false;
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::Truncated);
  EXPECT_LT(g_counted_bytes.load(), 256u);
}

TEST(WireCodec, StringLengthBeyondTheFrameIsTruncatedWithoutAllocating) {
  const std::string bytes = rawFrame(kProtocolVersion, 5, std::string("\x03\xff", 2) + "abc");
  g_counted_bytes = 0;
  g_counting = true;
  const DecodeResult r = decode(bytes);
  g_counting = false;
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::Truncated);
  EXPECT_LT(g_counted_bytes.load(), 256u);
}

TEST(WireCodec, EncodingAMessageOutsideTheLimitsThrows) {
  EXPECT_THROW(encode(Goodbye{std::string(kMaxStringBytes + 1, 'z')}), std::invalid_argument);
  MemberList too_many;
  too_many.members.resize(kMaxMembers + 1);
  EXPECT_THROW(encode(too_many), std::invalid_argument);
  MemberList bad_status{{member("a", static_cast<NodeStatus>(kMaxNodeStatus + 1), 0)}};
  EXPECT_THROW(encode(bad_status), std::invalid_argument);
}

// ---- Limit and bucket-sync messages -----------------------------------------------------

constexpr std::size_t kPayloadAt = kLengthPrefixBytes + 2;  // after version and type

// The frame of `m` with its payload byte at `offset` replaced.
std::string patched(const Message& m, std::size_t offset, std::uint8_t value) {
  std::string bytes = encode(m);
  bytes.at(kPayloadAt + offset) = static_cast<char>(value);
  return bytes;
}

// The frame of `m` with the 8 payload bytes at `offset` replaced by `bits`, big-endian.
std::string patched64(const Message& m, std::size_t offset, std::uint64_t bits) {
  std::string bytes = encode(m);
  for (std::size_t i = 0; i < 8; ++i) {
    bytes.at(kPayloadAt + offset + i) = static_cast<char>((bits >> (56 - 8 * i)) & 0xff);
  }
  return bytes;
}

void expectBadValue(const std::string& bytes, const char* what) {
  const DecodeResult r = decode(bytes);
  ASSERT_EQ(r.status, DecodeStatus::Error) << what;
  EXPECT_EQ(r.error, DecodeError::BadValue) << what << ": " << r.detail;
  EXPECT_FALSE(r.detail.empty());
}

std::string u16Bytes(std::uint16_t v) {
  return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
}

// Payload offsets of the one-call, one-item request below (key "k", placement "p"):
// calls u16 @0, request_id @2, items u16 @10, op @12, key @13 (u16 + 1), placement @16
// (u16 + 1), algorithm @19, limit @20, period_ns @28, burst @36, cost @44, blocking @52.
const Message kOneItem = LimitRequest{{LimitCall{7, {LimitItem{LimitOp::Charge, "k", 1, 10, 1000, 2, 1, true, "p"}}}}};
// answers u16 @0, request_id @2, status @10, outcomes u16 @11, result @13, remaining @14,
// retry_after_ns @22.
const Message kOneOutcome = LimitReply{{LimitAnswer{7, CallStatus::Ok, {LimitOutcome{ItemResult::Denied, 0, 5}}}}};
const Message kOneRefusal = LimitReply{{LimitAnswer{7, CallStatus::Refused, {}}}};
// reason @0, sequence @1, last @9, buckets u16 @10, key @12 (u16 + 1), placement @15
// (u16 + 1), algorithm @18, limit @19, period_ns @27, burst @35, level @43, count @51,
// stamp_age_ns @59, initialised @67.
const Message kOneBucket = BucketSync{SyncReason::Replication, 3, true,
                                      {SyncedBucket{"k", 1, 10, 1000, 2, 1.5, 4, -9, true, "p"}}};

TEST(WireCodec, PayloadOffsetsUsedBelowMatchTheEncoding) {
  EXPECT_EQ(encode(kOneItem).size(), kPayloadAt + 53);
  EXPECT_EQ(encode(kOneOutcome).size(), kPayloadAt + 30);
  EXPECT_EQ(encode(kOneRefusal).size(), kPayloadAt + 13);
  EXPECT_EQ(encode(kOneBucket).size(), kPayloadAt + 68);
  // The placement follows the key, each a u16 length then the bytes.
  EXPECT_EQ(encode(kOneItem).substr(kPayloadAt + 13, 6), std::string("\0\x01k\0\x01p", 6));
  EXPECT_EQ(encode(kOneBucket).substr(kPayloadAt + 12, 6), std::string("\0\x01k\0\x01p", 6));
  // The fields after it where the offsets say: algorithm 1, blocking / initialised true.
  EXPECT_EQ(encode(kOneItem).at(kPayloadAt + 19), '\x01');
  EXPECT_EQ(encode(kOneItem).at(kPayloadAt + 52), '\x01');
  EXPECT_EQ(encode(kOneBucket).at(kPayloadAt + 18), '\x01');
  EXPECT_EQ(encode(kOneBucket).at(kPayloadAt + 67), '\x01');
  EXPECT_EQ(encode(kOneItem).substr(kPayloadAt + 20, 8), std::string("\0\0\0\0\0\0\0\x0a", 8));
  EXPECT_EQ(encode(kOneBucket).substr(kPayloadAt + 19, 8), std::string("\0\0\0\0\0\0\0\x0a", 8));
  // Negative numbers travel as two's complement: the stamp age -9.
  EXPECT_EQ(encode(kOneBucket).substr(kPayloadAt + 59, 8), std::string("\xff\xff\xff\xff\xff\xff\xff\xf7", 8));
  // The level as IEEE-754 bits: 1.5 is 0x3ff8000000000000.
  EXPECT_EQ(encode(kOneBucket).substr(kPayloadAt + 43, 8), std::string("\x3f\xf8\0\0\0\0\0\0", 8));
}

TEST(WireCodec, HelloEndsWithProtocolThenCapabilitiesBigEndian) {
  Hello hello;
  hello.incarnation = 1;
  hello.protocol = 0x0102;
  hello.capabilities = 0x1112131415161718;
  const std::string bytes = encode(hello);
  EXPECT_EQ(bytes.substr(bytes.size() - 18),
            std::string("\0\0\0\0\0\0\0\x01\x01\x02\x11\x12\x13\x14\x15\x16\x17\x18", 18));
  EXPECT_EQ(Hello{}.protocol, kProtocolVersion);
  EXPECT_EQ(Hello{}.capabilities, 0u);
}

TEST(WireCodec, UnknownCapabilityBitsAreKept) {
  Hello hello;
  hello.capabilities = kOwnCapabilities | (std::uint64_t{1} << 63);
  const DecodeResult r = decode(encode(hello));
  ASSERT_EQ(r.status, DecodeStatus::Ok);
  EXPECT_EQ(std::get<Hello>(r.message).capabilities, hello.capabilities);
}

TEST(WireCodec, TheLargestLimitRequestFitsInOneFrame) {
  // 256 calls of 2 items, every key at kMaxStringBytes and every placement at
  // kMaxPlacementBytes: both counts at their caps.
  const LimitRequest largest = requestOf(kMaxLimitCalls, kMaxLimitItemsPerFrame / kMaxLimitCalls, largestItem);
  const std::size_t item_bytes = 1 + (2 + kMaxStringBytes) + (2 + kMaxPlacementBytes) + 1 + 8 + 8 + 8 + 8 + 1;
  const std::size_t expected = kLengthPrefixBytes + 2 + 2 + kMaxLimitCalls * (8 + 2) +
                               kMaxLimitItemsPerFrame * item_bytes;
  const std::string bytes = encode(largest);
  EXPECT_EQ(bytes.size(), expected);
  EXPECT_LE(bytes.size() - kLengthPrefixBytes, kMaxFrameBytes);
  const DecodeResult r = decode(bytes);
  ASSERT_EQ(r.status, DecodeStatus::Ok) << r.detail;
  EXPECT_EQ(r.message, Message(largest));
  // The same for the largest BucketSync: kMaxSyncBuckets buckets, strings at their bounds.
  const std::size_t bucket_bytes = (2 + kMaxStringBytes) + (2 + kMaxPlacementBytes) + 1 + 8 + 8 + 8 + 8 + 8 + 8 + 1;
  const std::string sync_bytes = encode(largestSync());
  EXPECT_EQ(sync_bytes.size(), kLengthPrefixBytes + 2 + (1 + 8 + 1 + 2) + kMaxSyncBuckets * bucket_bytes);
  EXPECT_LE(sync_bytes.size() - kLengthPrefixBytes, kMaxFrameBytes);
  const DecodeResult sync = decode(sync_bytes);
  ASSERT_EQ(sync.status, DecodeStatus::Ok) << sync.detail;
  EXPECT_EQ(sync.message, Message(largestSync()));
}

TEST(WireCodec, LimitRequestOutOfRangeValuesAreBadValues) {
  expectBadValue(patched(kOneItem, 12, kMaxLimitOp + 1), "op");
  expectBadValue(patched(kOneItem, 19, kMaxAlgorithm + 1), "algorithm");
  expectBadValue(patched(kOneItem, 28, 0x80), "negative period_ns");
  expectBadValue(patched64(kOneItem, 28, ~std::uint64_t{0}), "period_ns -1");
  expectBadValue(patched(kOneItem, 52, 2), "blocking 2");
  expectBadValue(patched(kOneItem, 52, 0xff), "blocking 0xff");
  // The largest legal values decode.
  EXPECT_EQ(decode(patched(kOneItem, 19, kMaxAlgorithm)).status, DecodeStatus::Ok);
  EXPECT_EQ(decode(patched(kOneItem, 12, 1)).status, DecodeStatus::Ok);
  EXPECT_EQ(decode(patched64(kOneItem, 28, 0x7fffffffffffffff)).status, DecodeStatus::Ok);
}

TEST(WireCodec, LimitRequestCountsOutsideTheirRangesAreBadValues) {
  // No call at all, or a call without items, has nothing to evaluate.
  expectBadValue(rawFrame(kProtocolVersion, 9, u16Bytes(0)), "zero calls");
  std::string no_items = encode(kOneItem);
  no_items[kPayloadAt + 11] = 0;
  expectBadValue(no_items, "zero items");
  expectBadValue(rawFrame(kProtocolVersion, 9, u16Bytes(kMaxLimitCalls + 1)), "calls above cap");
  std::string too_many_items = encode(kOneItem);
  too_many_items[kPayloadAt + 10] = static_cast<char>((kMaxLimitItemsPerCall + 1) >> 8);
  too_many_items[kPayloadAt + 11] = static_cast<char>((kMaxLimitItemsPerCall + 1) & 0xff);
  expectBadValue(too_many_items, "items above per-call cap");
}

TEST(WireCodec, LimitRequestItemsSummedOverCallsAboveTheFrameCapAreBadValues) {
  // Four full calls and one more item: each call within kMaxLimitItemsPerCall, together
  // one above kMaxLimitItemsPerFrame. encode() refuses to build it, so splice frames.
  const LimitRequest four = requestOf(kMaxLimitItemsPerFrame / kMaxLimitItemsPerCall, kMaxLimitItemsPerCall,
                                      [](std::size_t) { return item("r"); });
  const LimitRequest one = requestOf(1, 1, [](std::size_t) { return item("r"); });
  const std::string four_bytes = encode(four);
  const std::string one_bytes = encode(one);
  std::string payload = u16Bytes(static_cast<std::uint16_t>(four.calls.size() + 1)) +
                        four_bytes.substr(kPayloadAt + 2) + one_bytes.substr(kPayloadAt + 2);
  expectBadValue(rawFrame(kProtocolVersion, 9, payload), "summed items");
  // The four calls alone, exactly at the cap, decode.
  EXPECT_EQ(decode(four_bytes).status, DecodeStatus::Ok);
}

TEST(WireCodec, LimitReplyOutOfRangeValuesAreBadValues) {
  expectBadValue(patched(kOneOutcome, 10, kMaxCallStatus + 1), "status");
  expectBadValue(patched(kOneOutcome, 13, kMaxItemResult + 1), "result");
  expectBadValue(patched(kOneOutcome, 22, 0x80), "negative retry_after_ns");
  // A refused call was not evaluated: outcomes with it are a contradiction...
  expectBadValue(patched(kOneOutcome, 10, static_cast<std::uint8_t>(CallStatus::Refused)), "refused with outcomes");
  // ...and an evaluated call has at least one item, so at least one outcome.
  expectBadValue(patched(kOneRefusal, 10, static_cast<std::uint8_t>(CallStatus::Ok)), "ok without outcomes");
  expectBadValue(rawFrame(kProtocolVersion, 10, u16Bytes(0)), "zero answers");
  expectBadValue(rawFrame(kProtocolVersion, 10, u16Bytes(kMaxLimitCalls + 1)), "answers above cap");
  std::string too_many = encode(kOneOutcome);
  too_many[kPayloadAt + 11] = static_cast<char>((kMaxLimitItemsPerCall + 1) >> 8);
  too_many[kPayloadAt + 12] = static_cast<char>((kMaxLimitItemsPerCall + 1) & 0xff);
  expectBadValue(too_many, "outcomes above per-call cap");
  EXPECT_EQ(decode(patched(kOneOutcome, 13, kMaxItemResult)).status, DecodeStatus::Ok);
}

TEST(WireCodec, LimitReplyOutcomesSummedOverAnswersAboveTheFrameCapAreBadValues) {
  const LimitReply four = replyOf(kMaxLimitItemsPerFrame / kMaxLimitItemsPerCall, kMaxLimitItemsPerCall);
  const std::string four_bytes = encode(four);
  const std::string one_bytes = encode(replyOf(1, 1));
  const std::string payload = u16Bytes(static_cast<std::uint16_t>(four.answers.size() + 1)) +
                              four_bytes.substr(kPayloadAt + 2) + one_bytes.substr(kPayloadAt + 2);
  expectBadValue(rawFrame(kProtocolVersion, 10, payload), "summed outcomes");
  // The four answers alone, exactly at the cap, decode.
  EXPECT_EQ(decode(four_bytes).status, DecodeStatus::Ok);
}

TEST(WireCodec, BucketSyncOutOfRangeValuesAreBadValues) {
  expectBadValue(patched(kOneBucket, 0, kMaxSyncReason + 1), "reason");
  expectBadValue(patched(kOneBucket, 9, 2), "last 2");
  expectBadValue(patched(kOneBucket, 18, kMaxAlgorithm + 1), "algorithm");
  expectBadValue(patched(kOneBucket, 27, 0x80), "negative period_ns");
  expectBadValue(patched(kOneBucket, 67, 2), "initialised 2");
  expectBadValue(rawFrame(kProtocolVersion, 11, std::string(10, '\0') + u16Bytes(kMaxSyncBuckets + 1)),
                 "buckets above cap");
  const double refused_levels[] = {std::numeric_limits<double>::quiet_NaN(),
                                   std::numeric_limits<double>::signaling_NaN(),
                                   std::numeric_limits<double>::infinity(),
                                   -std::numeric_limits<double>::infinity(),
                                   -1.0,
                                   -std::numeric_limits<double>::denorm_min(),
                                   -0.0};
  for (double level : refused_levels) {
    expectBadValue(patched64(kOneBucket, 43, std::bit_cast<std::uint64_t>(level)), "level");
  }
  // Any other NaN payload too.
  expectBadValue(patched64(kOneBucket, 43, 0x7ff0000000000001), "NaN payload");
  // A negative stamp age is legal: a gcra TAT can lie ahead of now.
  const DecodeResult r = decode(patched64(kOneBucket, 59, std::bit_cast<std::uint64_t>(
                                                             std::numeric_limits<std::int64_t>::min())));
  ASSERT_EQ(r.status, DecodeStatus::Ok) << r.detail;
  EXPECT_EQ(std::get<BucketSync>(r.message).buckets.at(0).stamp_age_ns,
            std::numeric_limits<std::int64_t>::min());
}

TEST(WireCodec, NegativeZeroLevelIsWrittenAsZero) {
  BucketSync m = std::get<BucketSync>(kOneBucket);
  m.buckets[0].level = -0.0;
  const std::string bytes = encode(m);
  EXPECT_EQ(bytes.substr(kPayloadAt + 43, 8), std::string(8, '\0'));
  const DecodeResult r = decode(bytes);
  ASSERT_EQ(r.status, DecodeStatus::Ok);
  EXPECT_FALSE(std::signbit(std::get<BucketSync>(r.message).buckets.at(0).level));
  expectCanonical(bytes, r);
}

// Placements as [affinity] method = "source_ip" builds them, none, and one at the bound.
std::vector<std::string> placements() {
  return {"", "ip:192.0.2.1", "ip:2001:db8::1", std::string(kMaxPlacementBytes, 'p')};
}

TEST(WireCodec, PlacementRoundTripsRightAfterTheKeyUpToItsBound) {
  const std::string key = storeKey("client_ip", "192.0.2.1");
  // Payload offsets of the key: see kOneItem and kOneBucket.
  const std::size_t item_key_at = 13;
  const std::size_t bucket_key_at = 12;
  for (const std::string& placement : placements()) {
    SCOPED_TRACE("placement of " + std::to_string(placement.size()) + " bytes");
    const std::string key_then_placement =
        u16Bytes(static_cast<std::uint16_t>(key.size())) + key +
        u16Bytes(static_cast<std::uint16_t>(placement.size())) + placement;

    LimitItem one = item(key);
    one.placement = placement;
    const LimitRequest request{{LimitCall{7, {one}}}};
    const std::string request_bytes = encode(request);
    EXPECT_EQ(request_bytes.substr(kPayloadAt + item_key_at, key_then_placement.size()), key_then_placement);
    const DecodeResult r = decode(request_bytes);
    ASSERT_EQ(r.status, DecodeStatus::Ok) << r.detail;
    EXPECT_EQ(r.bytes_consumed, request_bytes.size());
    EXPECT_EQ(std::get<LimitRequest>(r.message).calls.at(0).items.at(0).placement, placement);
    EXPECT_EQ(r.message, Message(request));

    SyncedBucket synced = bucket(key, 2.5, 1'000);
    synced.placement = placement;
    const BucketSync sync{SyncReason::Handoff, 9, true, {synced}};
    const std::string sync_bytes = encode(sync);
    EXPECT_EQ(sync_bytes.substr(kPayloadAt + bucket_key_at, key_then_placement.size()), key_then_placement);
    const DecodeResult b = decode(sync_bytes);
    ASSERT_EQ(b.status, DecodeStatus::Ok) << b.detail;
    EXPECT_EQ(b.bytes_consumed, sync_bytes.size());
    EXPECT_EQ(std::get<BucketSync>(b.message).buckets.at(0).placement, placement);
    EXPECT_EQ(b.message, Message(sync));
  }
}

// The frame of `m`, whose placement (u16 length at payload offset `placement_at`) is
// kMaxPlacementBytes long, with one byte more: encode() refuses to build it.
std::string withPlacementOneByteLonger(const Message& m, std::size_t placement_at) {
  std::string payload = encode(m).substr(kPayloadAt);
  EXPECT_EQ(payload.substr(placement_at, 2), u16Bytes(kMaxPlacementBytes));
  payload.replace(placement_at, 2, u16Bytes(kMaxPlacementBytes + 1));
  payload.insert(placement_at + 2, "p");
  return rawFrame(kProtocolVersion, static_cast<std::uint8_t>(typeOf(m)), payload);
}

TEST(WireCodec, PlacementLongerThanItsBoundIsABadValueAndEncodeRefusesIt) {
  // kMaxPlacementBytes, not kMaxStringBytes, bounds it: 65 bytes is a legal key length.
  static_assert(kMaxPlacementBytes + 1 < kMaxStringBytes);
  LimitItem longest = std::get<LimitRequest>(kOneItem).calls.at(0).items.at(0);
  longest.placement = std::string(kMaxPlacementBytes, 'p');
  const LimitRequest request{{LimitCall{7, {longest}}}};
  const std::string long_request = withPlacementOneByteLonger(request, 16);
  expectBadValue(long_request, "limit item placement of 65 bytes");
  EXPECT_NE(decode(long_request).detail.find("placement"), std::string::npos);

  SyncedBucket longest_bucket = std::get<BucketSync>(kOneBucket).buckets.at(0);
  longest_bucket.placement = std::string(kMaxPlacementBytes, 'p');
  const BucketSync sync{SyncReason::Replication, 3, true, {longest_bucket}};
  const std::string long_sync = withPlacementOneByteLonger(sync, 15);
  expectBadValue(long_sync, "synced bucket placement of 65 bytes");
  EXPECT_NE(decode(long_sync).detail.find("placement"), std::string::npos);

  // Encoding: 64 bytes go, 65 throw, for both messages.
  EXPECT_NO_THROW(encode(request));
  EXPECT_NO_THROW(encode(sync));
  LimitItem too_long = longest;
  too_long.placement.push_back('p');
  EXPECT_THROW(encode(LimitRequest{{LimitCall{7, {too_long}}}}), std::invalid_argument);
  SyncedBucket too_long_bucket = longest_bucket;
  too_long_bucket.placement.push_back('p');
  EXPECT_THROW(encode(BucketSync{SyncReason::Replication, 3, true, {too_long_bucket}}), std::invalid_argument);
  // Also when the item is not the first of its call or the bucket not the first of its sync.
  EXPECT_THROW(encode(LimitRequest{{LimitCall{7, {longest, too_long}}}}), std::invalid_argument);
  EXPECT_THROW(encode(BucketSync{SyncReason::Handoff, 3, false, {longest_bucket, too_long_bucket}}),
               std::invalid_argument);
}

TEST(WireCodec, LimitCountsAboveTheCapAreRefusedWithoutAllocating) {
  for (auto [type, payload] : {std::pair{std::uint8_t{9}, u16Bytes(0xffff)},
                               std::pair{std::uint8_t{10}, u16Bytes(0xffff)},
                               std::pair{std::uint8_t{11}, std::string(10, '\0') + u16Bytes(0xffff)}}) {
    const std::string bytes = rawFrame(kProtocolVersion, type, payload);
    g_counted_bytes = 0;
    g_counting = true;
    const DecodeResult r = decode(bytes);
    g_counting = false;
    ASSERT_EQ(r.status, DecodeStatus::Error);
    EXPECT_EQ(r.error, DecodeError::BadValue);
    EXPECT_LT(g_counted_bytes.load(), 256u) << int(type);
  }
}

TEST(WireCodec, LimitCountsTheFrameCannotHoldAreRefusedWithoutAllocating) {
  // Counts within their caps, in frames far too short for that many elements.
  for (auto [type, payload] : {std::pair{std::uint8_t{9}, u16Bytes(kMaxLimitCalls) + std::string(40, '\0')},
                               std::pair{std::uint8_t{10}, u16Bytes(kMaxLimitCalls) + std::string(40, '\0')},
                               std::pair{std::uint8_t{11}, std::string(10, '\0') + u16Bytes(kMaxSyncBuckets) +
                                                               std::string(40, '\0')}}) {
    const std::string bytes = rawFrame(kProtocolVersion, type, payload);
    g_counted_bytes = 0;
    g_counting = true;
    const DecodeResult r = decode(bytes);
    g_counting = false;
    ASSERT_EQ(r.status, DecodeStatus::Error);
    EXPECT_EQ(r.error, DecodeError::Truncated) << r.detail;
    EXPECT_LT(g_counted_bytes.load(), 256u) << int(type);
  }
}

TEST(WireCodec, EncodingALimitMessageOutsideTheCapsThrows) {
  auto some = [](std::size_t) { return item("r"); };
  EXPECT_THROW(encode(LimitRequest{}), std::invalid_argument);
  EXPECT_THROW(encode(LimitRequest{{LimitCall{1, {}}}}), std::invalid_argument);
  EXPECT_THROW(encode(requestOf(kMaxLimitCalls + 1, 1, some)), std::invalid_argument);
  EXPECT_THROW(encode(requestOf(1, kMaxLimitItemsPerCall + 1, some)), std::invalid_argument);
  EXPECT_THROW(encode(requestOf(kMaxLimitItemsPerFrame / kMaxLimitItemsPerCall + 1, kMaxLimitItemsPerCall, some)),
               std::invalid_argument);
  EXPECT_NO_THROW(encode(requestOf(kMaxLimitItemsPerFrame / kMaxLimitItemsPerCall, kMaxLimitItemsPerCall, some)));
  const auto one = [](LimitItem i) { return LimitRequest{{LimitCall{1, {std::move(i)}}}}; };
  LimitItem bad = item("r");
  bad.op = static_cast<LimitOp>(kMaxLimitOp + 1);
  EXPECT_THROW(encode(one(bad)), std::invalid_argument);
  bad = item("r");
  bad.algorithm = kMaxAlgorithm + 1;
  EXPECT_THROW(encode(one(bad)), std::invalid_argument);
  bad = item("r");
  bad.period_ns = -1;
  EXPECT_THROW(encode(one(bad)), std::invalid_argument);
  EXPECT_THROW(encode(one(item(std::string(kMaxStringBytes + 1, 'k')))), std::invalid_argument);

  EXPECT_THROW(encode(LimitReply{}), std::invalid_argument);
  EXPECT_THROW(encode(replyOf(kMaxLimitCalls + 1, 1)), std::invalid_argument);
  EXPECT_THROW(encode(replyOf(1, kMaxLimitItemsPerCall + 1)), std::invalid_argument);
  EXPECT_THROW(encode(replyOf(kMaxLimitItemsPerFrame / kMaxLimitItemsPerCall + 1, kMaxLimitItemsPerCall)),
               std::invalid_argument);
  EXPECT_THROW(encode(LimitReply{{LimitAnswer{1, CallStatus::Ok, {}}}}), std::invalid_argument);
  EXPECT_THROW(encode(LimitReply{{LimitAnswer{1, CallStatus::Refused, {LimitOutcome{}}}}}), std::invalid_argument);
  EXPECT_THROW(encode(LimitReply{{LimitAnswer{1, static_cast<CallStatus>(2), {}}}}), std::invalid_argument);
  EXPECT_THROW(encode(LimitReply{{LimitAnswer{1, CallStatus::Ok, {LimitOutcome{static_cast<ItemResult>(kMaxItemResult + 1), 0, 0}}}}}),
               std::invalid_argument);
  EXPECT_THROW(encode(LimitReply{{LimitAnswer{1, CallStatus::Ok, {LimitOutcome{ItemResult::Denied, 0, -1}}}}}),
               std::invalid_argument);

  BucketSync too_many;
  too_many.buckets.resize(kMaxSyncBuckets + 1);
  EXPECT_THROW(encode(too_many), std::invalid_argument);
  EXPECT_THROW(encode(BucketSync{static_cast<SyncReason>(2), 0, true, {}}), std::invalid_argument);
  for (double level : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(), -0.5}) {
    EXPECT_THROW(encode(BucketSync{SyncReason::Replication, 0, true, {bucket("k", level, 0)}}), std::invalid_argument);
  }
  SyncedBucket bad_bucket = bucket("k", 1, 0);
  bad_bucket.algorithm = kMaxAlgorithm + 1;
  EXPECT_THROW(encode(BucketSync{SyncReason::Replication, 0, true, {bad_bucket}}), std::invalid_argument);
  bad_bucket = bucket("k", 1, 0);
  bad_bucket.period_ns = -1;
  EXPECT_THROW(encode(BucketSync{SyncReason::Replication, 0, true, {bad_bucket}}), std::invalid_argument);
  EXPECT_THROW(encode(BucketSync{SyncReason::Replication, 0, true,
                                 {bucket(std::string(kMaxStringBytes + 1, 'k'), 1, 0)}}),
               std::invalid_argument);
}

// The fuzz seeds are frames a link could carry: when the format changes they must be
// rewritten, or the fuzzer starts from inputs the decoder refuses at the first field.
// Inputs kept because they once crashed a target (regress_*) may be malformed.
TEST(WireCodec, EveryFuzzSeedDecodesToItsLastByte) {
  std::set<MessageType> seen;
  std::size_t files = 0;
  for (const char* corpus : {"wire", "handshake"}) {
    const std::filesystem::path dir = std::filesystem::path(ZETIAN_SOURCE_DIR) / "tests/fuzz/corpus" / corpus;
    ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      if (!entry.is_regular_file() || entry.path().filename().string().starts_with("regress_")) continue;
      SCOPED_TRACE(entry.path().string());
      ++files;
      std::ifstream in(entry.path(), std::ios::binary);
      ASSERT_TRUE(in);
      const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
      ASSERT_FALSE(bytes.empty());
      std::string_view rest = bytes;
      while (!rest.empty()) {
        const DecodeResult r = decode(rest);
        ASSERT_EQ(r.status, DecodeStatus::Ok) << "at byte " << bytes.size() - rest.size() << ": " << r.detail;
        expectCanonical(rest, r);
        seen.insert(typeOf(r.message));
        rest.remove_prefix(r.bytes_consumed);
      }
    }
  }
  EXPECT_GE(files, 16u);
  for (MessageType type : {MessageType::LimitRequest, MessageType::LimitReply, MessageType::BucketSync,
                           MessageType::RaftControl}) {
    EXPECT_TRUE(seen.contains(type)) << "no seed frame of type " << static_cast<int>(type);
  }
}

TEST(WireCodec, EveryDecodeErrorHasAName) {
  for (DecodeError e : {DecodeError::BadVersion, DecodeError::UnknownType, DecodeError::Oversized,
                        DecodeError::Truncated, DecodeError::TrailingBytes, DecodeError::BadValue}) {
    EXPECT_FALSE(nameOf(e).empty());
  }
}

}  // namespace
}  // namespace zetian::cluster::wire
