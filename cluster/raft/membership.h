// Cluster membership for the Raft core: who votes, who only replicates (learners), and
// the single-server changes between one membership and the next.
//
// A change travels as a log entry of type EntryType::config whose data is the change's
// text ("add-voter 4", "add-learner 4", "promote 4", "remove 4"): readable in traces
// and scenario files, and parsed strictly, so a damaged entry is refused rather than
// guessed at. The rules for when a change takes effect live in core.h.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "cluster/raft/types.h"

namespace zetian::cluster::raft {

enum class ChangeType : std::uint8_t {
  add_voter,    // a node that is not a voter becomes one (a learner or a new node)
  add_learner,  // a new node receives the log but neither votes nor counts for commit
  promote,      // a learner becomes a voter (the usual second step of joining)
  remove,       // a voter or learner leaves
};

struct ConfChange {
  ChangeType type = ChangeType::add_learner;
  NodeId node = kNoNode;
  bool operator==(const ConfChange&) const = default;
};

std::string encodeConfChange(const ConfChange& change);
// nullopt unless `data` is exactly what encodeConfChange() writes, with a node id > 0.
std::optional<ConfChange> decodeConfChange(std::string_view data);

struct Membership {
  std::set<NodeId> voters;
  std::set<NodeId> learners;
  // Every node a committed change removed. A node id is never reused: a removed node
  // that rejoins does so under a new id, with an empty log, so nothing it says under
  // its old id (it may still run, with a stale view of the cluster) is listened to.
  std::set<NodeId> removed;

  bool isVoter(NodeId node) const { return voters.contains(node); }
  bool isLearner(NodeId node) const { return learners.contains(node); }
  bool isMember(NodeId node) const { return isVoter(node) || isLearner(node); }

  // Empty when `change` makes sense against this membership; otherwise why not (adding
  // a node already in that role or one removed before, promoting a non-learner,
  // removing a stranger or the last voter).
  std::string check(const ConfChange& change) const;
  // Applies a change that check() accepted; a change it would refuse changes nothing,
  // so replaying a log on every node gives every node the same membership.
  void apply(const ConfChange& change);
};

}  // namespace zetian::cluster::raft
