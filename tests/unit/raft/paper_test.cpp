// The Raft paper's rules, section by section (In Search of an Understandable Consensus
// Algorithm, extended version), one small test per rule, in the manner of etcd's
// raft_paper_test.go. PreVote and CheckQuorum are off here unless a test says
// otherwise: these are the paper's rules. What Raft grew since (PreVote, CheckQuorum,
// membership, ReadIndex, transfer, snapshots) is in paper_extensions_test.cpp.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <stdexcept>

#include "tests/unit/raft/network.h"
#include "tests/unit/raft/paper_support.h"

namespace zetian::cluster::raft::testing {
namespace {

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

}  // namespace
}  // namespace zetian::cluster::raft::testing
