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

// Paper 7: after compaction the entries up to the snapshot are gone; the snapshot's
// last index answers the snapshot's term, so appends right after it still match.
TEST(RaftLog, CompactionDropsThePrefixAndTheOffsetAnswersItsTerm) {
  RaftLog log;
  log.restore(entries(1, {1, 1, 2, 2, 3}), 5, 4);
  EXPECT_THROW(log.compact(5), std::invalid_argument) << "not applied yet";
  EXPECT_THROW(log.compact(0), std::invalid_argument);
  log.compact(3);
  EXPECT_EQ(log.firstIndex(), 4u);
  EXPECT_EQ(log.offset(), 3u);
  EXPECT_EQ(log.term(3), std::optional<Term>(2)) << "the snapshot's term";
  EXPECT_EQ(log.term(2), std::nullopt) << "compacted away";
  EXPECT_EQ(log.lastIndex(), 5u);
  EXPECT_EQ(termsOf(log.all()), (std::vector<Term>{2, 3}));
  EXPECT_TRUE(log.slice(2, 5, 10).empty()) << "a slice reaching below the offset is not served";
  EXPECT_EQ(log.slice(4, 6, 10).size(), 2u);
  EXPECT_THROW(log.compact(3), std::invalid_argument) << "not above the offset";
  EXPECT_TRUE(log.matchTerm(3, 2));
  // An append after the offset checks against the snapshot's term.
  ASSERT_TRUE(log.tryAppend(5, 3, 6, entries(6, {3})));
  EXPECT_EQ(log.committed(), 6u);
  // The conflict search stops at the edge it can see.
  EXPECT_EQ(log.findConflictByTerm(5, 1), (std::pair<Index, Term>{2, 0}));
}

TEST(RaftLog, RestoringWithAnOffsetKeepsTheLogAfterIt) {
  RaftLog log;
  log.restore(10, 4, entries(11, {4, 5}), 11, 10);
  EXPECT_EQ(log.firstIndex(), 11u);
  EXPECT_EQ(log.lastIndex(), 12u);
  EXPECT_EQ(log.lastTerm(), 5u);
  EXPECT_EQ(log.term(10), std::optional<Term>(4));
  EXPECT_EQ(log.stableIndex(), 12u);
  EXPECT_EQ(log.nextCommitted().size(), 1u);
  EXPECT_EQ(log.nextCommitted().front().index, 11u);
  // An empty log after a snapshot: the snapshot's entry is the last one.
  RaftLog empty;
  empty.restore(7, 3, {}, 7, 7);
  EXPECT_EQ(empty.lastIndex(), 7u);
  EXPECT_EQ(empty.lastTerm(), 3u);
  EXPECT_TRUE(empty.isUpToDate(7, 3));
  EXPECT_FALSE(empty.isUpToDate(6, 3));
}

TEST(RaftLog, InstallingASnapshotReplacesAConflictingLog) {
  RaftLog log;
  log.restore(entries(1, {1, 1, 2, 2}), 2, 2);
  // The snapshot's last entry (4, term 3) is not ours: the whole log goes.
  log.restoreSnapshot(4, 3);
  EXPECT_EQ(log.offset(), 4u);
  EXPECT_TRUE(log.all().empty());
  EXPECT_EQ(log.lastTerm(), 3u);
  EXPECT_EQ(log.committed(), 4u);
  EXPECT_EQ(log.applied(), 4u) << "the snapshot is the state machine";
  EXPECT_TRUE(log.unstableEntries().empty());
  EXPECT_THROW(log.restoreSnapshot(3, 3), std::logic_error) << "not beyond the commit index";
  // One whose last entry we hold keeps the entries after it.
  RaftLog kept;
  kept.restore(entries(1, {1, 1, 2, 2}), 1, 1);
  kept.restoreSnapshot(2, 1);
  EXPECT_EQ(termsOf(kept.all()), (std::vector<Term>{2, 2}));
  EXPECT_EQ(kept.committed(), 2u);
}

// The core refuses a stored snapshot or log that does not fit together.
TEST(RaftLog, TheCoreRefusesADurableStateWhoseLogDoesNotFollowItsSnapshot) {
  Config c;
  c.id = 1;
  c.voters = {1, 2, 3};
  Snapshot snap{5, 2, {1, 2, 3}, {}, {}, "s"};
  EXPECT_THROW(RaftCore(c, DurableState{HardState{2, kNoNode, 5}, entries(7, {2}), snap}), std::invalid_argument)
      << "gap after the snapshot";
  EXPECT_THROW(RaftCore(c, DurableState{HardState{2, kNoNode, 5}, entries(6, {1}), snap}), std::invalid_argument)
      << "a term below the snapshot's";
  Snapshot unsorted = snap;
  unsorted.voters = {3, 1};
  EXPECT_THROW(RaftCore(c, DurableState{HardState{2, kNoNode, 5}, {}, unsorted}), std::invalid_argument);
  RaftCore ok(c, DurableState{HardState{2, kNoNode, 5}, entries(6, {2}), snap});
  EXPECT_EQ(ok.log().applied(), 5u) << "the state machine is at least the snapshot";
  EXPECT_EQ(ok.log().lastIndex(), 6u);
  EXPECT_EQ(ok.log().committed(), 5u);
  // compact() refuses an index that is not applied, or not above the snapshot.
  RaftCore core(c, DurableState{HardState{2, kNoNode, 5}, entries(6, {2}), snap});
  EXPECT_THROW(core.compact(6, "x"), std::invalid_argument);
  EXPECT_THROW(core.compact(5, "x"), std::invalid_argument);
}

}  // namespace
}  // namespace zetian::cluster::raft
