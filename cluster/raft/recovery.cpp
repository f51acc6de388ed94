#include "cluster/raft/recovery.h"

#include <algorithm>
#include <charconv>
#include <string_view>

namespace zetian::cluster::raft {

namespace {

constexpr std::string_view kMembersPrefix = "raft-members learners=";
constexpr std::string_view kRemovedKey = " removed=";

std::string joinIds(const std::vector<NodeId>& ids) {
  std::string out;
  for (std::size_t i = 0; i < ids.size(); ++i) out += (i > 0 ? "," : "") + std::to_string(ids[i]);
  return out;
}

// Strict: decimal ids above 0, comma-separated, ascending, nothing else.
std::optional<std::vector<NodeId>> parseIds(std::string_view text) {
  std::vector<NodeId> out;
  if (text.empty()) return out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = text.find(',', start);
    const std::size_t stop = comma == std::string_view::npos ? text.size() : comma;
    const std::string_view item = text.substr(start, stop - start);
    NodeId id = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), id);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || id == kNoNode) return std::nullopt;
    if (!out.empty() && id <= out.back()) return std::nullopt;
    out.push_back(id);
    if (comma == std::string_view::npos) return out;
    start = comma + 1;
  }
}

}  // namespace

StoredSnapshot toStoredSnapshot(const Snapshot& s) {
  std::string data = std::string(kMembersPrefix) + joinIds(s.learners) + std::string(kRemovedKey) +
                     joinIds(s.removed) + "\n" + s.data;
  return StoredSnapshot{s.index, s.term, s.voters, std::move(data)};
}

Snapshot fromStoredSnapshot(const StoredSnapshot& stored) {
  const std::string where = "raft snapshot at index " + std::to_string(stored.index) + ": ";
  const std::string_view data = stored.data;
  const std::size_t eol = data.find('\n');
  if (!data.starts_with(kMembersPrefix) || eol == std::string_view::npos) {
    throw StorageError(where + "its data does not start with the \"raft-members\" line");
  }
  const std::string_view line = data.substr(kMembersPrefix.size(), eol - kMembersPrefix.size());
  const std::size_t removed_at = line.find(kRemovedKey);
  if (removed_at == std::string_view::npos) throw StorageError(where + "its membership line lacks \"removed=\"");
  auto learners = parseIds(line.substr(0, removed_at));
  auto removed = parseIds(line.substr(removed_at + kRemovedKey.size()));
  if (!learners || !removed) {
    throw StorageError(where + "unreadable membership line \"" + std::string(data.substr(0, eol)) + "\"");
  }
  Snapshot s;
  s.index = stored.index;
  s.term = stored.term;
  s.voters = stored.voters;
  std::sort(s.voters.begin(), s.voters.end());
  s.learners = std::move(*learners);
  s.removed = std::move(*removed);
  s.data = std::string(data.substr(eol + 1));
  return s;
}

DurableState durableFromRecovered(const RecoveredState& recovered) {
  DurableState out;
  out.hard_state = recovered.hard_state;
  Index base = 0;
  if (recovered.snapshot) {
    out.snapshot = fromStoredSnapshot(*recovered.snapshot);
    base = out.snapshot->index;
  }
  for (const Entry& e : recovered.entries) {
    if (e.index == base && out.snapshot && e.term != out.snapshot->term) {
      // An install the crash interrupted (Storage::installSnapshot): the entries after
      // this one are the old log's, which the snapshot replaced.
      break;
    }
    if (e.index > base) out.entries.push_back(e);
  }
  if (!out.entries.empty() && out.entries.front().index != base + 1) {
    throw StorageError("raft storage: the log starts at index " + std::to_string(out.entries.front().index) +
                       " but the snapshot ends at " + std::to_string(base) + ": entries are missing in between");
  }
  return out;
}

}  // namespace zetian::cluster::raft
