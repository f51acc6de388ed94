// The member list placement works on, as one immutable snapshot.
//
// The cluster thread builds a View whenever membership changes (a member joins, fails,
// leaves, drains or returns, or this node's own status changes) and publishes it;
// milter threads read the current View the way they read the policy snapshot, one
// reference per check, and never touch the cluster thread's own state.
//
// Who can own keys: members to which this node has an established link and that are
// alive (joining, active, or suspect: a suspect keeps its keys until it is declared
// failed, so a lost heartbeat does not move every key it owns) and not draining. When a
// member's link closes (a crash resets it at once), its keys go to their first replica,
// which already holds their state, without waiting for the failure detector; when a
// member joins, every node counts it as soon as its link is up. Views of two nodes can
// differ for a while (one still reaches the member, the other not), and a key may be
// counted on two nodes meanwhile; docs/limiter.md gives the bound. This node is a
// candidate once it has a link to a peer (or runs alone after join_timeout) and while
// it is not in maintenance. Quorum: more than half of the members not left, this node
// included, are reachable (this node and the peers it has a link to).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/placement/hrw.h"

namespace zetian::cluster::placement {

struct View {
  std::string self;
  std::uint64_t epoch = 0;  // grows by one per published view
  // Candidates for ownership across the cluster, sorted by id.
  std::vector<NodeId> members;
  // Those in this node's own region (scope = "region"), sorted by id.
  std::vector<NodeId> region_members;
  // False while the cluster has no quorum: cluster-scope rules then follow fail_mode.
  bool quorum = true;
  // Members that grant fast-mode leases (announced wire::kCapLeases), sorted by id.
  std::vector<NodeId> lease_granters;

  bool grantsLeases(std::string_view id) const {
    return std::binary_search(lease_granters.begin(), lease_granters.end(), id);
  }

  // Members alive and known but not linked yet (a node that just started learns them
  // from a peer's member list before it dials them), sorted by id. Not candidates:
  // they matter only to a node waiting for hand-offs (heldBefore below).
  std::vector<NodeId> pending;
  // This node is still forming: it has members to join (seeds, discovery) and has not
  // reached any yet, within join_timeout. Its cluster checks wait for the view (up to
  // check_timeout) rather than decide alone with a bucket that knows nothing.
  bool forming = false;

  std::span<const NodeId> candidates(bool region_scope) const {
    return region_scope ? std::span<const NodeId>(region_members) : std::span<const NodeId>(members);
  }
};

// The member that most likely held the key before this node, when this node owns it:
// the first after this node by HRW score among the candidates and, for cluster scope,
// the pending members too (a member this node has not linked to yet may be the one
// that owned the key while this node was away). nullopt when this node does not own
// the key or is alone. `hash` is hashKey(descriptor, store key).
inline std::optional<NodeId> heldBefore(std::string_view hash, const View& view, bool region_scope) {
  const auto candidates = view.candidates(region_scope);
  const auto owner = ownerOf(hash, candidates);
  if (!owner || *owner != view.self) return std::nullopt;
  std::vector<NodeId> all(candidates.begin(), candidates.end());
  if (!region_scope) all.insert(all.end(), view.pending.begin(), view.pending.end());
  std::optional<NodeId> best;
  std::uint64_t best_score = 0;
  for (const NodeId& id : all) {
    if (id == view.self) continue;
    const std::uint64_t s = score(id, hash);
    if (!best || s > best_score || (s == best_score && id < *best)) {
      best = id;
      best_score = s;
    }
  }
  return best;
}

// How a key is placed, as it travels with the key between nodes (wire::LimitItem and
// wire::SyncedBucket `placement`, at most 64 bytes): "R" first when the rule has
// scope = "region" (placed among the region's members), then either nothing (the store
// key itself is hashed) or "ip:" and the client address ([affinity] method =
// "source_ip" for a client-keyed rule: every client-keyed rule of a session lands on
// the owner of the client's address). So "" is the common case and costs no bytes.
inline bool regionScoped(std::string_view descriptor) { return !descriptor.empty() && descriptor[0] == 'R'; }

// What HRW hashes for a key placed by `descriptor`.
inline std::string_view hashKey(std::string_view descriptor, std::string_view store_key) {
  if (regionScoped(descriptor)) descriptor.remove_prefix(1);
  return descriptor.empty() ? store_key : descriptor;
}

}  // namespace zetian::cluster::placement
