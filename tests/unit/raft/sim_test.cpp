// Randomized simulation of 3 to 7 Raft cores on simulated time (in the manner of
// canonical/raft's fixture): a network that drops, duplicates, delays and so reorders
// messages, partitions that come and go, and crashes at any point of a Ready's handling
// that keep only what the node had written. After every step it checks the paper's
// safety properties (figure 3):
//   election safety      at most one leader per term, ever;
//   leader append-only   a leader never overwrites or deletes its own entries;
//   log matching         two logs with the same term at an index agree up to it;
//   leader completeness  a leader of term T holds every entry committed before T;
//   state machine safety every node applies the same entry at each index;
// and at the end, after healing everything, that every proposal a client saw applied
// on the leader it asked is applied on every node (and that the cluster still makes
// progress: a last proposal commits on every member).
//
// Some seeds also change the membership as they go (spare nodes join as learners, are
// promoted, members are removed, leaders included) and transfer the leadership; every
// seed issues linearizable reads at random nodes and checks each released read: its
// index is applied on the node that serves it, and is at least the highest commit index
// any node had seen when the read was issued (a read never misses a completed write).
//
// ZETIAN_RAFT_SIM_SEED=n replays one seed and prints its trace; ZETIAN_RAFT_SIM_SEEDS=n
// runs n seeds instead of the default (a long campaign: docs/raft.md).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <stdexcept>

#include "tests/unit/raft/network.h"

namespace zetian::cluster::raft::testing {
namespace {

struct InFlight {
  int due_round;
  Message message;
};

struct SimNode {
  std::unique_ptr<RaftCore> core;
  Storage storage;
  Index applied = 0;  // how many entries this incarnation's state machine applied
  int down_until = -1;
  // A Ready written but not yet finished (sent, applied, advanced): the driver's
  // fsync runs off the loop, and messages keep arriving and being stepped meanwhile.
  std::optional<Ready> held;
};

class Simulation {
 public:
  explicit Simulation(std::uint64_t seed, bool verbose) : rng_(seed), seed_(seed), verbose_(verbose) {
    const int size = pick(3, 7);
    base_.pre_vote = coin(0.5);
    base_.check_quorum = coin(0.5);
    base_.heartbeat_ticks = pick(1, 3);
    base_.election_ticks = 10;
    base_.max_entries_per_append = static_cast<std::size_t>(pick(1, 8));
    base_.max_inflight_appends = static_cast<std::size_t>(pick(1, 16));
    // How rough the run is varies by seed: some calm, some with a crash or a new
    // partition every few dozen rounds.
    crash_rate_ = std::vector<double>{0.002, 0.01, 0.03}[static_cast<std::size_t>(pick(0, 2))];
    ready_crash_rate_ = std::vector<double>{0.001, 0.003, 0.01}[static_cast<std::size_t>(pick(0, 2))];
    partition_rate_ = std::vector<double>{0.01, 0.05}[static_cast<std::size_t>(pick(0, 1))];
    groups_ = pick(2, 3);
    hold_rate_ = std::vector<double>{0, 0.3, 0.7}[static_cast<std::size_t>(pick(0, 2))];
    drop_ = pick(0, 20) / 100.0;
    duplicate_ = pick(0, 10) / 100.0;
    max_delay_ = pick(0, 3);
    change_rate_ = std::vector<double>{0, 0.01, 0.04}[static_cast<std::size_t>(pick(0, 2))];
    transfer_rate_ = std::vector<double>{0, 0.005, 0.02}[static_cast<std::size_t>(pick(0, 2))];
    snapshot_rate_ = std::vector<double>{0, 0.01, 0.05}[static_cast<std::size_t>(pick(0, 2))];
    // Spare nodes run from the start outside the cluster (the initial membership, an
    // empty log), waiting to be added.
    const int spares = change_rate_ > 0 ? pick(1, 2) : 0;
    for (int i = 1; i <= size; ++i) base_.voters.push_back(static_cast<NodeId>(i));
    ever_member_.insert(base_.voters.begin(), base_.voters.end());
    for (int i = 1; i <= size + spares; ++i) {
      nodes_[static_cast<NodeId>(i)];
      start(static_cast<NodeId>(i));
    }
    note("cluster of " + std::to_string(size) + " crash_rate=" + std::to_string(crash_rate_) + " pre_vote=" + std::to_string(base_.pre_vote) +
         " check_quorum=" + std::to_string(base_.check_quorum) + " heartbeat=" +
         std::to_string(base_.heartbeat_ticks) + " drop=" + std::to_string(drop_) + " duplicate=" +
         std::to_string(duplicate_) + " max_delay=" + std::to_string(max_delay_) + " spares=" +
         std::to_string(spares) + " change_rate=" + std::to_string(change_rate_) +
         " transfer_rate=" + std::to_string(transfer_rate_) + " snapshot_rate=" + std::to_string(snapshot_rate_));
  }

  void run(int rounds) {
    for (round_ = 0; round_ < rounds; ++round_) {
      faults();
      clientProposes();
      operatorActs();
      clientReads();
      takeSnapshots();
      for (NodeId id : upNodes()) nodes_[id].core->tick();
      stepAll();
    }
    settle();
  }

  const std::deque<std::string>& trace() const { return trace_; }

  // What a run exercised, so the test can tell the features were reached at all.
  struct Stats {
    std::uint64_t changes = 0;    // membership changes committed
    std::uint64_t handovers = 0;  // timeout_now messages sent (transfers reaching their end)
    std::uint64_t reads = 0;      // reads released and checked
    std::uint64_t installs = 0;   // snapshots a leader sent that a follower installed
  };
  Stats stats() const {
    Stats out = stats_;
    out.changes = static_cast<std::uint64_t>(
        std::count_if(applied_.begin(), applied_.end(), [](const Entry& e) { return e.type == EntryType::config; }));
    return out;
  }

 private:
  // ---- randomness --------------------------------------------------------------------
  int pick(int lo, int hi) { return lo + static_cast<int>(rng_() % static_cast<std::uint64_t>(hi - lo + 1)); }
  bool coin(double p) { return static_cast<double>(rng_() % 1000000) < p * 1000000.0; }

  void note(const std::string& line) {
    if (verbose_) std::cout << "[" << round_ << "] " << line << "\n";
    trace_.push_back("[" + std::to_string(round_) + "] " + line);
    if (trace_.size() > 60) trace_.pop_front();
  }

  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("seed " + std::to_string(seed_) + ", round " + std::to_string(round_) + ": " + what);
  }

  std::vector<NodeId> upNodes() const {
    std::vector<NodeId> out;
    for (const auto& [id, node] : nodes_) {
      if (node.core) out.push_back(id);
    }
    return out;
  }

  // ---- nodes -------------------------------------------------------------------------
  void start(NodeId id) {
    SimNode& node = nodes_[id];
    Config c = base_;
    c.id = id;
    c.seed = seed_ * 131 + id * 7 + restarts_++;
    node.core = std::make_unique<RaftCore>(c, node.storage.durable());
    // The state machine is loaded from the snapshot, then rebuilt from the log after it.
    node.applied = node.storage.snapshot ? node.storage.snapshot->index : 0;
    node.down_until = -1;
  }

  void crash(NodeId id, const std::string& when) {
    SimNode& node = nodes_[id];
    node.core.reset();
    node.held.reset();
    node.down_until = round_ + pick(1, 40);
    note("crash " + std::to_string(id) + " " + when);
  }

  // ---- faults and clients ------------------------------------------------------------
  void faults() {
    for (auto it = stop_at_.begin(); it != stop_at_.end();) {
      if (it->second > round_) {
        ++it;
        continue;
      }
      SimNode& node = nodes_[it->first];
      node.core.reset();
      node.held.reset();
      stopped_.insert(it->first);
      note("stop removed node " + std::to_string(it->first));
      it = stop_at_.erase(it);
    }
    for (auto& [id, node] : nodes_) {
      if (stopped_.contains(id)) continue;
      if (!node.core && node.down_until <= round_) {
        start(id);
        note("restart " + std::to_string(id) + " term=" + std::to_string(node.core->term()) +
             " last=" + std::to_string(node.core->log().lastIndex()));
      }
    }
    if (coin(crash_rate_)) {
      auto up = upNodes();
      // Half the crashes hit a leader: the histories of the paper's figure 8 need
      // leaders that die with entries half replicated.
      std::vector<NodeId> leaders;
      for (NodeId id : up) {
        if (nodes_[id].core->role() == Role::leader) leaders.push_back(id);
      }
      auto& from = !leaders.empty() && coin(0.5) ? leaders : up;
      if (!from.empty()) crash(from[static_cast<std::size_t>(pick(0, static_cast<int>(from.size()) - 1))], "between readies");
    }
    if (group_.empty() && coin(partition_rate_)) {
      std::string desc;
      for (const auto& [id, node] : nodes_) {
        group_[id] = pick(0, groups_ - 1);
        desc += " " + std::to_string(id) + ":" + std::to_string(group_[id]);
      }
      note("partition" + desc);
    } else if (!group_.empty() && coin(0.05)) {
      group_.clear();
      note("heal");
    }
  }

  void clientProposes() {
    if (!coin(0.3)) return;
    for (NodeId id : upNodes()) {
      RaftCore& core = *nodes_[id].core;
      if (core.role() != Role::leader) continue;
      const std::string data = "v" + std::to_string(next_value_++);
      ProposeResult r = core.propose(data);
      if (r.accepted) pending_.push_back({id, r.index, r.term, data});
      return;
    }
  }

  RaftCore* someLeader() {
    for (NodeId id : upNodes()) {
      if (nodes_[id].core->role() == Role::leader) return nodes_[id].core.get();
    }
    return nullptr;
  }

  // Membership changes and leadership transfers, at a leader, as an operator would.
  void operatorActs() {
    RaftCore* leader = someLeader();
    if (!leader) return;
    if (coin(change_rate_)) {
      const Membership& m = leader->membership();
      std::vector<ConfChange> options;
      for (const auto& [id, node] : nodes_) {
        if (!m.isMember(id)) {
          // Node ids are never reused: a removed node stays out (and keeps running,
          // which is what shows it cannot disrupt the cluster).
          if (ever_member_.contains(id)) continue;
          options.push_back({coin(0.8) ? ChangeType::add_learner : ChangeType::add_voter, id});
        } else if (m.isLearner(id)) {
          options.push_back({coin(0.5) ? ChangeType::promote : ChangeType::remove, id});
        } else if (m.voters.size() > 2) {
          options.push_back({ChangeType::remove, id});
        }
      }
      if (!options.empty()) {
        const ConfChange change = options[static_cast<std::size_t>(pick(0, static_cast<int>(options.size()) - 1))];
        ProposeResult r = leader->proposeConfChange(change);
        if (r.accepted) ever_member_.insert(change.node);
        note(std::to_string(leader->id()) + " " + encodeConfChange(change) + ": " +
             (r.accepted ? "proposed at " + std::to_string(r.index) : "refused: " + r.refusal));
      }
    }
    if (coin(transfer_rate_)) {
      std::vector<NodeId> voters(leader->membership().voters.begin(), leader->membership().voters.end());
      const NodeId target = voters[static_cast<std::size_t>(pick(0, static_cast<int>(voters.size()) - 1))];
      TransferResult r = leader->transferLeader(target);
      note(std::to_string(leader->id()) + " transfer to " + std::to_string(target) + ": " +
           (r.started ? "started" : "refused: " + r.refusal));
    }
  }

  void clientReads() {
    if (!coin(0.1)) return;
    auto up = upNodes();
    const NodeId id = up.empty() ? kNoNode : up[static_cast<std::size_t>(pick(0, static_cast<int>(up.size()) - 1))];
    if (id == kNoNode) return;
    const std::string context = "r" + std::to_string(next_read_++);
    if (nodes_[id].core->readIndex(context).accepted) reads_issued_[context] = committed_.size();
  }

  // ---- steps -------------------------------------------------------------------------
  void stepAll() {
    for (int pass = 0; pass < 3; ++pass) {
      auto ids = upNodes();
      std::shuffle(ids.begin(), ids.end(), rng_);
      for (NodeId id : ids) {
        processReady(id);
        check(id);
      }
      deliverDue();
    }
  }

  void processReady(NodeId id) {
    SimNode& node = nodes_[id];
    if (!node.core) return;
    if (node.held) return finishReady(id);
    if (!node.core->hasReady()) return;
    Ready rd = node.core->ready();
    if (faults_ && coin(ready_crash_rate_)) return crash(id, "before writing a ready");
    node.storage.write(rd);
    if (faults_ && coin(ready_crash_rate_)) return crash(id, "after writing, before sending");
    node.held = std::move(rd);
    if (!coin(hold_rate_)) finishReady(id);
  }

  void finishReady(NodeId id) {
    SimNode& node = nodes_[id];
    Ready rd = std::move(*node.held);
    node.held.reset();
    for (Message& m : rd.messages) {
      if (m.type == MessageType::timeout_now) ++stats_.handovers;
      send(std::move(m));
    }
    if (rd.snapshot) install(id, *rd.snapshot);
    for (const Entry& e : rd.committed) apply(id, e);
    for (const ReadState& r : rd.read_states) serveRead(id, r);
    node.core->advance();
  }

  void send(Message m) {
    if (coin(drop_)) return;
    const int copies = coin(duplicate_) ? 2 : 1;
    for (int i = 0; i < copies; ++i) network_.push_back({round_ + pick(0, max_delay_), m});
  }

  bool linked(NodeId a, NodeId b) const { return group_.empty() || group_.at(a) == group_.at(b); }

  void deliverDue() {
    std::vector<InFlight> due;
    std::vector<InFlight> later;
    for (InFlight& f : network_) (f.due_round <= round_ ? due : later).push_back(std::move(f));
    network_ = std::move(later);
    std::shuffle(due.begin(), due.end(), rng_);
    for (InFlight& f : due) {
      const Message& m = f.message;
      SimNode& node = nodes_[m.to];
      if (!node.core || !linked(m.from, m.to)) continue;
      node.core->step(m);
      check(m.to);
    }
  }

  // The application snapshots a node at a random point of what it has applied (and
  // the core holds as durable); the driver stores it and drops the log it covers.
  void takeSnapshots() {
    if (snapshot_rate_ == 0) return;
    for (NodeId id : upNodes()) {
      SimNode& node = nodes_[id];
      if (!coin(snapshot_rate_)) continue;
      const RaftLog& log = node.core->log();
      const Index top = std::min(log.applied(), log.stableIndex());
      if (top <= log.offset()) continue;
      const Index index = log.offset() + 1 + static_cast<Index>(pick(0, static_cast<int>(top - log.offset() - 1)));
      // The data names the state: every entry through `index`, which state machine
      // safety (below) makes the same on every node.
      Snapshot s = node.core->compact(index, "state through " + std::to_string(index));
      node.storage.compact(s);
      note("snapshot " + std::to_string(id) + " " + describe(s));
    }
  }

  void install(NodeId id, const Snapshot& s) {
    SimNode& node = nodes_[id];
    // State machine safety for snapshots: it replaces applied state only with a later
    // one, and stands for entries that were applied (somewhere) exactly so.
    if (s.index <= node.applied) {
      fail("node " + std::to_string(id) + " installs " + describe(s) + " at applied " + std::to_string(node.applied));
    }
    if (s.index > applied_.size() || applied_[s.index - 1].term != s.term ||
        s.data != "state through " + std::to_string(s.index)) {
      fail("node " + std::to_string(id) + " installs " + describe(s) + " that no state machine reached");
    }
    node.applied = s.index;
    ++stats_.installs;
    note("install " + std::to_string(id) + " " + describe(s));
  }

  void apply(NodeId id, const Entry& e) {
    SimNode& node = nodes_[id];
    if (e.index != node.applied + 1) {
      fail("node " + std::to_string(id) + " applied " + describe(e) + " after index " + std::to_string(node.applied));
    }
    node.applied = e.index;
    // State machine safety: one entry per index, whoever applies it.
    if (e.index <= applied_.size()) {
      if (applied_[e.index - 1] != e) {
        fail("node " + std::to_string(id) + " applied " + describe(e) + " where another applied " +
             describe(applied_[e.index - 1]));
      }
    } else {
      applied_.push_back(e);
      auto change = e.type == EntryType::config ? decodeConfChange(e.data) : std::nullopt;
      if (change && change->type == ChangeType::remove) {
        // The operator stops a removed node, some time after its removal commits; until
        // then it runs with whatever view it has, which must not disturb anyone.
        stop_at_[change->node] = round_ + pick(0, 60);
      }
    }
    for (const Pending& p : pending_) {
      if (p.node == id && p.index == e.index && p.term == e.term && !acknowledged_.contains(e.index)) {
        acknowledged_[e.index] = e;
        note("acknowledged " + describe(e));
      }
    }
  }

  void serveRead(NodeId id, const ReadState& r) {
    auto issued = reads_issued_.find(r.context);
    if (issued == reads_issued_.end()) fail("node " + std::to_string(id) + " released unknown read " + r.context);
    if (nodes_[id].applied < r.index) {
      fail("node " + std::to_string(id) + " released read " + r.context + " at index " + std::to_string(r.index) +
           " with only " + std::to_string(nodes_[id].applied) + " applied");
    }
    if (r.index < issued->second) {
      fail("read " + r.context + " at index " + std::to_string(r.index) + " misses commits up to " +
           std::to_string(issued->second) + " made before it was issued");
    }
    ++stats_.reads;
  }

  // ---- invariants --------------------------------------------------------------------
  // Only `id` changed since the last check, so only its pairs can break.
  void check(NodeId id) {
    if (!nodes_[id].core) return;
    const RaftCore& c = *nodes_[id].core;
    if (c.role() == Role::leader) {
      auto [it, fresh] = leaders_.emplace(c.term(), id);
      if (fresh) note(std::to_string(id) + " leads term " + std::to_string(c.term()));
      if (it->second != id) {
        fail("two leaders in term " + std::to_string(c.term()) + ": " + std::to_string(it->second) + " and " +
             std::to_string(id));
      }
      checkLeaderCompleteness(id, c);
      checkLeaderAppendOnly(id, c);
    }
    recordCommits(id, c);
    for (NodeId other : upNodes()) {
      if (other != id) checkLogMatching(id, other);
    }
  }

  void recordCommits(NodeId id, const RaftCore& c) {
    const RaftLog& log = c.log();
    const Index offset = log.offset();
    if (offset > committed_.size()) {
      fail("node " + std::to_string(id) + " holds a snapshot at " + std::to_string(offset) +
           " beyond anything committed");
    }
    for (Index i = committed_.size() + 1; i <= log.committed(); ++i) {
      committed_.push_back({log.all()[i - offset - 1], c.term()});
    }
    // The snapshot's last entry is a committed one.
    if (offset > 0 && log.term(offset) != committed_[offset - 1].entry.term) {
      fail("node " + std::to_string(id) + " has a snapshot at " + std::to_string(offset) + " of term " +
           std::to_string(*log.term(offset)) + " where " + describe(committed_[offset - 1].entry) + " was committed");
    }
    // A committed entry never changes in any log that holds it.
    for (Index i = offset + 1; i <= log.committed(); ++i) {
      const Entry& held = log.all()[i - offset - 1];
      if (held != committed_[i - 1].entry) {
        fail("node " + std::to_string(id) + " holds " + describe(held) + " at committed index " +
             std::to_string(i) + " where " + describe(committed_[i - 1].entry) + " was committed");
      }
    }
  }

  void checkLogMatching(NodeId a, NodeId b) {
    // Over the indexes both still hold (after either's snapshot): where the terms agree
    // last, everything before agrees too.
    const RaftLog& ra = nodes_[a].core->log();
    const RaftLog& rb = nodes_[b].core->log();
    const Index lo = std::max(ra.offset(), rb.offset());
    Index i = std::min(ra.lastIndex(), rb.lastIndex());
    while (i > lo && *ra.term(i) != *rb.term(i)) --i;
    for (Index k = lo + 1; k <= i; ++k) {
      const Entry& ea = ra.all()[k - ra.offset() - 1];
      const Entry& eb = rb.all()[k - rb.offset() - 1];
      if (ea != eb) {
        fail("log matching: nodes " + std::to_string(a) + " and " + std::to_string(b) + " agree at index " +
             std::to_string(i) + " but differ at " + std::to_string(k) + ": " + describe(ea) + " vs " + describe(eb));
      }
    }
  }

  // A leader never overwrites or deletes entries of its own log (figure 3): while it
  // leads a term, the last entry it had is still there and nothing was cut.
  void checkLeaderAppendOnly(NodeId id, const RaftCore& c) {
    auto& seen = leader_tail_[id];
    const Entry* last = c.log().all().empty() ? nullptr : &c.log().all().back();
    if (seen.term == c.term() && seen.index > 0) {
      // An entry its own snapshot covers is still there, as the snapshot.
      const bool compacted = seen.index < c.log().offset();
      if (c.log().lastIndex() < seen.index || (!compacted && !c.log().matchTerm(seen.index, seen.entry_term))) {
        fail("leader " + std::to_string(id) + " of term " + std::to_string(c.term()) + " lost its entry " +
             std::to_string(seen.entry_term) + "/" + std::to_string(seen.index));
      }
    }
    seen = {c.term(), last ? last->index : 0, last ? last->term : 0};
  }

  void checkLeaderCompleteness(NodeId id, const RaftCore& c) {
    for (const Committed& k : committed_) {
      if (k.observed_term >= c.term()) continue;
      // Below its snapshot: recordCommits() checked the snapshot's entry is committed.
      if (k.entry.index < c.log().offset()) continue;
      if (!c.log().matchTerm(k.entry.index, k.entry.term)) {
        fail("leader " + std::to_string(id) + " of term " + std::to_string(c.term()) + " lacks " +
             describe(k.entry) + ", committed by term " + std::to_string(k.observed_term));
      }
    }
  }

  // ---- the end: heal, wait for progress, check acknowledged proposals ---------------
  void settle() {
    faults_ = false;
    group_.clear();
    drop_ = 0;
    duplicate_ = 0;
    for (auto& [id, node] : nodes_) {
      if (!node.core && !stopped_.contains(id)) start(id);
    }
    note("settle: healed, all up, no loss");
    Index marker_index = 0;  // where the last proposal sits; 0: none yet
    Term marker_term = 0;
    bool done = false;
    const int limit = round_ + 3000;
    for (; round_ < limit && !done; ++round_) {
      for (NodeId id : upNodes()) nodes_[id].core->tick();
      stepAll();
      for (NodeId id : upNodes()) {
        RaftCore& core = *nodes_[id].core;
        if (core.role() != Role::leader) continue;
        // A marker its leader lost before it committed is proposed again.
        if (marker_index != 0 && !core.log().matchTerm(marker_index, marker_term)) marker_index = 0;
        if (marker_index == 0) {
          ProposeResult r = core.propose("final");
          if (r.accepted) {
            marker_index = r.index;
            marker_term = r.term;
          }
        }
      }
      RaftCore* leader = someLeader();
      done = marker_index != 0 && leader && allApplied(marker_index, leader->membership()) &&
             applied_[marker_index - 1].term == marker_term;
    }
    if (!done) {
      fail("no progress after healing (liveness); marker at " + std::to_string(marker_index) + "\n" +
           describeNodes());
    }
    for (const auto& [index, entry] : acknowledged_) {
      if (applied_.size() < index || applied_[index - 1] != entry) {
        fail("acknowledged " + describe(entry) + " is not what every node applied");
      }
    }
  }

  std::string describeNodes() const {
    std::string out;
    for (const auto& [id, node] : nodes_) {
      if (!node.core) continue;
      const RaftCore& c = *node.core;
      out += "  " + std::to_string(id) + ": " + std::string(roleName(c.role())) + " term=" + std::to_string(c.term()) +
             " leader=" + std::to_string(c.leader()) + " last=" + std::to_string(c.log().lastTerm()) + "/" +
             std::to_string(c.log().lastIndex()) + " commit=" + std::to_string(c.log().committed()) +
             " applied=" + std::to_string(node.applied) + "\n";
      for (const auto& [peer, pr] : c.progress()) {
        out += "     " + std::to_string(peer) + " match=" + std::to_string(pr.match) + " next=" +
               std::to_string(pr.next) + (pr.state == Progress::State::probe ? " probe" : " replicate") +
               " probe_sent=" + std::to_string(pr.probe_sent) + " inflight=" + std::to_string(pr.inflight.size()) + "\n";
      }
    }
    return out;
  }

  // Every member (voter or learner) has applied `index`; removed and spare nodes are
  // not waited for.
  bool allApplied(Index index, const Membership& members) const {
    for (const auto& [id, node] : nodes_) {
      if (!members.isMember(id)) continue;
      if (!node.core || node.applied < index) return false;
    }
    return true;
  }

  struct Pending {
    NodeId node;
    Index index;
    Term term;
    std::string data;
  };
  struct LeaderTail {
    Term term = 0;  // the term it led when last checked
    Index index = 0;
    Term entry_term = 0;
  };
  struct Committed {
    Entry entry;
    Term observed_term;  // the term of the node that first showed it committed
  };

  std::mt19937_64 rng_;
  std::uint64_t seed_;
  bool verbose_;
  Config base_;
  double crash_rate_ = 0;        // per round: a node crashes between Readies
  double ready_crash_rate_ = 0;  // per Ready: before its writes, or after them
  double partition_rate_ = 0;    // per round while healed
  int groups_ = 2;
  double snapshot_rate_ = 0;     // per round and node: the application snapshots it
  double hold_rate_ = 0;         // per Ready: finished only at the node's next turn
  double drop_ = 0;
  double duplicate_ = 0;
  int max_delay_ = 0;
  double change_rate_ = 0;    // per round: the leader is asked for a membership change
  double transfer_rate_ = 0;  // per round: the leader is asked to hand over
  bool faults_ = true;  // crashes inside a Ready's handling (off while settling)
  int round_ = 0;
  std::uint64_t restarts_ = 0;
  std::uint64_t next_value_ = 0;
  std::map<NodeId, SimNode> nodes_;
  std::map<NodeId, int> group_;
  std::vector<InFlight> network_;
  std::map<Term, NodeId> leaders_;
  std::map<NodeId, LeaderTail> leader_tail_;
  std::vector<Entry> applied_;
  std::vector<Committed> committed_;
  std::vector<Pending> pending_;
  std::map<Index, Entry> acknowledged_;
  Stats stats_;
  std::set<NodeId> ever_member_;
  std::map<NodeId, int> stop_at_;  // removed nodes: the round the operator stops them
  std::set<NodeId> stopped_;  // proposed as a member once: never added again
  std::uint64_t next_read_ = 0;
  std::map<std::string, std::size_t> reads_issued_;  // context -> highest commit seen at issue

  std::deque<std::string> trace_;
};

std::optional<std::uint64_t> envNumber(const char* name) {
  const char* value = std::getenv(name);
  if (!value || !*value) return std::nullopt;
  return std::stoull(value);
}

bool runSeed(std::uint64_t seed, bool verbose, std::string& failure, Simulation::Stats* total = nullptr) {
  Simulation sim(seed, verbose);
  try {
    sim.run(400);
    if (total) {
      total->changes += sim.stats().changes;
      total->handovers += sim.stats().handovers;
      total->reads += sim.stats().reads;
      total->installs += sim.stats().installs;
    }
  } catch (const std::exception& e) {
    failure = e.what();
    failure += "\nlast events:\n";
    for (const auto& line : sim.trace()) failure += "  " + line + "\n";
    failure += "replay: ZETIAN_RAFT_SIM_SEED=" + std::to_string(seed) + " raft_sim_test\n";
    return false;
  }
  return true;
}

TEST(RaftSimulation, SafetyHoldsUnderLossDelayPartitionsAndCrashes) {
  if (auto one = envNumber("ZETIAN_RAFT_SIM_SEED")) {
    std::string failure;
    EXPECT_TRUE(runSeed(*one, true, failure)) << failure;
    return;
  }
  const std::uint64_t seeds = envNumber("ZETIAN_RAFT_SIM_SEEDS").value_or(300);
  const auto start = std::chrono::steady_clock::now();
  Simulation::Stats total;
  for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
    std::string failure;
    ASSERT_TRUE(runSeed(seed, false, failure, &total)) << failure;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << seeds << " seeds in " << seconds << " s: " << total.changes << " membership changes committed, "
            << total.handovers << " leadership handovers, " << total.reads << " reads checked, " << total.installs
            << " snapshots installed\n";
  if (seeds >= 100) {
    // A third of the seeds change membership and transfer leadership, all of them read.
    EXPECT_GT(total.changes, seeds / 10);
    EXPECT_GT(total.handovers, seeds / 10);
    EXPECT_GT(total.reads, seeds);
    EXPECT_GT(total.installs, seeds / 20);
  }
}

}  // namespace
}  // namespace zetian::cluster::raft::testing
