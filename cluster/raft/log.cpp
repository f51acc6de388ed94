#include "cluster/raft/log.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace zetian::cluster::raft {

void RaftLog::restore(Index offset, Term offset_term, std::vector<Entry> stable, Index committed, Index applied) {
  entries_ = std::move(stable);
  offset_ = offset;
  offset_term_ = offset_term;
  stable_ = lastIndex();
  committed_ = committed;
  applied_ = applied;
}

void RaftLog::compact(Index index) {
  if (index <= offset_ || index > applied_ || index > stable_) {
    throw std::invalid_argument("raft log: cannot compact to " + std::to_string(index) + ": it must be above " +
                                std::to_string(offset_) + " and at most the applied " + std::to_string(applied_) +
                                " and stable " + std::to_string(stable_) + " index");
  }
  offset_term_ = at(index).term;
  entries_.erase(entries_.begin(), entries_.begin() + static_cast<std::ptrdiff_t>(index - offset_));
  offset_ = index;
}

void RaftLog::restoreSnapshot(Index index, Term term) {
  if (index <= committed_) {
    throw std::logic_error("raft log: snapshot at " + std::to_string(index) + " is not beyond the commit index " +
                           std::to_string(committed_));
  }
  if (matchTerm(index, term)) {
    entries_.erase(entries_.begin(), entries_.begin() + static_cast<std::ptrdiff_t>(index - offset_));
    stable_ = std::max(stable_, index);
  } else {
    entries_.clear();
    stable_ = index;
  }
  offset_ = index;
  offset_term_ = term;
  committed_ = index;
  applied_ = index;
}

Term RaftLog::lastTerm() const { return entries_.empty() ? offset_term_ : entries_.back().term; }

std::optional<Term> RaftLog::term(Index index) const {
  if (index == offset_) return offset_term_;
  if (index < offset_ || index > lastIndex()) return std::nullopt;
  return at(index).term;
}

bool RaftLog::matchTerm(Index index, Term term) const {
  auto t = this->term(index);
  return t && *t == term;
}

bool RaftLog::isUpToDate(Index last_index, Term last_term) const {
  return last_term > lastTerm() || (last_term == lastTerm() && last_index >= lastIndex());
}

void RaftLog::appendOwn(Entry entry) {
  if (entry.index != lastIndex() + 1 || entry.term < lastTerm()) {
    throw std::logic_error("raft log: own entry " + describe(entry) + " does not extend the log at " +
                           std::to_string(lastTerm()) + "/" + std::to_string(lastIndex()));
  }
  entries_.push_back(std::move(entry));
}

std::optional<Index> RaftLog::tryAppend(Index prev_index, Term prev_term, Index leader_commit,
                                        std::span<const Entry> entries) {
  if (!matchTerm(prev_index, prev_term)) return std::nullopt;
  const Index last_new = prev_index + entries.size();
  // Skip the entries we already hold with the same term: an old or duplicated append
  // must not truncate entries a newer append added after them (log matching, 5.3).
  std::size_t k = 0;
  while (k < entries.size() && matchTerm(entries[k].index, entries[k].term)) ++k;
  if (k < entries.size()) truncateAndAppend(entries.subspan(k));
  commitTo(std::min(leader_commit, last_new));
  return last_new;
}

void RaftLog::truncateAndAppend(std::span<const Entry> entries) {
  const Index first = entries.front().index;
  if (first <= committed_) {
    throw std::logic_error("raft log: entry " + describe(entries.front()) +
                           " would overwrite committed index " + std::to_string(committed_));
  }
  if (first <= lastIndex()) entries_.resize(first - offset_ - 1);
  stable_ = std::min(stable_, first - 1);
  entries_.insert(entries_.end(), entries.begin(), entries.end());
}

std::pair<Index, Term> RaftLog::findConflictByTerm(Index index, Term term) const {
  index = std::min(index, lastIndex());
  for (;;) {
    auto t = this->term(index);
    // Below what we hold (compacted): no better guess than the edge itself.
    if (!t) return {index, 0};
    if (*t <= term) return {index, *t};
    --index;
  }
}

void RaftLog::commitTo(Index index) {
  if (index <= committed_) return;
  if (index > lastIndex()) {
    throw std::logic_error("raft log: commit " + std::to_string(index) + " is beyond the last index " +
                           std::to_string(lastIndex()));
  }
  committed_ = index;
}

bool RaftLog::maybeCommit(Index index, Term current_term) {
  if (index <= committed_ || !matchTerm(index, current_term)) return false;
  commitTo(index);
  return true;
}

std::vector<Entry> RaftLog::unstableEntries() const {
  return {entries_.begin() + static_cast<std::ptrdiff_t>(std::max(stable_, offset_) - offset_), entries_.end()};
}

void RaftLog::stableTo(Index index, Term term) {
  if (index > stable_ && matchTerm(index, term)) stable_ = index;
}

std::vector<Entry> RaftLog::slice(Index lo, Index hi, std::size_t max_count) const {
  hi = std::min({hi, lastIndex() + 1, lo + max_count});
  if (lo <= offset_ || lo >= hi) return {};
  return {entries_.begin() + static_cast<std::ptrdiff_t>(lo - offset_ - 1),
          entries_.begin() + static_cast<std::ptrdiff_t>(hi - offset_ - 1)};
}

std::vector<Entry> RaftLog::nextCommitted() const {
  return slice(applied_ + 1, committed_ + 1, entries_.size());
}

void RaftLog::appliedTo(Index index) {
  if (index > committed_) {
    throw std::logic_error("raft log: applied " + std::to_string(index) + " is beyond the commit index " +
                           std::to_string(committed_));
  }
  applied_ = std::max(applied_, index);
}

}  // namespace zetian::cluster::raft
