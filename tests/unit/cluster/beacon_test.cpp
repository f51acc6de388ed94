#include "cluster/discovery/beacon.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <variant>

#include "cluster/wire/handshake.h"

namespace zetian::cluster::discovery {
namespace {

const std::string kSecret = "correct horse battery staple, 32+";
const std::string kCluster = "prod";
constexpr std::uint64_t kNowMs = 1'700'000'000'000;
constexpr std::uint64_t kSkewMs = 60'000;

Beacon sampleBeacon() {
  Beacon beacon;
  beacon.cluster_id = kCluster;
  beacon.node_id = "mx1";
  beacon.address = "10.0.0.1:7946";
  beacon.sent_at_ms = kNowMs;
  for (std::size_t i = 0; i < beacon.nonce.size(); ++i) {
    beacon.nonce[i] = static_cast<std::uint8_t>(0xa0 + i);
  }
  return beacon;
}

std::variant<Beacon, BeaconError> decodeOurs(std::string_view datagram,
                                             std::uint64_t now_ms = kNowMs) {
  return decodeBeacon(datagram, kSecret, kCluster, now_ms, kSkewMs);
}

// The error, or a test failure naming the beacon that was wrongly accepted.
BeaconError refusal(const std::variant<Beacon, BeaconError>& result) {
  if (const auto* error = std::get_if<BeaconError>(&result)) return *error;
  ADD_FAILURE() << "accepted a beacon from " << std::get<Beacon>(result).node_id;
  return BeaconError::Short;
}

TEST(Beacon, RoundTripsEveryField) {
  const Beacon sent = sampleBeacon();
  const auto received = decodeOurs(encodeBeacon(sent, kSecret));
  ASSERT_TRUE(std::holds_alternative<Beacon>(received)) << nameOf(refusal(received));
  EXPECT_EQ(std::get<Beacon>(received), sent);
}

TEST(Beacon, RoundTripsTheLargestBeaconAndItFitsTheSizeLimit) {
  Beacon sent = sampleBeacon();
  sent.cluster_id = std::string(kMaxBeaconStringBytes, 'c');
  sent.node_id = std::string(kMaxBeaconStringBytes, 'n');
  sent.address = std::string(kMaxBeaconStringBytes, 'a');
  const std::string datagram = encodeBeacon(sent, kSecret);
  EXPECT_LE(datagram.size(), kMaxBeaconBytes);
  const auto received = decodeBeacon(datagram, kSecret, sent.cluster_id, kNowMs, kSkewMs);
  ASSERT_TRUE(std::holds_alternative<Beacon>(received));
  EXPECT_EQ(std::get<Beacon>(received), sent);
}

TEST(Beacon, AnEmptyClusterIdIsAllowed) {
  Beacon sent = sampleBeacon();
  sent.cluster_id.clear();
  const auto received = decodeBeacon(encodeBeacon(sent, kSecret), kSecret, "", kNowMs, kSkewMs);
  ASSERT_TRUE(std::holds_alternative<Beacon>(received));
  EXPECT_EQ(std::get<Beacon>(received), sent);
}

TEST(Beacon, EverySingleBitFlipIsRefused) {
  const std::string datagram = encodeBeacon(sampleBeacon(), kSecret);
  for (std::size_t byte = 0; byte < datagram.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string flipped = datagram;
      flipped[byte] = static_cast<char>(flipped[byte] ^ (1 << bit));
      const BeaconError error = refusal(decodeOurs(flipped));
      const BeaconError expected =
          byte < kBeaconMagic.size() ? BeaconError::BadMagic : BeaconError::BadMac;
      EXPECT_EQ(error, expected) << "byte " << byte << " bit " << bit;
    }
  }
}

TEST(Beacon, AWrongSecretIsABadMac) {
  const std::string datagram = encodeBeacon(sampleBeacon(), "another secret, just as long");
  EXPECT_EQ(refusal(decodeOurs(datagram)), BeaconError::BadMac);
  EXPECT_EQ(
      refusal(decodeBeacon(encodeBeacon(sampleBeacon(), kSecret), "", kCluster, kNowMs, kSkewMs)),
      BeaconError::BadMac);
}

TEST(Beacon, AnotherClusterWithTheSameSecretIsWrongCluster) {
  Beacon other = sampleBeacon();
  other.cluster_id = "staging";
  EXPECT_EQ(refusal(decodeOurs(encodeBeacon(other, kSecret))), BeaconError::WrongCluster);
  other.cluster_id = "prod ";  // no prefix or padding games
  EXPECT_EQ(refusal(decodeOurs(encodeBeacon(other, kSecret))), BeaconError::WrongCluster);
}

TEST(Beacon, BeaconsOlderOrNewerThanTheSkewAreStale) {
  const std::string datagram = encodeBeacon(sampleBeacon(), kSecret);
  // Exactly at the bound is still fresh, one millisecond beyond is not, either way.
  EXPECT_TRUE(std::holds_alternative<Beacon>(decodeOurs(datagram, kNowMs + kSkewMs)));
  EXPECT_TRUE(std::holds_alternative<Beacon>(decodeOurs(datagram, kNowMs - kSkewMs)));
  EXPECT_EQ(refusal(decodeOurs(datagram, kNowMs + kSkewMs + 1)), BeaconError::Stale);
  EXPECT_EQ(refusal(decodeOurs(datagram, kNowMs - kSkewMs - 1)), BeaconError::Stale);
}

TEST(Beacon, TimesAtTheEndsOfTheClockDoNotWrapAround) {
  Beacon beacon = sampleBeacon();
  beacon.sent_at_ms = UINT64_MAX;
  EXPECT_EQ(refusal(decodeOurs(encodeBeacon(beacon, kSecret), 0)), BeaconError::Stale);
  beacon.sent_at_ms = 0;
  EXPECT_EQ(refusal(decodeOurs(encodeBeacon(beacon, kSecret), UINT64_MAX)), BeaconError::Stale);
  EXPECT_TRUE(std::holds_alternative<Beacon>(decodeOurs(encodeBeacon(beacon, kSecret), 0)));
}

TEST(Beacon, EveryTruncationIsRefused) {
  const std::string datagram = encodeBeacon(sampleBeacon(), kSecret);
  for (std::size_t length = 0; length < datagram.size(); ++length) {
    // A copy of exactly `length` bytes, so ASan would catch a read beyond it.
    const std::string cut = datagram.substr(0, length);
    const BeaconError error = refusal(decodeOurs(cut));
    if (length < kMinBeaconBytes) {
      EXPECT_EQ(error, BeaconError::Short) << "length " << length;
    } else {
      EXPECT_EQ(error, BeaconError::BadMac) << "length " << length;
    }
  }
}

TEST(Beacon, TrailingBytesAndOversizedDatagramsAreRefused) {
  const std::string datagram = encodeBeacon(sampleBeacon(), kSecret);
  EXPECT_EQ(refusal(decodeOurs(datagram + '\0')), BeaconError::BadMac);
  EXPECT_EQ(refusal(decodeOurs(std::string(kMaxBeaconBytes + 1, 'Z'))), BeaconError::BadField);
}

TEST(Beacon, OtherTrafficOnTheGroupIsBadMagic) {
  EXPECT_EQ(refusal(decodeOurs(std::string(200, 'x'))), BeaconError::BadMagic);
  std::string next_version = encodeBeacon(sampleBeacon(), kSecret);
  next_version[3] = '2';
  EXPECT_EQ(refusal(decodeOurs(next_version)), BeaconError::BadMagic);
}

// Builds a datagram the way beacon.h documents it, from the raw bytes before the MAC, so
// tests can sign what encodeBeacon() would never produce.
std::string signAsDocumented(const std::string& signed_part, const std::string& secret = kSecret) {
  const std::string label = "zetian-v1 beacon";
  std::string mac_input;
  mac_input.push_back(static_cast<char>(label.size() >> 8));
  mac_input.push_back(static_cast<char>(label.size() & 0xff));
  mac_input += label + signed_part;
  const wire::Mac mac = wire::hmacSha256(secret, mac_input);
  return signed_part + std::string(reinterpret_cast<const char*>(mac.data()), mac.size());
}

std::string lengthPrefixed(const std::string& value) {
  return std::string(1, static_cast<char>(value.size())) + value;
}

// "ZTB1", three strings, the time and the nonce of sampleBeacon(): the signed part.
std::string sampleSignedPart(const std::string& cluster, const std::string& node,
                             const std::string& address) {
  std::string out =
      "ZTB1" + lengthPrefixed(cluster) + lengthPrefixed(node) + lengthPrefixed(address);
  for (int shift = 56; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((kNowMs >> shift) & 0xff));
  for (auto byte : sampleBeacon().nonce) out.push_back(static_cast<char>(byte));
  return out;
}

TEST(Beacon, TheEncodingIsTheDocumentedFormat) {
  EXPECT_EQ(encodeBeacon(sampleBeacon(), kSecret),
            signAsDocumented(sampleSignedPart(kCluster, "mx1", "10.0.0.1:7946")));
}

// A sender with the secret whose lengths do not match its bytes (a bug, or a future
// version reusing the magic) is refused after the MAC verified, without overreading.
TEST(Beacon, SignedButMalformedFieldsAreBadField) {
  const std::string good = sampleSignedPart(kCluster, "mx1", "10.0.0.1:7946");
  ASSERT_TRUE(std::holds_alternative<Beacon>(decodeOurs(signAsDocumented(good))));

  std::string overrun = good;
  overrun[4] = static_cast<char>(0xff);  // cluster id longer than the datagram
  EXPECT_EQ(refusal(decodeOurs(signAsDocumented(overrun))), BeaconError::BadField);
  EXPECT_EQ(refusal(decodeOurs(signAsDocumented(good + "x"))), BeaconError::BadField);
  EXPECT_EQ(refusal(decodeOurs(signAsDocumented(good.substr(0, good.size() - 1)))),
            BeaconError::BadField);
  EXPECT_EQ(refusal(decodeOurs(signAsDocumented(sampleSignedPart(kCluster, "", "10.0.0.1:7946")))),
            BeaconError::BadField);
  EXPECT_EQ(refusal(decodeOurs(signAsDocumented(sampleSignedPart(kCluster, "mx1", "")))),
            BeaconError::BadField);
}

TEST(Beacon, EncodeRefusesStringsThatDoNotFit) {
  const std::string too_long(kMaxBeaconStringBytes + 1, 'x');
  Beacon beacon = sampleBeacon();
  beacon.cluster_id = too_long;
  EXPECT_THROW(encodeBeacon(beacon, kSecret), std::invalid_argument);
  beacon = sampleBeacon();
  beacon.node_id = too_long;
  EXPECT_THROW(encodeBeacon(beacon, kSecret), std::invalid_argument);
  beacon = sampleBeacon();
  beacon.address = too_long;
  EXPECT_THROW(encodeBeacon(beacon, kSecret), std::invalid_argument);
  beacon = sampleBeacon();
  beacon.node_id.clear();
  EXPECT_THROW(encodeBeacon(beacon, kSecret), std::invalid_argument);
  beacon = sampleBeacon();
  beacon.address.clear();
  EXPECT_THROW(encodeBeacon(beacon, kSecret), std::invalid_argument);
}

TEST(Beacon, TheSecretNeverAppearsInTheDatagram) {
  const std::string datagram = encodeBeacon(sampleBeacon(), kSecret);
  EXPECT_EQ(datagram.find(kSecret), std::string::npos);
}

TEST(Beacon, ErrorsHaveNames) {
  for (BeaconError error : {BeaconError::Short, BeaconError::BadMagic, BeaconError::BadField,
                            BeaconError::BadMac, BeaconError::WrongCluster, BeaconError::Stale}) {
    EXPECT_FALSE(nameOf(error).empty());
    EXPECT_NE(nameOf(error), "unknown");
  }
}

}  // namespace
}  // namespace zetian::cluster::discovery
