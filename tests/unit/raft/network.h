// A test bench for RaftCore: N cores, their stable storage, a network of mailboxes
// with partitions, crashes and restarts, all driven step by step by the caller (the
// scenario interpreter, the paper tests). It plays the driver's part by the book:
// handle a Ready by writing its hard state and entries to the node's Storage, then
// sending its messages, then applying its committed entries, then advance().
//
// A crash throws away the core and its mailbox and keeps only the Storage: exactly
// what the node's Readies asked to write. A restart builds a new core from it.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "cluster/raft/core.h"

namespace zetian::cluster::raft::testing {

struct Storage {
  HardState hard_state;
  std::vector<Entry> entries;  // the log after the snapshot (from 1 without one)
  std::optional<Snapshot> snapshot = std::nullopt;

  // A Ready's writes: the snapshot (replacing the whole log), the hard state, and the
  // entries over whatever the log held from the first of them on.
  void write(const Ready& ready);
  // The driver stores a snapshot compact() made, then drops the log it covers.
  void compact(const Snapshot& snapshot);
  DurableState durable() const { return {hard_state, entries, snapshot}; }
};

struct TestNode {
  std::unique_ptr<RaftCore> core;  // null while crashed
  Storage storage;
  // The state machine: every entry applied, in order. A snapshot's data is this list's
  // descriptions, one a line, so loading one rebuilds it as text (applied_text).
  std::vector<Entry> applied;
  std::vector<std::string> applied_text;
  std::vector<Message> mailbox;    // delivered on the next deliver()
  std::vector<ReadState> reads;    // every read the node's Readies released, in order
};

class Network {
 public:
  // Nodes 1..count, all voters, with `base` for everything but the id (seeds differ per
  // node: base.seed + id).
  void addNodes(int count, const Config& base);
  // A node with a prepared log (paper tests): stored as if written by earlier Readies.
  void addNode(NodeId id, const Config& base, Storage storage);

  // The config of the first node added: the cluster's initial membership, for a node
  // that joins later.
  Config baseConfig() const { return configs_.begin()->second; }
  bool has(NodeId id) const { return nodes_.contains(id); }
  bool isUp(NodeId id) const { return nodes_.at(id).core != nullptr; }
  RaftCore& core(NodeId id) { return *nodes_.at(id).core; }
  TestNode& node(NodeId id) { return nodes_.at(id); }
  std::vector<NodeId> ids() const;

  // Handles one Ready of `id` if it has one; appends a trace to `out` when given.
  bool processReady(NodeId id, std::string* out = nullptr);
  // Steps every message waiting for `id`.
  bool deliver(NodeId id, std::string* out = nullptr);
  // Ready and deliver, node by node, until nothing moves. Returns the rounds taken.
  int stabilize(std::string* out = nullptr, int max_rounds = 1000);

  // Messages between different groups are dropped as they are sent; nodes in no group
  // are each alone.
  void partition(const std::vector<std::vector<NodeId>>& groups);
  void isolate(NodeId id);
  void heal();
  bool linked(NodeId from, NodeId to) const;

  // The application snapshots node `id` at its applied index (or `index` when not 0).
  Snapshot compact(NodeId id, Index index = 0);

  void crash(NodeId id);
  void restart(NodeId id);

  // One line per node (role, term, leader, commit, applied, last) for scenarios.
  std::string describeState() const;
  std::string describeLog(NodeId id) const;

 private:
  // The config a node was created with, to restart it the same way.
  std::map<NodeId, Config> configs_;
  std::map<NodeId, TestNode> nodes_;
  std::map<NodeId, int> group_;  // partition group per node; absent = healed
};

// A trace line for role or term changes since `before`, e.g. "2 became leader at term 3".
struct RoleSnapshot {
  Role role;
  Term term;
  NodeId leader;
};
RoleSnapshot snapshotOf(const RaftCore& core);
std::string describeChange(NodeId id, const RoleSnapshot& before, const RaftCore& after);

}  // namespace zetian::cluster::raft::testing
