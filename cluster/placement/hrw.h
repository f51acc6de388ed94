// Rendezvous (highest-random-weight, HRW) placement of limiter keys on cluster members.
// Pure: no sockets, no clocks, no threads, no per-process state. The caller passes the
// member list (the active, non-draining members of its current snapshot) and gets back
// the owner of a key and the members that hold its replicas.
//
// Every member scores every key: score(node_id, key) is a 64-bit hash of the pair. The
// owner is the member with the highest score; replicas are the next members by score.
// Invariants:
//   - Deterministic across processes, machines and versions of the standard library:
//     every node must compute the same owner from the same member list, so the score
//     uses a fixed, documented function (below), never std::hash or a random seed. A
//     change of that function moves nearly every key in a running cluster on upgrade;
//     the golden test in tests/unit/cluster/placement_test.cpp pins it.
//   - Independent of member order, and duplicate ids count once.
//   - Ties (equal scores, in practice never) go to the smaller node id, so the order is
//     total and the result still depends only on the set of members.
//   - Minimal movement, which is why HRW: a key's score on one node does not depend on
//     the other members. A member leaving moves only the keys it owned (each to its
//     next-highest scorer, which was its first replica); a member joining takes, from
//     every other member alike, the keys it now outscores, about 1/N of all keys.
//   - The owner is always placement(...)[0]; the replicas are distinct members.
// Cost: one hash of (id, key) per member per lookup, byte at a time, with no state to
// keep up to date on membership changes (unlike a ring of virtual nodes); for clusters of
// a handful of nodes that is the better trade.
//
// The score is unkeyed, so a client choosing keys can aim many of them at one owner.
// That only concentrates load, the rate limits themselves still hold; a keyed score
// would need a cluster-wide secret, and every node the same one.
//
// Score function (version 1): FNV-1a 64 over the 8-byte little-endian length of the
// node id, the node id bytes and the key bytes (the length prefix keeps ("ab", "c")
// and ("a", "bc") apart), then the splitmix64 finaliser, whose avalanche FNV lacks in
// its high bits for short inputs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace zetian::cluster::placement {

using NodeId = std::string;

// The HRW score of `key` on `node_id` (version 1, see above).
std::uint64_t score(std::string_view node_id, std::string_view key);

// The member with the highest score for `key`; no owner when `members` is empty.
std::optional<NodeId> ownerOf(std::string_view key, std::span<const NodeId> members);

// The owner of `key` then the next `replication_factor - 1` distinct members by score
// (fewer when there are fewer members; empty for no members or a factor of 0).
std::vector<NodeId> placement(std::string_view key, std::span<const NodeId> members,
                              std::size_t replication_factor);

}  // namespace zetian::cluster::placement
