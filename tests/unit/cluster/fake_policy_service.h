// A scripted raft::PolicyService for the tests of its users (the admin answers, the
// engine): a status and history set by the test, and requests answered at once with a
// scripted result, or, in `commit` mode, the way the driver does it: the proposal
// becomes the next version, the listener sees it, then the proposer's callback.
// Calls come on the cluster thread and the test looks from its own: a mutex guards
// everything, and no callback runs under it.
#pragma once

#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cluster/raft/policy_service.h"

namespace zetian::cluster::testing {

class FakePolicyService : public raft::PolicyService {
 public:
  raft::RaftStatus status() const override {
    std::lock_guard lock(mutex_);
    return status_;
  }
  std::optional<conf::PolicyDocument> policy() const override {
    std::lock_guard lock(mutex_);
    return document_;
  }
  std::vector<raft::PolicyHistoryItem> history() const override {
    std::lock_guard lock(mutex_);
    return history_;
  }

  void proposePolicy(std::string text, std::optional<std::uint64_t> base_version, std::uint64_t deadline_ms,
                     std::function<void(raft::PolicyResult)> done) override {
    std::optional<raft::PolicyResult> scripted;
    std::function<void(const conf::PolicyDocument&)> listener;
    raft::PolicyResult committed;
    {
      std::lock_guard lock(mutex_);
      calls_.push_back("propose(" + (base_version ? std::to_string(*base_version) : std::string()) + "|" +
                       std::to_string(deadline_ms) + ")");
      proposed_.push_back(text);
      scripted = next_result_;
      if (!scripted) {
        conf::PolicyDocument d;
        d.version = (document_ ? document_->version : 0) + 1;
        d.proposer = proposer_;
        d.time_unix_ms = 1764450000000 + d.version;
        d.text = std::move(text);
        document_ = d;
        committed.document = d;
        committed.index = ++index_;
        history_.push_back({d.version, d.proposer, d.time_unix_ms, committed.index, d.text.size()});
        status_.policy_version = d.version;
        status_.applied_index = status_.commit_index = index_;
        listener = listener_;
      }
    }
    if (scripted) {
      done(*scripted);
      return;
    }
    if (listener) listener(*committed.document);
    done(committed);
  }
  void readPolicy(std::uint64_t deadline_ms, std::function<void(raft::PolicyResult)> done) override {
    raft::PolicyResult r;
    {
      std::lock_guard lock(mutex_);
      calls_.push_back("read(" + std::to_string(deadline_ms) + ")");
      if (next_result_) {
        r = *next_result_;
      } else {
        r.document = document_;
        r.index = index_;
      }
    }
    done(r);
  }
  void removeMember(const std::string& node_id, std::uint64_t deadline_ms,
                    std::function<void(raft::PolicyResult)> done) override {
    done(scripted("remove(" + node_id + "|" + std::to_string(deadline_ms) + ")"));
  }
  void transferLeader(const std::string& node_id, std::uint64_t deadline_ms,
                      std::function<void(raft::PolicyResult)> done) override {
    done(scripted("transfer(" + node_id + "|" + std::to_string(deadline_ms) + ")"));
  }
  // As the driver does: at once with the policy recovered from state_dir, if any.
  void setPolicyListener(std::function<void(const conf::PolicyDocument&)> listener) override {
    std::optional<conf::PolicyDocument> recovered;
    {
      std::lock_guard lock(mutex_);
      calls_.push_back("setPolicyListener");
      listener_ = listener;
      recovered = document_;
    }
    if (recovered) listener(*recovered);
  }

  // ---- the test's side ----
  void setStatus(raft::RaftStatus s) {
    std::lock_guard lock(mutex_);
    status_ = std::move(s);
  }
  void setHistory(std::vector<raft::PolicyHistoryItem> h) {
    std::lock_guard lock(mutex_);
    history_ = std::move(h);
  }
  void setDocument(std::optional<conf::PolicyDocument> d) {
    std::lock_guard lock(mutex_);
    document_ = std::move(d);
  }
  void setProposer(std::string id) {
    std::lock_guard lock(mutex_);
    proposer_ = std::move(id);
  }
  // Every request from now on is answered with `r` (nullopt: as the driver would).
  void answerWith(std::optional<raft::PolicyResult> r) {
    std::lock_guard lock(mutex_);
    next_result_ = std::move(r);
  }
  // Calls the listener as the driver does when the replicated state applies `d`.
  void apply(const conf::PolicyDocument& d) {
    std::function<void(const conf::PolicyDocument&)> listener;
    {
      std::lock_guard lock(mutex_);
      listener = listener_;
      document_ = d;
    }
    if (listener) listener(d);
  }
  bool hasListener() {
    std::lock_guard lock(mutex_);
    return static_cast<bool>(listener_);
  }
  std::vector<std::string> calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  std::vector<std::string> proposed() {
    std::lock_guard lock(mutex_);
    return proposed_;
  }

  // A status of a node in a 3-voter cluster led by mx2.
  static raft::RaftStatus inCluster() {
    raft::RaftStatus s;
    s.in_cluster = true;
    s.raft_id = 1;
    s.role = "follower";
    s.leader = "mx2";
    s.term = 7;
    s.commit_index = 30;
    s.applied_index = 29;
    s.policy_version = 4;
    s.members = {{"mx1", 1, "voter", true, std::nullopt},
                 {"mx2", 2, "voter", false, std::nullopt},
                 {"mx3", 3, "learner", false, std::nullopt}};
    s.voters = 2;
    s.voters_reachable = 2;
    s.leader_changes = 3;
    return s;
  }

 private:
  raft::PolicyResult scripted(std::string call) {
    std::lock_guard lock(mutex_);
    calls_.push_back(std::move(call));
    if (next_result_) return *next_result_;
    raft::PolicyResult r;
    r.index = ++index_;
    return r;
  }

  mutable std::mutex mutex_;
  raft::RaftStatus status_ = inCluster();
  std::optional<conf::PolicyDocument> document_;
  std::vector<raft::PolicyHistoryItem> history_;
  std::optional<raft::PolicyResult> next_result_;
  std::function<void(const conf::PolicyDocument&)> listener_;
  std::string proposer_ = "mx1";
  std::uint64_t index_ = 30;
  std::vector<std::string> calls_;
  std::vector<std::string> proposed_;
};

}  // namespace zetian::cluster::testing
