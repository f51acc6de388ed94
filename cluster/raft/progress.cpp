#include "cluster/raft/progress.h"

#include <algorithm>

namespace zetian::cluster::raft {

bool Progress::maybeUpdate(Index index) {
  bool updated = false;
  if (index > match) {
    match = index;
    updated = true;
    probe_sent = false;
  }
  next = std::max(next, index + 1);
  while (!inflight.empty() && inflight.front() <= index) inflight.pop_front();
  return updated;
}

bool Progress::maybeDecreaseTo(Index rejected, Index match_hint) {
  // Every append before the snapshot is moot: only the snapshot's answer counts.
  if (state == State::snapshot) return false;
  if (state == State::replicate) {
    // Entries up to match are acknowledged: a rejection at or below it is an answer to
    // an append from before that acknowledgement.
    if (rejected <= match) return false;
    next = match + 1;
    sent_commit = std::min(sent_commit, next - 1);
    return true;
  }
  // In probe only one append is out, the one after next - 1; any other rejection is
  // a late answer to an earlier probe.
  if (rejected != next - 1) return false;
  next = std::max(std::min(rejected, match_hint + 1), match + 1);
  // The append that carried it was refused, so the commit index may not have landed.
  sent_commit = std::min(sent_commit, next - 1);
  probe_sent = false;
  return true;
}

bool Progress::paused(std::size_t max_inflight) const {
  if (state == State::snapshot) return true;
  if (state == State::probe) return probe_sent;
  return inflight.size() >= max_inflight;
}

void Progress::sentAppend(Index last, bool had_entries) {
  if (state == State::replicate) {
    if (had_entries) {
      next = last + 1;
      inflight.push_back(last);
    }
  } else {
    probe_sent = true;
  }
}

void Progress::becomeProbe() {
  state = State::probe;
  pending_snapshot = 0;
  next = match + 1;
  probe_sent = false;
  inflight.clear();
}

void Progress::becomeReplicate() {
  state = State::replicate;
  pending_snapshot = 0;
  next = match + 1;
  probe_sent = false;
  inflight.clear();
}

}  // namespace zetian::cluster::raft

namespace zetian::cluster::raft {

void Progress::becomeSnapshot(Index snapshot_index) {
  state = State::snapshot;
  pending_snapshot = snapshot_index;
  probe_sent = false;
  inflight.clear();
}

}  // namespace zetian::cluster::raft
