// RaftCore: one node's Raft state machine, pure and deterministic, in the manner of
// etcd's raft. Inputs: tick() (logical time), step(message) (the network), campaign()
// and propose(data) (the driver). Output: a Ready batch (types.h says how to handle
// it), then advance(). No sockets, clocks or threads; the only randomness, the election
// timeout, comes from a seed in the Config. The same inputs give the same outputs.
//
// What it implements (section numbers are the Raft paper's, "thesis" is Ongaro's):
//   - Leader election (5.2) with an election timeout drawn from [t, 2t) ticks on every
//     reset, so split votes resolve.
//   - PreVote (thesis 9.6): a node first asks whether it could win, without raising its
//     term; only with a quorum of yes does it start a real election. A node that was cut
//     off and times out again and again therefore rejoins at the term it left, and does
//     not depose a healthy leader.
//   - CheckQuorum (thesis 6.2) and the leader lease: a leader that has not heard from a
//     quorum (itself included) within an election timeout steps down; a node that heard
//     from a leader within the last election timeout ignores (pre)vote requests for a
//     higher term, so a node that lost its link to the leader cannot depose it.
//   - Log replication (5.3) with a per-follower Progress (progress.h): probe one append
//     at a time, then stream. A rejection carries a hint (term and index of the
//     follower's last entry that could match), so a divergent tail costs one round trip
//     per term rather than one per entry.
//   - Safety (5.4): votes only for candidates at least as up to date; commit by counting
//     replicas only for entries of the current term, each new leader appending a no-op
//     so it can commit at all.
//   - Durability: a leader counts its own entries towards commit only after advance()
//     says they are stable; every message leaves in a Ready, after the Ready's writes.
//
//   - Membership (thesis 4): learners receive the log but neither vote nor count for
//     commit or quorum. Single-server changes (membership.h) are log entries of type
//     config, proposed with proposeConfChange(). A change takes effect on each node when
//     that node learns it is committed (not when it is appended): nothing to undo when
//     an uncommitted suffix is overwritten, and the membership on restart is the
//     Config's plus the changes in the committed log. Safety then rests on one change
//     at a time: a leader refuses a change while an earlier one is uncommitted, and
//     also until it has committed an entry of its own term (the fix Ongaro gave for
//     single-server changes across leader changes), so no two memberships more than
//     one change apart ever decide at once. A leader that removes itself sends the
//     commit on, then steps down. A node that is not a voter (a learner, a node still
//     joining, a removed one) never campaigns. A removed node's id is never reused,
//     and every message from it is dropped by the nodes that know of its removal, so
//     it cannot disrupt the cluster (the driver should also stop it). Other messages
//     are heard from any node, as a member that has not yet learned of a newer one
//     must still vote for it and follow it; only votes from voters are counted.
//
//   - Leadership transfer (thesis 3.10): transferLeader(target) stops the leader taking
//     proposals, brings the target's log up to date, then sends it a timeout_now; the
//     target campaigns at once, without a PreVote, and its vote requests are marked so
//     that voters answer them despite their leader lease. A transfer not done within an
//     election timeout is abandoned and the leader takes proposals again.
//   - ReadIndex (thesis 6.4): readIndex(context) on the leader notes its commit index,
//     confirms it still leads with a heartbeat round answered by a quorum, and then
//     hands out a ReadState (context, index) in the first Ready whose committed entries
//     bring the state machine to that index. A follower forwards the request to the
//     leader and hands out the ReadState the leader grants it the same way. A new
//     leader does not know the commit index until it has committed an entry of its own
//     term, so it holds reads until then. Reads are not retried: a request lost with a
//     message or a leader change gets no answer, and the driver retries after a timeout.
//
//   - Snapshots (paper 7): compact(index, data) takes the application's state as of an
//     applied index, drops the log up to it and returns the snapshot (index, term, the
//     membership in force at that index, the data) for the driver to store. A leader
//     whose follower needs an entry it no longer holds sends the snapshot whole (one
//     message: the policy is small, no chunking); the follower hands it out in a Ready
//     to persist and load before any later committed entry, and answers like an append
//     accepted up to the snapshot's index, from where the leader appends again. A
//     follower that already holds the snapshot's last entry only commits up to it. A
//     lost snapshot (or its answer) is sent again on the follower's next heartbeat
//     response.
//
// Bad input: a Config or durable state that breaks an invariant is refused by the
// constructor (std::invalid_argument, saying what is wrong). A message that is
// malformed or from an unknown node is dropped, and step() says why. A broken internal
// invariant throws std::logic_error: stopping beats risking a committed entry.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cluster/raft/log.h"
#include "cluster/raft/membership.h"
#include "cluster/raft/progress.h"
#include "cluster/raft/types.h"

namespace zetian::cluster::raft {

struct Config {
  NodeId id = kNoNode;
  // The membership before the first log entry, the same on every node; the log's
  // committed config entries change it from there. `id` need not be in it: a node that
  // joins later starts with the cluster's initial membership and learns its own place
  // from the log it receives.
  std::vector<NodeId> voters;
  std::vector<NodeId> learners;
  int election_ticks = 10;     // t: timeouts drawn from [t, 2t); CheckQuorum every t
  int heartbeat_ticks = 1;     // < election_ticks
  bool pre_vote = true;
  bool check_quorum = true;
  std::uint64_t seed = 0;      // for the randomized election timeout only
  std::size_t max_entries_per_append = 64;
  std::size_t max_inflight_appends = 256;
  Index applied = 0;           // where the state machine stands at start (<= commit);
                               // at least the snapshot's index, which it was loaded from
};

// What the driver had made durable before a (re)start.
struct DurableState {
  HardState hard_state;
  // The log after the snapshot (from index 1 without one), as written by Readies.
  std::vector<Entry> entries;
  // The latest snapshot stored (compact()'s or a leader's), if any.
  std::optional<Snapshot> snapshot = std::nullopt;
};

enum class StepOutcome : std::uint8_t {
  handled,
  stale_term,      // from an earlier term; answered when that helps the sender catch up
  leader_lease,    // a (pre)vote while a live leader is known: ignored (CheckQuorum)
  not_addressed,   // `to` is not this node
  unknown_sender,  // `from` is this node, 0, or a removed node; or a vote answer from a non-voter
  malformed,       // term 0, an append whose entries do not follow its index, or an
                   // unreadable config entry
};

struct ProposeResult {
  bool accepted = false;
  Index index = 0;          // accepted: where the entry sits in the log
  Term term = 0;            // accepted: its term; it is committed only if still there
  NodeId leader = kNoNode;  // refused: the leader as far as this node knows, to forward to
  std::string refusal;      // refused: why, for the operator ("not the leader", ...)
};

struct ReadIndexResult {
  bool accepted = false;     // a ReadState with this context will follow, barring loss
  NodeId leader = kNoNode;
  std::string refusal;       // refused: why (no leader known)
};

struct TransferResult {
  bool started = false;
  NodeId leader = kNoNode;  // refused: the leader as far as this node knows
  std::string refusal;      // refused: why
};

class RaftCore {
 public:
  RaftCore(Config config, DurableState durable);

  void tick();
  StepOutcome step(const Message& message);
  // Start an election now, as if the election timeout had expired (a PreVote first when
  // enabled). A leader ignores it.
  void campaign();
  ProposeResult propose(std::string data);
  // A single-server membership change (see above for when it is refused).
  ProposeResult proposeConfChange(const ConfChange& change);
  // Hand the lead to voter `target` (see above). A second call for another target
  // replaces the first; for the same target it changes nothing.
  TransferResult transferLeader(NodeId target);
  // A linearizable read (see above); `context` comes back in the ReadState.
  ReadIndexResult readIndex(std::string context);
  // The driver's link to `leader` closed (as when its process died). A follower of that
  // leader gives up its lease and moves its election timer to where the lease ends, so
  // it campaigns within the rest of its randomized timeout (0 to t-1 ticks) instead of
  // a whole timeout after the last heartbeat, and grants the pre-votes of the others
  // that lost the leader too. Only liveness rests on the lease: a leader that is in
  // fact alive keeps its followers (their pre-votes refuse a candidate while they hear
  // it), and its next heartbeat here resets the timer. Anything else changes nothing.
  void leaderLinkLost(NodeId leader);
  // The application's state as of `index`, which it has applied: the log up to `index`
  // is dropped, and the snapshot returned (and kept, to send to followers that need
  // it) is for the driver to store before it drops its own log prefix. Throws
  // std::invalid_argument, changing nothing, unless index is above the last snapshot's
  // and at most the applied and stable index.
  Snapshot compact(Index index, std::string data);
  // The latest snapshot: compact()'s, a leader's installed here, or the one restored.
  const std::optional<Snapshot>& snapshot() const { return snapshot_; }
  // The voter this leader is handing over to, kNoNode when none.
  NodeId leadTransferee() const { return lead_transferee_; }

  bool hasReady() const;
  // The next batch. Call advance() once it is handled, before the next ready(); step(),
  // tick() and propose() may run in between (their output waits for the next Ready).
  Ready ready();
  void advance();

  NodeId id() const { return config_.id; }
  Term term() const { return term_; }
  NodeId vote() const { return vote_; }
  NodeId leader() const { return leader_; }
  Role role() const { return role_; }
  const RaftLog& log() const { return log_; }
  const Config& config() const { return config_; }
  // The membership in force here: the Config's, changed by the committed config entries.
  const Membership& membership() const { return membership_; }
  int randomizedElectionTimeout() const { return randomized_election_timeout_; }
  // The leader's view of each member, learners included (empty unless leader).
  const std::map<NodeId, Progress>& progress() const { return progress_; }

 private:
  // Roles and their transitions.
  void becomeFollower(Term term, NodeId leader);
  void becomePreCandidate();
  void becomeCandidate();
  void becomeLeader();
  void reset(Term term);
  void resetElectionTimeout();
  void startElection(bool pre_vote, bool transfer = false);

  // Ticks.
  void tickElection();
  void tickHeartbeat();
  bool quorumActiveAndReset();

  // Messages in.
  StepOutcome checkShape(const Message& m) const;
  bool inLeaderLease() const;
  void handleVoteRequest(const Message& m);
  void stepLeader(const Message& m);
  void stepCandidate(const Message& m);
  void stepFollower(const Message& m);
  void handleAppend(const Message& m);
  void handleHeartbeat(const Message& m);
  void handleAppendResponse(const Message& m);
  void handleSnapshot(const Message& m);
  void recordVote(NodeId from, bool granted);

  // Messages out.
  Message to(NodeId peer, MessageType type) const;
  void send(Message m);
  bool sendAppend(NodeId peer, bool send_if_empty);
  void sendSnapshot(NodeId peer);
  void broadcastAppend();
  void broadcastHeartbeat();
  bool maybeCommit();
  void sendTimeoutNowIfCaughtUp(NodeId peer);
  ProposeResult refuse(std::string why) const;
  ProposeResult refuseDuringTransfer() const;
  ProposeResult appendProposal(EntryType type, std::string data);

  // ReadIndex.
  bool committedInTerm() const;
  void startRead(NodeId requester, std::string context);
  void ackReads(NodeId from, std::uint64_t round);
  void releaseRead(NodeId requester, Index index, std::string context);
  void releaseHeldReads();

  // Membership.
  void applyCommittedConfig();
  void onMembershipChanged();
  Membership membershipAt(Index index) const;

  std::size_t quorum() const { return membership_.voters.size() / 2 + 1; }
  bool isVoter(NodeId node) const { return membership_.isVoter(node); }
  HardState hardState() const { return {term_, vote_, log_.committed()}; }

  Config config_;
  RaftLog log_;
  std::optional<Snapshot> snapshot_;
  // Installed from a leader and not yet handed out in a Ready.
  std::optional<Snapshot> pending_snapshot_;
  Membership membership_;
  // Config entries up to here are in membership_ (all committed ones, once caught up).
  Index conf_applied_ = 0;
  // Leader: the last config entry it appended (or its first entry of the term); a new
  // change waits until this is committed.
  Index pending_conf_index_ = 0;
  // Leader: the voter it is handing over to, and ticks since the handover began.
  NodeId lead_transferee_ = kNoNode;
  int transfer_elapsed_ = 0;

  // Leader: reads waiting for a quorum to confirm the leadership, oldest first, each
  // with the heartbeat round that asks for it; and reads held until the first commit
  // of the term. Any node: granted reads waiting for the state machine to reach them.
  struct PendingRead {
    std::uint64_t round = 0;
    NodeId requester = kNoNode;
    Index index = 0;
    std::string context;
    std::set<NodeId> acks;
  };
  std::deque<PendingRead> pending_reads_;
  std::vector<std::pair<NodeId, std::string>> held_reads_;
  std::uint64_t read_round_ = 0;
  std::vector<ReadState> read_states_;
  Term term_ = 0;
  NodeId vote_ = kNoNode;
  NodeId leader_ = kNoNode;
  Role role_ = Role::follower;

  // Ticks since the last reset: of the election timer (followers, candidates; the
  // leader uses it to pace CheckQuorum) and of the heartbeat timer (leader).
  int election_elapsed_ = 0;
  int heartbeat_elapsed_ = 0;
  int randomized_election_timeout_ = 0;
  std::mt19937_64 rng_;

  std::map<NodeId, bool> votes_;  // candidate: who answered, and whether yes
  std::map<NodeId, Progress> progress_;
  std::vector<Message> outbox_;

  // What the last Ready handed out, to tell what changed and what advance() confirms.
  SoftState last_soft_;
  HardState last_hard_;
  bool ready_outstanding_ = false;
  // (index, term) of each entry the outstanding Ready writes: those still in the log
  // at advance() are durable, even when a step meanwhile replaced a suffix of them.
  std::vector<std::pair<Index, Term>> ready_entries_;
  Index ready_applied_to_ = 0;
};

}  // namespace zetian::cluster::raft
