// RaftControl (link message type 13): the Raft drivers' own messages beside the cores'
// RaftFrames (cluster/wire/codec.h).
#include "cluster/wire/codec.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "tests/unit/cluster/allocation_counter.h"

namespace zetian::cluster::wire {
namespace {

constexpr std::size_t kFixedPayloadBytes = 1 + 8 + 1 + 8 + 8 + 8 + 8 + 4;

// One message of each kind, with the fields that kind uses.
std::vector<RaftControl> everyKind() {
  return {
      RaftControl{RaftControlKind::Status, 3, kRaftInCluster | kRaftBootstrap, 0, 5, 12, 3, ""},
      RaftControl{RaftControlKind::Join, 0x8000000000000001, 0, 0, 0, 0, 0, ""},
      RaftControl{RaftControlKind::Propose, 4, 0, 77, 0, 0, 0, std::string("ZPOL\x01\0\xff", 7)},
      RaftControl{RaftControlKind::Change, 4, 0, 78, 0, 0, 0, "remove 7"},
      RaftControl{RaftControlKind::Transfer, 4, 0, 79, 0, 0, 9, ""},
      RaftControl{RaftControlKind::Reply, 5, kRaftAccepted, 77, 5, 12, 310, ""},
      RaftControl{RaftControlKind::Reply, 5, 0, 78, 0, 12, 0, "no quorum: 1 of 3 voters reachable"},
      RaftControl{RaftControlKind::Read, 6, 0, 80, 0, 0, 0, ""},
  };
}

std::string frameOf(const std::string& payload, std::uint8_t type = 13) {
  std::string out;
  const std::size_t length = payload.size() + 2;
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((length >> shift) & 0xff));
  out.push_back(static_cast<char>(kProtocolVersion));
  out.push_back(static_cast<char>(type));
  return out + payload;
}

// The payload of a message, as codec.h lays it out.
std::string payloadOf(const RaftControl& m) { return encode(m).substr(kLengthPrefixBytes + 2); }

DecodeResult refused(const std::string& payload) {
  DecodeResult r = decode(frameOf(payload));
  EXPECT_EQ(r.status, DecodeStatus::Error);
  EXPECT_FALSE(r.detail.empty());
  return r;
}

TEST(RaftControlWire, EveryKindRoundTrips) {
  for (const RaftControl& m : everyKind()) {
    const std::string bytes = encode(m);
    const DecodeResult r = decode(bytes);
    ASSERT_EQ(r.status, DecodeStatus::Ok) << r.detail;
    EXPECT_EQ(r.bytes_consumed, bytes.size());
    EXPECT_EQ(typeOf(r.message), MessageType::RaftControl);
    EXPECT_EQ(std::get<RaftControl>(r.message), m);
  }
}

TEST(RaftControlWire, FieldsAreBigEndianInTheDocumentedOrder) {
  const RaftControl m{RaftControlKind::Reply, 0x0102030405060708, kRaftAccepted, 0x1112131415161718,
                      0x2122232425262728,      0x3132333435363738, 0x4142434445464748, "no"};
  const std::string expected = std::string("\x05", 1) + "\x01\x02\x03\x04\x05\x06\x07\x08" + "\x04" +
                               "\x11\x12\x13\x14\x15\x16\x17\x18" + "\x21\x22\x23\x24\x25\x26\x27\x28" +
                               "\x31\x32\x33\x34\x35\x36\x37\x38" + "\x41\x42\x43\x44\x45\x46\x47\x48" +
                               std::string("\0\0\0\x02", 4) + "no";
  EXPECT_EQ(payloadOf(m), expected);
  EXPECT_EQ(encode(m), frameOf(expected));
  EXPECT_EQ(expected.size(), kFixedPayloadBytes + 2);
}

TEST(RaftControlWire, TheLongestTextFitsInOneFrame) {
  const RaftControl m{RaftControlKind::Propose, 1, 0, 1, 0, 0, 0, std::string(kMaxRaftControlText, 'p')};
  const std::string bytes = encode(m);
  EXPECT_LE(bytes.size() - kLengthPrefixBytes, kMaxFrameBytes);
  const DecodeResult r = decode(bytes);
  ASSERT_EQ(r.status, DecodeStatus::Ok) << r.detail;
  EXPECT_EQ(std::get<RaftControl>(r.message), m);
}

TEST(RaftControlWire, EveryTruncationIsRefused) {
  for (const RaftControl& m : everyKind()) {
    const std::string payload = payloadOf(m);
    for (std::size_t n = 0; n < payload.size(); ++n) {
      const DecodeResult r = refused(payload.substr(0, n));
      EXPECT_EQ(r.error, DecodeError::Truncated) << n << ": " << r.detail;
    }
  }
}

TEST(RaftControlWire, TrailingBytesAreRefused) {
  const DecodeResult r = refused(payloadOf(everyKind()[0]) + "x");
  EXPECT_EQ(r.error, DecodeError::TrailingBytes);
}

TEST(RaftControlWire, EachBadValueIsRefused) {
  const std::string good = payloadOf(RaftControl{RaftControlKind::Status, 3, kRaftInCluster, 0, 5, 12, 3, "t"});
  for (std::uint8_t kind : {7, 8, 0x80, 0xff}) {
    std::string bad = good;
    bad[0] = static_cast<char>(kind);
    const DecodeResult r = refused(bad);
    EXPECT_EQ(r.error, DecodeError::BadValue) << int{kind};
    EXPECT_NE(r.detail.find("raft control kind"), std::string::npos) << r.detail;
  }
  std::string zero_id = good;
  for (std::size_t i = 1; i <= 8; ++i) zero_id[i] = '\0';
  const DecodeResult no_sender = refused(zero_id);
  EXPECT_EQ(no_sender.error, DecodeError::BadValue);
  EXPECT_NE(no_sender.detail.find("raft id 0"), std::string::npos) << no_sender.detail;
  for (unsigned bit = 8; bit <= 0x80; bit <<= 1) {
    std::string bad = good;
    bad[9] = static_cast<char>(bit | kRaftAccepted);
    const DecodeResult r = refused(bad);
    EXPECT_EQ(r.error, DecodeError::BadValue) << bit;
    EXPECT_NE(r.detail.find("unknown raft control flags"), std::string::npos) << r.detail;
  }
}

TEST(RaftControlWire, ATextLongerThanTheLimitIsRefusedWithoutAllocating) {
  const std::string head = payloadOf(everyKind()[0]).substr(0, kFixedPayloadBytes - 4);
  const std::size_t too_long = kMaxRaftControlText + 1;
  std::string length;
  for (int shift = 24; shift >= 0; shift -= 8) length.push_back(static_cast<char>((too_long >> shift) & 0xff));
  const std::string frame = frameOf(head + length);
  g_counted_bytes = 0;
  g_counting = true;
  const DecodeResult r = decode(frame);
  g_counting = false;
  ASSERT_EQ(r.status, DecodeStatus::Error);
  EXPECT_EQ(r.error, DecodeError::BadValue);
  EXPECT_NE(r.detail.find("raft control text length"), std::string::npos) << r.detail;
  EXPECT_LT(g_counted_bytes.load(), 4096u);

  // Within the limit but beyond the frame: cut short, and nothing reserved for it.
  const std::string beyond = frameOf(head + std::string("\0\x0f\0\0", 4) + "abc");
  g_counted_bytes = 0;
  g_counting = true;
  const DecodeResult cut = decode(beyond);
  g_counting = false;
  ASSERT_EQ(cut.status, DecodeStatus::Error);
  EXPECT_EQ(cut.error, DecodeError::Truncated);
  EXPECT_LT(g_counted_bytes.load(), 4096u);
}

TEST(RaftControlWire, EncodeRefusesWhatDecodeWouldRefuse) {
  RaftControl m = everyKind()[2];
  m.raft_id = 0;
  EXPECT_THROW(encode(m), std::invalid_argument);
  m = everyKind()[2];
  m.text.assign(kMaxRaftControlText + 1, 't');
  EXPECT_THROW(encode(m), std::invalid_argument);
  m = everyKind()[2];
  m.kind = static_cast<RaftControlKind>(kMaxRaftControlKind + 1);
  EXPECT_THROW(encode(m), std::invalid_argument);
  m = everyKind()[2];
  m.flags = 8;
  EXPECT_THROW(encode(m), std::invalid_argument);
}

TEST(RaftControlWire, FlagsAndKindsHaveTheValuesOfTheContract) {
  // Peers of other builds read these numbers: they must never move.
  EXPECT_EQ(static_cast<int>(MessageType::RaftControl), 13);
  EXPECT_EQ(static_cast<int>(RaftControlKind::Status), 0);
  EXPECT_EQ(static_cast<int>(RaftControlKind::Join), 1);
  EXPECT_EQ(static_cast<int>(RaftControlKind::Propose), 2);
  EXPECT_EQ(static_cast<int>(RaftControlKind::Change), 3);
  EXPECT_EQ(static_cast<int>(RaftControlKind::Transfer), 4);
  EXPECT_EQ(static_cast<int>(RaftControlKind::Reply), 5);
  EXPECT_EQ(static_cast<int>(RaftControlKind::Read), 6);
  EXPECT_EQ(kRaftInCluster, 1);
  EXPECT_EQ(kRaftBootstrap, 2);
  EXPECT_EQ(kRaftAccepted, 4);
  EXPECT_EQ(kRaftControlFlagsKnown, 7);
}

}  // namespace
}  // namespace zetian::cluster::wire
