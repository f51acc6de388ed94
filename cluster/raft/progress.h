// What a leader knows about one follower's log, and how it paces appends to it.
//
// Three states, as in etcd's raft:
//   probe      the leader does not know where the follower's log matches its own. It
//              sends one append at a time and waits for the answer (or a heartbeat
//              response) before the next, moving `next` back on each rejection.
//   replicate  the follower has accepted an append: the leader streams entries without
//              waiting, `next` running ahead of `match`, at most max_inflight appends
//              unanswered. A rejection drops back to probe from match + 1.
//   snapshot   the follower needs entries the leader compacted away: the leader sent its
//              snapshot (ending at pending_snapshot) and sends nothing else until an
//              acceptance reaches that index (then probe, then replicate from there).
//              A heartbeat response while waiting means the follower is alive but the
//              snapshot (or its answer) may be lost: the leader sends it again.
// A new leader starts every follower in probe at its own lastIndex + 1 (paper 5.3:
// optimistic, and one rejection with a hint finds the real point quickly).
#pragma once

#include <cstddef>
#include <deque>

#include "cluster/raft/types.h"

namespace zetian::cluster::raft {

struct Progress {
  enum class State : std::uint8_t { probe, replicate, snapshot };

  Index match = 0;
  Index next = 1;
  State state = State::probe;
  // probe: an append is out and unanswered, send no other until a response or a
  // heartbeat response says the follower is listening.
  bool probe_sent = false;
  // CheckQuorum: heard from this follower since the leader last checked.
  bool recent_active = false;
  // replicate: the last index of each unanswered append, oldest first.
  std::deque<Index> inflight;
  // The highest commit index this follower was told of and could act on (an append
  // lets a follower commit only up to its last entry): spares an append whose only
  // news would be a commit index it already has.
  Index sent_commit = 0;
  // snapshot: the index of the snapshot sent.
  Index pending_snapshot = 0;

  // An acceptance up to `index`. True when it taught us something (match moved).
  bool maybeUpdate(Index index);
  // A rejection of the append after `rejected`, with the follower's hint that its log
  // could match at `match_hint`. False when the rejection is stale (an old append).
  bool maybeDecreaseTo(Index rejected, Index match_hint);
  // No more appends for now: probe waits for an answer, replicate for the window.
  bool paused(std::size_t max_inflight) const;
  // An append ending at `last` was sent (replicate: counted against the window).
  void sentAppend(Index last, bool had_entries);
  void becomeProbe();
  void becomeReplicate();
  void becomeSnapshot(Index snapshot_index);
};

}  // namespace zetian::cluster::raft
