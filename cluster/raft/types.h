// The values the Raft core (core.h) takes in and hands out: log entries, messages
// between nodes, the hard state that must be durable, and the Ready batch. Plain data,
// no behaviour beyond naming and printing, so the driver's codec, the storage layer and
// the tests can all speak it without pulling in the core.
//
// Indexes start at 1; index 0 with term 0 is the empty log's "entry before the first",
// which every log matches. After a snapshot, the snapshot's last index and term take
// that sentinel's place: the log starts just after it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zetian::cluster::raft {

using NodeId = std::uint64_t;
using Term = std::uint64_t;
using Index = std::uint64_t;

// 0 is never a node: "no vote", "no leader".
inline constexpr NodeId kNoNode = 0;

enum class EntryType : std::uint8_t {
  normal,  // an application command (the policy document, later)
  no_op,   // appended by each new leader so it can commit in its own term (paper 5.4.2)
  config,  // a membership change, its data a ConfChange's text (membership.h)
};

struct Entry {
  Term term = 0;
  Index index = 0;
  EntryType type = EntryType::normal;
  std::string data;
  bool operator==(const Entry&) const = default;
};

enum class MessageType : std::uint8_t {
  vote,                // RequestVote (paper 5.2)
  vote_response,
  pre_vote,            // thesis 9.6: would you vote for me? Changes no one's term
  pre_vote_response,
  append,              // AppendEntries with entries (possibly none: a probe)
  append_response,
  heartbeat,           // AppendEntries without entries or a consistency check
  heartbeat_response,
  timeout_now,         // leadership transfer: the leader tells a caught-up voter to campaign now
  read_index,          // a follower asks the leader for a read index (thesis 6.4)
  read_index_response,
  snapshot,            // InstallSnapshot (paper 7): the leader's snapshot, for a follower
                       // that needs entries the leader compacted away
};

// A snapshot: the state machine as of entry `index` (whose term is `term`), and the
// membership in force at that index, which the entries it replaces would have built.
// Sent whole in one message (no chunking): the replicated policy is a few kilobytes.
struct Snapshot {
  Index index = 0;
  Term term = 0;
  std::vector<NodeId> voters;    // sorted
  std::vector<NodeId> learners;  // sorted
  std::vector<NodeId> removed;   // sorted: ids never to be heard again (membership.h)
  std::string data;              // the application's state, opaque to the core
  bool operator==(const Snapshot&) const = default;
};

// One message. Which fields mean what depends on the type:
//   vote, pre_vote:      log_term/index = the candidate's last entry. For pre_vote, term
//                        is the term the candidate would campaign in (its own + 1).
//   vote(_response), pre_vote_response: reject = not granted. A granted pre-vote carries
//                        the requested term, a refused one the voter's own.
//   append:              index/log_term = the entry just before `entries`; commit = the
//                        leader's commit index.
//   append_response:     accepted: index = last index known to match the leader.
//                        rejected: index = the `index` of the refused append;
//                        reject_hint/log_term = the follower's guess at the last entry
//                        that could match (its largest index <= the refused one whose
//                        term is <= the append's log_term), so the leader skips a whole
//                        divergent term in one round trip instead of one entry a time.
//   heartbeat:           commit = min(leader's commit, the follower's known match), so a
//                        follower never commits past what it was shown to hold.
//   heartbeat(_response): index = the leader's newest pending read round (0: none),
//                        echoed by the follower, which confirms the leader for every
//                        read up to that round (ReadIndex, thesis 6.4).
//   read_index:          context = the follower's opaque read context.
//   read_index_response: index = the read index granted, context = as asked.
//   snapshot:            snapshot = the leader's latest; the answer is an append_response
//                        accepting up to the snapshot's index (or the follower's commit
//                        index, when that is already further).
//   vote (transfer):     transfer = the campaign follows a timeout_now from the leader,
//                        so voters answer it despite their leader lease (thesis 3.10).
struct Message {
  MessageType type = MessageType::heartbeat;
  NodeId from = kNoNode;
  NodeId to = kNoNode;
  Term term = 0;
  Term log_term = 0;
  Index index = 0;
  Index commit = 0;
  std::vector<Entry> entries;
  bool reject = false;
  Index reject_hint = 0;
  bool transfer = false;
  std::string context;
  std::optional<Snapshot> snapshot;
  bool operator==(const Message&) const = default;
};

// What must survive a crash before any message that depends on it leaves the node.
struct HardState {
  Term term = 0;
  NodeId vote = kNoNode;
  Index commit = 0;
  bool operator==(const HardState&) const = default;
};

enum class Role : std::uint8_t { follower, pre_candidate, candidate, leader };

// Volatile, for the driver's events and /health: who leads and what we are.
struct SoftState {
  NodeId leader = kNoNode;
  Role role = Role::follower;
  bool operator==(const SoftState&) const = default;
};

// A linearizable read may be served once the state machine has applied `index`:
// `context` is what the caller passed to readIndex(), to match the answer to the read.
struct ReadState {
  Index index = 0;
  std::string context;
  bool operator==(const ReadState&) const = default;
};

// One batch of work for the driver, handled in this order:
//   0. when snapshot is set, store it (it replaces the whole stored log: entries up to
//      its index are gone) and load it into the state machine;
//   1. write hard_state (if set) and entries (which may overwrite a suffix of the stored
//      log from entries.front().index on), durably when must_sync;
//   2. then send messages: every one of them may depend on step 1 (a vote granted, an
//      append acknowledged, a leader's own entries counted), so none leaves before;
//   3. apply committed entries, in order;
//   4. serve the reads in read_states (their index is applied by now);
//   5. call advance().
// Nothing else about a Ready needs care; a crash anywhere in it loses at most what the
// driver had not yet written, which the core never counted as durable.
struct Ready {
  std::optional<SoftState> soft_state;  // set when it changed since the last Ready
  std::optional<HardState> hard_state;  // set when it changed since the last Ready
  std::optional<Snapshot> snapshot;     // received from the leader: persist and apply first
  std::vector<Entry> entries;           // to append to stable storage
  std::vector<Message> messages;        // to send after the writes
  std::vector<Entry> committed;         // to apply after the writes
  std::vector<ReadState> read_states;   // reads to serve once `committed` is applied
  bool must_sync = false;               // snapshot, entries, term or vote changed: fsync before sending
};

std::string_view entryTypeName(EntryType type);
std::string_view messageTypeName(MessageType type);
std::string_view roleName(Role role);

// One-line renderings for tests, traces and logs: "2/5 normal \"x\"", and
// "1->2 append term=2 log=1/4 commit=3 entries=[2/5 normal \"x\"]".
std::string describe(const Entry& entry);
std::string describe(const Message& message);
// "snap=2/7 voters=[1 2 3] learners=[4] data=\"x\"".
std::string describe(const Snapshot& snapshot);

}  // namespace zetian::cluster::raft
