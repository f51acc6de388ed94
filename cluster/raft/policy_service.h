// What the engine asks of the replicated policy (docs/raft.md): the Raft driver on the
// cluster thread implements it, the engine and its admin endpoints use it. Every
// method runs on the cluster thread; every callback is called exactly once, on the
// cluster thread, now or later (after shutdown: with status 503 and "shutting down").
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "conf/policy_document.h"

namespace zetian::cluster::raft {

// One member of the Raft cluster as this node knows it.
struct RaftMemberView {
  std::string id;           // its node.id; "raft:<hex id>" while its name is unknown here
  std::uint64_t raft_id = 0;
  std::string role;         // "voter" or "learner"
  bool self = false;
  // On the leader: the last log index known to be on that member; nullopt elsewhere.
  std::optional<std::uint64_t> match_index;
};

struct RaftStatus {
  // This node belongs to a Raft cluster (it started one, or joined one). False: the
  // node enforces its own file's policy and waits to start or join one; every other
  // field but `waiting_for` is then empty or 0.
  bool in_cluster = false;
  // While not in a cluster: what it waits for ("3 members running Raft (2 met)",
  // "a member of the existing Raft cluster to add this node"), for the operator.
  std::string waiting_for;
  std::uint64_t raft_id = 0;               // this node's Raft id (state_dir/raft)
  std::string role;                        // leader, follower, candidate, pre_candidate, learner
  std::optional<std::string> leader;       // the leader's node.id, none while unknown
  std::uint64_t term = 0;
  std::uint64_t commit_index = 0;
  std::uint64_t applied_index = 0;
  std::optional<std::uint64_t> policy_version;  // none until a policy was applied
  std::vector<RaftMemberView> members;     // voters and learners, by node.id
  std::uint64_t voters = 0;
  // Voters this node heard from within the last election timeout, itself included
  // (on a follower: 1 + the leader when it hears one); what "no quorum" messages cite.
  std::uint64_t voters_reachable = 0;
  std::uint64_t leader_changes = 0;        // since the process started
  std::uint64_t snapshots_taken = 0;
  std::uint64_t snapshots_installed = 0;
};

// One applied policy version, for GET /policy/history.
struct PolicyHistoryItem {
  std::uint64_t version = 0;
  std::string proposer;           // node.id of the node where it was proposed
  std::uint64_t time_unix_ms = 0; // by the proposer's clock
  std::uint64_t index = 0;        // the Raft log index it was committed at
  std::uint64_t text_bytes = 0;
};

// The answer to a change or a read. status is what the HTTP answer carries:
//   200 done (committed and applied on this node);
//   400 refused before proposing (an invalid policy: `error` holds the FILE:LINE:COL lines);
//   404 an unknown node (remove, transfer);
//   409 the policy changed meanwhile (base_version is no longer the current one);
//   503 no leader, no quorum ("no quorum: 1 of 3 voters reachable"), not in a Raft
//       cluster, shutting down;
//   504 not committed within the deadline (it may still commit later).
struct PolicyResult {
  int status = 200;
  std::string error;  // for the operator when status != 200
  std::optional<conf::PolicyDocument> document;  // proposePolicy / readPolicy: the policy now in force
  std::uint64_t index = 0;  // the Raft index of the change, or of the read
};

class PolicyService {
 public:
  virtual ~PolicyService() = default;

  virtual RaftStatus status() const = 0;
  // The policy as applied on this node (may lag the leader); none before the first.
  virtual std::optional<conf::PolicyDocument> policy() const = 0;
  // Applied versions, oldest first (the newest kMaxHistory).
  virtual std::vector<PolicyHistoryItem> history() const = 0;

  // Proposes `text` (already checked by loadPolicy: the caller refuses invalid text
  // with 400 before calling) as the next policy version. `base_version`: the version
  // the change was made against (409 if another change landed first); nullopt: on top
  // of whatever is current. Followers forward to the leader. `done` once the change is
  // committed and applied to the replicated state on this node (the engine then
  // publishes it), or refused, or after `deadline_ms`.
  virtual void proposePolicy(std::string text, std::optional<std::uint64_t> base_version,
                             std::uint64_t deadline_ms, std::function<void(PolicyResult)> done) = 0;
  // A linearizable read: `done` once this node has applied everything the leader had
  // committed when the read began (ReadIndex), with the policy then in force.
  virtual void readPolicy(std::uint64_t deadline_ms, std::function<void(PolicyResult)> done) = 0;
  // `zetianctl cluster remove NODE`: takes NODE (its node.id) out of the Raft
  // membership. `done` once the removal is committed.
  virtual void removeMember(const std::string& node_id, std::uint64_t deadline_ms,
                            std::function<void(PolicyResult)> done) = 0;
  // `zetianctl cluster transfer-leader [NODE]`: hands the leadership to NODE, or ("")
  // to the most up-to-date other voter. `done` once NODE leads, or it failed.
  virtual void transferLeader(const std::string& node_id, std::uint64_t deadline_ms,
                              std::function<void(PolicyResult)> done) = 0;

  // Called on the cluster thread with every policy the replicated state applies, in
  // order, and at once with the one recovered from state_dir (if any). Set once,
  // before the node starts.
  virtual void setPolicyListener(std::function<void(const conf::PolicyDocument&)> listener) = 0;
};

}  // namespace zetian::cluster::raft
