// The rules Raft grew after the paper's sections 5.1-5.4, one small test per rule, as in
// paper_test.cpp: PreVote and CheckQuorum with the leader lease (thesis 9.6, 6.2),
// membership changes with learners (thesis 4), ReadIndex (thesis 6.4), leadership
// transfer (thesis 3.10) and snapshots (paper section 7).
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <stdexcept>

#include "tests/unit/raft/network.h"
#include "tests/unit/raft/paper_support.h"

namespace zetian::cluster::raft::testing {
namespace {

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

TEST(RaftExtensions, AFollowerThatLostItsLinkToTheLeaderDropsTheLeaseAndCampaignsWithinOneTimeout) {
  RaftCore follower(extendedConfig(2, 3), {});
  follower.step(make(MessageType::heartbeat, 1, 2, 1));
  ASSERT_EQ(follower.leader(), 1u);
  // Another node's link: nothing changes.
  follower.leaderLinkLost(3);
  Message pre_vote = make(MessageType::pre_vote, 3, 2, 2);
  EXPECT_EQ(follower.step(pre_vote), StepOutcome::leader_lease);
  follower.leaderLinkLost(1);
  // The lease is gone at once: the other follower's pre-vote is granted.
  EXPECT_EQ(follower.step(pre_vote), StepOutcome::handled);
  auto granted = ofType(flush(follower), MessageType::pre_vote_response);
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_FALSE(granted[0].reject);
  // Its own campaign comes within what is left of the randomized timeout.
  const int timeout = follower.randomizedElectionTimeout();
  int ticks = 0;
  while (follower.role() == Role::follower && ticks < 2 * follower.config().election_ticks) {
    follower.tick();
    ++ticks;
  }
  EXPECT_EQ(follower.role(), Role::pre_candidate);
  EXPECT_LE(ticks, timeout - follower.config().election_ticks + 1);
  EXPECT_EQ(follower.term(), 1u);  // a pre-vote raises no term
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
