#include "cluster/wire/codec.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

// Counts bytes allocated while a test has it switched on, to show that the decoder does
// not reserve for counts the frame cannot hold. GCC 12 sees the inlined replacement
// pair (malloc in new, free in delete) as a mismatch; it is the matching pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<bool> g_counting{false};
std::atomic<std::size_t> g_counted_bytes{0};
}  // namespace

void* operator new(std::size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_counted_bytes += size;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

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

TEST(WireCodec, HeartbeatIntegersAreBigEndianThenTheFlagsByte) {
  const std::string bytes =
      encode(Heartbeat{0x0102030405060708, 0x1112131415161718, 0x21222324, 0x31323334, kHeartbeatMaintenance});
  const std::string payload = bytes.substr(kLengthPrefixBytes + 2);
  EXPECT_EQ(payload, std::string("\x01\x02\x03\x04\x05\x06\x07\x08"
                                 "\x11\x12\x13\x14\x15\x16\x17\x18"
                                 "\x21\x22\x23\x24\x31\x32\x33\x34\x01",
                                 25));
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
  bytes.back() = static_cast<char>(0x80);
  const DecodeResult r = decode(bytes);
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::BadValue);
  EXPECT_THROW(encode(Heartbeat{1, 2, 3, 4, 0x02}), std::invalid_argument);
}

TEST(WireCodec, UnknownMessageTypeIsRefused) {
  for (std::uint8_t type : {0, 12, 0xff}) {
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

TEST(WireCodec, EveryDecodeErrorHasAName) {
  for (DecodeError e : {DecodeError::BadVersion, DecodeError::UnknownType, DecodeError::Oversized,
                        DecodeError::Truncated, DecodeError::TrailingBytes, DecodeError::BadValue}) {
    EXPECT_FALSE(nameOf(e).empty());
  }
}

}  // namespace
}  // namespace zetian::cluster::wire
