// The core restarting from the durable storage (cluster/raft/recovery.h) on real files:
// a single-voter core writes its Readies to a Storage, snapshots, goes on, and a new
// core built from what Storage::open() recovers has the snapshot, the log after it,
// the membership as of the snapshot plus the later changes, and the commit index.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

#include "cluster/raft/recovery.h"

namespace raft = zetian::cluster::raft;
namespace fs = std::filesystem;

namespace {

class RecoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    std::string tmpl = (base / "zetian-raftrecovery-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = fs::path(tmpl) / "raft";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_.parent_path(), ec);
  }

  static raft::Config config() {
    raft::Config c;
    c.id = 1;
    c.voters = {1};
    return c;
  }

  // The driver's part, by the book: write, sync, then advance.
  static void drain(raft::RaftCore& core, raft::Storage& storage, std::vector<raft::Entry>& applied) {
    while (core.hasReady()) {
      raft::Ready rd = core.ready();
      if (!rd.entries.empty()) storage.append(rd.entries);
      if (rd.hard_state) {
        storage.saveHardState(*rd.hard_state);
      } else {
        storage.sync();
      }
      applied.insert(applied.end(), rd.committed.begin(), rd.committed.end());
      core.advance();
    }
  }

  fs::path dir_;
};

TEST_F(RecoveryTest, ACoreRestartsFromTheSnapshotPlusTheLaterLog) {
  std::vector<raft::Entry> applied;
  raft::Snapshot snap;
  {
    auto opened = raft::Storage::open(dir_, {.segment_bytes = 256, .write_gate = nullptr});
    raft::RaftCore core(config(), raft::durableFromRecovered(opened.recovered));
    core.campaign();
    drain(core, *opened.storage, applied);
    ASSERT_EQ(core.role(), raft::Role::leader);
    ASSERT_TRUE(core.proposeConfChange({raft::ChangeType::add_learner, 2}).accepted);
    drain(core, *opened.storage, applied);
    ASSERT_TRUE(core.proposeConfChange({raft::ChangeType::remove, 2}).accepted);
    drain(core, *opened.storage, applied);
    ASSERT_TRUE(core.proposeConfChange({raft::ChangeType::add_learner, 3}).accepted);
    drain(core, *opened.storage, applied);
    for (int k = 0; k < 20; ++k) {
      ASSERT_TRUE(core.propose("policy v" + std::to_string(k)).accepted);
      drain(core, *opened.storage, applied);
    }
    snap = core.compact(15, "state as of 15");
    opened.storage->saveSnapshot(raft::toStoredSnapshot(snap));
    opened.storage->compact(snap.index);
    ASSERT_TRUE(core.proposeConfChange({raft::ChangeType::promote, 3}).accepted);
    drain(core, *opened.storage, applied);
    ASSERT_TRUE(core.propose("policy after").accepted);
    drain(core, *opened.storage, applied);
    // The promotion made node 3 (which does not exist here) a voter: 26 waits for it.
    EXPECT_EQ(core.log().committed(), 25u);
  }
  EXPECT_EQ(snap.index, 15u);
  EXPECT_EQ(snap.term, 1u);
  EXPECT_EQ(snap.voters, std::vector<raft::NodeId>{1});
  EXPECT_EQ(snap.learners, std::vector<raft::NodeId>{3});
  EXPECT_EQ(snap.removed, std::vector<raft::NodeId>{2});

  auto reopened = raft::Storage::open(dir_);
  raft::DurableState durable = raft::durableFromRecovered(reopened.recovered);
  ASSERT_TRUE(durable.snapshot);
  EXPECT_EQ(*durable.snapshot, snap) << "the membership line round-trips through the storage";
  ASSERT_FALSE(durable.entries.empty());
  EXPECT_EQ(durable.entries.front().index, 16u) << "the log starts right after the snapshot";
  EXPECT_EQ(durable.entries.back().index, 26u);

  raft::Config c = config();
  c.applied = 15;  // the state machine is loaded from the snapshot
  raft::RaftCore core(c, std::move(durable));
  EXPECT_EQ(core.log().offset(), 15u);
  EXPECT_EQ(core.log().term(15), std::optional<raft::Term>(1));
  EXPECT_EQ(core.log().term(14), std::nullopt) << "compacted away";
  EXPECT_EQ(core.log().lastIndex(), 26u);
  EXPECT_EQ(core.log().committed(), 25u);
  EXPECT_TRUE(core.membership().isVoter(3)) << "the promotion after the snapshot is replayed";
  EXPECT_TRUE(core.membership().removed.contains(2)) << "removed ids come from the snapshot";
  // Committed entries after the snapshot are handed out again, from 16 on.
  raft::Ready rd = core.ready();
  ASSERT_FALSE(rd.committed.empty());
  EXPECT_EQ(rd.committed.front().index, 16u);
  EXPECT_EQ(rd.committed.back(), applied.back());
  core.advance();
}

TEST_F(RecoveryTest, AStoredSnapshotWithoutItsMembershipLineIsRefused) {
  raft::StoredSnapshot bad{5, 1, {1, 2, 3}, "[ratelimit]\n"};
  EXPECT_THROW(raft::fromStoredSnapshot(bad), raft::StorageError);
  bad.data = "raft-members learners=4,4 removed=\n";
  EXPECT_THROW(raft::fromStoredSnapshot(bad), raft::StorageError) << "an id twice";
  bad.data = "raft-members learners=0 removed=\n";
  EXPECT_THROW(raft::fromStoredSnapshot(bad), raft::StorageError) << "id 0";
  bad.data = "raft-members learners= removed=x\n";
  EXPECT_THROW(raft::fromStoredSnapshot(bad), raft::StorageError);
  bad.data = "raft-members learners= removed=\nrest";
  raft::Snapshot ok = raft::fromStoredSnapshot(bad);
  EXPECT_TRUE(ok.learners.empty());
  EXPECT_EQ(ok.data, "rest");
}

TEST_F(RecoveryTest, ALogThatDoesNotReachTheSnapshotIsRefused) {
  raft::RecoveredState r;
  r.snapshot = raft::toStoredSnapshot(raft::Snapshot{10, 2, {1}, {}, {}, "s"});
  r.entries = {raft::Entry{2, 12, raft::EntryType::normal, "x"}};
  EXPECT_THROW(raft::durableFromRecovered(r), raft::StorageError);
  // Entries the snapshot covers are dropped, the rest kept.
  r.entries = {raft::Entry{2, 9, raft::EntryType::normal, "a"}, raft::Entry{2, 10, raft::EntryType::normal, "b"},
               raft::Entry{2, 11, raft::EntryType::normal, "c"}};
  raft::DurableState d = raft::durableFromRecovered(r);
  ASSERT_EQ(d.entries.size(), 1u);
  EXPECT_EQ(d.entries.front().index, 11u);
}

// A follower's install of a leader's snapshot whose last entry its log holds with
// another term: the stored log goes whole, and the next append starts after the
// snapshot. A crash in the middle (the snapshot saved, old segments left) is recovered
// by dropping what follows the mismatched entry.
TEST_F(RecoveryTest, InstallingALeadersSnapshotReplacesTheStoredLog) {
  std::vector<raft::Entry> old_log;
  for (raft::Index i = 1; i <= 12; ++i) old_log.push_back({i <= 6 ? 1u : 2u, i, raft::EntryType::normal, "old"});
  const raft::Snapshot snap{9, 3, {1, 2, 3}, {}, {}, "leader's state"};
  {
    auto opened = raft::Storage::open(dir_, {.segment_bytes = 128, .write_gate = nullptr});
    opened.storage->append(old_log);
    opened.storage->saveHardState({2, 1, 4});
    ASSERT_GT(opened.storage->segmentCount(), 1u);
    opened.storage->installSnapshot(raft::toStoredSnapshot(snap));
    EXPECT_EQ(opened.storage->segmentCount(), 0u);
    opened.storage->append({raft::Entry{3, 10, raft::EntryType::normal, "new"}});
    opened.storage->saveHardState({3, 1, 10});
  }
  auto reopened = raft::Storage::open(dir_);
  raft::DurableState d = raft::durableFromRecovered(reopened.recovered);
  ASSERT_TRUE(d.snapshot);
  EXPECT_EQ(*d.snapshot, snap);
  ASSERT_EQ(d.entries.size(), 1u);
  EXPECT_EQ(d.entries.front().data, "new");
  raft::RaftCore core(config(), std::move(d));
  EXPECT_EQ(core.log().lastIndex(), 10u);
  EXPECT_EQ(core.log().committed(), 10u);

  // What a crash between the snapshot's rename and the deletions leaves.
  raft::RecoveredState torn;
  torn.hard_state = {2, 1, 4};
  torn.snapshot = raft::toStoredSnapshot(snap);
  torn.entries = old_log;
  raft::DurableState t = raft::durableFromRecovered(torn);
  EXPECT_TRUE(t.entries.empty()) << "entries after the mismatched entry at the snapshot's index are stale";
  // The same log under a snapshot whose last entry it holds keeps what follows.
  torn.snapshot = raft::toStoredSnapshot(raft::Snapshot{9, 2, {1, 2, 3}, {}, {}, "own"});
  EXPECT_EQ(raft::durableFromRecovered(torn).entries.size(), 3u);
}

}  // namespace
