// Raft's durable storage: the folder `node.state_dir/raft/`, written by the driver and
// read back on start. The bytes of each record are state/raft_records.h; this file is
// the files, their order of writes and fsyncs, and recovery.
//
// The folder:
//   00000000000000000001.log   log segments, append-only, each named by the index of
//   00000000000000000913.log   its first entry (20 digits, so names sort as numbers);
//                              a new one starts when the last reaches segment_bytes
//   hardstate                  term, vote, commit: written to hardstate.tmp, fsynced,
//   snapshot                   renamed, the folder fsynced; so the file is always one
//                              whole version, the old one or the new one
//
// Invariants the write order keeps, and recovery relies on:
//   - Every segment but the last is complete and synced: a segment is fsynced before
//     the next one is created. So damage anywhere but in the last segment's tail is not
//     a crash's doing.
//   - After a sync(), everything appended before it is durable, the folder entries of new
//     segments included. Between syncs a crash may keep any prefix of the bytes written
//     to the last segment: a torn tail.
//   - Overwriting a suffix (Raft truncating a conflicting tail) cuts the files and
//     makes the cut durable before the new entries are written, and deletes whole
//     segments newest first with the folder fsynced after each, so a crash in between
//     leaves the old log or a prefix of it, never old bytes after new ones or a hole.
//   - compact() deletes segments oldest first, the folder fsynced after each: a crash
//     leaves a suffix of the log, still reaching back to the snapshot.
//
// Recovery (open): a torn or corrupt tail of the last segment (a bad record with no
// valid record after it) is cut off and reported as a warning. Anything else is refused
// with a StorageError naming the file and the offset and saying what to do: a bad
// record followed by a valid one, a bad record in a segment that is not the last, a
// missing segment (the indexes jump between two files), a damaged hard state or
// snapshot file (those are only ever replaced by rename, so a crash cannot tear them).
// Leftover *.tmp files (a hard state or snapshot write that a crash interrupted) are
// removed with a warning.
//
// Thread: not thread-safe. One owner calls it at a time (the driver hands it to its
// fsync thread and back). After any failed write or fsync every call throws: what
// reached the disk is unknown (a failed fsync may have dropped dirty pages), so the
// only way on is to reopen, which re-reads what is really there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster/raft/types.h"

namespace zetian::cluster::raft {

// A snapshot as stored: the state machine's bytes as of `index` (whose term is `term`),
// and the voters at that point. Its own name, apart from whatever the core calls the
// snapshots it hands out, so the two can evolve without clashing.
struct StoredSnapshot {
  Index index = 0;
  Term term = 0;
  std::vector<NodeId> voters;
  std::string data;
  bool operator==(const StoredSnapshot&) const = default;
};

class StorageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The write-fault hook: asked before every write to a file how many of its bytes may
// reach the file. An answer below `size` makes the storage write that prefix and then
// fail with StorageError, as a machine that dies mid-write leaves a prefix on disk.
class WriteGate {
 public:
  virtual ~WriteGate() = default;
  virtual std::size_t admit(std::size_t size) = 0;
};

// Lets `budget` bytes through in all, then cuts: a test sets it to every offset in turn.
class ByteBudget final : public WriteGate {
 public:
  explicit ByteBudget(std::uint64_t budget) : left_(budget) {}
  std::size_t admit(std::size_t size) override;
  std::uint64_t left() const { return left_; }

 private:
  std::uint64_t left_;
};

// The driver's file in the same folder (identity.h: which node the folder belongs to,
// its Raft id), read and written through readIdentity() and saveIdentity().
inline constexpr std::string_view kIdentityFileName = "identity";

struct StorageOptions {
  std::uint64_t segment_bytes = 64ull * 1024 * 1024;
  WriteGate* write_gate = nullptr;  // tests only; not owned, must outlive the Storage
};

// What open() found.
struct RecoveredState {
  HardState hard_state;            // zero when no hard state was ever saved
  std::optional<StoredSnapshot> snapshot;
  // The stored log, consecutive. Without a snapshot it starts at index 1; with one it
  // starts at or below snapshot->index + 1 (entries up to the snapshot's index are
  // covered by it and may be dropped by the caller) and may end below it.
  std::vector<Entry> entries;
  std::vector<std::string> warnings;  // what recovery repaired, for the log
};

class Storage;

struct OpenedStorage {
  std::unique_ptr<Storage> storage;
  RecoveredState recovered;
};

class Storage {
 public:
  // Opens the folder (creating it when missing) and recovers it (see above). Throws
  // StorageError when the folder cannot be used as it is.
  static OpenedStorage open(const std::filesystem::path& dir, StorageOptions options = {});

  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();

  // Writes entries (consecutive indexes, terms never decreasing) after the stored log;
  // when the first index is already stored, the stored log from there on is replaced
  // (Raft's conflicting tail). Not durable until sync(). Throws std::invalid_argument,
  // changing nothing, for entries that would leave a gap, reach below the first stored
  // entry, or break the order of indexes or terms.
  void append(const std::vector<Entry>& entries);
  // Makes every append so far durable: one fsync of the last segment (and of the folder
  // when segments were created) however many appends came before.
  void sync();
  // Durable on return (temp file, fsync, rename, folder fsync), and so is every append
  // before it (it syncs them first: a stored commit index never points past the log).
  void saveHardState(const HardState& hard_state);
  // Durable on return, like saveHardState. The log is not touched: compact() next.
  void saveSnapshot(const StoredSnapshot& snapshot);
  // The identity file (kIdentityFileName): its text, nullopt when there is none; and
  // written like the hard state (temp file, fsync, rename, folder fsync). The storage
  // does not read what it says (identity.h does).
  std::optional<std::string> readIdentity() const;
  void saveIdentity(std::string_view text);
  // A snapshot received from the leader (the core's Ready::snapshot): saved like
  // saveSnapshot, then, when the stored log does not hold the snapshot's last entry
  // with its term, the whole stored log is deleted, newest segment first with the
  // folder fsynced after each (the core's log after such an install is empty, and the
  // next append starts right after the snapshot); when it does, only compact(index).
  // A crash in between leaves the new snapshot and a prefix of the old log whose entry
  // at the snapshot's index, if any, has another term: durableFromRecovered()
  // (recovery.h) drops everything after such an entry. Durable on return.
  void installSnapshot(const StoredSnapshot& snapshot);
  // Deletes the segments whose entries are all at or below up_to, which must not be
  // above the saved snapshot's index. Durable on return.
  void compact(Index up_to);

  Index firstIndex() const;  // 0 when no entry is stored
  Index lastIndex() const;   // 0 when no entry is stored
  std::size_t segmentCount() const { return segments_.size(); }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct Segment {
    Index first = 0;
    std::filesystem::path path;
    std::vector<std::uint64_t> ends;  // ends[i]: the offset just past entry first + i
    std::vector<Term> terms;          // terms[i]: the term of entry first + i
    std::uint64_t size() const { return ends.empty() ? 0 : ends.back(); }
    Index count() const { return ends.size(); }
  };

  Storage(std::filesystem::path dir, StorageOptions options);
  void recover(RecoveredState& out);
  void recoverSegments(RecoveredState& out);
  void checkUsable() const;
  Index nextIndex() const;
  std::optional<Term> termAt(Index index) const;
  void truncateFrom(Index index);
  void startSegment(Index first);
  void openActive();
  void closeActive();
  void writeAt(int fd, const std::filesystem::path& path, std::string_view bytes, std::uint64_t offset);
  void writeFileAtomically(const std::string& name, std::string_view bytes);
  void removeFile(const std::filesystem::path& path);
  void fsyncFile(int fd, const std::filesystem::path& path);
  void fsyncDir();
  void fsyncPath(const std::filesystem::path& dir);

  std::filesystem::path dir_;
  StorageOptions options_;
  std::vector<Segment> segments_;  // by first index; the last one is written to
  int active_fd_ = -1;             // the last segment, open for writing
  bool active_dirty_ = false;      // written since its last fsync
  bool dir_dirty_ = false;         // segments created since the folder's last fsync
  bool failed_ = false;            // a write or fsync failed: refuse everything
  Index snapshot_index_ = 0;
  Term snapshot_term_ = 0;
};

}  // namespace zetian::cluster::raft
