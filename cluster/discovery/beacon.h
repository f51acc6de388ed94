// Multicast discovery beacons: "node ID of cluster C is reachable at ADDRESS", signed
// with the cluster's shared secret. Pure encoding and decoding, no sockets, no clocks:
// the caller passes the wall clock in.
//
//   "ZTB1" | u8 len | cluster_id | u8 len | node_id | u8 len | address
//          | u64 big-endian sent_at_ms | nonce[16] | mac[32]
//   mac = HMAC-SHA256(secret, u16 len | "zetian-v1 beacon" | every byte before the mac)
//
// A beacon only says where to dial; admission is the TCP handshake
// (cluster/wire/handshake.h), which a beacon can never stand in for. Hence:
// - No replay cache. A beacon replayed within max_skew makes receivers dial an address
//   that node really had a moment ago, and the handshake decides; replays older than
//   max_skew are Stale. The nonce makes every beacon distinct all the same.
// - The label is length-prefixed first, as in every handshake MAC input, and no other
//   MAC uses it, so a beacon's MAC (which anyone on the LAN sees) verifies as nothing
//   else under the same secret.
//
// The decoder checks, in this order: size (Short below the smallest beacon; BadField
// above kMaxBeaconBytes), magic, MAC (constant time), then fields, cluster, age. No byte
// after the magic is interpreted before the MAC has verified, so every single-bit
// change of a valid beacon is refused. It never reads outside the datagram, never
// throws, and an accepted beacon is canonical: encodeBeacon() of it under the same
// secret gives back the datagram (tests/fuzz/fuzz_beacon.cpp checks this).
//
// Traps:
// - Beacons are cleartext: anyone on the LAN learns cluster and node ids and addresses,
//   which the handshake otherwise shows only to proven members. Use multicast discovery
//   only on a LAN you would show that to.
// - Every beacon is a sample for guessing the secret offline (HMAC over known bytes), so
//   the secret must be long and random (`openssl rand -hex 32`), not a pass phrase.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace zetian::cluster::discovery {

inline constexpr std::string_view kBeaconMagic = "ZTB1";
inline constexpr std::size_t kMaxBeaconBytes = 1024;       // larger datagrams are refused
inline constexpr std::size_t kMaxBeaconStringBytes = 255;  // each of the three strings
inline constexpr std::size_t kBeaconNonceBytes = 16;
inline constexpr std::size_t kBeaconMacBytes = 32;
// Magic, three empty strings, time, nonce, MAC. The largest beacon (three 255-byte
// strings) is 828 bytes, well inside kMaxBeaconBytes and one Ethernet frame.
inline constexpr std::size_t kMinBeaconBytes =
    kBeaconMagic.size() + 3 + 8 + kBeaconNonceBytes + kBeaconMacBytes;

using BeaconNonce = std::array<std::uint8_t, kBeaconNonceBytes>;

struct Beacon {
  std::string cluster_id;     // at most 255 bytes, may be empty
  std::string node_id;        // 1 to 255 bytes
  std::string address;        // "HOST:PORT" to dial, 1 to 255 bytes; not checked here
  std::uint64_t sent_at_ms = 0;  // sender's wall clock, Unix milliseconds
  BeaconNonce nonce{};        // fresh random bytes per beacon
  bool operator==(const Beacon&) const = default;
};

// The whole datagram. A string out of the bounds above is a caller bug and throws
// std::invalid_argument (naming the field, never its value).
std::string encodeBeacon(const Beacon& beacon, std::string_view secret);

enum class BeaconError {
  Short,         // smaller than any beacon
  BadMagic,      // not a beacon at all (other traffic on the group)
  BadField,      // MAC fine but fields do not fill the datagram exactly, an empty id or
                 // address; or the datagram is over kMaxBeaconBytes
  BadMac,        // wrong secret, tampering or truncation
  WrongCluster,  // right secret, another cluster_id: two clusters share secret and group
  Stale,         // sent_at_ms more than max_skew_ms away from now_ms, either way
};

// cluster_id: ours. now_ms: our wall clock, Unix milliseconds. A beacon sent more than
// max_skew_ms before or after now_ms is Stale (clocks of the nodes must agree that well).
std::variant<Beacon, BeaconError> decodeBeacon(std::string_view datagram, std::string_view secret,
                                               std::string_view cluster_id, std::uint64_t now_ms,
                                               std::uint64_t max_skew_ms);

// Short text for logs and metrics: "short", "bad magic", "bad field", "bad MAC",
// "wrong cluster", "stale".
std::string_view nameOf(BeaconError error);

}  // namespace zetian::cluster::discovery
