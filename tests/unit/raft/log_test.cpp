// RaftLog on its own: the stable/unstable split under overwrites, the conflict search
// behind the fast back-off, and the invariants it refuses to break.
#include <gtest/gtest.h>

#include <stdexcept>

#include "cluster/raft/core.h"
#include "cluster/raft/log.h"

namespace zetian::cluster::raft {
namespace {

std::vector<Entry> entries(Index first, std::vector<Term> terms) {
  std::vector<Entry> out;
  for (Term t : terms) out.push_back({t, first++, EntryType::normal, {}});
  return out;
}

std::vector<Term> termsOf(const std::vector<Entry>& log) {
  std::vector<Term> out;
  for (const Entry& e : log) out.push_back(e.term);
  return out;
}

TEST(RaftLog, RestoredEntriesAreStableAndNewOnesAreNot) {
  RaftLog log;
  log.restore(entries(1, {1, 1}), 1, 0);
  EXPECT_EQ(log.stableIndex(), 2u);
  EXPECT_TRUE(log.unstableEntries().empty());
  ASSERT_TRUE(log.tryAppend(2, 1, 1, entries(3, {2, 2})));
  EXPECT_EQ(termsOf(log.unstableEntries()), (std::vector<Term>{2, 2}));
  log.stableTo(4, 2);
  EXPECT_EQ(log.stableIndex(), 4u);
  EXPECT_TRUE(log.unstableEntries().empty());
}

TEST(RaftLog, OverwritingStableEntriesMakesTheReplacementsUnstable) {
  RaftLog log;
  log.restore(entries(1, {1, 1, 1}), 1, 0);
  ASSERT_TRUE(log.tryAppend(1, 1, 1, entries(2, {2})));
  EXPECT_EQ(termsOf(log.all()), (std::vector<Term>{1, 2}));
  EXPECT_EQ(log.stableIndex(), 1u);
  EXPECT_EQ(termsOf(log.unstableEntries()), (std::vector<Term>{2}));
}

TEST(RaftLog, AWriteOfAnEntryOverwrittenMeanwhileDoesNotCountAsStable) {
  RaftLog log;
  log.restore(entries(1, {1}), 1, 0);
  ASSERT_TRUE(log.tryAppend(1, 1, 1, entries(2, {1, 1})));
  // A Ready handed out 1/2 and 1/3; before its advance(), a new leader replaced 1/3.
  ASSERT_TRUE(log.tryAppend(2, 1, 1, entries(3, {2})));
  log.stableTo(3, 1);
  EXPECT_EQ(log.stableIndex(), 1u) << "2/3 is not written yet";
  EXPECT_EQ(termsOf(log.unstableEntries()), (std::vector<Term>{1, 2}));
}

TEST(RaftLog, AStaleAppendDoesNotCutEntriesAfterIt) {
  RaftLog log;
  log.restore(entries(1, {1, 1, 1}), 0, 0);
  auto last = log.tryAppend(0, 0, 0, entries(1, {1}));
  ASSERT_TRUE(last);
  EXPECT_EQ(*last, 1u);
  EXPECT_EQ(log.lastIndex(), 3u);
}

TEST(RaftLog, TheFollowersCommitNeverPassesWhatTheAppendShowedItHolds) {
  RaftLog log;
  log.restore(entries(1, {1, 1, 1}), 0, 0);
  // Entries 2 and 3 may still differ from the leader's: only 1 was checked.
  ASSERT_TRUE(log.tryAppend(1, 1, 3, {}));
  EXPECT_EQ(log.committed(), 1u);
}

TEST(RaftLog, FindConflictByTermFindsTheLastEntryThatCouldMatch) {
  RaftLog log;
  log.restore(entries(1, {1, 1, 3, 3, 5}), 0, 0);
  using P = std::pair<Index, Term>;
  EXPECT_EQ(log.findConflictByTerm(5, 5), (P{5, 5}));
  EXPECT_EQ(log.findConflictByTerm(5, 4), (P{4, 3}));
  EXPECT_EQ(log.findConflictByTerm(5, 2), (P{2, 1}));
  EXPECT_EQ(log.findConflictByTerm(9, 9), (P{5, 5})) << "clamped to the last entry";
  EXPECT_EQ(log.findConflictByTerm(5, 0), (P{0, 0})) << "down to the empty log's sentinel";
}

TEST(RaftLog, ACommittedEntryIsNeverOverwritten) {
  RaftLog log;
  log.restore(entries(1, {1, 1}), 2, 0);
  EXPECT_THROW(log.tryAppend(1, 1, 2, entries(2, {2})), std::logic_error);
  EXPECT_EQ(termsOf(log.all()), (std::vector<Term>{1, 1}));
}

TEST(RaftLog, CommitAndApplyStayWithinTheLog) {
  RaftLog log;
  log.restore(entries(1, {1, 1}), 1, 0);
  EXPECT_THROW(log.commitTo(3), std::logic_error);
  EXPECT_THROW(log.appliedTo(2), std::logic_error);
  EXPECT_FALSE(log.maybeCommit(2, 2)) << "entry 2 is of term 1, not the current term 2";
  EXPECT_TRUE(log.maybeCommit(2, 1));
  EXPECT_EQ(log.nextCommitted().size(), 2u);
  log.appliedTo(2);
  EXPECT_TRUE(log.nextCommitted().empty());
}

TEST(RaftLog, SliceIsBoundedByCountAndLog) {
  RaftLog log;
  log.restore(entries(1, {1, 1, 2, 2}), 0, 0);
  EXPECT_EQ(log.slice(2, 5, 2).size(), 2u);
  EXPECT_EQ(log.slice(2, 99, 99).size(), 3u);
  EXPECT_TRUE(log.slice(5, 9, 9).empty());
  EXPECT_TRUE(log.slice(0, 3, 9).empty()) << "index 0 is no entry";
}

// The core between ready() and advance(): what it hands out next when a step changed
// the log meanwhile (a driver that writes off the loop thread does this).
TEST(RaftLog, AnOverwriteBetweenReadyAndAdvanceGoesOutInTheNextReady) {
  Config c;
  c.id = 2;
  c.voters = {1, 2, 3};
  RaftCore core(c, {});
  Message first;
  first.type = MessageType::append;
  first.from = 1;
  first.to = 2;
  first.term = 1;
  first.entries = entries(1, {1, 1});
  core.step(first);
  Ready rd = core.ready();
  ASSERT_EQ(rd.entries.size(), 2u);

  Message second = first;
  second.term = 2;
  second.index = 1;
  second.log_term = 1;
  second.entries = entries(2, {2});
  core.step(second);
  core.advance();

  EXPECT_EQ(core.log().stableIndex(), 1u);
  Ready next = core.ready();
  ASSERT_EQ(next.entries.size(), 1u);
  EXPECT_EQ(next.entries[0].term, 2u);
  EXPECT_EQ(next.entries[0].index, 2u);
  ASSERT_EQ(next.messages.size(), 1u);
  EXPECT_EQ(next.messages[0].index, 2u) << "acknowledged only in the Ready that writes it";
}

}  // namespace
}  // namespace zetian::cluster::raft
