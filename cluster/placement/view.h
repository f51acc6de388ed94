// The member list placement works on, as one immutable snapshot.
//
// The cluster thread builds a View whenever membership changes (a member joins, fails,
// leaves, drains or returns, or this node's own status changes) and publishes it;
// milter threads read the current View the way they read the policy snapshot, one
// reference per check, and never touch the cluster thread's own state.
//
// Who can own keys: members that are alive (active, or suspect: a suspect keeps its
// keys until it is declared failed, so a lost heartbeat does not move every key it
// owns; a request to it while its link is down falls back at once) and not draining.
// This node is a candidate once it has joined and while it is not in maintenance.
#pragma once

#include <cstdint>
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

  std::span<const NodeId> candidates(bool region_scope) const {
    return region_scope ? std::span<const NodeId>(region_members) : std::span<const NodeId>(members);
  }
};

}  // namespace zetian::cluster::placement
