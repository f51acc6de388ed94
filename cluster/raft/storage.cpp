#include "cluster/raft/storage.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "state/raft_records.h"

namespace zetian::cluster::raft {
namespace {

namespace fs = std::filesystem;
namespace zs = zetian::state;

static_assert(static_cast<std::uint8_t>(EntryType::config) == zs::kMaxRaftEntryType,
              "state/raft_records.h must know every EntryType");

constexpr std::string_view kHardStateName = "hardstate";
constexpr std::string_view kSnapshotName = "snapshot";
constexpr std::string_view kTempSuffix = ".tmp";
constexpr std::string_view kSegmentSuffix = ".log";
constexpr std::size_t kSegmentDigits = 20;

// What an operator should do when the folder is damaged beyond a torn tail.
constexpr std::string_view kDamageAdvice =
    " A crash only tears the end of the newest segment, so this is damage to data that "
    "was synced: the node does not guess which entries to keep. Stop the node, move the "
    "folder aside for inspection, remove the node from the cluster (zetianctl cluster "
    "remove NODE) and start it with an empty raft folder so it rejoins and catches up "
    "from the others; a voter that silently forgets its log can break Raft's safety.";

std::string segmentName(Index first) {
  std::string digits = std::to_string(first);
  return std::string(kSegmentDigits - digits.size(), '0') + digits + std::string(kSegmentSuffix);
}

std::optional<Index> parseSegmentName(const std::string& name) {
  if (name.size() != kSegmentDigits + kSegmentSuffix.size() || !name.ends_with(kSegmentSuffix)) {
    return std::nullopt;
  }
  Index v = 0;
  for (std::size_t i = 0; i < kSegmentDigits; ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    const Index digit = static_cast<Index>(name[i] - '0');
    if (v > (UINT64_MAX - digit) / 10) return std::nullopt;
    v = v * 10 + digit;
  }
  if (v == 0) return std::nullopt;
  return v;
}

std::string errnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

[[noreturn]] void fail(const std::string& what) { throw StorageError("raft storage: " + what); }

std::string readWholeFile(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open " + path.string() + ": " + errnoText(errno));
  std::string out;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      fail("cannot read " + path.string() + ": " + errnoText(err));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

Entry toEntry(zs::RaftLogRecord&& r) {
  return Entry{r.term, r.index, static_cast<EntryType>(r.type), std::move(r.data)};
}

}  // namespace

std::size_t ByteBudget::admit(std::size_t size) {
  const std::uint64_t allowed = std::min<std::uint64_t>(size, left_);
  left_ -= allowed;
  return static_cast<std::size_t>(allowed);
}

Storage::Storage(fs::path dir, StorageOptions options) : dir_(std::move(dir)), options_(options) {
  if (options_.segment_bytes == 0) throw std::invalid_argument("raft storage: segment_bytes must be above 0");
}

Storage::~Storage() { closeActive(); }

OpenedStorage Storage::open(const fs::path& dir, StorageOptions options) {
  std::unique_ptr<Storage> storage(new Storage(dir, options));
  OpenedStorage out;
  storage->recover(out.recovered);
  out.storage = std::move(storage);
  return out;
}

void Storage::recover(RecoveredState& out) {
  std::error_code ec;
  // The folders this call creates, outermost first: each one's entry in its parent is
  // fsynced, or a crash soon after the first start could take the whole folder (and a
  // vote cast from it) away.
  std::vector<fs::path> created;
  for (fs::path p = fs::absolute(dir_, ec); !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
    created.insert(created.begin(), p);
    if (p == p.parent_path()) break;
  }
  fs::create_directories(dir_, ec);
  if (ec) fail("cannot create " + dir_.string() + ": " + ec.message());
  for (const fs::path& p : created) fsyncPath(p.parent_path());

  bool removed_temp = false;
  for (const fs::directory_entry& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.ends_with(kTempSuffix)) {
      // Only a hard state or snapshot write makes these, and the rename that would have
      // published one never happened: the file it was replacing is still whole.
      removeFile(e.path());
      removed_temp = true;
      out.warnings.push_back("raft storage: removed " + e.path().string() +
                             ", a write that a crash interrupted before it was published");
    } else if (auto first = parseSegmentName(name)) {
      segments_.push_back(Segment{*first, e.path(), {}, {}});
    } else if (name != kHardStateName && name != kSnapshotName && name != kIdentityFileName) {
      out.warnings.push_back("raft storage: ignoring " + e.path().string() + ", not a file of ours");
    }
  }
  if (ec) fail("cannot list " + dir_.string() + ": " + ec.message());
  if (removed_temp) fsyncDir();
  std::sort(segments_.begin(), segments_.end(),
            [](const Segment& a, const Segment& b) { return a.first < b.first; });

  const fs::path hs_path = dir_ / kHardStateName;
  if (fs::exists(hs_path)) {
    const zs::HardStateDecode d = zs::decodeHardStateFile(readWholeFile(hs_path));
    if (d.status != zs::RecordStatus::ok) {
      fail(hs_path.string() + ": " + std::string(zs::recordStatusName(d.status)) + " hard state (" +
           d.detail + "). The file is only ever replaced by a rename, so a crash cannot " +
           "tear it." + std::string(kDamageAdvice));
    }
    out.hard_state = HardState{d.hard_state.term, d.hard_state.vote, d.hard_state.commit};
  }

  const fs::path snap_path = dir_ / kSnapshotName;
  if (fs::exists(snap_path)) {
    const std::string bytes = readWholeFile(snap_path);
    const zs::SnapshotDecode d = zs::decodeSnapshotFile(bytes);
    if (d.status != zs::RecordStatus::ok) {
      fail(snap_path.string() + ": " + std::string(zs::recordStatusName(d.status)) + " snapshot (" +
           d.detail + "). The file is only ever replaced by a rename, so a crash cannot " +
           "tear it." + std::string(kDamageAdvice));
    }
    out.snapshot = StoredSnapshot{d.header.index, d.header.term, d.header.voters, std::string(d.payload)};
    snapshot_index_ = d.header.index;
    snapshot_term_ = d.header.term;
  }

  recoverSegments(out);
  if (!segments_.empty()) openActive();
}

void Storage::recoverSegments(RecoveredState& out) {
  Term last_term = 0;
  for (std::size_t s = 0; s < segments_.size(); ++s) {
    Segment& seg = segments_[s];
    const bool is_last = s + 1 == segments_.size();
    if (s > 0) {
      const Segment& prev = segments_[s - 1];
      if (prev.first + prev.count() != seg.first) {
        fail("a segment is missing: " + prev.path.string() + " ends at index " +
             std::to_string(prev.first + prev.count() - 1) + " but the next segment is " +
             seg.path.string() + "." + std::string(kDamageAdvice));
      }
    } else if (snapshot_index_ == 0 ? seg.first != 1 : seg.first > snapshot_index_ + 1) {
      fail("the log starts at index " + std::to_string(seg.first) + " (" + seg.path.string() +
           ") but " +
           (snapshot_index_ == 0 ? std::string("there is no snapshot")
                                 : "the snapshot ends at index " + std::to_string(snapshot_index_)) +
           ": the entries in between are missing." + std::string(kDamageAdvice));
    }

    const std::string bytes = readWholeFile(seg.path);
    const std::string_view view(bytes);
    std::uint64_t offset = 0;
    while (offset < view.size()) {
      zs::LogRecordDecode d = zs::decodeLogRecord(view.substr(offset));
      if (d.status == zs::RecordStatus::ok) {
        const Index expected = seg.first + seg.count();
        if (d.record.index != expected || d.record.term < last_term) {
          fail(seg.path.string() + " at offset " + std::to_string(offset) + ": entry " +
               std::to_string(d.record.index) + " of term " + std::to_string(d.record.term) +
               " where entry " + std::to_string(expected) + " of term " + std::to_string(last_term) +
               " or later was expected; the file was not written by this storage." +
               std::string(kDamageAdvice));
        }
        last_term = d.record.term;
        offset += d.size;
        seg.ends.push_back(offset);
        seg.terms.push_back(d.record.term);
        out.entries.push_back(toEntry(std::move(d.record)));
        continue;
      }
      const std::string what = std::string(zs::recordStatusName(d.status)) + " record (" + d.detail + ")";
      if (!is_last) {
        fail(seg.path.string() + " at offset " + std::to_string(offset) + ": " + what +
             " in a segment that is not the newest." + std::string(kDamageAdvice));
      }
      // A tail is torn only if nothing valid follows; a valid record after a bad one is
      // damage in the middle, and cutting there would throw away synced entries.
      // Only a record that could continue the log counts: the bytes of a torn entry's
      // data may happen to hold something shaped like a frame.
      const Index expected = seg.first + seg.count();
      for (std::uint64_t later = offset + 1; later < view.size(); ++later) {
        const zs::LogRecordDecode next = zs::decodeLogRecord(view.substr(later));
        if (next.status == zs::RecordStatus::ok && next.record.index >= expected &&
            next.record.term >= last_term) {
          fail(seg.path.string() + " at offset " + std::to_string(offset) + ": " + what +
               " followed by a valid record at offset " + std::to_string(later) + "." +
               std::string(kDamageAdvice));
        }
      }
      const int fd = ::open(seg.path.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) fail("cannot open " + seg.path.string() + ": " + errnoText(errno));
      if (::ftruncate(fd, static_cast<off_t>(offset)) != 0) {
        const int err = errno;
        ::close(fd);
        fail("cannot truncate " + seg.path.string() + ": " + errnoText(err));
      }
      try {
        fsyncFile(fd, seg.path);
      } catch (...) {
        ::close(fd);
        throw;
      }
      ::close(fd);
      out.warnings.push_back("raft storage: " + seg.path.string() + ": cut a " + what + " at offset " +
                             std::to_string(offset) + " (" + std::to_string(view.size() - offset) +
                             " bytes): the tail of a write a crash interrupted; entries from index " +
                             std::to_string(seg.first + seg.count()) + " on had not been synced");
      break;
    }
  }
}

void Storage::checkUsable() const {
  if (failed_) {
    fail(dir_.string() + ": an earlier write or fsync failed; what is on disk is unknown until "
         "the storage is reopened");
  }
}

Index Storage::nextIndex() const {
  if (segments_.empty()) return snapshot_index_ + 1;
  return segments_.back().first + segments_.back().count();
}

Index Storage::firstIndex() const {
  for (const Segment& s : segments_) {
    if (s.count() > 0) return s.first;
  }
  return 0;
}

Index Storage::lastIndex() const {
  const Index next = nextIndex();
  return firstIndex() == 0 ? 0 : next - 1;
}

std::optional<Term> Storage::termAt(Index index) const {
  for (const Segment& s : segments_) {
    if (index >= s.first && index < s.first + s.count()) return s.terms[index - s.first];
  }
  if (index == snapshot_index_ && index != 0) return snapshot_term_;
  return std::nullopt;
}

void Storage::append(const std::vector<Entry>& entries) {
  checkUsable();
  if (entries.empty()) return;
  const Index first = entries.front().index;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.index != first + i || e.term == 0 || (i > 0 && e.term < entries[i - 1].term)) {
      throw std::invalid_argument("raft storage: entries to append must have consecutive indexes and "
                                  "terms above 0 that never decrease (at " + describe(e) + ")");
    }
  }
  const Index next = nextIndex();
  const Index lowest = firstIndex() == 0 ? next : firstIndex();
  if (first > next || first < lowest) {
    throw std::invalid_argument("raft storage: cannot append from index " + std::to_string(first) +
                                ": the stored log accepts indexes " + std::to_string(lowest) + " to " +
                                std::to_string(next));
  }
  if (const auto before = termAt(first - 1); before && entries.front().term < *before) {
    throw std::invalid_argument("raft storage: entry " + describe(entries.front()) +
                                " would follow an entry of term " + std::to_string(*before));
  }
  // Encode everything before touching a file: an entry the encoder refuses changes nothing.
  std::vector<std::string> frames;
  frames.reserve(entries.size());
  for (const Entry& e : entries) {
    try {
      frames.push_back(zs::encodeLogRecord({e.term, e.index, static_cast<std::uint8_t>(e.type), e.data}));
    } catch (const std::invalid_argument& ex) {
      throw std::invalid_argument(std::string("raft storage: ") + ex.what());
    }
  }

  if (first < next) truncateFrom(first);
  if (segments_.empty()) startSegment(first);

  // Frames go out in one write per segment; a segment full before a frame rolls.
  std::string pending;
  std::vector<std::pair<std::uint64_t, Term>> pending_meta;
  auto flush = [&] {
    if (pending.empty()) return;
    Segment& seg = segments_.back();
    writeAt(active_fd_, seg.path, pending, seg.size());
    for (const auto& [end, term] : pending_meta) {
      seg.ends.push_back(end);
      seg.terms.push_back(term);
    }
    active_dirty_ = true;
    pending.clear();
    pending_meta.clear();
  };
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const Segment& seg = segments_.back();
    const std::uint64_t size = seg.size() + pending.size();
    if (size > 0 && size + frames[i].size() > options_.segment_bytes) {
      flush();
      startSegment(entries[i].index);
    }
    pending += frames[i];
    pending_meta.emplace_back(segments_.back().size() + pending.size(), entries[i].term);
  }
  flush();
}

void Storage::truncateFrom(Index index) {
  // Newest first, the folder synced after each, so a crash leaves a prefix of the log.
  while (!segments_.empty() && segments_.back().first > index) {
    closeActive();
    removeFile(segments_.back().path);
    fsyncDir();
    segments_.pop_back();
  }
  if (segments_.empty()) return;
  Segment& seg = segments_.back();
  if (active_fd_ < 0) openActive();
  const std::size_t keep = static_cast<std::size_t>(index - seg.first);
  const std::uint64_t cut = keep == 0 ? 0 : seg.ends[keep - 1];
  if (::ftruncate(active_fd_, static_cast<off_t>(cut)) != 0) {
    failed_ = true;
    fail("cannot truncate " + seg.path.string() + ": " + errnoText(errno));
  }
  // Durable before the new entries land: otherwise a crash could keep new bytes over
  // the cut and the old ones after them, which recovery would rightly call damage.
  fsyncFile(active_fd_, seg.path);
  active_dirty_ = false;
  seg.ends.resize(keep);
  seg.terms.resize(keep);
}

void Storage::startSegment(Index first) {
  if (active_fd_ >= 0) {
    // Every segment but the last is complete and synced (the recovery rule).
    if (active_dirty_) fsyncFile(active_fd_, segments_.back().path);
    active_dirty_ = false;
    closeActive();
  }
  Segment seg{first, dir_ / segmentName(first), {}, {}};
  active_fd_ = ::open(seg.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (active_fd_ < 0) {
    failed_ = true;
    fail("cannot create " + seg.path.string() + ": " + errnoText(errno));
  }
  segments_.push_back(std::move(seg));
  dir_dirty_ = true;
}

void Storage::openActive() {
  if (active_fd_ >= 0 || segments_.empty()) return;
  const fs::path& path = segments_.back().path;
  active_fd_ = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (active_fd_ < 0) {
    failed_ = true;
    fail("cannot open " + path.string() + " for writing: " + errnoText(errno));
  }
}

void Storage::closeActive() {
  if (active_fd_ >= 0) ::close(active_fd_);
  active_fd_ = -1;
}

void Storage::sync() {
  checkUsable();
  if (active_fd_ >= 0 && active_dirty_) {
    if (::fdatasync(active_fd_) != 0) {
      failed_ = true;
      fail("fdatasync of " + segments_.back().path.string() + " failed: " + errnoText(errno));
    }
    active_dirty_ = false;
  }
  if (dir_dirty_) fsyncDir();
}

void Storage::saveHardState(const HardState& hard_state) {
  checkUsable();
  // The appends before it first, so a stored commit index never points past the stored log.
  sync();
  std::string bytes;
  try {
    bytes = zs::encodeHardStateFile({hard_state.term, hard_state.vote, hard_state.commit});
  } catch (const std::invalid_argument& ex) {
    throw std::invalid_argument(std::string("raft storage: ") + ex.what());
  }
  writeFileAtomically(std::string(kHardStateName), bytes);
}

std::optional<std::string> Storage::readIdentity() const {
  const fs::path path = dir_ / kIdentityFileName;
  if (!fs::exists(path)) return std::nullopt;
  return readWholeFile(path);
}

void Storage::saveIdentity(std::string_view text) {
  checkUsable();
  writeFileAtomically(std::string(kIdentityFileName), text);
}

void Storage::saveSnapshot(const StoredSnapshot& snapshot) {
  checkUsable();
  std::string bytes;
  try {
    bytes = zs::encodeSnapshotFile({snapshot.index, snapshot.term, snapshot.voters}, snapshot.data);
  } catch (const std::invalid_argument& ex) {
    throw std::invalid_argument(std::string("raft storage: ") + ex.what());
  }
  if (snapshot.index < snapshot_index_) {
    throw std::invalid_argument("raft storage: a snapshot at index " + std::to_string(snapshot.index) +
                                " is older than the saved one at " + std::to_string(snapshot_index_));
  }
  writeFileAtomically(std::string(kSnapshotName), bytes);
  snapshot_index_ = snapshot.index;
  snapshot_term_ = snapshot.term;
}

void Storage::installSnapshot(const StoredSnapshot& snapshot) {
  const bool holds_it = termAt(snapshot.index) == std::optional<Term>(snapshot.term);
  saveSnapshot(snapshot);
  if (holds_it) {
    compact(snapshot.index);
    return;
  }
  truncateFrom(0);
}

void Storage::compact(Index up_to) {
  checkUsable();
  if (up_to > snapshot_index_) {
    throw std::invalid_argument("raft storage: cannot compact up to index " + std::to_string(up_to) +
                                ", past the saved snapshot's index " + std::to_string(snapshot_index_));
  }
  // Oldest first, the folder synced after each, so a crash leaves a suffix of the log that
  // still reaches back to the snapshot.
  while (!segments_.empty()) {
    const Segment& seg = segments_.front();
    if (seg.count() == 0 || seg.first + seg.count() - 1 > up_to) break;
    if (segments_.size() == 1) closeActive();
    removeFile(seg.path);
    fsyncDir();
    segments_.erase(segments_.begin());
  }
}

void Storage::writeAt(int fd, const fs::path& path, std::string_view bytes, std::uint64_t offset) {
  std::size_t allowed = bytes.size();
  if (options_.write_gate != nullptr) allowed = std::min(allowed, options_.write_gate->admit(bytes.size()));
  std::size_t done = 0;
  while (done < allowed) {
    const ssize_t n = ::pwrite(fd, bytes.data() + done, allowed - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      failed_ = true;
      fail("write to " + path.string() + " failed: " + errnoText(errno));
    }
    done += static_cast<std::size_t>(n);
  }
  if (allowed < bytes.size()) {
    failed_ = true;
    fail("write to " + path.string() + " cut after " + std::to_string(allowed) + " of " +
         std::to_string(bytes.size()) + " bytes (injected write fault)");
  }
}

void Storage::writeFileAtomically(const std::string& name, std::string_view bytes) {
  const fs::path final_path = dir_ / name;
  const fs::path temp_path = dir_ / (name + std::string(kTempSuffix));
  const int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    failed_ = true;
    fail("cannot create " + temp_path.string() + ": " + errnoText(errno));
  }
  try {
    writeAt(fd, temp_path, bytes, 0);
    fsyncFile(fd, temp_path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    failed_ = true;
    fail("cannot rename " + temp_path.string() + " to " + final_path.string() + ": " + errnoText(errno));
  }
  fsyncDir();
}

void Storage::removeFile(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    failed_ = true;
    fail("cannot remove " + path.string() + ": " + errnoText(errno));
  }
}

void Storage::fsyncFile(int fd, const fs::path& path) {
  if (::fsync(fd) != 0) {
    failed_ = true;
    fail("fsync of " + path.string() + " failed: " + errnoText(errno));
  }
}

void Storage::fsyncDir() {
  fsyncPath(dir_);
  dir_dirty_ = false;
}

void Storage::fsyncPath(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    failed_ = true;
    fail("cannot open " + dir.string() + " to fsync it: " + errnoText(errno));
  }
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) {
    failed_ = true;
    fail("fsync of " + dir.string() + " failed: " + errnoText(err));
  }
}

}  // namespace zetian::cluster::raft
