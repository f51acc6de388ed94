// What the paper tests share (paper_test.cpp, paper_extensions_test.cpp): small cores
// configured as in the paper, messages built by hand, and a leader elected by hand.
#pragma once

#include <memory>
#include <vector>

#include "tests/unit/raft/network.h"

namespace zetian::cluster::raft::testing {

inline std::vector<NodeId> voters(int n) {
  std::vector<NodeId> out;
  for (int i = 1; i <= n; ++i) out.push_back(static_cast<NodeId>(i));
  return out;
}

// A log with these terms at indexes 1, 2, ...
inline std::vector<Entry> logOf(std::vector<Term> terms) {
  std::vector<Entry> out;
  for (std::size_t k = 0; k < terms.size(); ++k) out.push_back({terms[k], k + 1, EntryType::normal, {}});
  return out;
}

// Entries with these terms from index `first` on.
inline std::vector<Entry> logFrom(Index first, std::vector<Term> terms) {
  std::vector<Entry> out;
  for (Term t : terms) out.push_back({t, first++, EntryType::normal, {}});
  return out;
}

inline Config paperConfig(NodeId id, int cluster_size) {
  Config c;
  c.id = id;
  c.voters = voters(cluster_size);
  c.pre_vote = false;
  c.check_quorum = false;
  c.seed = id;
  return c;
}

inline std::unique_ptr<RaftCore> makeCore(NodeId id, int cluster_size, std::vector<Term> terms = {}, Term term = 0,
                                   Index commit = 0) {
  if (!terms.empty()) term = std::max(term, terms.back());
  return std::make_unique<RaftCore>(paperConfig(id, cluster_size),
                                    DurableState{HardState{term, kNoNode, commit}, logOf(terms)});
}

inline Message make(MessageType type, NodeId from, NodeId to, Term term) {
  Message m;
  m.type = type;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

// Handles the pending Ready as a driver would and returns its messages.
inline std::vector<Message> flush(RaftCore& core) {
  if (!core.hasReady()) return {};
  Ready rd = core.ready();
  core.advance();
  return rd.messages;
}

inline std::vector<Message> ofType(const std::vector<Message>& messages, MessageType type) {
  std::vector<Message> out;
  for (const Message& m : messages) {
    if (m.type == type) out.push_back(m);
  }
  return out;
}

// Campaign and collect every vote: the node leads, its no-op written.
inline void electLeader(RaftCore& core) {
  core.campaign();
  flush(core);
  if (core.role() == Role::pre_candidate) {
    for (NodeId voter : core.config().voters) {
      if (voter == core.id() || core.role() != Role::pre_candidate) continue;
      core.step(make(MessageType::pre_vote_response, voter, core.id(), core.term() + 1));
    }
    flush(core);
  }
  for (NodeId voter : core.config().voters) {
    if (voter == core.id() || core.role() == Role::leader) continue;
    core.step(make(MessageType::vote_response, voter, core.id(), core.term()));
  }
  ASSERT_EQ(core.role(), Role::leader);
  flush(core);
}

inline Message acceptance(NodeId from, const RaftCore& leader, Index index) {
  Message m = make(MessageType::append_response, from, leader.id(), leader.term());
  m.index = index;
  return m;
}

}  // namespace zetian::cluster::raft::testing
