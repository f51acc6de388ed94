// From what the durable storage recovered (storage.h) to what the core starts from
// (core.h), and the core's snapshots to the storage's.
//
// The storage's snapshot record names only the voters; the rest of the membership a
// core snapshot carries (learners, removed ids) rides at the head of the stored data,
// one line the core's side writes and reads strictly:
//   "raft-members learners=4,5 removed=3\n" + the application's data
// (an empty list is written as nothing after "="). A stored snapshot without that line
// is refused: every snapshot in the storage came through toStoredSnapshot().
//
// Entries the storage returns at or below the snapshot's index are covered by it and
// dropped; the log the core gets starts right after the snapshot. A stored entry at the
// snapshot's index with another term marks an install the crash interrupted
// (Storage::installSnapshot deletes the whole old log before any new entry is written,
// so nothing after such an entry is new): the entries after it are dropped too. The
// driver stores a Ready's snapshot with installSnapshot(), and its own compact()
// snapshots with saveSnapshot() and compact().
#pragma once

#include "cluster/raft/core.h"
#include "cluster/raft/storage.h"

namespace zetian::cluster::raft {

StoredSnapshot toStoredSnapshot(const Snapshot& snapshot);
// Throws StorageError, naming what is wrong, when the membership line is missing or
// unreadable.
Snapshot fromStoredSnapshot(const StoredSnapshot& stored);

// Throws StorageError when the recovered log does not reach back to the snapshot (a
// gap between the snapshot's index and the first stored entry), or when the snapshot's
// membership line is unreadable. The core's constructor checks the rest (terms in
// order, commit within the log).
DurableState durableFromRecovered(const RecoveredState& recovered);

}  // namespace zetian::cluster::raft
