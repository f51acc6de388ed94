// RaftDriver's requests (driver.h, "Requests"): proposals, reads, removals and
// transfers, forwarded to the leader when this node does not lead, the waiters that
// answer them, and what /health shows.
#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "cluster/clock.h"
#include "cluster/raft/driver.h"
#include "cluster/raft/identity.h"
#include "cluster/raft/membership.h"
#include "conf/policy_document.h"

namespace zetian::cluster::raft {

using wire::RaftControl;
using wire::RaftControlKind;

namespace {

std::string noQuorumMessage(std::uint64_t reachable, std::uint64_t voters) {
  return "no quorum: " + std::to_string(reachable) + " of " + std::to_string(voters) +
         " voters reachable; a change needs a majority of the voters (see `zetianctl members`)";
}

}  // namespace

// ---- requests ------------------------------------------------------------------------

std::optional<std::string> RaftDriver::peerOf(NodeId id) const {
  auto it = live_names_.find(id);
  if (it == live_names_.end()) return std::nullopt;
  if (!peers_.contains(it->second)) return std::nullopt;
  return it->second;
}

std::string RaftDriver::nameOf(NodeId id) const {
  if (id == self_) return options_.node_id;
  if (auto name = state_.nameOf(id)) return *name;
  auto it = live_names_.find(id);
  if (it != live_names_.end()) return it->second;
  return "raft:" + hexId(id);
}

std::uint64_t RaftDriver::reachableVoters() const {
  std::uint64_t reachable = 0;
  for (NodeId voter : core_->membership().voters) {
    if (voter == self_ || peerOf(voter)) ++reachable;
  }
  return reachable;
}

std::string RaftDriver::noQuorumText() const {
  return noQuorumMessage(reachableVoters(), core_->membership().voters.size());
}

std::optional<PolicyResult> RaftDriver::refuseWithoutLeader() const {
  PolicyResult result;
  result.status = 503;
  if (stopped_) {
    result.error = stop_reason_;
    return result;
  }
  if (!in_cluster_) {
    result.error = "this node is in no Raft cluster yet (" + status().waiting_for + ")";
    return result;
  }
  const std::uint64_t voters = core_->membership().voters.size();
  if (reachableVoters() * 2 <= voters) {
    result.error = noQuorumText();
    return result;
  }
  if (core_->leader() == kNoNode) {
    result.error = "no Raft leader at the moment (an election is under way): try again in a few seconds";
    return result;
  }
  if (core_->leader() != self_ && !peerOf(core_->leader())) {
    result.error = "the Raft leader " + nameOf(core_->leader()) + " is not reachable from this node: " + noQuorumText();
    return result;
  }
  return std::nullopt;
}

std::uint64_t RaftDriver::nextPolicyVersion() const {
  std::uint64_t version = state_.version();
  const RaftLog& log = core_->log();
  const Index from = std::max(state_.appliedIndex() + 1, log.firstIndex());
  if (from > log.lastIndex()) return version + 1;
  for (const Entry& entry : log.slice(from, log.lastIndex() + 1, log.lastIndex() + 1 - from)) {
    if (entry.type != EntryType::normal) continue;
    auto decoded = conf::decodePolicyDocument(entry.data);
    if (decoded.document) version = std::max(version, decoded.document->version);
  }
  return version + 1;
}

void RaftDriver::proposePolicy(std::string text, std::optional<std::uint64_t> base_version, std::uint64_t deadline_ms,
                               std::function<void(PolicyResult)> done) {
  checkThread();
  if (text.size() > kMaxPolicyTextBytes) {
    done(PolicyResult{400, "the policy is " + std::to_string(text.size()) + " bytes; at most " +
                               std::to_string(kMaxPolicyTextBytes) + " are replicated",
                      std::nullopt, 0});
    return;
  }
  if (auto refusal = refuseWithoutLeader()) {
    done(std::move(*refusal));
    return;
  }
  conf::PolicyDocument document{1, options_.node_id, unixMillis(), std::move(text)};
  std::string data;
  try {
    data = conf::encodePolicyDocument(document);
  } catch (const std::exception& e) {
    done(PolicyResult{400, e.what(), std::nullopt, 0});
    return;
  }
  // The version (and the check of base_version) is the leader's to set.
  forward(RaftControlKind::Propose, std::move(data), base_version ? *base_version + 1 : 0, deadline_ms,
          std::move(done));
}

void RaftDriver::readPolicy(std::uint64_t deadline_ms, std::function<void(PolicyResult)> done) {
  checkThread();
  if (auto refusal = refuseWithoutLeader()) {
    done(std::move(*refusal));
    return;
  }
  Waiter waiter;
  waiter.kind = WaitKind::read;
  waiter.id = next_request_++;
  waiter.deadline = Clock::now() + std::chrono::milliseconds(deadline_ms);
  waiter.done = std::move(done);
  const ReadIndexResult read = core_->readIndex(std::to_string(waiter.id));
  if (!read.accepted) {
    PolicyResult result{503, "no Raft leader to confirm the read: " + read.refusal, std::nullopt, 0};
    waiter.done(std::move(result));
    return;
  }
  waiters_.emplace(waiter.id, std::move(waiter));
  pump();
}

void RaftDriver::removeMember(const std::string& node_id, std::uint64_t deadline_ms,
                              std::function<void(PolicyResult)> done) {
  checkThread();
  if (!in_cluster_ || stopped_) {
    done(std::move(*refuseWithoutLeader()));
    return;
  }
  // Which Raft member is it? A node that rejoined with an emptied folder has two ids
  // under one name: the one no live link speaks for is the one to remove.
  std::vector<NodeId> matches;
  const Membership& members = core_->membership();
  for (NodeId id : members.voters) {
    if (nameOf(id) == node_id || "raft:" + hexId(id) == node_id) matches.push_back(id);
  }
  for (NodeId id : members.learners) {
    if (nameOf(id) == node_id || "raft:" + hexId(id) == node_id) matches.push_back(id);
  }
  if (matches.size() > 1) {
    std::vector<NodeId> gone;
    for (NodeId id : matches) {
      if (!peerOf(id) && id != self_) gone.push_back(id);
    }
    if (gone.size() == 1) matches = gone;
  }
  if (matches.empty()) {
    done(PolicyResult{404, "no Raft member is called " + backquoted(node_id) + " (see `zetianctl members`)",
                      std::nullopt, 0});
    return;
  }
  if (matches.size() > 1) {
    std::string ids;
    for (NodeId id : matches) ids += " raft:" + hexId(id);
    done(PolicyResult{409, "several Raft members are called " + backquoted(node_id) + ": name one of" + ids,
                      std::nullopt, 0});
    return;
  }
  if (auto refusal = refuseWithoutLeader()) {
    done(std::move(*refusal));
    return;
  }
  forward(RaftControlKind::Change, encodeConfChange({ChangeType::remove, matches.front()}), 0, deadline_ms,
          std::move(done));
}

void RaftDriver::transferLeader(const std::string& node_id, std::uint64_t deadline_ms,
                                std::function<void(PolicyResult)> done) {
  checkThread();
  if (!in_cluster_ || stopped_) {
    done(std::move(*refuseWithoutLeader()));
    return;
  }
  NodeId target = kNoNode;
  if (!node_id.empty()) {
    for (NodeId id : core_->membership().voters) {
      if (nameOf(id) == node_id || "raft:" + hexId(id) == node_id) target = id;
    }
    if (target == kNoNode) {
      done(PolicyResult{404, "no Raft voter is called " + backquoted(node_id) + " (see `zetianctl members`)",
                        std::nullopt, 0});
      return;
    }
    if (target == core_->leader()) {
      done(PolicyResult{200, "", state_.current(), 0});
      return;
    }
  }
  if (auto refusal = refuseWithoutLeader()) {
    done(std::move(*refusal));
    return;
  }
  forward(RaftControlKind::Transfer, "", target, deadline_ms, std::move(done));
}

void RaftDriver::setPolicyListener(std::function<void(const conf::PolicyDocument&)> listener) {
  checkThread();
  listener_ = std::move(listener);
}

// A request runs on the leader: here when this node leads, else forwarded to it. The
// leader answers at once (accepted at index/term, or refused); the caller then waits
// here for the entry to apply (or, for a transfer, for the new leader).
void RaftDriver::forward(RaftControlKind kind, std::string text, std::uint64_t index, std::uint64_t deadline_ms,
                         std::function<void(PolicyResult)> done) {
  if (core_->leader() == self_) {
    RaftControl request;
    request.kind = kind;
    request.raft_id = self_;
    request.text = std::move(text);
    request.index = index;
    request.request_id = next_request_++;
    Waiter waiter;
    waiter.id = request.request_id;
    waiter.deadline = Clock::now() + std::chrono::milliseconds(deadline_ms);
    waiter.done = std::move(done);
    waiter.kind = WaitKind::forwarded;
    waiter.target = self_;
    waiters_.emplace(waiter.id, std::move(waiter));
    handleForward(options_.node_id, request);
    return;
  }
  const auto leader_peer = peerOf(core_->leader());
  Waiter waiter;
  waiter.kind = WaitKind::forwarded;
  waiter.id = next_request_++;
  waiter.target = core_->leader();
  waiter.deadline = Clock::now() + std::chrono::milliseconds(deadline_ms);
  waiter.done = std::move(done);
  RaftControl request;
  request.kind = kind;
  request.raft_id = self_;
  request.request_id = waiter.id;
  request.index = index;
  request.text = std::move(text);
  if (kind == RaftControlKind::Change) waiter.retry = request;
  waiter.retry_at = Clock::time_point::max();
  if (!leader_peer || !host_.sendRaft(*leader_peer, request)) {
    waiter.done(PolicyResult{503, "the Raft leader " + nameOf(core_->leader()) + " is not reachable: " + noQuorumText(),
                             std::nullopt, 0});
    return;
  }
  waiters_.emplace(waiter.id, std::move(waiter));
}

// On the leader: a request from a follower (or from this node, peer == own id).
void RaftDriver::handleForward(const std::string& peer, const RaftControl& control) {
  ProposeResult result;
  std::uint64_t refusal_status = 503;
  if (!in_cluster_ || core_->role() != Role::leader) {
    result.refusal = "this node no longer leads: try again";
  } else if (reachableVoters() * 2 <= core_->membership().voters.size()) {
    result.refusal = noQuorumText();
  } else if (control.kind == RaftControlKind::Propose) {
    auto decoded = conf::decodePolicyDocument(control.text);
    if (!decoded.document) {
      result.refusal = decoded.error;
      refusal_status = 400;
    } else if (decoded.document->text.size() > kMaxPolicyTextBytes) {
      // Checked where it was proposed too; a larger entry could never be replicated
      // (kMaxEntriesPerAppend of them must fit one frame).
      result.refusal = "the policy is " + std::to_string(decoded.document->text.size()) + " bytes; at most " +
                       std::to_string(kMaxPolicyTextBytes) + " are replicated";
      refusal_status = 400;
    } else {
      conf::PolicyDocument document = std::move(*decoded.document);
      const std::uint64_t next = nextPolicyVersion();
      if (control.index != 0 && control.index != next) {
        result.refusal = "the change was made on version " + std::to_string(control.index - 1) + ", and version " +
                         std::to_string(next - 1) + " is current: get the policy again and make the change on top of it";
        refusal_status = 409;
      } else {
        document.version = next;
        result = core_->propose(conf::encodePolicyDocument(document));
        if (!result.accepted) result.refusal = "the leader refused the proposal: " + result.refusal;
      }
    }
  } else if (control.kind == RaftControlKind::Change) {
    auto change = decodeConfChange(control.text);
    if (!change) {
      result.refusal = "not a membership change: " + control.text;
      refusal_status = 400;
    } else {
      result = core_->proposeConfChange(*change);
      if (!result.accepted) {
        // One membership change at a time, and not before this leader's first entry
        // commits (core.h): that passes within a round trip or two, so the requester
        // asks again rather than failing the operator's command.
        if (result.refusal.find("is not committed yet") != std::string::npos) refusal_status = kRetryStatus;
        result.refusal = "the leader refused the change: " + result.refusal;
      }
    }
  } else if (control.kind == RaftControlKind::Transfer) {
    NodeId target = control.index;
    if (target == kNoNode) {
      // The most up-to-date other voter that is reachable.
      Index best = 0;
      for (NodeId voter : core_->membership().voters) {
        if (voter == self_ || !peerOf(voter)) continue;
        auto pr = core_->progress().find(voter);
        if (pr != core_->progress().end() && (target == kNoNode || pr->second.match > best)) {
          target = voter;
          best = pr->second.match;
        }
      }
    }
    if (target == kNoNode) {
      result.refusal = "no other voter is reachable to take the lead";
    } else {
      const TransferResult transfer = core_->transferLeader(target);
      result.accepted = transfer.started || target == self_;
      result.index = target;
      if (!result.accepted) result.refusal = transfer.refusal;
    }
  }
  pump();
  if (peer == options_.node_id) {
    // This node leads: the request's waiter is here.
    auto it = waiters_.find(control.request_id);
    if (it == waiters_.end()) return;
    Waiter& waiter = it->second;
    if (!result.accepted && refusal_status == kRetryStatus) {
      waiter.retry = control;
      waiter.retry_at = Clock::now() + options_.election_timeout / kElectionTicks;
      return;
    }
    if (!result.accepted) {
      finish(control.request_id, PolicyResult{static_cast<int>(refusal_status), result.refusal, std::nullopt, 0});
      return;
    }
    if (control.kind == RaftControlKind::Transfer) {
      waiter.kind = WaitKind::leader;
      waiter.target = result.index;
      if (result.index == self_) finish(control.request_id, PolicyResult{200, "", state_.current(), 0});
    } else {
      waiter.kind = WaitKind::entry;
      waiter.index = result.index;
      waiter.term = result.term;
    }
    return;
  }
  RaftControl answer_message;
  answer_message.kind = RaftControlKind::Reply;
  answer_message.raft_id = self_;
  answer_message.request_id = control.request_id;
  answer_message.leader = core_->leader();
  if (result.accepted) {
    answer_message.flags = wire::kRaftAccepted;
    answer_message.index = result.index;
    answer_message.term = result.term;
  } else {
    answer_message.index = refusal_status;
    answer_message.text = result.refusal.substr(0, 4096);
  }
  host_.sendRaft(peer, answer_message);
}

void RaftDriver::handleReply(const RaftControl& control) {
  auto it = waiters_.find(control.request_id);
  if (it == waiters_.end() || it->second.kind != WaitKind::forwarded) return;
  Waiter& waiter = it->second;
  if (!(control.flags & wire::kRaftAccepted) && control.index == kRetryStatus && it->second.retry) {
    it->second.retry_at = Clock::now() + options_.election_timeout / kElectionTicks;
    return;
  }
  if (!(control.flags & wire::kRaftAccepted)) {
    const int status = control.index >= 400 && control.index < 600 ? static_cast<int>(control.index) : 503;
    finish(control.request_id, PolicyResult{status, control.text, std::nullopt, 0});
    return;
  }
  if (control.term == 0) {
    // A transfer: `index` is the node that should lead.
    waiter.kind = WaitKind::leader;
    waiter.target = control.index;
    if (core_->leader() == waiter.target) finish(control.request_id, PolicyResult{200, "", state_.current(), 0});
    return;
  }
  waiter.kind = WaitKind::entry;
  waiter.index = control.index;
  waiter.term = control.term;
  if (control.index <= state_.appliedIndex()) {
    // Applied here already (the Reply came after the entry): judge it by the log.
    auto term = core_->log().term(control.index);
    PolicyResult result;
    result.index = control.index;
    if (term && *term == control.term) {
      result.document = state_.current();
    } else {
      result.status = 503;
      result.error = "the change's outcome is unknown here: see `zetianctl policy history`";
    }
    finish(control.request_id, std::move(result));
  }
}

void RaftDriver::retryWaiters() {
  const auto now = Clock::now();
  std::vector<std::uint64_t> due;
  for (const auto& [id, waiter] : waiters_) {
    if (waiter.kind == WaitKind::forwarded && waiter.retry && now >= waiter.retry_at) due.push_back(id);
  }
  for (std::uint64_t id : due) {
    auto it = waiters_.find(id);
    if (it == waiters_.end()) continue;
    Waiter& waiter = it->second;
    waiter.retry_at = Clock::time_point::max();  // until the next "not yet"
    wire::RaftControl request = *waiter.retry;
    request.raft_id = self_;
    request.request_id = id;
    if (core_->leader() == self_) {
      waiter.target = self_;
      handleForward(options_.node_id, request);
    } else if (auto leader = peerOf(core_->leader()); leader && host_.sendRaft(*leader, request)) {
      waiter.target = core_->leader();
    } else {
      waiter.retry_at = now + options_.election_timeout / kElectionTicks;  // no leader yet: later
    }
  }
}

void RaftDriver::expireWaiters() {
  const auto now = Clock::now();
  std::vector<std::pair<std::uint64_t, PolicyResult>> results;
  for (const auto& [id, waiter] : waiters_) {
    if (now < waiter.deadline) continue;
    PolicyResult result;
    result.status = 504;
    const bool quorum = reachableVoters() * 2 > core_->membership().voters.size();
    switch (waiter.kind) {
      case WaitKind::read:
        result.error = "the read was not confirmed by a quorum in time" + (quorum ? std::string() : ": " + noQuorumText());
        break;
      case WaitKind::leader:
        result.error = "the leadership did not move in time";
        break;
      default:
        result.error = "not committed in time (it may still be: see `zetianctl policy history`); " +
                       (quorum ? "the leader is " + nameOf(core_->leader()) : noQuorumText());
        break;
    }
    results.push_back({id, std::move(result)});
  }
  finishAll(std::move(results));
}

void RaftDriver::finish(std::uint64_t id, PolicyResult result) {
  auto it = waiters_.find(id);
  if (it == waiters_.end()) return;
  // Out of the map before the call: a caller may start another request from `done`.
  auto done = std::move(it->second.done);
  waiters_.erase(it);
  if (done) done(std::move(result));
}

void RaftDriver::finishAll(std::vector<std::pair<std::uint64_t, PolicyResult>> results) {
  for (auto& [id, result] : results) finish(id, std::move(result));
}

void RaftDriver::answerAll(int status, const std::string& error) {
  std::vector<std::pair<std::uint64_t, PolicyResult>> results;
  for (const auto& [id, waiter] : waiters_) results.push_back({id, PolicyResult{status, error, std::nullopt, 0}});
  finishAll(std::move(results));
}

// ---- what /health shows --------------------------------------------------------------

RaftStatus RaftDriver::status() const {
  checkThread();
  RaftStatus s;
  s.raft_id = self_;
  s.leader_changes = leader_changes_;
  s.snapshots_taken = snapshots_taken_;
  s.snapshots_installed = snapshots_installed_;
  if (!in_cluster_ || !core_) {
    if (stopped_) {
      s.waiting_for = stop_reason_;
    } else if (bootstrapping_) {
      s.waiting_for = "the cluster's first snapshot to be written";
    } else {
      bool cluster_seen = false;
      std::size_t met = 1;
      for (const auto& [peer, state] : peers_) {
        cluster_seen = cluster_seen || state.in_cluster;
        if (state.status_seen && state.bootstrap && !state.in_cluster) ++met;
      }
      if (cluster_seen) {
        s.waiting_for = "the Raft cluster's leader to add this node";
      } else if (options_.bootstrap_expect > 0) {
        s.waiting_for = std::to_string(options_.bootstrap_expect) + " members with bootstrap_expect to start a cluster (" +
                        std::to_string(met) + " met)";
      } else {
        s.waiting_for = "a member of a Raft cluster to join (bootstrap_expect is 0 here)";
      }
    }
    return s;
  }
  s.in_cluster = true;
  if (stopped_) s.waiting_for = stop_reason_;
  const Membership& members = core_->membership();
  s.role = members.isLearner(self_) ? "learner" : std::string(roleName(core_->role()));
  if (core_->leader() != kNoNode) s.leader = nameOf(core_->leader());
  s.term = core_->term();
  s.commit_index = core_->log().committed();
  s.applied_index = state_.appliedIndex();
  if (state_.current()) s.policy_version = state_.version();
  auto add = [&](NodeId id, const char* role) {
    RaftMemberView view;
    view.raft_id = id;
    view.id = nameOf(id);
    view.role = role;
    view.self = id == self_;
    if (core_->role() == Role::leader) {
      if (id == self_) {
        view.match_index = core_->log().lastIndex();
      } else if (auto pr = core_->progress().find(id); pr != core_->progress().end()) {
        view.match_index = pr->second.match;
      }
    }
    s.members.push_back(std::move(view));
  };
  for (NodeId id : members.voters) add(id, "voter");
  for (NodeId id : members.learners) add(id, "learner");
  std::sort(s.members.begin(), s.members.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  s.voters = members.voters.size();
  s.voters_reachable = reachableVoters();
  return s;
}

std::optional<conf::PolicyDocument> RaftDriver::policy() const {
  checkThread();
  return state_.current();
}

std::vector<PolicyHistoryItem> RaftDriver::history() const {
  checkThread();
  return {state_.history().begin(), state_.history().end()};
}

}  // namespace zetian::cluster::raft
