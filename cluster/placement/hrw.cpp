#include "cluster/placement/hrw.h"

#include <algorithm>
#include <utility>

namespace zetian::cluster::placement {
namespace {

constexpr std::uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr std::uint64_t kFnvPrime = 0x100000001b3ULL;

std::uint64_t fnvByte(std::uint64_t hash, unsigned char byte) {
  return (hash ^ byte) * kFnvPrime;
}

std::uint64_t fnvBytes(std::uint64_t hash, std::string_view bytes) {
  for (const char c : bytes) hash = fnvByte(hash, static_cast<unsigned char>(c));
  return hash;
}

std::uint64_t splitmix64Finalise(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

struct Scored {
  std::uint64_t score;
  const NodeId* node;
};

// Higher score first; equal scores: smaller node id first.
bool ranksBefore(const Scored& a, const Scored& b) {
  if (a.score != b.score) return a.score > b.score;
  return *a.node < *b.node;
}

}  // namespace

std::uint64_t score(std::string_view node_id, std::string_view key) {
  std::uint64_t hash = kFnvOffset;
  // Fixed little-endian length, whatever the host's byte order or size_t width.
  const auto length = static_cast<std::uint64_t>(node_id.size());
  for (int i = 0; i < 8; ++i) {
    hash = fnvByte(hash, static_cast<unsigned char>((length >> (8 * i)) & 0xffU));
  }
  hash = fnvBytes(hash, node_id);
  hash = fnvBytes(hash, key);
  return splitmix64Finalise(hash);
}

std::optional<NodeId> ownerOf(std::string_view key, std::span<const NodeId> members) {
  std::optional<Scored> best;
  for (const NodeId& node : members) {
    const Scored candidate{score(node, key), &node};
    if (!best || ranksBefore(candidate, *best)) best = candidate;
  }
  if (!best) return std::nullopt;
  return *best->node;
}

std::vector<NodeId> placement(std::string_view key, std::span<const NodeId> members,
                              std::size_t replication_factor) {
  std::vector<Scored> ranked;
  ranked.reserve(members.size());
  for (const NodeId& node : members) ranked.push_back({score(node, key), &node});
  std::sort(ranked.begin(), ranked.end(), ranksBefore);
  // Duplicate ids have equal scores, so they are adjacent after the sort.
  ranked.erase(std::unique(ranked.begin(), ranked.end(),
                           [](const Scored& a, const Scored& b) { return *a.node == *b.node; }),
               ranked.end());
  std::vector<NodeId> result;
  const std::size_t count = std::min(replication_factor, ranked.size());
  result.reserve(count);
  for (std::size_t i = 0; i < count; ++i) result.push_back(*ranked[i].node);
  return result;
}

}  // namespace zetian::cluster::placement
