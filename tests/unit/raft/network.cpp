#include "tests/unit/raft/network.h"

#include <stdexcept>

namespace zetian::cluster::raft::testing {

namespace {

std::string outcomeName(StepOutcome outcome) {
  switch (outcome) {
    case StepOutcome::handled: return "handled";
    case StepOutcome::stale_term: return "stale term";
    case StepOutcome::leader_lease: return "ignored: leader lease";
    case StepOutcome::not_addressed: return "not addressed to us";
    case StepOutcome::unknown_sender: return "unknown sender";
    case StepOutcome::malformed: return "malformed";
  }
  return "?";
}

}  // namespace

void Storage::write(const Ready& ready) {
  if (ready.snapshot) {
    snapshot = ready.snapshot;
    entries.clear();
  }
  if (ready.hard_state) hard_state = *ready.hard_state;
  if (ready.entries.empty()) return;
  const Index base = snapshot ? snapshot->index : 0;
  const Index first = ready.entries.front().index;
  if (first <= base || first > base + entries.size() + 1) {
    throw std::logic_error("storage: entries from " + std::to_string(first) + " leave a gap after " +
                           std::to_string(base + entries.size()));
  }
  entries.resize(first - base - 1);
  entries.insert(entries.end(), ready.entries.begin(), ready.entries.end());
}

void Storage::compact(const Snapshot& s) {
  const Index base = snapshot ? snapshot->index : 0;
  if (s.index <= base || s.index > base + entries.size()) {
    throw std::logic_error("storage: snapshot at " + std::to_string(s.index) + " outside the stored log");
  }
  entries.erase(entries.begin(), entries.begin() + static_cast<std::ptrdiff_t>(s.index - base));
  snapshot = s;
}

namespace {

std::string stateText(const std::vector<std::string>& lines) {
  std::string out;
  for (const std::string& line : lines) out += line + "\n";
  return out;
}

std::vector<std::string> stateLines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    out.push_back(text.substr(start, end - start));
  }
  return out;
}

}  // namespace

RoleSnapshot snapshotOf(const RaftCore& core) { return {core.role(), core.term(), core.leader()}; }

std::string describeChange(NodeId id, const RoleSnapshot& before, const RaftCore& after) {
  if (before.role == after.role() && before.term == after.term()) return "";
  return std::to_string(id) + " became " + std::string(roleName(after.role())) + " at term " +
         std::to_string(after.term()) + "\n";
}

void Network::addNodes(int count, const Config& base) {
  std::vector<NodeId> voters;
  for (int i = 1; i <= count; ++i) voters.push_back(static_cast<NodeId>(i));
  for (NodeId id : voters) {
    Config c = base;
    c.voters = voters;
    addNode(id, c, Storage{});
  }
}

void Network::addNode(NodeId id, const Config& base, Storage storage) {
  Config c = base;
  c.id = id;
  c.seed = base.seed + id;
  configs_[id] = c;
  TestNode& node = nodes_[id];
  node.storage = std::move(storage);
  node.core = std::make_unique<RaftCore>(c, node.storage.durable());
  if (node.storage.snapshot) node.applied_text = stateLines(node.storage.snapshot->data);
}

std::vector<NodeId> Network::ids() const {
  std::vector<NodeId> out;
  for (const auto& [id, node] : nodes_) out.push_back(id);
  return out;
}

bool Network::processReady(NodeId id, std::string* out) {
  TestNode& node = nodes_.at(id);
  if (!node.core || !node.core->hasReady()) return false;
  Ready rd = node.core->ready();
  std::string trace = "> " + std::to_string(id) + " handling ready\n";
  if (rd.soft_state) {
    trace += "  state: " + std::string(roleName(rd.soft_state->role)) +
             " leader=" + std::to_string(rd.soft_state->leader) + "\n";
  }
  if (rd.snapshot) trace += "  install " + describe(*rd.snapshot) + "\n";
  if (rd.hard_state) {
    trace += "  hard state: term=" + std::to_string(rd.hard_state->term) + " vote=" +
             std::to_string(rd.hard_state->vote) + " commit=" + std::to_string(rd.hard_state->commit) + "\n";
  }
  node.storage.write(rd);
  if (rd.snapshot) node.applied_text = stateLines(rd.snapshot->data);
  for (const Entry& e : rd.entries) trace += "  persist " + describe(e) + "\n";
  for (Message& m : rd.messages) {
    const bool delivered = nodes_.contains(m.to) && isUp(m.to) && linked(m.from, m.to);
    trace += "  send " + describe(m) + (delivered ? "" : " (dropped)") + "\n";
    if (delivered) nodes_.at(m.to).mailbox.push_back(std::move(m));
  }
  for (const Entry& e : rd.committed) {
    trace += "  apply " + describe(e) + "\n";
    node.applied.push_back(e);
    node.applied_text.push_back(describe(e));
  }
  for (const ReadState& r : rd.read_states) {
    trace += "  read " + r.context + " at index " + std::to_string(r.index) + "\n";
    node.reads.push_back(r);
  }
  node.core->advance();
  if (out) *out += trace;
  return true;
}

bool Network::deliver(NodeId id, std::string* out) {
  TestNode& node = nodes_.at(id);
  if (!node.core || node.mailbox.empty()) return false;
  std::vector<Message> batch = std::move(node.mailbox);
  node.mailbox.clear();
  std::string trace = "> " + std::to_string(id) + " receiving messages\n";
  for (const Message& m : batch) {
    RoleSnapshot before = snapshotOf(*node.core);
    StepOutcome outcome = node.core->step(m);
    trace += "  " + describe(m);
    if (outcome != StepOutcome::handled) trace += " (" + outcomeName(outcome) + ")";
    trace += "\n";
    std::string change = describeChange(id, before, *node.core);
    if (!change.empty()) trace += "  " + change;
  }
  if (out) *out += trace;
  return true;
}

int Network::stabilize(std::string* out, int max_rounds) {
  for (int round = 0; round < max_rounds; ++round) {
    bool moved = false;
    for (auto& [id, node] : nodes_) moved |= processReady(id, out);
    for (auto& [id, node] : nodes_) moved |= deliver(id, out);
    if (!moved) return round;
  }
  throw std::runtime_error("network did not stabilize within " + std::to_string(max_rounds) + " rounds");
}

void Network::partition(const std::vector<std::vector<NodeId>>& groups) {
  group_.clear();
  int next = 0;
  for (const auto& group : groups) {
    for (NodeId id : group) group_[id] = next;
    ++next;
  }
  for (const auto& [id, node] : nodes_) {
    if (!group_.contains(id)) group_[id] = next++;
  }
}

void Network::isolate(NodeId id) {
  std::vector<NodeId> rest;
  for (const auto& [other, node] : nodes_) {
    if (other != id) rest.push_back(other);
  }
  partition({{id}, rest});
}

void Network::heal() { group_.clear(); }

bool Network::linked(NodeId from, NodeId to) const {
  if (group_.empty()) return true;
  auto a = group_.find(from);
  auto b = group_.find(to);
  return a != group_.end() && b != group_.end() && a->second == b->second;
}

Snapshot Network::compact(NodeId id, Index index) {
  TestNode& node = nodes_.at(id);
  const RaftLog& log = node.core->log();
  if (index == 0) index = log.applied();
  // The state as of `index`: the lines of everything applied up to it.
  const std::size_t keep = node.applied_text.size() - static_cast<std::size_t>(log.applied() - index);
  std::vector<std::string> lines(node.applied_text.begin(),
                                 node.applied_text.begin() + static_cast<std::ptrdiff_t>(keep));
  Snapshot s = node.core->compact(index, stateText(lines));
  node.storage.compact(s);
  return s;
}

void Network::crash(NodeId id) {
  TestNode& node = nodes_.at(id);
  node.core.reset();
  node.mailbox.clear();
}

void Network::restart(NodeId id) {
  TestNode& node = nodes_.at(id);
  // The state machine starts empty and replays the committed log: applied = 0.
  node.applied.clear();
  node.applied_text = node.storage.snapshot ? stateLines(node.storage.snapshot->data) : std::vector<std::string>{};
  node.mailbox.clear();
  node.core = std::make_unique<RaftCore>(configs_.at(id), node.storage.durable());
}

std::string Network::describeState() const {
  std::string out;
  for (const auto& [id, node] : nodes_) {
    out += std::to_string(id) + ": ";
    if (!node.core) {
      out += "down\n";
      continue;
    }
    const RaftCore& c = *node.core;
    const RaftLog& log = c.log();
    out += std::string(roleName(c.role())) + " term=" + std::to_string(c.term()) +
           " vote=" + std::to_string(c.vote()) + " leader=" + std::to_string(c.leader()) +
           " last=" + std::to_string(log.lastTerm()) + "/" + std::to_string(log.lastIndex()) +
           " commit=" + std::to_string(log.committed()) + " applied=" + std::to_string(log.applied());
    if (!group_.empty()) {
      auto group = group_.find(id);
      out += group == group_.end() ? " group=none" : " group=" + std::to_string(group->second);
    }
    out += "\n";
  }
  return out;
}

std::string Network::describeLog(NodeId id) const {
  const TestNode& node = nodes_.at(id);
  if (!node.core) return std::to_string(id) + " is down\n";
  const RaftLog& log = node.core->log();
  std::string out;
  if (log.offset() > 0) {
    out += "snapshot " + std::to_string(*log.term(log.offset())) + "/" + std::to_string(log.offset()) + "\n";
  }
  for (const Entry& e : log.all()) out += describe(e) + "\n";
  if (log.all().empty()) out += "(empty)\n";
  out += "commit=" + std::to_string(log.committed()) + " applied=" + std::to_string(log.applied()) +
         " stable=" + std::to_string(log.stableIndex()) + "\n";
  return out;
}

}  // namespace zetian::cluster::raft::testing
