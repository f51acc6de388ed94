// libFuzzer target for the multicast beacon decoder (cluster/discovery/beacon.h).
//
// 1. The input as a datagram: it must be accepted or refused without a crash, an
//    out-of-bounds read or an escaped exception, and an accepted beacon must be
//    canonical (encodeBeacon gives back the datagram).
// 2. Random bytes almost never carry a valid MAC, so the decoder's paths after the MAC
//    would go unfuzzed. The input is therefore also read as the fields of a beacon,
//    which is encoded, must decode to itself, and must be refused once any one byte
//    (position and bits taken from the input) is changed or the datagram is cut short.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>

#include "cluster/discovery/beacon.h"

namespace discovery = zetian::cluster::discovery;

namespace {

const std::string kSecret = "fuzzing secret, thirty-two bytes";
const std::string kCluster = "fuzz";

// Takes bytes off the front of the input; past the end it gives zeros and empty strings.
class Bytes {
 public:
  explicit Bytes(std::string_view data) : data_(data) {}
  std::uint8_t u8() {
    if (data_.empty()) return 0;
    const auto v = static_cast<std::uint8_t>(data_.front());
    data_.remove_prefix(1);
    return v;
  }
  std::uint64_t u64() {
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | u8();
    return v;
  }
  std::string str() {
    const std::size_t size = std::min<std::size_t>(u8(), data_.size());
    std::string out(data_.substr(0, size));
    data_.remove_prefix(size);
    return out;
  }

 private:
  std::string_view data_;
};

void checkDatagram(std::string_view datagram) {
  const auto result =
      discovery::decodeBeacon(datagram, kSecret, kCluster, 1'700'000'000'000, 60'000);
  if (const auto* error = std::get_if<discovery::BeaconError>(&result)) {
    if (discovery::nameOf(*error).empty()) std::abort();
    return;
  }
  if (discovery::encodeBeacon(std::get<discovery::Beacon>(result), kSecret) != datagram)
    std::abort();
}

void checkBuiltBeacon(std::string_view input) {
  Bytes bytes(input);
  discovery::Beacon beacon;
  beacon.cluster_id = bytes.str();
  beacon.node_id = bytes.str();
  beacon.address = bytes.str();
  beacon.sent_at_ms = bytes.u64();
  for (auto& byte : beacon.nonce) byte = bytes.u8();
  const std::size_t position = std::size_t{bytes.u8()} << 8 | bytes.u8();
  const std::uint8_t flip = bytes.u8() | 1;  // never zero: the byte must change

  std::string datagram;
  try {
    datagram = discovery::encodeBeacon(beacon, kSecret);
  } catch (const std::invalid_argument&) {
    // Only an empty node id or address may be refused: the strings are at most 255 bytes.
    if (!beacon.node_id.empty() && !beacon.address.empty()) std::abort();
    return;
  }
  if (datagram.size() > discovery::kMaxBeaconBytes) std::abort();

  const auto decoded =
      discovery::decodeBeacon(datagram, kSecret, beacon.cluster_id, beacon.sent_at_ms, 0);
  const auto* same = std::get_if<discovery::Beacon>(&decoded);
  if (same == nullptr || !(*same == beacon)) std::abort();

  std::string changed = datagram;
  changed[position % changed.size()] ^= static_cast<char>(flip);
  if (!std::holds_alternative<discovery::BeaconError>(
          discovery::decodeBeacon(changed, kSecret, beacon.cluster_id, beacon.sent_at_ms, 0))) {
    std::abort();
  }
  const std::string cut = datagram.substr(0, position % datagram.size());
  if (!std::holds_alternative<discovery::BeaconError>(
          discovery::decodeBeacon(cut, kSecret, beacon.cluster_id, beacon.sent_at_ms, 0))) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  checkDatagram(input);
  checkBuiltBeacon(input);
  return 0;
}
