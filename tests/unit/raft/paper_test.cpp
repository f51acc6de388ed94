// The Raft paper's rules, section by section (In Search of an Understandable Consensus
// Algorithm, extended version), one small test per rule, in the manner of etcd's
// raft_paper_test.go. PreVote and CheckQuorum are off here unless a test says
// otherwise: these are the paper's rules, the extensions have their own scenarios.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <stdexcept>

#include "tests/unit/raft/network.h"

namespace zetian::cluster::raft::testing {
namespace {

std::vector<NodeId> voters(int n) {
  std::vector<NodeId> out;
  for (int i = 1; i <= n; ++i) out.push_back(static_cast<NodeId>(i));
  return out;
}

// A log with these terms at indexes 1, 2, ...
std::vector<Entry> logOf(std::vector<Term> terms) {
  std::vector<Entry> out;
  for (std::size_t k = 0; k < terms.size(); ++k) out.push_back({terms[k], k + 1, EntryType::normal, {}});
  return out;
}

// Entries with these terms from index `first` on.
std::vector<Entry> logFrom(Index first, std::vector<Term> terms) {
  std::vector<Entry> out;
  for (Term t : terms) out.push_back({t, first++, EntryType::normal, {}});
  return out;
}

Config paperConfig(NodeId id, int cluster_size) {
  Config c;
  c.id = id;
  c.voters = voters(cluster_size);
  c.pre_vote = false;
  c.check_quorum = false;
  c.seed = id;
  return c;
}

std::unique_ptr<RaftCore> makeCore(NodeId id, int cluster_size, std::vector<Term> terms = {}, Term term = 0,
                                   Index commit = 0) {
  if (!terms.empty()) term = std::max(term, terms.back());
  return std::make_unique<RaftCore>(paperConfig(id, cluster_size),
                                    DurableState{HardState{term, kNoNode, commit}, logOf(terms)});
}

Message make(MessageType type, NodeId from, NodeId to, Term term) {
  Message m;
  m.type = type;
  m.from = from;
  m.to = to;
  m.term = term;
  return m;
}

// Handles the pending Ready as a driver would and returns its messages.
std::vector<Message> flush(RaftCore& core) {
  if (!core.hasReady()) return {};
  Ready rd = core.ready();
  core.advance();
  return rd.messages;
}

std::vector<Message> ofType(const std::vector<Message>& messages, MessageType type) {
  std::vector<Message> out;
  for (const Message& m : messages) {
    if (m.type == type) out.push_back(m);
  }
  return out;
}

// Campaign and collect every vote: the node leads, its no-op written.
void electLeader(RaftCore& core) {
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

Message acceptance(NodeId from, const RaftCore& leader, Index index) {
  Message m = make(MessageType::append_response, from, leader.id(), leader.term());
  m.index = index;
  return m;
}

// ---- 5.1 Raft basics ---------------------------------------------------------------

TEST(RaftPaper51, ANodeStartsAsAFollowerAtItsStoredTerm) {
  auto core = makeCore(1, 3, {1, 2}, 3);
  EXPECT_EQ(core->role(), Role::follower);
  EXPECT_EQ(core->term(), 3u);
  EXPECT_EQ(core->leader(), kNoNode);
}

TEST(RaftPaper51, EveryRoleAdoptsAHigherTermAndBecomesFollower) {
  for (Role start : {Role::follower, Role::candidate, Role::leader}) {
    SCOPED_TRACE(std::string(roleName(start)));
    auto core = makeCore(1, 3, {}, 1);
    if (start == Role::candidate) core->campaign();
    if (start == Role::leader) electLeader(*core);
    ASSERT_EQ(core->role(), start);
    Message m = make(MessageType::append, 2, 1, 5);
    EXPECT_EQ(core->step(m), StepOutcome::handled);
    EXPECT_EQ(core->term(), 5u);
    EXPECT_EQ(core->role(), Role::follower);
    EXPECT_EQ(core->leader(), 2u);
    EXPECT_EQ(core->vote(), kNoNode);
  }
}

TEST(RaftPaper51, AMessageOfAStaleTermChangesNothing) {
  auto core = makeCore(1, 3, {1}, 2);
  Message m = make(MessageType::append, 2, 1, 1);
  m.index = 1;
  m.log_term = 1;
  m.entries = {Entry{1, 2, EntryType::normal, "x"}};
  EXPECT_EQ(core->step(m), StepOutcome::stale_term);
  EXPECT_EQ(core->term(), 2u);
  EXPECT_EQ(core->log().lastIndex(), 1u);
  // Figure 2: the answer carries our term, so the stale leader learns it is stale.
  auto answers = flush(*core);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].type, MessageType::append_response);
  EXPECT_EQ(answers[0].term, 2u);
  EXPECT_EQ(answers[0].to, 2u);
}

// ---- 5.2 Leader election -----------------------------------------------------------

TEST(RaftPaper52, LeaderSendsAHeartbeatToEveryFollowerEachHeartbeatTimeout) {
  Config c = paperConfig(1, 3);
  c.heartbeat_ticks = 2;
  RaftCore core(c, {});
  electLeader(core);
  core.tick();
  EXPECT_TRUE(ofType(flush(core), MessageType::heartbeat).empty());
  core.tick();
  auto heartbeats = ofType(flush(core), MessageType::heartbeat);
  ASSERT_EQ(heartbeats.size(), 2u);
  EXPECT_EQ(heartbeats[0].to, 2u);
  EXPECT_EQ(heartbeats[1].to, 3u);
  EXPECT_EQ(heartbeats[0].term, core.term());
}

TEST(RaftPaper52, AFollowerCampaignsWhenItsElectionTimeoutExpires) {
  auto core = makeCore(1, 3, {1, 1}, 1);
  const int timeout = core->randomizedElectionTimeout();
  for (int i = 0; i < timeout - 1; ++i) core->tick();
  EXPECT_EQ(core->role(), Role::follower);
  core->tick();
  EXPECT_EQ(core->role(), Role::candidate);
  EXPECT_EQ(core->term(), 2u);
  EXPECT_EQ(core->vote(), 1u);

  // The vote for itself is written before any request goes out.
  Ready rd = core->ready();
  ASSERT_TRUE(rd.hard_state);
  EXPECT_EQ(rd.hard_state->term, 2u);
  EXPECT_EQ(rd.hard_state->vote, 1u);
  EXPECT_TRUE(rd.must_sync);
  ASSERT_EQ(rd.messages.size(), 2u);
  for (const Message& m : rd.messages) {
    EXPECT_EQ(m.type, MessageType::vote);
    EXPECT_EQ(m.term, 2u);
    EXPECT_EQ(m.log_term, 1u);
    EXPECT_EQ(m.index, 2u);
  }
}

TEST(RaftPaper52, ACandidateWithoutAnOutcomeStartsANewElectionAtTheNextTimeout) {
  auto core = makeCore(1, 3);
  core->campaign();
  EXPECT_EQ(core->term(), 1u);
  // Its timeout is below 2t, so the next election starts within 2t ticks.
  for (int i = 0; i < 2 * core->config().election_ticks && core->term() == 1; ++i) core->tick();
  EXPECT_EQ(core->role(), Role::candidate);
  EXPECT_EQ(core->term(), 2u);
}

TEST(RaftPaper52, ACandidateWinsWithAMajorityAndLosesWithAMajorityAgainst) {
  struct Case {
    int size;
    std::map<NodeId, bool> answers;
    Role expected;
  };
  const std::vector<Case> cases = {
      {1, {}, Role::leader},
      {3, {{2, true}}, Role::leader},
      {3, {{2, false}}, Role::candidate},
      {3, {{2, false}, {3, false}}, Role::follower},
      {5, {{2, true}}, Role::candidate},
      {5, {{2, true}, {3, true}}, Role::leader},
      {5, {{2, false}, {3, false}}, Role::candidate},
      {5, {{2, false}, {3, false}, {4, false}}, Role::follower},
      {5, {{2, true}, {3, false}, {4, false}, {5, true}}, Role::leader},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("cluster of " + std::to_string(c.size) + ", " + std::to_string(c.answers.size()) + " answers");
    auto core = makeCore(1, c.size);
    core->campaign();
    for (const auto& [from, granted] : c.answers) {
      Message m = make(MessageType::vote_response, from, 1, 1);
      m.reject = !granted;
      core->step(m);
    }
    EXPECT_EQ(core->role(), c.expected);
    EXPECT_EQ(core->term(), 1u);
  }
}

TEST(RaftPaper52, AFollowerVotesForOneCandidatePerTermFirstComeFirstServed) {
  auto core = makeCore(1, 3);
  auto vote = [&](NodeId candidate) {
    core->step(make(MessageType::vote, candidate, 1, 1));
    auto replies = flush(*core);
    return replies.size() == 1 && !replies[0].reject;
  };
  EXPECT_TRUE(vote(2));
  EXPECT_FALSE(vote(3));
  EXPECT_TRUE(vote(2)) << "a repeated request from the same candidate gets the same answer";
  EXPECT_EQ(core->vote(), 2u);
}

TEST(RaftPaper52, ACandidateFollowsALeaderOfItsTerm) {
  auto core = makeCore(1, 3);
  core->campaign();
  Message m = make(MessageType::append, 2, 1, 1);
  core->step(m);
  EXPECT_EQ(core->role(), Role::follower);
  EXPECT_EQ(core->leader(), 2u);
  EXPECT_EQ(core->term(), 1u);
}

TEST(RaftPaper52, ElectionTimeoutsAreDrawnFromTToTwoT) {
  std::set<int> seen;
  for (std::uint64_t seed = 0; seed < 1000; ++seed) {
    Config c = paperConfig(1, 3);
    c.seed = seed;
    RaftCore core(c, {});
    const int timeout = core.randomizedElectionTimeout();
    EXPECT_GE(timeout, c.election_ticks);
    EXPECT_LT(timeout, 2 * c.election_ticks);
    seen.insert(timeout);
  }
  EXPECT_EQ(seen.size(), 10u) << "every value of [t, 2t) should turn up";
}

TEST(RaftPaper52, FollowersTimingOutTogetherDrawDifferentTimeoutsNextTime) {
  // Split votes resolve because a reset draws a new timeout: over a few rounds two
  // nodes that started in step do not stay in step.
  auto a = makeCore(1, 3);
  auto b = makeCore(2, 3);
  int same = 0;
  for (int round = 0; round < 10; ++round) {
    same += a->randomizedElectionTimeout() == b->randomizedElectionTimeout();
    a->campaign();
    b->campaign();
  }
  EXPECT_LT(same, 5);
}

// ---- 5.3 Log replication -----------------------------------------------------------

TEST(RaftPaper53, TheLeaderAppendsAProposalAndSendsItToEveryFollower) {
  auto core = makeCore(1, 3);
  electLeader(*core);
  ProposeResult r = core->propose("x");
  ASSERT_TRUE(r.accepted);
  EXPECT_EQ(r.index, 2u);
  EXPECT_EQ(r.term, 1u);
  Ready rd = core->ready();
  ASSERT_EQ(rd.entries.size(), 1u);
  EXPECT_EQ(rd.entries[0], (Entry{1, 2, EntryType::normal, "x"}));
  // The followers are still probing (they have not answered the no-op's append), so
  // only the answers release the entry; the no-op append carried prev 0/0.
  core->advance();
  for (NodeId f : {2, 3}) core->step(acceptance(f, *core, 1));
  auto appends = ofType(flush(*core), MessageType::append);
  std::set<NodeId> got_x;
  for (const Message& m : appends) {
    for (const Entry& e : m.entries) {
      if (e.data == "x") got_x.insert(m.to);
    }
  }
  EXPECT_EQ(got_x, (std::set<NodeId>{2, 3}));
}

TEST(RaftPaper53, AnEntryCommitsOnceAMajorityStoresIt) {
  auto core = makeCore(1, 5);
  electLeader(*core);  // no-op at 1
  core->propose("x");  // 2
  flush(*core);        // durable on the leader
  core->step(acceptance(2, *core, 2));
  EXPECT_EQ(core->log().committed(), 0u) << "2 of 5 is no majority";
  core->step(acceptance(3, *core, 2));
  EXPECT_EQ(core->log().committed(), 2u);
  Ready rd = core->ready();
  ASSERT_EQ(rd.committed.size(), 2u) << "committing x also commits the entries before it";
  EXPECT_EQ(rd.committed[1].data, "x");
}

TEST(RaftPaper53, TheLeaderCountsItsOwnEntryOnlyOnceItIsDurable) {
  auto core = makeCore(1, 3);
  core->campaign();
  flush(*core);
  core->step(make(MessageType::vote_response, 2, 1, 1));
  ASSERT_EQ(core->role(), Role::leader);
  Ready rd = core->ready();  // carries the no-op; the driver has not written it yet
  ASSERT_EQ(rd.entries.size(), 1u);
  core->step(acceptance(2, *core, 1));
  EXPECT_EQ(core->log().committed(), 0u) << "one follower and an unwritten leader are no majority";
  core->advance();
  EXPECT_EQ(core->log().committed(), 1u);

  auto alone = makeCore(1, 1);
  alone->campaign();
  ASSERT_EQ(alone->role(), Role::leader);
  Ready single = alone->ready();
  ASSERT_EQ(single.entries.size(), 1u);
  EXPECT_EQ(alone->log().committed(), 0u) << "a single node commits only after its write";
  alone->advance();
  EXPECT_EQ(alone->log().committed(), 1u);
}

TEST(RaftPaper53, AFollowerAppliesWhatTheLeaderCommitIndexCovers) {
  auto core = makeCore(2, 3);
  Message m = make(MessageType::append, 1, 2, 1);
  m.entries = {Entry{1, 1, EntryType::normal, "a"}, Entry{1, 2, EntryType::normal, "b"}};
  m.commit = 1;
  core->step(m);
  Ready rd = core->ready();
  ASSERT_EQ(rd.committed.size(), 1u);
  EXPECT_EQ(rd.committed[0].data, "a");
  core->advance();
  Message later = make(MessageType::heartbeat, 1, 2, 1);
  later.commit = 2;
  core->step(later);
  rd = core->ready();
  ASSERT_EQ(rd.committed.size(), 1u);
  EXPECT_EQ(rd.committed[0].data, "b");
}

TEST(RaftPaper53, AFollowerRefusesAnAppendWhosePreviousEntryItLacks) {
  struct Case {
    Term prev_term;
    Index prev_index;
    bool accepted;
    Index hint;
    Term hint_term;
  };
  // The follower holds terms 1, 2, 2 at indexes 1..3.
  const std::vector<Case> cases = {
      {2, 3, true, 0, 0},
      {1, 1, true, 0, 0},
      {3, 3, false, 3, 2},  // its entry 3 has term 2: that is as far as it may match
      {3, 5, false, 3, 2},  // beyond its log: its last entry is the hint
      {1, 3, false, 1, 1},  // the leader had term 1 there: skip the follower's term 2
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("prev " + std::to_string(c.prev_term) + "/" + std::to_string(c.prev_index));
    auto core = makeCore(2, 3, {1, 2, 2}, 3);
    Message m = make(MessageType::append, 1, 2, 3);
    m.index = c.prev_index;
    m.log_term = c.prev_term;
    core->step(m);
    auto replies = flush(*core);
    ASSERT_EQ(replies.size(), 1u);
    EXPECT_EQ(!replies[0].reject, c.accepted);
    if (!c.accepted) {
      EXPECT_EQ(replies[0].index, c.prev_index);
      EXPECT_EQ(replies[0].reject_hint, c.hint);
      EXPECT_EQ(replies[0].log_term, c.hint_term);
      EXPECT_EQ(core->log().lastIndex(), 3u);
    }
  }
}

TEST(RaftPaper53, AFollowerKeepsMatchingEntriesAndReplacesThoseThatConflict) {
  struct Case {
    Index prev_index;
    Term prev_term;
    std::vector<Entry> entries;
    std::vector<Term> expected_terms;
  };
  // The follower holds terms 1, 2 at indexes 1, 2.
  const std::vector<Case> cases = {
      {2, 2, logFrom(3, {3}), {1, 2, 3}},
      {1, 1, logFrom(2, {3, 4}), {1, 3, 4}},  // entry 2 conflicts: replaced, and after
      {0, 0, logFrom(1, {1}), {1, 2}},        // an old append must not cut entry 2
      {0, 0, logFrom(1, {3}), {3}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("prev " + std::to_string(c.prev_term) + "/" + std::to_string(c.prev_index));
    auto core = makeCore(2, 3, {1, 2}, 2);
    Message m = make(MessageType::append, 1, 2, 4);
    m.index = c.prev_index;
    m.log_term = c.prev_term;
    m.entries = c.entries;
    ASSERT_EQ(core->step(m), StepOutcome::handled);
    std::vector<Term> terms;
    for (const Entry& e : core->log().all()) terms.push_back(e.term);
    EXPECT_EQ(terms, c.expected_terms);
    Ready rd = core->ready();
    // What was replaced goes out again, so storage overwrites it.
    for (const Entry& e : rd.entries) EXPECT_EQ(e.term, c.expected_terms[e.index - 1]);
  }
}

TEST(RaftPaper53, TheLeaderBringsEveryFollowerOfFigure7InLine) {
  // Figure 7: the leader's log at term 8 and six followers' logs that lack entries,
  // have extra ones, or both.
  const std::vector<Term> leader_log = {1, 1, 1, 4, 4, 5, 5, 6, 6, 6};
  const std::vector<std::vector<Term>> followers = {
      {1, 1, 1, 4, 4, 5, 5, 6, 6},
      {1, 1, 1, 4},
      {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6},
      {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7},
      {1, 1, 1, 4, 4, 4, 4},
      {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3},
  };
  for (std::size_t k = 0; k < followers.size(); ++k) {
    SCOPED_TRACE("follower (" + std::string(1, static_cast<char>('a' + k)) + ")");
    Network net;
    Config base = paperConfig(0, 3);
    net.addNode(1, base, Storage{HardState{7, kNoNode, 0}, logOf(leader_log)});
    net.addNode(2, base, Storage{HardState{7, kNoNode, 0}, logOf(followers[k])});
    net.addNode(3, base, Storage{HardState{7, kNoNode, 0}, logOf(leader_log)});
    net.core(1).campaign();
    net.stabilize();
    ASSERT_EQ(net.core(1).role(), Role::leader);
    EXPECT_EQ(net.core(2).log().all(), net.core(1).log().all());
    EXPECT_EQ(net.node(2).storage.entries, net.core(1).log().all()) << "and its storage agrees";
    EXPECT_EQ(net.core(2).log().committed(), net.core(1).log().lastIndex());
  }
}

// ---- 5.4 Safety --------------------------------------------------------------------

TEST(RaftPaper54, AVoterRefusesACandidateWhoseLogIsLessUpToDate) {
  struct Case {
    Term last_term;
    Index last_index;
    bool granted;
  };
  // The voter's last entry is 2/2.
  const std::vector<Case> cases = {
      {2, 1, false}, {2, 2, true}, {2, 3, true}, {1, 3, false}, {3, 1, true},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("candidate " + std::to_string(c.last_term) + "/" + std::to_string(c.last_index));
    auto core = makeCore(1, 3, {1, 2}, 2);
    Message m = make(MessageType::vote, 2, 1, 3);
    m.log_term = c.last_term;
    m.index = c.last_index;
    core->step(m);
    auto replies = flush(*core);
    ASSERT_EQ(replies.size(), 1u);
    EXPECT_EQ(!replies[0].reject, c.granted);
    EXPECT_EQ(core->vote(), c.granted ? 2u : kNoNode);
  }
}

TEST(RaftPaper54, ALeaderDoesNotCommitAnEarlierTermsEntryByCountingReplicas) {
  // The leader of term 3 holds 1/1 and an uncommitted 1/2 from term 1; its no-op is 3/3.
  auto core = makeCore(1, 3, {1, 1}, 2, 1);
  electLeader(*core);
  ASSERT_EQ(core->term(), 3u);
  core->step(acceptance(2, *core, 2));
  EXPECT_EQ(core->log().committed(), 1u) << "1/2 is on a majority, but of term 1";
  core->step(acceptance(2, *core, 3));
  EXPECT_EQ(core->log().committed(), 3u) << "3/3 commits, and 1/2 with it";
}

TEST(RaftPaper54, OnlyANodeHoldingEveryCommittedEntryCanBeElected) {
  Network net;
  Config base = paperConfig(0, 5);
  net.addNodes(5, base);
  net.core(1).campaign();
  net.stabilize();
  net.partition({{1, 2, 3}, {4, 5}});
  net.core(1).propose("committed");
  net.stabilize();
  ASSERT_EQ(net.core(1).log().committed(), 2u);
  net.crash(1);
  net.heal();
  // 4 and 5 lack the entry: 2 and 3 refuse them, so neither can reach three votes.
  for (NodeId outsider : {4, 5}) {
    net.core(outsider).campaign();
    net.stabilize();
    EXPECT_NE(net.core(outsider).role(), Role::leader);
  }
  net.core(2).campaign();
  net.stabilize();
  if (net.core(2).role() != Role::leader) {
    net.core(2).campaign();  // a term may be taken by an outsider's vote; try again
    net.stabilize();
  }
  ASSERT_EQ(net.core(2).role(), Role::leader);
  for (NodeId id : {2, 3, 4, 5}) {
    SCOPED_TRACE(id);
    ASSERT_GE(net.core(id).log().lastIndex(), 2u);
    EXPECT_EQ(net.core(id).log().all()[1].data, "committed");
  }
}

// ---- Extensions: PreVote (thesis 9.6), CheckQuorum and the lease (thesis 6.2) -------

Config extendedConfig(NodeId id, int cluster_size) {
  Config c = paperConfig(id, cluster_size);
  c.pre_vote = true;
  c.check_quorum = true;
  return c;
}

TEST(RaftExtensions, APreVoteRaisesNobodysTerm) {
  RaftCore candidate(extendedConfig(1, 3), {});
  candidate.campaign();
  EXPECT_EQ(candidate.role(), Role::pre_candidate);
  EXPECT_EQ(candidate.term(), 0u);
  Ready rd = candidate.ready();
  EXPECT_FALSE(rd.hard_state) << "nothing to write: neither term nor vote changed";
  ASSERT_EQ(rd.messages.size(), 2u);
  EXPECT_EQ(rd.messages[0].type, MessageType::pre_vote);
  EXPECT_EQ(rd.messages[0].term, 1u) << "asks for the term it would campaign in";
  candidate.advance();

  RaftCore voter(extendedConfig(2, 3), {});
  voter.step(rd.messages[0]);
  EXPECT_EQ(voter.term(), 0u);
  EXPECT_EQ(voter.vote(), kNoNode);
  auto replies = flush(voter);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_FALSE(replies[0].reject);
  EXPECT_EQ(replies[0].term, 1u);

  candidate.step(replies[0]);
  EXPECT_EQ(candidate.role(), Role::candidate) << "a quorum of yes starts the real election";
  EXPECT_EQ(candidate.term(), 1u);
}

TEST(RaftExtensions, AFollowerThatHeardFromItsLeaderIgnoresVotesUntilTheLeaseRunsOut) {
  RaftCore follower(extendedConfig(2, 3), {});
  follower.step(make(MessageType::heartbeat, 1, 2, 1));
  ASSERT_EQ(follower.leader(), 1u);
  Message vote = make(MessageType::vote, 3, 2, 2);
  EXPECT_EQ(follower.step(vote), StepOutcome::leader_lease);
  EXPECT_EQ(follower.term(), 1u);
  // An election timeout without the leader ends the lease (and starts a pre-vote of
  // its own, which changes no term).
  for (int i = 0; i < follower.config().election_ticks; ++i) follower.tick();
  EXPECT_EQ(follower.step(vote), StepOutcome::handled);
  EXPECT_EQ(follower.term(), 2u);
  EXPECT_EQ(follower.vote(), 3u);
}

TEST(RaftExtensions, ALeaderStepsDownAtTheFirstElectionTimeoutWithoutAQuorum) {
  RaftCore leader(extendedConfig(1, 3), {});
  electLeader(leader);
  const int t = leader.config().election_ticks;
  // Follower 2 answers within the first interval, so the first check passes.
  for (int i = 0; i < t - 1; ++i) leader.tick();
  leader.step(make(MessageType::heartbeat_response, 2, 1, leader.term()));
  leader.tick();
  EXPECT_EQ(leader.role(), Role::leader);
  for (int i = 0; i < t; ++i) leader.tick();
  EXPECT_EQ(leader.role(), Role::follower);
  EXPECT_EQ(leader.term(), 1u);
}

TEST(RaftExtensions, ALeaderWithActiveFollowersKeepsLeading) {
  RaftCore leader(extendedConfig(1, 3), {});
  electLeader(leader);
  for (int i = 0; i < 5 * leader.config().election_ticks; ++i) {
    leader.tick();
    leader.step(make(MessageType::heartbeat_response, 2, 1, leader.term()));
  }
  EXPECT_EQ(leader.role(), Role::leader);

  RaftCore alone(extendedConfig(1, 1), {});
  alone.campaign();
  for (int i = 0; i < 5 * alone.config().election_ticks; ++i) alone.tick();
  EXPECT_EQ(alone.role(), Role::leader) << "a single node is its own quorum";
}

// ---- The Ready contract ------------------------------------------------------------

TEST(RaftReady, AGrantedVoteLeavesOnlyWithTheHardStateThatRecordsIt) {
  auto core = makeCore(1, 3);
  core->step(make(MessageType::vote, 2, 1, 1));
  Ready rd = core->ready();
  ASSERT_TRUE(rd.hard_state);
  EXPECT_EQ(rd.hard_state->vote, 2u);
  EXPECT_TRUE(rd.must_sync);
  ASSERT_EQ(rd.messages.size(), 1u);
  EXPECT_FALSE(rd.messages[0].reject);
}

TEST(RaftReady, ASecondReadyBeforeAdvanceIsRefused) {
  auto core = makeCore(1, 3);
  core->campaign();
  core->ready();
  EXPECT_FALSE(core->hasReady());
  EXPECT_THROW(core->ready(), std::logic_error);
  core->advance();
  EXPECT_THROW(core->advance(), std::logic_error);
}

TEST(RaftReady, InconsistentDurableStateIsRefusedAtStart) {
  Config c = paperConfig(1, 3);
  auto refuses = [&](const Config& config, DurableState d) {
    EXPECT_THROW({ RaftCore core(config, std::move(d)); }, std::invalid_argument);
  };
  refuses(c, DurableState{HardState{1, kNoNode, 0}, {Entry{1, 2, EntryType::normal, {}}}});  // gap
  refuses(c, DurableState{HardState{1, kNoNode, 0}, logOf({2, 1})});                         // terms go back
  refuses(c, DurableState{HardState{1, kNoNode, 3}, logOf({1})});                            // commit past the end
  refuses(c, DurableState{HardState{1, kNoNode, 0}, logOf({1, 2})});                         // term below the log's
  refuses(c, DurableState{HardState{1, kNoNode, 0}, {Entry{1, 1, EntryType::config, "add-voter x"}}});
  Config both = c;
  both.learners = {3};
  refuses(both, {});
  Config bad_timing = c;
  bad_timing.election_ticks = 1;
  refuses(bad_timing, {});
}

TEST(RaftReady, AMalformedAppendIsDroppedAndChangesNothing) {
  auto core = makeCore(2, 3, {1}, 1);
  Message gap = make(MessageType::append, 1, 2, 1);
  gap.index = 1;
  gap.log_term = 1;
  gap.entries = {Entry{1, 3, EntryType::normal, "x"}};
  EXPECT_EQ(core->step(gap), StepOutcome::malformed);
  Message future = make(MessageType::append, 1, 2, 1);
  future.index = 1;
  future.log_term = 1;
  future.entries = {Entry{2, 2, EntryType::normal, "x"}};
  EXPECT_EQ(core->step(future), StepOutcome::malformed) << "an entry from a term after the message's";
  EXPECT_EQ(core->step(make(MessageType::vote_response, 7, 2, 1)), StepOutcome::unknown_sender) << "not a voter";
  EXPECT_EQ(core->step(make(MessageType::heartbeat, 2, 2, 1)), StepOutcome::unknown_sender) << "from itself";
  EXPECT_EQ(core->step(make(MessageType::heartbeat, 1, 3, 1)), StepOutcome::not_addressed);
  EXPECT_EQ(core->log().lastIndex(), 1u);
  EXPECT_EQ(core->leader(), kNoNode);
  EXPECT_FALSE(core->hasReady());
}

// Thesis 4: membership changes, single-server, taking effect when committed.

TEST(RaftMembership, AChangeIsTextAndReadBackStrictly) {
  for (ConfChange c : {ConfChange{ChangeType::add_voter, 4}, ConfChange{ChangeType::add_learner, 12},
                       ConfChange{ChangeType::promote, 4}, ConfChange{ChangeType::remove, 1}}) {
    EXPECT_EQ(decodeConfChange(encodeConfChange(c)), c) << encodeConfChange(c);
  }
  for (const char* bad : {"", "add-voter", "add-voter 0", "add-voter 04", "add-voter 4 ", "add-voter -4",
                          "add-voter x", "join 4", "add-voter 99999999999999999999"}) {
    EXPECT_FALSE(decodeConfChange(bad)) << bad;
  }
}

TEST(RaftMembership, ARestartReplaysOnlyTheCommittedChanges) {
  std::vector<Entry> log = logOf({1, 1, 1, 1});
  log[1].type = EntryType::config;
  log[1].data = "add-learner 4";
  log[2].type = EntryType::config;
  log[2].data = "promote 4";
  RaftCore core(paperConfig(1, 3), DurableState{HardState{1, 4, 2}, log});
  EXPECT_EQ(core.membership().voters, (std::set<NodeId>{1, 2, 3}));
  EXPECT_EQ(core.membership().learners, (std::set<NodeId>{4}));
  // The promotion commits when a leader says so; then 4 is a voter here too.
  Message append = make(MessageType::append, 2, 1, 2);
  append.index = 4;
  append.log_term = 1;
  append.commit = 4;
  EXPECT_EQ(core.step(append), StepOutcome::handled);
  EXPECT_EQ(core.membership().voters, (std::set<NodeId>{1, 2, 3, 4}));
  EXPECT_TRUE(core.membership().learners.empty());
}

TEST(RaftMembership, AnUnreadableChangeIsRefusedOnTheWayIn) {
  auto core = makeCore(2, 3, {1}, 1);
  Message m = make(MessageType::append, 1, 2, 1);
  m.index = 1;
  m.log_term = 1;
  m.entries = {Entry{1, 2, EntryType::config, "add-voter"}};
  EXPECT_EQ(core->step(m), StepOutcome::malformed);
  EXPECT_EQ(core->log().lastIndex(), 1u);
}

TEST(RaftMembership, ALearnerDoesNotCampaignNorCountItsVote) {
  Config c = paperConfig(4, 3);
  c.learners = {4};
  RaftCore learner(c, {});
  for (int i = 0; i < 10 * c.election_ticks; ++i) learner.tick();
  learner.campaign();
  EXPECT_EQ(learner.role(), Role::follower);
  EXPECT_FALSE(learner.hasReady());

  Config voter_config = paperConfig(1, 3);
  voter_config.learners = {4};
  RaftCore candidate(voter_config, {});
  candidate.campaign();
  for (const Message& m : flush(candidate)) EXPECT_NE(m.to, 4u) << "a vote request to a learner";
  Message yes = make(MessageType::vote_response, 4, 1, 1);
  EXPECT_EQ(candidate.step(yes), StepOutcome::unknown_sender);
  EXPECT_EQ(candidate.role(), Role::candidate);
}

// Thesis 6.4: ReadIndex.

// The Ready after one step, whole (flush() keeps only the messages).
Ready readyOf(RaftCore& core) {
  if (!core.hasReady()) return {};
  Ready rd = core.ready();
  core.advance();
  return rd;
}

Message heartbeatAnswer(NodeId from, const RaftCore& leader, Index round) {
  Message m = make(MessageType::heartbeat_response, from, leader.id(), leader.term());
  m.index = round;
  return m;
}

TEST(RaftReadIndex, ANewLeaderHoldsReadsUntilAnEntryOfItsTermCommits) {
  auto leader = makeCore(1, 3, {1, 1}, 1, 1);
  electLeader(*leader);  // term 2, its no-op at index 3, commit still 1
  ASSERT_TRUE(leader->readIndex("mine").accepted);
  Message forwarded = make(MessageType::read_index, 3, 1, leader->term());
  forwarded.context = "theirs";
  EXPECT_EQ(leader->step(forwarded), StepOutcome::handled);
  Ready held = readyOf(*leader);
  EXPECT_TRUE(held.read_states.empty());
  EXPECT_TRUE(held.messages.empty()) << "no read round before the first commit of the term";

  // Index 2 (term 1) commits only through the no-op at 3; then both reads start.
  leader->step(acceptance(2, *leader, 3));
  Ready started = readyOf(*leader);
  EXPECT_EQ(leader->log().committed(), 3u);
  EXPECT_TRUE(started.read_states.empty()) << "not confirmed by a quorum yet";
  auto beats = ofType(started.messages, MessageType::heartbeat);
  ASSERT_EQ(beats.size(), 4u);  // one round per read, to 2 and 3
  const Index last_round = beats.back().index;
  EXPECT_GT(last_round, 0u);

  // One answer (from 2) to the last round confirms both reads: 1 and 2 are a quorum.
  leader->step(heartbeatAnswer(2, *leader, last_round));
  Ready released = readyOf(*leader);
  ASSERT_EQ(released.read_states.size(), 1u);
  EXPECT_EQ(released.read_states[0], (ReadState{3, "mine"}));
  auto answers = ofType(released.messages, MessageType::read_index_response);
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].to, 3u);
  EXPECT_EQ(answers[0].index, 3u);
  EXPECT_EQ(answers[0].context, "theirs");
}

TEST(RaftReadIndex, AReadNeedsAQuorumOfAnswersToARoundAfterItBegan) {
  auto leader = makeCore(1, 5);
  electLeader(*leader);
  for (NodeId f : {2, 3}) leader->step(acceptance(f, *leader, 1));
  flush(*leader);
  ASSERT_EQ(leader->log().committed(), 1u);
  leader->readIndex("a");
  const Index round_a = ofType(flush(*leader), MessageType::heartbeat).front().index;
  leader->readIndex("b");
  const Index round_b = ofType(flush(*leader), MessageType::heartbeat).front().index;
  ASSERT_GT(round_b, round_a);

  // Answers to round a do not confirm b, which began later.
  leader->step(heartbeatAnswer(2, *leader, round_a));
  leader->step(heartbeatAnswer(3, *leader, round_a));
  Ready first = readyOf(*leader);
  ASSERT_EQ(first.read_states.size(), 1u);
  EXPECT_EQ(first.read_states[0].context, "a");
  // A learner's or a stranger's answer counts for nothing; a third voter's does.
  leader->step(heartbeatAnswer(2, *leader, round_b));
  leader->step(heartbeatAnswer(9, *leader, round_b));
  EXPECT_TRUE(readyOf(*leader).read_states.empty());
  leader->step(heartbeatAnswer(4, *leader, round_b));
  Ready second = readyOf(*leader);
  ASSERT_EQ(second.read_states.size(), 1u);
  EXPECT_EQ(second.read_states[0].context, "b");
}

TEST(RaftReadIndex, AFollowerServesAGrantedReadOnlyOnceItHasAppliedTheIndex) {
  auto follower = makeCore(2, 3, {1, 1, 1}, 1, 1);
  ASSERT_FALSE(follower->readIndex("x").accepted) << "no leader known";
  Message beat = make(MessageType::heartbeat, 1, 2, 1);
  beat.commit = 1;
  follower->step(beat);
  ASSERT_TRUE(follower->readIndex("x").accepted);
  auto asked = ofType(readyOf(*follower).messages, MessageType::read_index);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0].to, 1u);

  Message granted = make(MessageType::read_index_response, 1, 2, 1);
  granted.index = 3;
  granted.context = "x";
  follower->step(granted);
  EXPECT_TRUE(readyOf(*follower).read_states.empty()) << "index 3 is not even committed here";
  beat.commit = 3;
  follower->step(beat);
  Ready rd = readyOf(*follower);
  ASSERT_EQ(rd.committed.size(), 2u);
  EXPECT_EQ(rd.committed.back().index, 3u);
  ASSERT_EQ(rd.read_states.size(), 1u) << "released with the entries that reach its index";
  EXPECT_EQ(rd.read_states[0], (ReadState{3, "x"}));
}

TEST(RaftReadIndex, ALeaderThatStepsDownDropsItsUnconfirmedReads) {
  auto leader = makeCore(1, 3);
  electLeader(*leader);
  leader->step(acceptance(2, *leader, 1));
  flush(*leader);
  leader->readIndex("lost");
  const Index round = ofType(flush(*leader), MessageType::heartbeat).front().index;
  const Message late = heartbeatAnswer(2, *leader, round);
  leader->step(make(MessageType::heartbeat, 3, 1, leader->term() + 1));
  ASSERT_EQ(leader->role(), Role::follower);
  EXPECT_EQ(leader->step(late), StepOutcome::stale_term);
  EXPECT_TRUE(readyOf(*leader).read_states.empty());
}

// Thesis 3.10: leadership transfer.

TEST(RaftTransfer, OnlyACampaignTheLeaderAskedForIsHeardDuringTheLease) {
  Config c = paperConfig(2, 3);
  c.check_quorum = true;
  RaftCore follower(c, DurableState{HardState{1, kNoNode, 0}, {}});
  Message beat = make(MessageType::heartbeat, 1, 2, 1);
  follower.step(beat);
  ASSERT_EQ(follower.leader(), 1u);
  Message plain = make(MessageType::vote, 3, 2, 2);
  EXPECT_EQ(follower.step(plain), StepOutcome::leader_lease);
  EXPECT_EQ(follower.term(), 1u);
  Message asked = plain;
  asked.transfer = true;
  EXPECT_EQ(follower.step(asked), StepOutcome::handled);
  EXPECT_EQ(follower.term(), 2u);
  EXPECT_EQ(follower.vote(), 3u);
}

TEST(RaftTransfer, TheTargetCampaignsAtOnceWithoutAPreVote) {
  Config c = paperConfig(3, 3);
  c.pre_vote = true;
  RaftCore target(c, DurableState{HardState{1, kNoNode, 0}, {}});
  target.step(make(MessageType::timeout_now, 1, 3, 1));
  EXPECT_EQ(target.role(), Role::candidate);
  EXPECT_EQ(target.term(), 2u);
  auto votes = ofType(flush(target), MessageType::vote);
  ASSERT_EQ(votes.size(), 2u);
  for (const Message& v : votes) EXPECT_TRUE(v.transfer);

  // A learner told to campaign does not.
  Config lc = paperConfig(4, 3);
  lc.learners = {4};
  RaftCore learner(lc, DurableState{HardState{1, kNoNode, 0}, {}});
  learner.step(make(MessageType::timeout_now, 1, 4, 1));
  EXPECT_EQ(learner.role(), Role::follower);
  EXPECT_EQ(learner.term(), 1u);
}

// Paper 7 (InstallSnapshot), from the follower's side: a snapshot beyond its log
// replaces log and membership, comes out in a Ready before anything committed later,
// must be synced, and is answered like an append accepted up to its index.
TEST(RaftPaper7, AFollowerInstallsASnapshotBeforeAnyLaterEntry) {
  auto f = makeCore(2, 3, {1, 1, 2}, 2, 1);  // a stale tail: 3 is of term 2
  Message snap = make(MessageType::snapshot, 1, 2, 3);
  snap.snapshot = Snapshot{5, 3, {1, 2, 3}, {4}, {}, "state"};
  ASSERT_EQ(f->step(snap), StepOutcome::handled);
  EXPECT_EQ(f->leader(), 1u);
  EXPECT_EQ(f->log().offset(), 5u);
  EXPECT_TRUE(f->log().all().empty()) << "the conflicting log is gone";
  EXPECT_TRUE(f->membership().isLearner(4)) << "the membership comes with the snapshot";
  Ready rd = f->ready();
  ASSERT_TRUE(rd.snapshot);
  EXPECT_EQ(rd.snapshot->data, "state");
  EXPECT_TRUE(rd.must_sync);
  ASSERT_TRUE(rd.hard_state);
  EXPECT_EQ(rd.hard_state->commit, 5u);
  EXPECT_TRUE(rd.committed.empty()) << "the snapshot is the state up to 5";
  ASSERT_EQ(rd.messages.size(), 1u);
  EXPECT_EQ(rd.messages[0].type, MessageType::append_response);
  EXPECT_FALSE(rd.messages[0].reject);
  EXPECT_EQ(rd.messages[0].index, 5u);
  f->advance();
  EXPECT_EQ(f->log().applied(), 5u);

  // The leader appends from there; the next committed entries start after it.
  Message app = make(MessageType::append, 1, 2, 3);
  app.index = 5;
  app.log_term = 3;
  app.commit = 6;
  app.entries = {Entry{3, 6, EntryType::normal, "x"}};
  f->step(app);
  rd = f->ready();
  EXPECT_FALSE(rd.snapshot);
  ASSERT_EQ(rd.committed.size(), 1u);
  EXPECT_EQ(rd.committed[0].index, 6u);
  f->advance();

  // A duplicate of the snapshot changes nothing and reports the commit index.
  f->step(snap);
  rd = f->ready();
  EXPECT_FALSE(rd.snapshot);
  ASSERT_EQ(rd.messages.size(), 1u);
  EXPECT_EQ(rd.messages[0].index, 6u);
  f->advance();
}

TEST(RaftPaper7, AFollowerHoldingTheSnapshotsLastEntryOnlyCommitsToIt) {
  auto f = makeCore(2, 3, {1, 1, 1, 1}, 1, 1);
  Message snap = make(MessageType::snapshot, 1, 2, 1);
  snap.snapshot = Snapshot{3, 1, {1, 2, 3}, {}, {}, "state"};
  f->step(snap);
  EXPECT_EQ(f->log().committed(), 3u);
  EXPECT_EQ(f->log().lastIndex(), 4u) << "entries after it stay";
  Ready rd = f->ready();
  EXPECT_FALSE(rd.snapshot) << "the state machine gets there by applying the entries";
  ASSERT_EQ(rd.committed.size(), 3u);
}

TEST(RaftPaper7, AMalformedSnapshotMessageIsDropped) {
  auto f = makeCore(2, 3);
  Message m = make(MessageType::snapshot, 1, 2, 2);
  EXPECT_EQ(f->step(m), StepOutcome::malformed) << "no snapshot";
  m.snapshot = Snapshot{5, 3, {1, 2, 3}, {}, {}, ""};
  EXPECT_EQ(f->step(m), StepOutcome::malformed) << "a snapshot term above the message's";
  m.snapshot = Snapshot{5, 2, {3, 1}, {}, {}, ""};
  EXPECT_EQ(f->step(m), StepOutcome::malformed) << "voters out of order";
  m.snapshot = Snapshot{5, 2, {}, {}, {}, ""};
  EXPECT_EQ(f->step(m), StepOutcome::malformed) << "no voters";
  EXPECT_EQ(f->log().offset(), 0u);
}

// From the leader's side: a follower whose next entry was compacted away gets the
// snapshot, and nothing else until it answers.
TEST(RaftPaper7, ALeaderSendsItsSnapshotToAFollowerBehindItsLog) {
  Network net;
  Config base = paperConfig(1, 3);
  net.addNodes(3, base);
  net.core(1).campaign();
  net.stabilize();
  ASSERT_EQ(net.core(1).role(), Role::leader);
  net.isolate(3);
  for (int k = 0; k < 5; ++k) net.core(1).propose("p" + std::to_string(k));
  net.stabilize();
  const Snapshot s = net.compact(1);
  EXPECT_EQ(s.index, 6u);
  net.heal();
  for (int k = 0; k < base.heartbeat_ticks; ++k) net.core(1).tick();
  net.stabilize();
  EXPECT_EQ(net.core(3).log().offset(), 6u);
  EXPECT_EQ(net.core(3).log().committed(), 6u);
  EXPECT_EQ(net.node(3).applied_text, net.node(1).applied_text) << "the same state machine";
  EXPECT_EQ(net.core(1).progress().at(3).state, Progress::State::replicate);
  net.core(1).propose("after");
  net.stabilize();
  EXPECT_EQ(net.core(3).log().committed(), 7u);
  EXPECT_EQ(net.node(3).applied.back().data, "after");
}

}  // namespace
}  // namespace zetian::cluster::raft::testing
