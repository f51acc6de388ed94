// Raft's durable storage (cluster/raft/storage.h) on real files: round trips, overwrites,
// segment rolling and compaction, and the crash rules. The crash tests cut a write at
// every byte offset with the write-fault hook (ByteBudget) and reopen: an entry that was
// synced is never lost, a torn entry is never returned, the hard state and the snapshot
// are the old or the new one whole. Damage that a crash cannot cause is refused with the
// file and the offset. Files live on tmpfs (/dev/shm) when there is one, so the
// every-offset loops take well under a second.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "cluster/raft/storage.h"
#include "state/raft_records.h"

namespace raft = zetian::cluster::raft;
namespace fs = std::filesystem;
using raft::Entry;
using raft::EntryType;

namespace {

class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    std::string tmpl = (base / "zetian-raftstore-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  // A new, not yet existing folder for one attempt.
  fs::path fresh() { return root_ / ("d" + std::to_string(++count_)); }

  fs::path root_;
  int count_ = 0;
};

Entry entry(raft::Term term, raft::Index index, std::string data = "") {
  if (data.empty()) data = "policy " + std::to_string(index) + " of term " + std::to_string(term);
  return Entry{term, index, EntryType::normal, std::move(data)};
}

std::vector<Entry> entries(raft::Term term, raft::Index from, raft::Index to) {
  std::vector<Entry> out;
  for (raft::Index i = from; i <= to; ++i) out.push_back(entry(term, i));
  return out;
}

std::uint64_t framedSize(const std::vector<Entry>& es) {
  std::uint64_t n = 0;
  for (const Entry& e : es) n += zetian::state::kRecordFrameHeaderBytes + zetian::state::kLogRecordFixedBytes + e.data.size();
  return n;
}

std::vector<fs::path> segmentFiles(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() == ".log") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

void flipByte(const fs::path& path, std::uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x20));
}

std::string openError(const fs::path& dir) {
  try {
    raft::Storage::open(dir);
  } catch (const raft::StorageError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_F(StorageTest, AFreshFolderRecoversNothing) {
  const fs::path dir = fresh() / "state" / "raft";  // missing folders are created
  auto opened = raft::Storage::open(dir);
  EXPECT_TRUE(fs::is_directory(dir));
  EXPECT_EQ(opened.recovered.hard_state, raft::HardState{});
  EXPECT_TRUE(opened.recovered.entries.empty());
  EXPECT_FALSE(opened.recovered.snapshot);
  EXPECT_TRUE(opened.recovered.warnings.empty());
  EXPECT_EQ(opened.storage->firstIndex(), 0u);
  EXPECT_EQ(opened.storage->lastIndex(), 0u);
}

TEST_F(StorageTest, EntriesAndHardStateRoundTrip) {
  const fs::path dir = fresh();
  std::vector<Entry> log = entries(1, 1, 3);
  log.push_back(Entry{2, 4, EntryType::no_op, ""});
  log.push_back(Entry{2, 5, EntryType::config, std::string("\0binary\xff", 8)});
  {
    auto opened = raft::Storage::open(dir);
    opened.storage->append({log.begin(), log.begin() + 2});
    opened.storage->append({log.begin() + 2, log.end()});
    opened.storage->saveHardState({2, 3, 4});
  }
  auto again = raft::Storage::open(dir);
  EXPECT_EQ(again.recovered.entries, log);
  EXPECT_EQ(again.recovered.hard_state, (raft::HardState{2, 3, 4}));
  EXPECT_TRUE(again.recovered.warnings.empty());
  EXPECT_EQ(again.storage->firstIndex(), 1u);
  EXPECT_EQ(again.storage->lastIndex(), 5u);
  // And it keeps appending where it left off.
  again.storage->append({entry(3, 6)});
  again.storage->sync();
  again.storage.reset();
  EXPECT_EQ(raft::Storage::open(dir).recovered.entries.back(), entry(3, 6));
}

TEST_F(StorageTest, AnOverwriteReplacesTheConflictingTailAcrossSegments) {
  const fs::path dir = fresh();
  raft::StorageOptions small;
  small.segment_bytes = 200;
  {
    auto opened = raft::Storage::open(dir, small);
    opened.storage->append(entries(1, 1, 20));
    opened.storage->sync();
    ASSERT_GT(opened.storage->segmentCount(), 3u);
    opened.storage->append(entries(2, 6, 8));
    opened.storage->sync();
    EXPECT_EQ(opened.storage->lastIndex(), 8u);
  }
  std::vector<Entry> want = entries(1, 1, 5);
  for (const Entry& e : entries(2, 6, 8)) want.push_back(e);
  auto again = raft::Storage::open(dir, small);
  EXPECT_EQ(again.recovered.entries, want);
  EXPECT_TRUE(again.recovered.warnings.empty());
  // Overwriting from the very first entry leaves one empty segment, then the new log.
  again.storage->append(entries(3, 1, 2));
  again.storage->sync();
  again.storage.reset();
  EXPECT_EQ(raft::Storage::open(dir, small).recovered.entries, entries(3, 1, 2));
}

TEST_F(StorageTest, BadAppendsAreRefusedAndChangeNothing) {
  const fs::path dir = fresh();
  auto opened = raft::Storage::open(dir);
  raft::Storage& s = *opened.storage;
  EXPECT_THROW(s.append({entry(1, 2)}), std::invalid_argument);  // an empty log starts at 1
  s.append(entries(2, 1, 3));
  EXPECT_THROW(s.append({entry(2, 5)}), std::invalid_argument);                // a gap
  EXPECT_THROW(s.append({entry(2, 4), entry(2, 6)}), std::invalid_argument);   // not consecutive
  EXPECT_THROW(s.append({entry(3, 4), entry(2, 5)}), std::invalid_argument);   // term goes back
  EXPECT_THROW(s.append({entry(1, 4)}), std::invalid_argument);                // below the last term
  EXPECT_THROW(s.append({entry(1, 3)}), std::invalid_argument);                // below entry 2's term
  EXPECT_THROW(s.append({entry(0, 4)}), std::invalid_argument);                // term 0
  EXPECT_THROW(s.saveHardState({0, 1, 0}), std::invalid_argument);             // a vote without a term
  EXPECT_THROW(s.compact(1), std::invalid_argument);                           // no snapshot yet
  s.sync();
  opened.storage.reset();
  auto again = raft::Storage::open(dir);
  EXPECT_EQ(again.recovered.entries, entries(2, 1, 3));
  EXPECT_EQ(again.recovered.hard_state, raft::HardState{});
}

TEST_F(StorageTest, SegmentsRollAtTheSizeLimitAndAreNamedByTheirFirstIndex) {
  const fs::path dir = fresh();
  raft::StorageOptions small;
  small.segment_bytes = 256;
  const std::vector<Entry> log = entries(1, 1, 60);
  {
    auto opened = raft::Storage::open(dir, small);
    for (const Entry& e : log) opened.storage->append({e});
    opened.storage->append({entry(1, 61, std::string(1000, 'x'))});  // larger than a segment: one of its own
    opened.storage->sync();
  }
  const std::vector<fs::path> files = segmentFiles(dir);
  ASSERT_GT(files.size(), 5u);
  raft::Index next = 1;
  for (std::size_t i = 0; i < files.size(); ++i) {
    EXPECT_EQ(files[i].filename().string().size(), 24u);
    EXPECT_EQ(std::stoull(files[i].filename().string()), next) << files[i];
    if (i + 1 < files.size()) {
      EXPECT_LE(fs::file_size(files[i]), small.segment_bytes) << files[i];
      next = std::stoull(files[i + 1].filename().string());
    }
  }
  EXPECT_EQ(files.back().filename().string(), "00000000000000000061.log");
  auto again = raft::Storage::open(dir, small);
  EXPECT_EQ(again.recovered.entries.size(), 61u);
  EXPECT_EQ(std::vector<Entry>(again.recovered.entries.begin(), again.recovered.entries.end() - 1), log);
}

TEST_F(StorageTest, CompactionDropsWholeSegmentsBelowTheSnapshot) {
  const fs::path dir = fresh();
  raft::StorageOptions small;
  small.segment_bytes = 256;
  const raft::StoredSnapshot snap{30, 1, {1, 2, 3}, "[ratelimit]\n"};
  {
    auto opened = raft::Storage::open(dir, small);
    opened.storage->append(entries(1, 1, 40));
    opened.storage->sync();
    const std::size_t before = opened.storage->segmentCount();
    EXPECT_THROW(opened.storage->compact(30), std::invalid_argument);  // no snapshot covers it
    opened.storage->saveSnapshot(snap);
    opened.storage->compact(30);
    EXPECT_LT(opened.storage->segmentCount(), before);
    EXPECT_GT(opened.storage->firstIndex(), 1u);
    EXPECT_LE(opened.storage->firstIndex(), 31u);
    EXPECT_EQ(opened.storage->lastIndex(), 40u);
    EXPECT_THROW(opened.storage->compact(31), std::invalid_argument);
  }
  auto again = raft::Storage::open(dir, small);
  ASSERT_TRUE(again.recovered.snapshot);
  EXPECT_EQ(*again.recovered.snapshot, snap);
  ASSERT_FALSE(again.recovered.entries.empty());
  EXPECT_LE(again.recovered.entries.front().index, 31u);
  EXPECT_EQ(again.recovered.entries.back().index, 40u);
  // Compacting everything: the log then resumes right after the snapshot.
  again.storage->saveSnapshot({40, 1, {1, 2, 3}, "v2"});
  again.storage->compact(40);
  EXPECT_EQ(again.storage->segmentCount(), 0u);
  EXPECT_THROW(again.storage->append({entry(2, 42)}), std::invalid_argument);
  again.storage->append({entry(2, 41)});
  again.storage->sync();
  again.storage.reset();
  auto last = raft::Storage::open(dir, small);
  EXPECT_EQ(last.recovered.entries, std::vector<Entry>{entry(2, 41)});
  EXPECT_EQ(last.recovered.snapshot->data, "v2");
}

// Every byte offset of an append batch of four entries after three synced ones, with a
// segment roll inside the batch.
TEST_F(StorageTest, ACutAppendNeverLosesSyncedEntriesNorReturnsATornOne) {
  const std::vector<Entry> synced = entries(1, 1, 3);
  const std::vector<Entry> batch = entries(2, 4, 7);
  raft::StorageOptions opts;
  opts.segment_bytes = framedSize(synced) + framedSize({batch[0], batch[1]});  // rolls before entry 6
  const std::uint64_t batch_bytes = framedSize(batch);
  for (std::uint64_t cut = 0; cut <= batch_bytes; ++cut) {
    SCOPED_TRACE("cut after " + std::to_string(cut) + " bytes of the batch");
    const fs::path dir = fresh();
    raft::ByteBudget budget(framedSize(synced) + cut);
    opts.write_gate = &budget;
    {
      auto opened = raft::Storage::open(dir, opts);
      opened.storage->append(synced);
      opened.storage->sync();
      if (cut < batch_bytes) {
        EXPECT_THROW(opened.storage->append(batch), raft::StorageError);
        EXPECT_THROW(opened.storage->sync(), raft::StorageError);  // refuses after a fault
      } else {
        opened.storage->append(batch);
      }
    }
    opts.write_gate = nullptr;
    auto again = raft::Storage::open(dir, opts);
    // Exactly the complete records of the cut: the synced ones and a prefix of the batch.
    std::vector<Entry> want = synced;
    std::uint64_t used = 0;
    bool on_boundary = true;
    for (const Entry& e : batch) {
      const std::uint64_t size = framedSize({e});
      if (used + size > cut) {
        on_boundary = used == cut;
        break;
      }
      used += size;
      want.push_back(e);
    }
    ASSERT_EQ(again.recovered.entries, want);
    EXPECT_EQ(again.recovered.warnings.empty(), on_boundary);
    // The repaired folder takes new appends and reads back cleanly.
    again.storage->append({entry(3, want.back().index + 1)});
    again.storage->sync();
    again.storage.reset();
    auto third = raft::Storage::open(dir, opts);
    EXPECT_EQ(third.recovered.entries.size(), want.size() + 1);
    EXPECT_TRUE(third.recovered.warnings.empty());
  }
}

// A conflicting tail replaced, the new entries cut at every offset: the log is the kept
// prefix plus complete new entries, never old entries after new ones.
TEST_F(StorageTest, ACutOverwriteLeavesThePrefixAndCompleteNewEntries) {
  raft::StorageOptions opts;
  opts.segment_bytes = 200;
  const std::vector<Entry> old_log = entries(1, 1, 12);
  const std::vector<Entry> batch = entries(2, 5, 7);
  const std::uint64_t batch_bytes = framedSize(batch);
  for (std::uint64_t cut = 0; cut <= batch_bytes; ++cut) {
    SCOPED_TRACE("cut after " + std::to_string(cut) + " bytes of the overwrite");
    const fs::path dir = fresh();
    raft::ByteBudget budget(framedSize(old_log) + cut);
    opts.write_gate = &budget;
    {
      auto opened = raft::Storage::open(dir, opts);
      opened.storage->append(old_log);
      opened.storage->sync();
      if (cut < batch_bytes) {
        EXPECT_THROW(opened.storage->append(batch), raft::StorageError);
      } else {
        opened.storage->append(batch);
      }
    }
    opts.write_gate = nullptr;
    auto again = raft::Storage::open(dir, opts);
    std::vector<Entry> want = entries(1, 1, 4);
    std::uint64_t used = 0;
    for (const Entry& e : batch) {
      used += framedSize({e});
      if (used > cut) break;
      want.push_back(e);
    }
    EXPECT_EQ(again.recovered.entries, want);
  }
}

TEST_F(StorageTest, ACutHardStateWriteLeavesTheOldOrTheNewOne) {
  const raft::HardState old_hs{4, 2, 10};
  const raft::HardState new_hs{5, 3, 11};
  const std::uint64_t size = zetian::state::encodeHardStateFile({5, 3, 11}).size();
  for (std::uint64_t cut = 0; cut <= size; ++cut) {
    SCOPED_TRACE("cut after " + std::to_string(cut) + " bytes");
    const fs::path dir = fresh();
    raft::ByteBudget budget(size + cut);
    raft::StorageOptions opts;
    opts.write_gate = &budget;
    {
      auto opened = raft::Storage::open(dir, opts);
      opened.storage->saveHardState(old_hs);
      if (cut < size) {
        EXPECT_THROW(opened.storage->saveHardState(new_hs), raft::StorageError);
      } else {
        opened.storage->saveHardState(new_hs);
      }
    }
    auto again = raft::Storage::open(dir);
    EXPECT_EQ(again.recovered.hard_state, cut < size ? old_hs : new_hs);
    // The unfinished temp file is removed, and said so.
    EXPECT_EQ(again.recovered.warnings.size(), cut < size ? 1u : 0u);
    EXPECT_FALSE(fs::exists(dir / "hardstate.tmp"));
  }
}

TEST_F(StorageTest, ACutSnapshotWriteLeavesTheOldOrTheNewOne) {
  const raft::StoredSnapshot old_snap{10, 2, {1, 2, 3}, "old policy"};
  const raft::StoredSnapshot new_snap{20, 3, {1, 2, 3, 4}, "[ratelimit]\nrules = [] # new policy\n"};
  const std::uint64_t old_size = zetian::state::encodeSnapshotFile({10, 2, {1, 2, 3}}, old_snap.data).size();
  const std::uint64_t size = zetian::state::encodeSnapshotFile({20, 3, {1, 2, 3, 4}}, new_snap.data).size();
  for (std::uint64_t cut = 0; cut <= size; ++cut) {
    SCOPED_TRACE("cut after " + std::to_string(cut) + " bytes");
    const fs::path dir = fresh();
    raft::ByteBudget budget(old_size + cut);
    raft::StorageOptions opts;
    opts.write_gate = &budget;
    {
      auto opened = raft::Storage::open(dir, opts);
      opened.storage->saveSnapshot(old_snap);
      if (cut < size) {
        EXPECT_THROW(opened.storage->saveSnapshot(new_snap), raft::StorageError);
      } else {
        opened.storage->saveSnapshot(new_snap);
      }
    }
    auto again = raft::Storage::open(dir);
    ASSERT_TRUE(again.recovered.snapshot);
    EXPECT_EQ(*again.recovered.snapshot, cut < size ? old_snap : new_snap);
  }
}

TEST_F(StorageTest, ATornOrZeroFilledTailIsCutWithAWarning) {
  const fs::path dir = fresh();
  {
    auto opened = raft::Storage::open(dir);
    opened.storage->append(entries(1, 1, 4));
    opened.storage->sync();
  }
  const fs::path seg = segmentFiles(dir).back();
  const std::uint64_t good_size = fs::file_size(seg);
  {
    std::ofstream(seg, std::ios::app | std::ios::binary) << std::string(4096, '\0');
  }
  auto again = raft::Storage::open(dir);
  EXPECT_EQ(again.recovered.entries, entries(1, 1, 4));
  ASSERT_EQ(again.recovered.warnings.size(), 1u);
  EXPECT_NE(again.recovered.warnings[0].find(seg.string()), std::string::npos) << again.recovered.warnings[0];
  EXPECT_NE(again.recovered.warnings[0].find("offset " + std::to_string(good_size)), std::string::npos)
      << again.recovered.warnings[0];
  EXPECT_EQ(fs::file_size(seg), good_size);
}

TEST_F(StorageTest, ACorruptRecordFollowedByAGoodOneIsRefusedWithFileAndOffset) {
  const fs::path dir = fresh();
  {
    auto opened = raft::Storage::open(dir);
    opened.storage->append(entries(1, 1, 5));
    opened.storage->sync();
  }
  const fs::path seg = segmentFiles(dir).back();
  const std::uint64_t second = framedSize({entry(1, 1)});
  flipByte(seg, second + 20);  // inside entry 2's record
  const std::uint64_t size_before = fs::file_size(seg);
  const std::string error = openError(dir);
  EXPECT_NE(error.find(seg.string() + " at offset " + std::to_string(second)), std::string::npos) << error;
  EXPECT_NE(error.find("corrupt"), std::string::npos) << error;
  EXPECT_NE(error.find("followed by a valid record"), std::string::npos) << error;
  EXPECT_NE(error.find("zetianctl cluster remove"), std::string::npos) << error;
  EXPECT_EQ(fs::file_size(seg), size_before);  // refused, not repaired
}

TEST_F(StorageTest, DamageInAnOlderSegmentOrAMissingSegmentIsRefused) {
  raft::StorageOptions small;
  small.segment_bytes = 200;
  const fs::path dir = fresh();
  {
    auto opened = raft::Storage::open(dir, small);
    opened.storage->append(entries(1, 1, 20));
    opened.storage->sync();
  }
  std::vector<fs::path> files = segmentFiles(dir);
  ASSERT_GE(files.size(), 3u);

  const fs::path copy = fresh();
  fs::copy(dir, copy);
  // The last record of an older segment, torn: a crash cannot do that to a synced segment.
  fs::resize_file(copy / files[0].filename(), fs::file_size(files[0]) - 3);
  std::string error = openError(copy);
  EXPECT_NE(error.find((copy / files[0].filename()).string() + " at offset"), std::string::npos) << error;
  EXPECT_NE(error.find("not the newest"), std::string::npos) << error;

  fs::remove(files[1]);
  error = openError(dir);
  EXPECT_NE(error.find("a segment is missing"), std::string::npos) << error;
  EXPECT_NE(error.find(files[0].string()), std::string::npos) << error;
  EXPECT_NE(error.find(files[2].string()), std::string::npos) << error;

  const fs::path headless = fresh();
  fs::create_directories(headless);
  fs::copy(files[2], headless / files[2].filename());
  error = openError(headless);
  EXPECT_NE(error.find("there is no snapshot"), std::string::npos) << error;
}

TEST_F(StorageTest, ADamagedHardStateOrSnapshotFileIsRefused) {
  const fs::path dir = fresh();
  {
    auto opened = raft::Storage::open(dir);
    opened.storage->saveHardState({3, 1, 0});
    opened.storage->saveSnapshot({5, 3, {1}, "x"});
  }
  flipByte(dir / "hardstate", 12);
  std::string error = openError(dir);
  EXPECT_NE(error.find((dir / "hardstate").string()), std::string::npos) << error;
  EXPECT_NE(error.find("corrupt"), std::string::npos) << error;
  flipByte(dir / "hardstate", 12);
  fs::resize_file(dir / "snapshot", fs::file_size(dir / "snapshot") - 1);
  error = openError(dir);
  EXPECT_NE(error.find((dir / "snapshot").string()), std::string::npos) << error;
  EXPECT_NE(error.find("torn"), std::string::npos) << error;
}

// Seeded histories of appends, overwrites, syncs, snapshots with compaction and reopens
// on tiny segments, against a model of the log: the bookkeeping of offsets, terms and
// segments must agree with what a reopen reads back, whatever the order of operations.
TEST_F(StorageTest, RandomHistoriesReadBackAsTheModelSays) {
  for (std::uint32_t seed = 1; seed <= 200; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937 rng(seed);
    auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
      return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
    };
    raft::StorageOptions opts;
    opts.segment_bytes = pick(60, 400);
    const fs::path dir = fresh();
    auto opened = raft::Storage::open(dir, opts);
    std::vector<Entry> model;  // the stored log, from model.front().index on
    std::optional<raft::StoredSnapshot> snap;
    raft::Term term = 1;
    for (int step = 0; step < 80; ++step) {
      raft::Storage& s = *opened.storage;
      const raft::Index next = model.empty() ? (snap ? snap->index + 1 : 1) : model.back().index + 1;
      const std::uint64_t op = pick(0, 9);
      if (op <= 4) {
        raft::Index from = next;
        // Overwrite a suffix in a newer term, never below the snapshot (committed).
        const raft::Index lowest = std::max<raft::Index>(model.empty() ? next : model.front().index,
                                                         snap ? snap->index + 1 : 1);
        if (lowest < next && pick(0, 2) == 0) {
          from = pick(lowest, next);
          ++term;
        }
        std::vector<Entry> batch;
        for (raft::Index i = from; i < from + pick(1, 6); ++i) {
          batch.push_back(entry(term, i, std::string(pick(0, 40), static_cast<char>('a' + i % 26))));
        }
        s.append(batch);
        while (!model.empty() && model.back().index >= from) model.pop_back();
        model.insert(model.end(), batch.begin(), batch.end());
      } else if (op <= 6) {
        s.sync();
      } else if (op == 7 && !model.empty()) {
        const raft::Index at = pick(std::max<raft::Index>(model.front().index, snap ? snap->index : 1),
                                    model.back().index);
        snap = raft::StoredSnapshot{at, model[at - model.front().index].term, {1, 2, 3}, "state " + std::to_string(at)};
        s.saveSnapshot(*snap);
        s.compact(pick(model.front().index > 1 ? model.front().index - 1 : 0, at));
        const raft::Index first = s.firstIndex();
        if (first == 0) {
          model.clear();
        } else {
          ASSERT_GE(first, model.front().index);
          model.erase(model.begin(), model.begin() + static_cast<std::ptrdiff_t>(first - model.front().index));
        }
      } else {
        s.sync();
        opened.storage.reset();
        opened = raft::Storage::open(dir, opts);
        ASSERT_EQ(opened.recovered.entries, model);
        ASSERT_EQ(opened.recovered.snapshot, snap);
        ASSERT_TRUE(opened.recovered.warnings.empty()) << opened.recovered.warnings.front();
      }
      ASSERT_EQ(opened.storage->firstIndex(), model.empty() ? 0 : model.front().index);
      ASSERT_EQ(opened.storage->lastIndex(), model.empty() ? 0 : model.back().index);
    }
  }
}

TEST_F(StorageTest, StrangersAreIgnoredWithAWarningAndAGapAfterTheSnapshotIsRefused) {
  const fs::path dir = fresh();
  raft::StorageOptions small;
  small.segment_bytes = 150;
  {
    auto opened = raft::Storage::open(dir, small);
    opened.storage->append(entries(1, 1, 12));
    opened.storage->saveSnapshot({4, 1, {1}, "s"});
    opened.storage->compact(4);
  }
  { std::ofstream(dir / "notes.txt") << "an operator's note"; }
  auto opened = raft::Storage::open(dir, small);
  ASSERT_EQ(opened.recovered.warnings.size(), 1u);
  EXPECT_NE(opened.recovered.warnings[0].find("notes.txt"), std::string::npos);
  EXPECT_EQ(opened.recovered.entries.back().index, 12u);
  opened.storage.reset();
  // The snapshot moved back (an older file restored by hand): segments start after it.
  const std::vector<fs::path> files = segmentFiles(dir);
  ASSERT_GE(std::stoull(files.front().filename().string()), 3u);
  {
    auto older = raft::Storage::open(fresh());
    older.storage->saveSnapshot({1, 1, {1}, "old"});
    fs::copy_file(older.storage->dir() / "snapshot", dir / "snapshot", fs::copy_options::overwrite_existing);
  }
  const std::string error = openError(dir);
  EXPECT_NE(error.find("the snapshot ends at index 1"), std::string::npos) << error;
  EXPECT_NE(error.find(files.front().string()), std::string::npos) << error;
}
