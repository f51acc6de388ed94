// The Raft driver: runs one node's RaftCore on the cluster thread, writes what it must
// not forget to node.state_dir/raft through a writer thread, carries its messages on
// the node links, and applies the committed entries to the replicated policy
// (policy_state.h). It is the PolicyService the engine uses (policy_service.h).
//
// Identity. A node's Raft id is a random 64-bit number drawn when its raft folder is
// created (the file `identity`), never its node.id: a node whose folder was emptied
// comes back as a new member, since a Raft id is never reused (membership.h). The
// replicated state maps Raft ids to node ids (a member-name entry written by the
// leader before it adds a node); live links map them too, through each peer's Status.
//
// Forming a cluster. Every node starts outside any Raft cluster, unless its folder
// holds a snapshot (every member has one: the first is written when the cluster is
// started). A node outside keeps enforcing its own file's policy and announces a
// Status (in no cluster, its bootstrap_expect) to each peer that runs Raft. When it has
// met bootstrap_expect such nodes (itself included), none of them in a cluster, the one
// with the smallest node.id starts the cluster alone: it writes a snapshot at index 1
// holding its file's policy as version 1, its name, and itself as the only voter, then
// campaigns. Every other node, once it hears a Status from a member of a cluster that
// names the leader, asks that leader to add it (Join); the leader records its name and
// adds it as a learner, sends it the snapshot, and promotes it to voter once it has
// caught up, while there are fewer than max_voters voters. So only one node ever
// starts a cluster, and two clusters form only if the nodes cannot see each other
// when they start (bootstrap_expect, like Consul's, must be the number of nodes that
// start together).
//
// Writes. A Ready's snapshot, entries and a changed term or vote are written and
// fsynced on the writer thread, one Ready at a time; the core keeps stepping messages
// meanwhile, so the next Ready carries everything that came in during the write, and
// one fsync covers it all. Messages leave only after their Ready's write. The commit
// index is written with term and vote changes, and after a policy change is applied
// (so a restarted node enforces it before it hears a leader); otherwise Raft relearns
// it from the leader.
//
// Proposals, reads and changes made on a follower are forwarded to the leader
// (RaftControl); the caller is answered when this node has applied the entry at the
// index and term the leader gave it, or at its deadline.
//
// Threads: every method but the constructor runs on the loop thread and checks it.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/log_sink.h"
#include "cluster/loop.h"
#include "cluster/raft/core.h"
#include "cluster/raft/policy_service.h"
#include "cluster/raft/policy_state.h"
#include "cluster/wire/codec.h"

namespace zetian::cluster::raft {

class StorageWriter;

struct DriverOptions {
  std::string node_id;          // this node's node.id
  std::string dir;              // node.state_dir/raft
  int bootstrap_expect = 0;     // [cluster] bootstrap_expect
  std::chrono::milliseconds election_timeout{1000};
  std::size_t snapshot_every = 1000;
  std::size_t max_voters = 5;
  std::string seed_policy_text; // policyText(this node's file): version 1 of a cluster it starts
};

// What the driver needs of the node (ClusterNode implements it).
class RaftHost {
 public:
  // The peers with an established link that announced kCapRaft.
  virtual std::vector<std::string> raftPeers() const = 0;
  // Queues a frame on the peer's link; false when it has no established link.
  virtual bool sendRaft(const std::string& peer, const wire::Message& message) = 0;
  // A cluster event (log line, metric, [events] exec hook).
  virtual void raftEvent(const std::string& name, std::vector<std::pair<std::string, std::string>> extra) = 0;

 protected:
  ~RaftHost() = default;
};

class RaftDriver final : public PolicyService {
 public:
  RaftDriver(Loop& loop, DriverOptions options, RaftHost& host, LogSink log);
  ~RaftDriver() override;
  RaftDriver(const RaftDriver&) = delete;
  RaftDriver& operator=(const RaftDriver&) = delete;

  // Opens the raft folder (recovery warnings are logged) and starts the writer thread
  // and the tick. False with *error saying what to do (a damaged folder, no space).
  bool start(std::string* error);
  // Answers every waiting caller (503, shutting down) and stops the writer thread.
  void stop();

  // From ClusterNode.
  void onPeerUp(const std::string& peer);
  void onPeerDown(const std::string& peer);
  void onFrame(const std::string& peer, const wire::RaftFrame& frame);
  void onControl(const std::string& peer, const wire::RaftControl& control);

  // PolicyService
  RaftStatus status() const override;
  std::optional<conf::PolicyDocument> policy() const override;
  std::vector<PolicyHistoryItem> history() const override;
  void proposePolicy(std::string text, std::optional<std::uint64_t> base_version, std::uint64_t deadline_ms,
                     std::function<void(PolicyResult)> done) override;
  void readPolicy(std::uint64_t deadline_ms, std::function<void(PolicyResult)> done) override;
  void removeMember(const std::string& node_id, std::uint64_t deadline_ms,
                    std::function<void(PolicyResult)> done) override;
  void transferLeader(const std::string& node_id, std::uint64_t deadline_ms,
                      std::function<void(PolicyResult)> done) override;
  void setPolicyListener(std::function<void(const conf::PolicyDocument&)> listener) override;

  // Tests.
  bool inClusterForTest() const { return in_cluster_; }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr int kElectionTicks = 10;  // the election timeout in ticks
  // A policy document's text is at most this big: Raft appends carry up to
  // kMaxEntriesPerAppend of them in one frame of at most 1 MiB.
  static constexpr std::size_t kMaxPolicyTextBytes = 128 * 1024;
  static constexpr std::size_t kMaxEntriesPerAppend = 4;
  struct PeerState {
    NodeId raft_id = kNoNode;
    bool status_seen = false;
    bool in_cluster = false;
    bool bootstrap = false;
    NodeId leader = kNoNode;
  };
  // A caller waiting for an entry to apply here (proposals, removals), a read, or a
  // leader (transfer).
  enum class WaitKind : std::uint8_t { entry, read, leader, forwarded };
  struct Waiter {
    WaitKind kind = WaitKind::entry;
    std::uint64_t id = 0;
    Index index = 0;     // entry: where it sits; read: the read index once granted
    Term term = 0;       // entry: its term
    NodeId target = kNoNode;  // leader: the node that should lead
    Clock::time_point deadline;
    std::function<void(PolicyResult)> done;
    // forwarded: a membership change the leader could not take yet (an earlier change,
    // or its own first entry, is not committed): asked again at retry_at.
    std::optional<wire::RaftControl> retry;
    Clock::time_point retry_at;
  };

  void checkThread(CallSite where = CallSite::current()) const { loop_.checkThisThread(where); }
  void logLine(conf::LogLevel level, const std::string& line) const;
  void buildCore(DurableState durable);
  void onTick();
  void pump();  // hands the next Ready to the writer when none is in flight
  void saveCommit();
  void onWritten(Ready ready, std::optional<std::string> failure);
  void sendMessages(std::vector<Message> messages);
  void applyEntries(const std::vector<Entry>& entries);
  void loadSnapshot(const Snapshot& snapshot);
  void maybeSnapshot();
  void notePolicyApplied();
  void checkRemoved();
  void failStorage(const std::string& what);
  void broadcastStatus(bool force);
  wire::RaftControl ownStatus() const;
  void maybeBootstrap();
  void maybeJoin();
  void leaderDuties();
  void handleJoin(const std::string& peer, const wire::RaftControl& control);
  void handleForward(const std::string& peer, const wire::RaftControl& control);
  void handleReply(const wire::RaftControl& control);
  void reply(const std::string& peer, std::uint64_t request_id, const ProposeResult& result);
  void expireWaiters();
  void retryWaiters();
  // A refusal that is only "not yet": the requester asks again a tick later.
  static constexpr int kRetryStatus = 425;
  // Takes the waiter out of waiters_, then calls it (which may start another request).
  void finish(std::uint64_t id, PolicyResult result);
  void finishAll(std::vector<std::pair<std::uint64_t, PolicyResult>> results);
  void answerAll(int status, const std::string& error);
  // The answer for a change this node cannot even try: no cluster, no leader, or no
  // quorum reachable. Empty when there is a leader to ask.
  std::optional<PolicyResult> refuseWithoutLeader() const;
  std::string noQuorumText() const;
  std::uint64_t reachableVoters() const;
  std::optional<std::string> peerOf(NodeId id) const;
  std::string nameOf(NodeId id) const;
  std::uint64_t nextPolicyVersion() const;
  void forward(wire::RaftControlKind kind, std::string text, std::uint64_t index, std::uint64_t deadline_ms,
               std::function<void(PolicyResult)> done);
  void onSoftState(const SoftState& soft);

  Loop& loop_;
  const DriverOptions options_;
  RaftHost& host_;
  LogSink log_;
  NodeId self_ = kNoNode;
  std::unique_ptr<StorageWriter> writer_;
  std::unique_ptr<RaftCore> core_;  // null until start()
  bool in_cluster_ = false;  // this node's folder holds a snapshot (it started or joined a cluster)
  bool write_in_flight_ = false;
  bool bootstrapping_ = false;
  bool stopped_ = false;  // stop(), a storage failure, or this node was removed
  std::string stop_reason_;
  bool commit_dirty_ = false;
  Index replay_until_ = 0;  // the commit index found at start: entries up to it are replays  // a policy entry applied since the commit index was written
  HardState written_hard_state_;
  PolicyState state_;
  Index last_snapshot_index_ = 0;
  SoftState soft_;
  std::map<std::string, PeerState> peers_;  // by node.id, links that announced kCapRaft
  std::map<NodeId, std::string> live_names_;  // Raft id -> node.id, from Statuses
  wire::RaftControl last_status_;  // as last broadcast
  std::map<NodeId, Clock::time_point> last_join_proposed_;  // leader: joins under way
  Clock::time_point next_join_at_{};
  std::map<std::uint64_t, Waiter> waiters_;
  std::uint64_t next_request_ = 1;
  std::function<void(const conf::PolicyDocument&)> listener_;
  std::uint64_t notified_version_ = 0;
  std::uint64_t leader_changes_ = 0;
  std::uint64_t snapshots_taken_ = 0;
  std::uint64_t snapshots_installed_ = 0;
  Timer tick_;
  Clock::time_point started_at_ = Clock::now();
};

}  // namespace zetian::cluster::raft
