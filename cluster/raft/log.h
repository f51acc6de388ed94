// The Raft log as the core sees it: every entry it holds in memory, split into the
// stable prefix (the driver said it is durable) and the unstable suffix (handed out in
// a Ready, or waiting for one), plus the commit and apply indexes.
//
// Invariants (checked where they could break, std::logic_error otherwise: a broken one
// means a bug in the core, and continuing would risk a committed entry):
//   - entries are contiguous: entries_[k].index == offset_ + 1 + k;
//   - terms never decrease along the log;
//   - applied <= committed <= lastIndex, and a committed entry is never overwritten;
//   - stable <= lastIndex: overwriting a suffix pulls `stable` back to before it, so
//     the overwritten entries go out again in the next Ready and storage replaces them.
//
// offset_/offset_term_ name the entry just before the first one held: (0, 0) for a log
// that starts at 1, else the last entry a snapshot covers. Entries up to the offset are
// gone (term() answers nullopt below it); the offset itself answers the snapshot's term.
// offset <= applied always holds: only applied state goes into a snapshot.
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "cluster/raft/types.h"

namespace zetian::cluster::raft {

class RaftLog {
 public:
  // What the driver had persisted, after validation (RaftCore's constructor). applied
  // is where the state machine stands; entries after it are handed out again.
  void restore(std::vector<Entry> stable, Index committed, Index applied) {
    restore(0, 0, std::move(stable), committed, applied);
  }
  // `stable` starts at offset + 1, (offset, offset_term) being the snapshot's last entry
  // ((0, 0) without one).
  void restore(Index offset, Term offset_term, std::vector<Entry> stable, Index committed, Index applied);
  // Drops the entries up to `index` (applied and stable), which a snapshot now covers.
  // std::invalid_argument, changing nothing, when `index` is not in (offset, min(applied,
  // stable)].
  void compact(Index index);
  // A follower installs a snapshot ending at (index, term): when the log holds that
  // entry, the entries after it stay (they agree with the leader's, log matching) and
  // only the prefix goes; otherwise the whole log is replaced by the empty one after
  // the snapshot. Either way committed and applied move up to `index`, and the kept
  // entries count as stable (the snapshot's entries were durable before it).
  void restoreSnapshot(Index index, Term term);

  Index firstIndex() const { return offset_ + 1; }
  Index offset() const { return offset_; }
  Index lastIndex() const { return offset_ + entries_.size(); }
  Term lastTerm() const;
  // The term of entry `index`; nullopt when the log does not hold it (beyond the end,
  // or compacted away once snapshots exist).
  std::optional<Term> term(Index index) const;
  bool matchTerm(Index index, Term term) const;
  // Paper 5.4.1: a candidate's log is at least as up to date as ours when its last term
  // is higher, or equal with an index at least ours.
  bool isUpToDate(Index last_index, Term last_term) const;

  Index committed() const { return committed_; }
  Index applied() const { return applied_; }
  Index stableIndex() const { return stable_; }

  // The leader appends its own entries (numbered by the caller, after lastIndex()).
  void appendOwn(Entry entry);
  // A follower's AppendEntries check and append (paper 5.3): when the entry at
  // prev_index has prev_term, keep every entry that agrees, overwrite from the first
  // conflict on, commit up to min(leader_commit, last new index) and return that last
  // new index. nullopt when the consistency check fails (nothing changes).
  std::optional<Index> tryAppend(Index prev_index, Term prev_term, Index leader_commit,
                                 std::span<const Entry> entries);
  // Fast back-off: the largest index <= `index` whose term is <= `term`, and that term.
  // On a rejection both sides use it: the follower to propose where to retry, the
  // leader to jump over a whole term the follower lacks.
  std::pair<Index, Term> findConflictByTerm(Index index, Term term) const;

  void commitTo(Index index);
  // Commit `index` if it holds an entry of `current_term` (paper 5.4.2: a leader never
  // commits an entry of an earlier term by counting replicas). True when it advanced.
  bool maybeCommit(Index index, Term current_term);

  std::vector<Entry> unstableEntries() const;
  // The driver persisted everything up to `index`, which had `term`; ignored when the
  // entry was overwritten meanwhile (then it is unstable again, and the caller may
  // try an earlier entry of the same write).
  void stableTo(Index index, Term term);
  // Entries [lo, hi), at most max_count of them.
  std::vector<Entry> slice(Index lo, Index hi, std::size_t max_count) const;
  // Committed entries not yet applied: (applied, committed].
  std::vector<Entry> nextCommitted() const;
  void appliedTo(Index index);

  const std::vector<Entry>& all() const { return entries_; }

 private:
  const Entry& at(Index index) const { return entries_[index - offset_ - 1]; }
  void truncateAndAppend(std::span<const Entry> entries);

  Index offset_ = 0;
  Term offset_term_ = 0;
  std::vector<Entry> entries_;
  Index stable_ = 0;
  Index committed_ = 0;
  Index applied_ = 0;
};

}  // namespace zetian::cluster::raft
