// RaftFrame payloads; the layout and the decoder's invariants are in raft_codec.h.
//
// The reader here follows codec.cpp's trap: once one read fails every later read fails
// too, so a field list can be read straight through and checked once.
#include "cluster/wire/raft_codec.h"

#include <limits>
#include <stdexcept>
#include <utility>

namespace zetian::cluster::wire {
namespace {

constexpr std::uint8_t kMaxMessageKind = static_cast<std::uint8_t>(raft::MessageType::snapshot);
constexpr std::uint8_t kMaxEntryType = static_cast<std::uint8_t>(raft::EntryType::config);

static_assert(kMaxRaftEntries <= 0xffff && kMaxStringBytes <= 0xffff, "counts and lengths travel as u16");
static_assert(kRaftMessageFixedBytes + kMaxStringBytes + kMaxRaftEntries * kRaftEntryOverheadBytes <=
                  kMaxRaftPayloadBytes,
              "a message at its counts' caps, data aside, fits in one frame");
static_assert(kMaxRaftPayloadBytes <= std::numeric_limits<std::uint32_t>::max(), "data lengths travel as u32");

void require(bool condition, const char* what) {
  if (!condition) throw std::invalid_argument(std::string("wire: raft message ") + what);
}

void put(std::string& out, std::uint64_t v, int width) {
  for (int shift = (width - 1) * 8; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool ok() const { return !failed_; }
  std::size_t remaining() const { return data_.size() - pos_; }

  void fail(DecodeError error, std::string detail) {
    if (failed_) return;
    failed_ = true;
    error_ = error;
    detail_ = std::move(detail);
  }

  std::uint64_t uint(std::size_t width, const char* what) {
    if (!take(width, what)) return 0;
    std::uint64_t v = 0;
    for (std::size_t i = pos_ - width; i < pos_; ++i) v = (v << 8) | static_cast<std::uint8_t>(data_[i]);
    return v;
  }

  std::uint8_t upTo(std::uint8_t max, const char* what) {
    const auto v = static_cast<std::uint8_t>(uint(1, what));
    if (ok() && v > max) fail(DecodeError::BadValue, std::string("raft ") + what + " " + std::to_string(v) + " out of range");
    return v;
  }

  // `size` bytes, checked against what is left before anything is copied.
  std::string bytes(std::size_t size, const char* what) {
    if (!take(size, what)) return {};
    return std::string(data_.substr(pos_ - size, size));
  }

  RaftDecodeResult result(raft::Message message) && {
    RaftDecodeResult out;
    out.ok = !failed_;
    if (out.ok) {
      out.message = std::move(message);
    } else {
      out.error = error_;
      out.detail = std::move(detail_);
    }
    return out;
  }

 private:
  bool take(std::size_t n, const char* what) {
    if (failed_) return false;
    if (n > remaining()) {
      fail(DecodeError::Truncated, std::string("frame ends inside raft ") + what);
      return false;
    }
    pos_ += n;
    return true;
  }

  std::string_view data_;
  std::size_t pos_ = 0;
  bool failed_ = false;
  DecodeError error_ = DecodeError::Truncated;
  std::string detail_;
};

raft::Entry readEntry(Reader& r) {
  raft::Entry entry;
  entry.term = r.uint(8, "entry term");
  entry.index = r.uint(8, "entry index");
  entry.type = static_cast<raft::EntryType>(r.upTo(kMaxEntryType, "entry type"));
  const std::size_t size = r.uint(4, "entry data length");
  // take() compares the length with the bytes left, so a forged length allocates nothing.
  entry.data = r.bytes(size, "entry data");
  return entry;
}

std::vector<raft::NodeId> readIds(Reader& r, const char* what) {
  const std::size_t count = r.uint(2, what);
  std::vector<raft::NodeId> ids;
  if (r.ok() && (count > kMaxSnapshotMembers || count * 8 > r.remaining())) {
    r.fail(DecodeError::BadValue, std::string("raft snapshot ") + what + " " + std::to_string(count) +
                                      " above the limit or the bytes left");
    return ids;
  }
  ids.reserve(count);
  for (std::size_t i = 0; i < count && r.ok(); ++i) ids.push_back(r.uint(8, what));
  return ids;
}

// The snapshot section's body (its tag and length already read; `length` bytes).
raft::Snapshot readSnapshot(Reader& r, std::size_t length) {
  raft::Snapshot snapshot;
  const std::size_t end = r.remaining() - length;  // what must be left once it is read
  snapshot.index = r.uint(8, "snapshot index");
  snapshot.term = r.uint(8, "snapshot term");
  snapshot.voters = readIds(r, "voter count");
  snapshot.learners = readIds(r, "learner count");
  snapshot.removed = readIds(r, "removed count");
  const std::size_t size = r.uint(4, "snapshot data length");
  snapshot.data = r.bytes(size, "snapshot data");
  if (r.ok() && r.remaining() != end) {
    r.fail(DecodeError::BadValue, "raft snapshot section length " + std::to_string(length) +
                                      " does not match its contents");
  }
  return snapshot;
}

}  // namespace

std::size_t raftPayloadBytes(const raft::Message& message) {
  std::size_t size = kRaftMessageFixedBytes + message.context.size();
  for (const raft::Entry& entry : message.entries) size += kRaftEntryOverheadBytes + entry.data.size();
  if (message.snapshot) size += 1 + 4 + snapshotSectionBytes(*message.snapshot);
  return size;
}

std::string encodeRaftMessage(const raft::Message& m) {
  // Every field is read through this binding, so a field added to raft::Message (a
  // snapshot, say) stops the build here until it has a place on the wire, rather than
  // being dropped in transit without a word.
  const auto& [type, from, to, term, log_term, index, commit, entries, reject, reject_hint, transfer, context,
               snapshot] = m;
  require(static_cast<std::uint8_t>(type) <= kMaxMessageKind, "kind out of range");
  require(from != raft::kNoNode && to != raft::kNoNode, "from or to is kNoNode");
  require(context.size() <= kMaxStringBytes, "context longer than kMaxStringBytes");
  require(entries.size() <= kMaxRaftEntries, "entries above kMaxRaftEntries");
  for (const raft::Entry& entry : entries) {
    require(static_cast<std::uint8_t>(entry.type) <= kMaxEntryType, "entry type out of range");
  }
  if (snapshot) {
    for (const auto* ids : {&snapshot->voters, &snapshot->learners, &snapshot->removed}) {
      require(ids->size() <= kMaxSnapshotMembers, "a snapshot membership list above kMaxSnapshotMembers");
    }
  }
  const std::size_t size = raftPayloadBytes(m);
  require(size <= kMaxRaftPayloadBytes, "larger than one frame (split the entries; a snapshot must fit in one)");

  std::string out;
  out.reserve(size);
  put(out, static_cast<std::uint8_t>(type), 1);
  put(out, from, 8);
  put(out, to, 8);
  put(out, term, 8);
  put(out, log_term, 8);
  put(out, index, 8);
  put(out, commit, 8);
  put(out, (reject ? kRaftFlagReject : 0) | (transfer ? kRaftFlagTransfer : 0), 1);
  put(out, reject_hint, 8);
  put(out, context.size(), 2);
  out.append(context);
  put(out, entries.size(), 2);
  for (const raft::Entry& entry : entries) {
    const auto& [entry_term, entry_index, entry_type, data] = entry;  // as above, for Entry
    put(out, entry_term, 8);
    put(out, entry_index, 8);
    put(out, static_cast<std::uint8_t>(entry_type), 1);
    put(out, data.size(), 4);
    out.append(data);
  }
  if (snapshot) {
    const auto& [snap_index, snap_term, voters, learners, removed, data] = *snapshot;  // as above, for Snapshot
    put(out, kRaftSectionSnapshot, 1);
    put(out, snapshotSectionBytes(*snapshot), 4);
    put(out, snap_index, 8);
    put(out, snap_term, 8);
    for (const auto* ids : {&voters, &learners, &removed}) {
      put(out, ids->size(), 2);
      for (const raft::NodeId id : *ids) put(out, id, 8);
    }
    put(out, data.size(), 4);
    out.append(data);
  }
  return out;
}

RaftDecodeResult decodeRaftMessage(std::string_view payload) {
  Reader r(payload);
  raft::Message m;
  m.type = static_cast<raft::MessageType>(r.upTo(kMaxMessageKind, "message kind"));
  m.from = r.uint(8, "from");
  m.to = r.uint(8, "to");
  if (r.ok() && (m.from == raft::kNoNode || m.to == raft::kNoNode)) {
    r.fail(DecodeError::BadValue, "raft message from or to is node 0 (no node)");
  }
  m.term = r.uint(8, "term");
  m.log_term = r.uint(8, "log_term");
  m.index = r.uint(8, "index");
  m.commit = r.uint(8, "commit");
  const auto flags = static_cast<std::uint8_t>(r.uint(1, "flags"));
  if (r.ok() && (flags & ~kRaftFlagsKnown)) {
    r.fail(DecodeError::BadValue, "unknown raft message flags " + std::to_string(flags));
  }
  m.reject = (flags & kRaftFlagReject) != 0;
  m.transfer = (flags & kRaftFlagTransfer) != 0;
  m.reject_hint = r.uint(8, "reject_hint");
  const std::size_t context = r.uint(2, "context length");
  if (r.ok() && context > kMaxStringBytes) {
    r.fail(DecodeError::BadValue, "raft context length " + std::to_string(context) + " above " +
                                      std::to_string(kMaxStringBytes));
  }
  m.context = r.bytes(context, "context");
  const std::size_t entries = r.uint(2, "entry count");
  if (r.ok() && entries > kMaxRaftEntries) {
    r.fail(DecodeError::BadValue, "raft entry count " + std::to_string(entries) + " above " +
                                      std::to_string(kMaxRaftEntries));
  }
  if (r.ok() && entries * kRaftEntryOverheadBytes > r.remaining()) {
    r.fail(DecodeError::Truncated, "raft entry count " + std::to_string(entries) + " cannot fit in " +
                                       std::to_string(r.remaining()) + " bytes");
  }
  if (r.ok()) m.entries.reserve(entries);
  for (std::size_t i = 0; i < entries && r.ok(); ++i) m.entries.push_back(readEntry(r));
  // The sections (raft_codec.h): the snapshot is the one tag known; anything else after
  // the entries is refused, with the tag it would have named.
  if (r.ok() && r.remaining() != 0) {
    const std::size_t left = r.remaining();
    const std::uint64_t tag = r.uint(1, "section tag");
    if (r.ok() && tag == kRaftSectionSnapshot) {
      const std::size_t length = r.uint(4, "snapshot section length");
      if (r.ok() && length > r.remaining()) {
        r.fail(DecodeError::Truncated, "raft snapshot section of " + std::to_string(length) + " bytes in " +
                                           std::to_string(r.remaining()));
      }
      if (r.ok()) m.snapshot = readSnapshot(r, length);
      if (r.ok() && r.remaining() != 0) {
        r.fail(DecodeError::TrailingBytes, std::to_string(r.remaining()) + " bytes after the raft snapshot section");
      }
    } else if (r.ok()) {
      r.fail(DecodeError::TrailingBytes, std::to_string(left) + " bytes after the raft entries (section tag " +
                                             std::to_string(tag) + " unknown)");
    }
  }
  return std::move(r).result(std::move(m));
}

}  // namespace zetian::cluster::wire
