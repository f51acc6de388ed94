// Beacon encoding and decoding; the format and the decoder's order of checks are in
// beacon.h.
//
// Trap: the fields are parsed only from `signed_part`, after the MAC over exactly those
// bytes verified. Parsing first and checking the MAC afterwards would look the same in
// tests but would let an attacker's lengths steer the parser.
#include "cluster/discovery/beacon.h"

#include <openssl/crypto.h>

#include <stdexcept>

#include "cluster/wire/handshake.h"

namespace zetian::cluster::discovery {
namespace {

constexpr std::string_view kBeaconLabel = "zetian-v1 beacon";

wire::Mac beaconMac(std::string_view secret, std::string_view signed_part) {
  std::string input;
  input.reserve(2 + kBeaconLabel.size() + signed_part.size());
  input.push_back(static_cast<char>(kBeaconLabel.size() >> 8));
  input.push_back(static_cast<char>(kBeaconLabel.size() & 0xff));
  input.append(kBeaconLabel);
  input.append(signed_part);
  return wire::hmacSha256(secret, input);
}

void putString(std::string& out, std::string_view value, const char* field, bool allow_empty) {
  if (value.size() > kMaxBeaconStringBytes) {
    throw std::invalid_argument(std::string("beacon: ") + field + " longer than 255 bytes");
  }
  if (value.empty() && !allow_empty) {
    throw std::invalid_argument(std::string("beacon: ") + field + " is empty");
  }
  out.push_back(static_cast<char>(value.size()));
  out.append(value);
}

// Bounds-checked reads; once one fails every later one fails too, so parse() checks
// ok() once at the end.
class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}
  bool ok() const { return ok_; }
  bool atEnd() const { return pos_ == data_.size(); }

  std::string_view take(std::size_t n) {
    if (!ok_ || data_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    const std::string_view out = data_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  std::string str() {
    const std::string_view size = take(1);
    if (!ok_) return {};
    return std::string(take(static_cast<unsigned char>(size[0])));
  }
  std::uint64_t u64() {
    const std::string_view bytes = take(8);
    std::uint64_t v = 0;
    for (char c : bytes) v = (v << 8) | static_cast<unsigned char>(c);
    return v;
  }

 private:
  std::string_view data_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

std::string encodeBeacon(const Beacon& beacon, std::string_view secret) {
  std::string out;
  out.reserve(kMinBeaconBytes + beacon.cluster_id.size() + beacon.node_id.size() +
              beacon.address.size());
  out.append(kBeaconMagic);
  putString(out, beacon.cluster_id, "cluster_id", true);
  putString(out, beacon.node_id, "node_id", false);
  putString(out, beacon.address, "address", false);
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((beacon.sent_at_ms >> shift) & 0xff));
  }
  out.append(reinterpret_cast<const char*>(beacon.nonce.data()), beacon.nonce.size());
  const wire::Mac mac = beaconMac(secret, out);
  out.append(reinterpret_cast<const char*>(mac.data()), mac.size());
  return out;
}

std::variant<Beacon, BeaconError> decodeBeacon(std::string_view datagram, std::string_view secret,
                                               std::string_view cluster_id, std::uint64_t now_ms,
                                               std::uint64_t max_skew_ms) {
  if (datagram.size() < kMinBeaconBytes) return BeaconError::Short;
  if (datagram.size() > kMaxBeaconBytes) return BeaconError::BadField;
  if (datagram.substr(0, kBeaconMagic.size()) != kBeaconMagic) return BeaconError::BadMagic;

  const std::string_view signed_part = datagram.substr(0, datagram.size() - kBeaconMacBytes);
  const std::string_view received_mac = datagram.substr(signed_part.size());
  const wire::Mac expected_mac = beaconMac(secret, signed_part);
  if (CRYPTO_memcmp(expected_mac.data(), received_mac.data(), expected_mac.size()) != 0) {
    return BeaconError::BadMac;
  }

  Reader reader(signed_part.substr(kBeaconMagic.size()));
  Beacon beacon;
  beacon.cluster_id = reader.str();
  beacon.node_id = reader.str();
  beacon.address = reader.str();
  beacon.sent_at_ms = reader.u64();
  const std::string_view nonce = reader.take(kBeaconNonceBytes);
  if (!reader.ok() || !reader.atEnd() || beacon.node_id.empty() || beacon.address.empty()) {
    return BeaconError::BadField;
  }
  for (std::size_t i = 0; i < kBeaconNonceBytes; ++i) {
    beacon.nonce[i] = static_cast<std::uint8_t>(nonce[i]);
  }

  if (beacon.cluster_id != cluster_id) return BeaconError::WrongCluster;
  // Unsigned: subtract the smaller from the larger, never the other way round.
  const std::uint64_t age_ms =
      now_ms >= beacon.sent_at_ms ? now_ms - beacon.sent_at_ms : beacon.sent_at_ms - now_ms;
  if (age_ms > max_skew_ms) return BeaconError::Stale;
  return beacon;
}

std::string_view nameOf(BeaconError error) {
  switch (error) {
    case BeaconError::Short: return "short";
    case BeaconError::BadMagic: return "bad magic";
    case BeaconError::BadField: return "bad field";
    case BeaconError::BadMac: return "bad MAC";
    case BeaconError::WrongCluster: return "wrong cluster";
    case BeaconError::Stale: return "stale";
  }
  return "unknown";
}

}  // namespace zetian::cluster::discovery
