#include "cluster/raft/core.h"

#include <algorithm>
#include <set>
#include <stdexcept>

namespace zetian::cluster::raft {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("raft: " + what);
}

void validate(const Config& c, const DurableState& d) {
  require(c.id != kNoNode, "node id 0 is reserved (it means \"nobody\")");
  require(!c.voters.empty(), "no voters");
  std::set<NodeId> unique(c.voters.begin(), c.voters.end());
  require(unique.size() == c.voters.size(), "a voter is listed twice");
  require(!unique.contains(kNoNode), "voter id 0 is reserved");
  std::set<NodeId> learners(c.learners.begin(), c.learners.end());
  require(learners.size() == c.learners.size(), "a learner is listed twice");
  require(!learners.contains(kNoNode), "learner id 0 is reserved");
  for (NodeId learner : learners) {
    require(!unique.contains(learner), "node " + std::to_string(learner) + " is both voter and learner");
  }

  require(c.heartbeat_ticks >= 1, "heartbeat_ticks must be at least 1");
  require(c.election_ticks > c.heartbeat_ticks, "election_ticks must exceed heartbeat_ticks");
  require(c.max_entries_per_append >= 1, "max_entries_per_append must be at least 1");
  require(c.max_inflight_appends >= 1, "max_inflight_appends must be at least 1");

  Index base = 0;
  Term previous_term = 0;
  if (d.snapshot) {
    const Snapshot& s = *d.snapshot;
    require(s.index > 0 && s.term > 0, "stored snapshot " + describe(s) + " has index or term 0");
    require(!s.voters.empty(), "stored snapshot " + describe(s) + " has no voters");
    for (const auto* list : {&s.voters, &s.learners, &s.removed}) {
      require(std::adjacent_find(list->begin(), list->end(), std::greater_equal<>()) == list->end() &&
                  std::find(list->begin(), list->end(), kNoNode) == list->end(),
              "stored snapshot " + describe(s) + " lists a node id out of order, twice, or 0");
    }
    base = s.index;
    previous_term = s.term;
  }
  for (std::size_t k = 0; k < d.entries.size(); ++k) {
    const Entry& e = d.entries[k];
    require(e.index == base + k + 1,
            "stored entry " + describe(e) + " is not at position " + std::to_string(base + k + 1));
    require(e.term >= previous_term && e.term > 0, "stored entry " + describe(e) + " has a term out of order");
    previous_term = e.term;
    if (e.type == EntryType::config) {
      auto change = decodeConfChange(e.data);
      require(change.has_value(), "stored entry " + describe(e) + " is not a membership change");
    }
  }
  const HardState& h = d.hard_state;
  require(h.term >= previous_term, "hard state term " + std::to_string(h.term) + " is below the last entry's");
  require(h.commit <= base + d.entries.size(), "hard state commit " + std::to_string(h.commit) + " is beyond the log");
  require(c.applied <= std::max(h.commit, base), "applied index is beyond the commit index");
}

}  // namespace

RaftCore::RaftCore(Config config, DurableState durable) : config_(std::move(config)) {
  validate(config_, durable);
  std::sort(config_.voters.begin(), config_.voters.end());
  rng_.seed(config_.seed);
  if (durable.snapshot) {
    // The snapshot is committed and loaded into the state machine by the driver; the
    // membership in force there replaces the Config's.
    const Snapshot& s = *durable.snapshot;
    config_.applied = std::max(config_.applied, s.index);
    log_.restore(s.index, s.term, std::move(durable.entries), std::max(durable.hard_state.commit, s.index),
                 config_.applied);
    membership_.voters.insert(s.voters.begin(), s.voters.end());
    membership_.learners.insert(s.learners.begin(), s.learners.end());
    membership_.removed.insert(s.removed.begin(), s.removed.end());
    conf_applied_ = s.index;
    snapshot_ = std::move(durable.snapshot);
  } else {
    log_.restore(0, 0, std::move(durable.entries), durable.hard_state.commit, config_.applied);
    membership_.voters.insert(config_.voters.begin(), config_.voters.end());
    membership_.learners.insert(config_.learners.begin(), config_.learners.end());
  }
  applyCommittedConfig();
  becomeFollower(durable.hard_state.term, kNoNode);
  vote_ = durable.hard_state.vote;
  // Already durable: the first Ready reports only what changes from here.
  last_hard_ = hardState();
  last_soft_ = {leader_, role_};
}

// ---- Roles -------------------------------------------------------------------------

void RaftCore::reset(Term term) {
  if (term != term_) {
    term_ = term;
    vote_ = kNoNode;
  }
  leader_ = kNoNode;
  election_elapsed_ = 0;
  heartbeat_elapsed_ = 0;
  resetElectionTimeout();
  votes_.clear();
  progress_.clear();
  lead_transferee_ = kNoNode;
  transfer_elapsed_ = 0;
  // A leader's unconfirmed reads die with its leadership (their callers time out and
  // retry); reads already granted stay valid and wait in read_states_.
  pending_reads_.clear();
  held_reads_.clear();
}

void RaftCore::resetElectionTimeout() {
  // [t, 2t): two nodes that time out together rarely draw the same again (5.2). The
  // modulo bias is negligible next to 2^64 and keeps the draw the same on every
  // standard library (std::uniform_int_distribution is not specified bit for bit).
  const auto t = static_cast<std::uint64_t>(config_.election_ticks);
  randomized_election_timeout_ = config_.election_ticks + static_cast<int>(rng_() % t);
}

void RaftCore::becomeFollower(Term term, NodeId leader) {
  reset(term);
  leader_ = leader;
  role_ = Role::follower;
}

void RaftCore::becomePreCandidate() {
  // Neither the term nor the vote changes: a pre-vote that fails leaves no trace that
  // could disturb anyone (thesis 9.6).
  votes_.clear();
  progress_.clear();
  leader_ = kNoNode;
  role_ = Role::pre_candidate;
  election_elapsed_ = 0;
  resetElectionTimeout();
}

void RaftCore::becomeCandidate() {
  reset(term_ + 1);
  vote_ = config_.id;
  role_ = Role::candidate;
}

void RaftCore::becomeLeader() {
  reset(term_);
  leader_ = config_.id;
  role_ = Role::leader;
  for (NodeId member : membership_.voters) progress_[member].next = log_.lastIndex() + 1;
  for (NodeId member : membership_.learners) progress_[member].next = log_.lastIndex() + 1;
  // Only what is durable counts for the leader itself; advance() moves it forward.
  Progress& self = progress_[config_.id];
  self.match = log_.stableIndex();
  self.recent_active = true;
  // 5.4.2: entries of earlier terms commit only through one of the current term, so
  // a new leader appends one at once rather than waiting for a client.
  log_.appendOwn(Entry{term_, log_.lastIndex() + 1, EntryType::no_op, {}});
  // No membership change until this no-op commits: that also commits any change an
  // earlier leader left in the log, and keeps a change of ours from racing one of a
  // leader we have not heard of (Ongaro, raft-dev, 2015).
  pending_conf_index_ = log_.lastIndex();
  broadcastAppend();
}

void RaftCore::campaign() {
  if (role_ == Role::leader || !isVoter(config_.id)) return;
  startElection(config_.pre_vote);
}

void RaftCore::startElection(bool pre_vote, bool transfer) {
  MessageType type;
  Term vote_term;
  if (pre_vote) {
    becomePreCandidate();
    type = MessageType::pre_vote;
    vote_term = term_ + 1;
  } else {
    becomeCandidate();
    type = MessageType::vote;
    vote_term = term_;
  }
  recordVote(config_.id, true);
  if (role_ != Role::pre_candidate && role_ != Role::candidate) return;  // won alone
  for (NodeId voter : membership_.voters) {
    if (voter == config_.id) continue;
    Message m = to(voter, type);
    m.term = vote_term;
    m.log_term = log_.lastTerm();
    m.index = log_.lastIndex();
    m.transfer = transfer;
    send(std::move(m));
  }
}

void RaftCore::recordVote(NodeId from, bool granted) {
  votes_.emplace(from, granted);  // the first answer of each voter counts
  std::size_t yes = 0;
  std::size_t no = 0;
  for (const auto& [node, vote] : votes_) (vote ? yes : no) += 1;
  if (yes >= quorum()) {
    if (role_ == Role::pre_candidate) {
      startElection(false);
    } else {
      becomeLeader();
    }
  } else if (no > membership_.voters.size() - quorum()) {
    becomeFollower(term_, kNoNode);
  }
}

// ---- Ticks -------------------------------------------------------------------------

void RaftCore::tick() {
  if (role_ == Role::leader) {
    tickHeartbeat();
  } else {
    tickElection();
  }
}

void RaftCore::tickElection() {
  ++election_elapsed_;
  if (election_elapsed_ >= randomized_election_timeout_) {
    if (!isVoter(config_.id)) {
      // Learners and non-members never campaign; the timer only marks the lease as
      // expired (and stops there rather than counting forever).
      election_elapsed_ = randomized_election_timeout_;
      return;
    }
    election_elapsed_ = 0;
    startElection(config_.pre_vote);
  }
}

void RaftCore::leaderLinkLost(NodeId leader) {
  if (role_ != Role::follower || leader == kNoNode || leader_ != leader) return;
  election_elapsed_ = std::max(election_elapsed_, config_.election_ticks);
}

void RaftCore::tickHeartbeat() {
  ++heartbeat_elapsed_;
  ++election_elapsed_;
  if (lead_transferee_ != kNoNode && ++transfer_elapsed_ >= config_.election_ticks) {
    // The target did not take over in time (lost messages, or it is down): stop
    // waiting and take proposals again rather than stay unavailable.
    lead_transferee_ = kNoNode;
    transfer_elapsed_ = 0;
  }
  if (election_elapsed_ >= config_.election_ticks) {
    election_elapsed_ = 0;
    if (config_.check_quorum && !quorumActiveAndReset()) {
      // Thesis 6.2: without a quorum this leader cannot commit anything, and clients
      // that keep talking to it would wait forever; let them find the real one.
      becomeFollower(term_, kNoNode);
      return;
    }
  }
  if (heartbeat_elapsed_ >= config_.heartbeat_ticks) {
    heartbeat_elapsed_ = 0;
    broadcastHeartbeat();
  }
}

bool RaftCore::quorumActiveAndReset() {
  std::size_t active = 0;
  for (auto& [node, pr] : progress_) {
    if (isVoter(node) && (node == config_.id || pr.recent_active)) ++active;
    if (node != config_.id) pr.recent_active = false;
  }
  return active >= quorum();
}

// ---- Messages in -------------------------------------------------------------------

StepOutcome RaftCore::checkShape(const Message& m) const {
  if (m.to != config_.id) return StepOutcome::not_addressed;
  if (m.from == config_.id || m.from == kNoNode) return StepOutcome::unknown_sender;
  // A removed node that never learned of its removal keeps campaigning, and may even
  // think it leads: it gets no hearing from anyone who knows.
  if (membership_.removed.contains(m.from)) return StepOutcome::unknown_sender;
  // Votes count only from voters. Vote requests are heard from anyone else (thesis
  // 4.2.1): a voter we have not yet learned of must be able to win.
  if ((m.type == MessageType::vote_response || m.type == MessageType::pre_vote_response) && !isVoter(m.from)) {
    return StepOutcome::unknown_sender;
  }
  if (m.term == 0) return StepOutcome::malformed;
  if (m.type == MessageType::snapshot) {
    if (!m.snapshot) return StepOutcome::malformed;
    const Snapshot& s = *m.snapshot;
    if (s.index == 0 || s.term == 0 || s.term > m.term || s.voters.empty()) return StepOutcome::malformed;
    for (const auto* list : {&s.voters, &s.learners, &s.removed}) {
      if (std::adjacent_find(list->begin(), list->end(), std::greater_equal<>()) != list->end()) {
        return StepOutcome::malformed;
      }
      if (std::find(list->begin(), list->end(), kNoNode) != list->end()) return StepOutcome::malformed;
    }
  }
  if (m.type == MessageType::append) {
    Index expected = m.index + 1;
    Term previous = m.log_term;
    for (const Entry& e : m.entries) {
      if (e.index != expected || e.term < previous || e.term > m.term) return StepOutcome::malformed;
      if (e.type == EntryType::config && !decodeConfChange(e.data)) return StepOutcome::malformed;
      ++expected;
      previous = e.term;
    }
  }
  return StepOutcome::handled;
}

bool RaftCore::inLeaderLease() const {
  return config_.check_quorum && leader_ != kNoNode && election_elapsed_ < config_.election_ticks;
}

StepOutcome RaftCore::step(const Message& m) {
  if (StepOutcome shape = checkShape(m); shape != StepOutcome::handled) return shape;

  const bool is_vote_request = m.type == MessageType::vote || m.type == MessageType::pre_vote;
  if (m.term > term_) {
    // A campaign the leader asked for (transfer) is heard despite the lease.
    if (is_vote_request && inLeaderLease() && !m.transfer) return StepOutcome::leader_lease;
    const bool keeps_term = m.type == MessageType::pre_vote ||
                            (m.type == MessageType::pre_vote_response && !m.reject);
    if (!keeps_term) {
      const bool from_leader = m.type == MessageType::append || m.type == MessageType::heartbeat ||
                               m.type == MessageType::snapshot ||
                               m.type == MessageType::timeout_now || m.type == MessageType::read_index_response;
      becomeFollower(m.term, from_leader ? m.from : kNoNode);
    }
  } else if (m.term < term_) {
    if (m.type == MessageType::append || m.type == MessageType::heartbeat || m.type == MessageType::snapshot) {
      // An old leader that was cut off: our term may have risen without an election
      // it could see (PreVote, CheckQuorum, or a campaign by a node it counts as no
      // voter, whose vote requests it drops), and it would keep sending forever. Our
      // term in the answer (paper figure 2) makes it step down.
      send(to(m.from, MessageType::append_response));
    } else if (m.type == MessageType::pre_vote) {
      // Tell a pre-candidate of a lower term it lost, so it does not wait a timeout.
      Message r = to(m.from, MessageType::pre_vote_response);
      r.reject = true;
      send(std::move(r));
    }
    return StepOutcome::stale_term;
  }

  if (is_vote_request) {
    handleVoteRequest(m);
    return StepOutcome::handled;
  }
  switch (role_) {
    case Role::leader: stepLeader(m); break;
    case Role::pre_candidate:
    case Role::candidate: stepCandidate(m); break;
    case Role::follower: stepFollower(m); break;
  }
  applyCommittedConfig();
  releaseHeldReads();
  return StepOutcome::handled;
}

void RaftCore::handleVoteRequest(const Message& m) {
  const MessageType answer =
      m.type == MessageType::vote ? MessageType::vote_response : MessageType::pre_vote_response;
  // One vote per term (5.2), repeated to the same candidate if it asks again. A
  // pre-vote for a later term binds nothing, so it needs only the log check.
  const bool can_vote = vote_ == m.from || (vote_ == kNoNode && leader_ == kNoNode) ||
                        (m.type == MessageType::pre_vote && m.term > term_);
  Message r = to(m.from, answer);
  if (can_vote && log_.isUpToDate(m.index, m.log_term)) {
    r.term = m.term;
    if (m.type == MessageType::vote) {
      vote_ = m.from;
      election_elapsed_ = 0;  // granting a vote defers our own candidacy (5.2)
    }
  } else {
    r.reject = true;
  }
  send(std::move(r));
}

void RaftCore::stepFollower(const Message& m) {
  if (m.type == MessageType::timeout_now) {
    // The leader hands over to us: campaign now, no PreVote (the leader is known to
    // agree), the lease set aside by the flag on our vote requests.
    if (isVoter(config_.id)) startElection(false, true);
    return;
  }
  if (m.type == MessageType::read_index_response) {
    read_states_.push_back({m.index, m.context});
    return;
  }
  if (m.type == MessageType::append || m.type == MessageType::heartbeat || m.type == MessageType::snapshot) {
    election_elapsed_ = 0;
    leader_ = m.from;
    if (m.type == MessageType::append) {
      handleAppend(m);
    } else if (m.type == MessageType::snapshot) {
      handleSnapshot(m);
    } else {
      handleHeartbeat(m);
    }
  }
}

void RaftCore::stepCandidate(const Message& m) {
  const MessageType expected =
      role_ == Role::pre_candidate ? MessageType::pre_vote_response : MessageType::vote_response;
  if (m.type == MessageType::append || m.type == MessageType::heartbeat || m.type == MessageType::snapshot) {
    // A leader of our term exists (5.2): it won, we did not.
    becomeFollower(term_, m.from);
    stepFollower(m);
  } else if (m.type == expected) {
    recordVote(m.from, !m.reject);
  }
}

void RaftCore::stepLeader(const Message& m) {
  auto it = progress_.find(m.from);
  if (it == progress_.end()) return;
  Progress& pr = it->second;
  if (m.type == MessageType::read_index) {
    startRead(m.from, m.context);
    return;
  }
  if (m.type == MessageType::append_response) {
    pr.recent_active = true;
    handleAppendResponse(m);
  } else if (m.type == MessageType::heartbeat_response) {
    pr.recent_active = true;
    if (m.index > 0) ackReads(m.from, m.index);
    // The follower is listening again: a lost probe need not wait for the next append.
    pr.probe_sent = false;
    // Nor a full window whose appends were lost (dropped, or the follower restarted
    // without them): free one slot, so one append goes out and its answer (an
    // acceptance, or a rejection that drops back to probe) gets things moving.
    if (pr.state == Progress::State::replicate && pr.paused(config_.max_inflight_appends)) {
      pr.inflight.pop_front();
    }
    // Still waiting for a snapshot's answer from a follower that is listening: the
    // snapshot or its answer may be lost. Send it again (a duplicate is answered
    // harmlessly, and a snapshot is small).
    if (pr.state == Progress::State::snapshot) pr.becomeProbe();
    if (pr.match < log_.lastIndex()) sendAppend(m.from, true);
  }
}

void RaftCore::handleAppend(const Message& m) {
  Message r = to(m.from, MessageType::append_response);
  if (m.index < log_.committed()) {
    // Everything up to our commit index is settled; say where we are instead.
    r.index = log_.committed();
  } else if (auto last = log_.tryAppend(m.index, m.log_term, m.commit, m.entries)) {
    r.index = *last;
  } else {
    auto [hint_index, hint_term] = log_.findConflictByTerm(std::min(m.index, log_.lastIndex()), m.log_term);
    r.reject = true;
    r.index = m.index;
    r.reject_hint = hint_index;
    r.log_term = hint_term;
  }
  send(std::move(r));
}

void RaftCore::handleHeartbeat(const Message& m) {
  log_.commitTo(m.commit);
  Message r = to(m.from, MessageType::heartbeat_response);
  r.index = m.index;  // the read round we hereby confirm the leader for
  send(std::move(r));
}

void RaftCore::handleSnapshot(const Message& m) {
  const Snapshot& s = *m.snapshot;
  Message r = to(m.from, MessageType::append_response);
  if (s.index <= log_.committed()) {
    // A duplicate, or we caught up meanwhile: say how far we are settled.
  } else if (log_.matchTerm(s.index, s.term)) {
    // We hold its last entry, so the entries before it too (log matching): it is
    // committed, and the state machine gets there by applying them.
    log_.commitTo(s.index);
  } else {
    log_.restoreSnapshot(s.index, s.term);
    membership_ = Membership{};
    membership_.voters.insert(s.voters.begin(), s.voters.end());
    membership_.learners.insert(s.learners.begin(), s.learners.end());
    membership_.removed.insert(s.removed.begin(), s.removed.end());
    conf_applied_ = s.index;
    snapshot_ = s;
    pending_snapshot_ = s;
  }
  r.index = log_.committed();
  send(std::move(r));
}

void RaftCore::handleAppendResponse(const Message& m) {
  Progress& pr = progress_[m.from];
  if (m.reject) {
    // The hint is the follower's last entry that may match, with its term. If our
    // entry there has a higher term, no entry of that term of ours can match either:
    // jump below all of them at once.
    Index next_probe = m.reject_hint;
    if (m.log_term > 0) next_probe = log_.findConflictByTerm(m.reject_hint, m.log_term).first;
    if (pr.maybeDecreaseTo(m.index, next_probe)) {
      if (pr.state == Progress::State::replicate) pr.becomeProbe();
      sendAppend(m.from, true);
    }
    return;
  }
  const bool was_paused = pr.paused(config_.max_inflight_appends);
  if (!pr.maybeUpdate(m.index)) {
    // Nothing new, but the answer freed the probe: keep the follower moving.
    if (was_paused && pr.match < log_.lastIndex()) sendAppend(m.from, false);
    return;
  }
  if (pr.state == Progress::State::snapshot && pr.match >= pr.pending_snapshot) pr.becomeProbe();
  if (pr.state == Progress::State::probe) pr.becomeReplicate();
  sendTimeoutNowIfCaughtUp(m.from);
  if (maybeCommit()) {
    broadcastAppend();
  } else if (was_paused && pr.sent_commit < log_.committed()) {
    // A paused follower missed the commit broadcast meanwhile: tell it now.
    sendAppend(m.from, true);
  }
  while (sendAppend(m.from, false)) {
  }
}

// ---- Messages out ------------------------------------------------------------------

Message RaftCore::to(NodeId peer, MessageType type) const {
  Message m;
  m.type = type;
  m.from = config_.id;
  m.to = peer;
  m.term = term_;
  return m;
}

void RaftCore::send(Message m) { outbox_.push_back(std::move(m)); }

bool RaftCore::sendAppend(NodeId peer, bool send_if_empty) {
  Progress& pr = progress_[peer];
  if (pr.paused(config_.max_inflight_appends)) return false;
  const Index prev = pr.next - 1;
  if (prev < log_.offset()) {
    // The follower needs entries compacted away: only the snapshot can bring it on.
    sendSnapshot(peer);
    return true;
  }
  auto prev_term = log_.term(prev);
  if (!prev_term) {
    throw std::logic_error("raft: no term for index " + std::to_string(prev) + " to send to " +
                           std::to_string(peer));
  }
  std::vector<Entry> entries = log_.slice(pr.next, log_.lastIndex() + 1, config_.max_entries_per_append);
  if (entries.empty() && !send_if_empty) return false;
  Message m = to(peer, MessageType::append);
  m.index = prev;
  m.log_term = *prev_term;
  m.commit = log_.committed();
  const Index last = entries.empty() ? prev : entries.back().index;
  m.entries = std::move(entries);
  pr.sentAppend(last, !m.entries.empty());
  pr.sent_commit = std::max(pr.sent_commit, std::min(m.commit, last));
  send(std::move(m));
  return true;
}

void RaftCore::sendSnapshot(NodeId peer) {
  if (!snapshot_) {
    throw std::logic_error("raft: log compacted to " + std::to_string(log_.offset()) + " without a snapshot");
  }
  Message m = to(peer, MessageType::snapshot);
  m.snapshot = snapshot_;
  Progress& pr = progress_[peer];
  pr.becomeSnapshot(snapshot_->index);
  // Installing it commits the follower through the snapshot's index.
  pr.sent_commit = std::max(pr.sent_commit, snapshot_->index);
  send(std::move(m));
}

void RaftCore::broadcastAppend() {
  for (const auto& [member, pr] : progress_) {
    if (member != config_.id) sendAppend(member, true);
  }
}

void RaftCore::broadcastHeartbeat() {
  for (auto& [member, pr] : progress_) {
    if (member == config_.id) continue;
    Message m = to(member, MessageType::heartbeat);
    m.commit = std::min(pr.match, log_.committed());
    // Every heartbeat asks for the newest read round, so a lost answer is made up by
    // the next one.
    m.index = pending_reads_.empty() ? 0 : pending_reads_.back().round;
    pr.sent_commit = std::max(pr.sent_commit, m.commit);
    send(std::move(m));
  }
}

bool RaftCore::maybeCommit() {
  std::vector<Index> matches;
  for (NodeId voter : membership_.voters) matches.push_back(progress_[voter].match);
  std::sort(matches.begin(), matches.end(), std::greater<>());
  return log_.maybeCommit(matches[quorum() - 1], term_);
}

ProposeResult RaftCore::refuseDuringTransfer() const {
  // The target is about to lead: an entry accepted here could be lost with our term,
  // and a client is better served by retrying at the new leader.
  return refuse("leadership transfer to node " + std::to_string(lead_transferee_) + " in progress");
}

ProposeResult RaftCore::refuse(std::string why) const {
  ProposeResult result;
  result.leader = leader_;
  result.refusal = std::move(why);
  return result;
}

ProposeResult RaftCore::appendProposal(EntryType type, std::string data) {
  Entry e{term_, log_.lastIndex() + 1, type, std::move(data)};
  ProposeResult result{true, e.index, e.term, config_.id, {}};
  log_.appendOwn(std::move(e));
  for (const auto& [member, pr] : progress_) {
    if (member != config_.id) sendAppend(member, false);
  }
  return result;
}

void RaftCore::sendTimeoutNowIfCaughtUp(NodeId peer) {
  if (peer != lead_transferee_ || progress_[peer].match != log_.lastIndex()) return;
  send(to(peer, MessageType::timeout_now));
}

TransferResult RaftCore::transferLeader(NodeId target) {
  TransferResult result;
  result.leader = leader_;
  if (role_ != Role::leader) {
    result.refusal = "not the leader";
  } else if (target == config_.id) {
    result.refusal = "node " + std::to_string(target) + " leads already";
  } else if (!isVoter(target)) {
    result.refusal = "node " + std::to_string(target) + " is not a voter";
  } else {
    result.started = true;
    if (lead_transferee_ == target) return result;
    lead_transferee_ = target;
    transfer_elapsed_ = 0;
    if (progress_[target].match == log_.lastIndex()) {
      sendTimeoutNowIfCaughtUp(target);
    } else {
      sendAppend(target, true);
    }
  }
  return result;
}

ProposeResult RaftCore::propose(std::string data) {
  if (role_ != Role::leader) return refuse("not the leader");
  if (lead_transferee_ != kNoNode) return refuseDuringTransfer();
  return appendProposal(EntryType::normal, std::move(data));
}

ProposeResult RaftCore::proposeConfChange(const ConfChange& change) {
  if (role_ != Role::leader) return refuse("not the leader");
  if (lead_transferee_ != kNoNode) return refuseDuringTransfer();
  if (pending_conf_index_ > log_.committed()) {
    return refuse("a membership change (or this leader's first entry) at index " +
                  std::to_string(pending_conf_index_) + " is not committed yet");
  }
  if (std::string why = membership_.check(change); !why.empty()) return refuse(why);
  ProposeResult result = appendProposal(EntryType::config, encodeConfChange(change));
  pending_conf_index_ = result.index;
  return result;
}

// ---- ReadIndex ---------------------------------------------------------------------

bool RaftCore::committedInTerm() const { return log_.term(log_.committed()) == term_; }

ReadIndexResult RaftCore::readIndex(std::string context) {
  ReadIndexResult result;
  result.leader = leader_;
  if (role_ == Role::leader) {
    startRead(config_.id, std::move(context));
  } else if (leader_ == kNoNode) {
    result.refusal = "no leader known";
    return result;
  } else {
    Message m = to(leader_, MessageType::read_index);
    m.context = std::move(context);
    send(std::move(m));
  }
  result.accepted = true;
  return result;
}

void RaftCore::startRead(NodeId requester, std::string context) {
  if (!committedInTerm()) {
    // Thesis 6.4 step 1: until an entry of its term commits, a new leader may not know
    // the latest commit index (its predecessor's commits may be beyond ours).
    held_reads_.emplace_back(requester, std::move(context));
    return;
  }
  if (quorum() == 1) {
    releaseRead(requester, log_.committed(), std::move(context));
    return;
  }
  // Thesis 6.4 steps 2-3: the commit index now is the read index, valid once a quorum
  // confirms that no other leader has been elected since.
  pending_reads_.push_back({++read_round_, requester, log_.committed(), std::move(context), {config_.id}});
  broadcastHeartbeat();
}

void RaftCore::ackReads(NodeId from, std::uint64_t round) {
  if (!isVoter(from)) return;
  // An answer to round r was sent after every read up to round r had begun.
  for (PendingRead& read : pending_reads_) {
    if (read.round > round) break;
    read.acks.insert(from);
  }
  while (!pending_reads_.empty()) {
    PendingRead& front = pending_reads_.front();
    const auto acks = std::count_if(front.acks.begin(), front.acks.end(), [&](NodeId n) { return isVoter(n); });
    if (static_cast<std::size_t>(acks) < quorum()) break;
    releaseRead(front.requester, front.index, std::move(front.context));
    pending_reads_.pop_front();
  }
}

void RaftCore::releaseRead(NodeId requester, Index index, std::string context) {
  if (requester == config_.id) {
    read_states_.push_back({index, std::move(context)});
    return;
  }
  Message m = to(requester, MessageType::read_index_response);
  m.index = index;
  m.context = std::move(context);
  send(std::move(m));
}

void RaftCore::releaseHeldReads() {
  if (role_ != Role::leader || held_reads_.empty() || !committedInTerm()) return;
  std::vector<std::pair<NodeId, std::string>> held = std::move(held_reads_);
  held_reads_.clear();
  for (auto& [requester, context] : held) startRead(requester, std::move(context));
}

// ---- Membership --------------------------------------------------------------------

void RaftCore::applyCommittedConfig() {
  while (conf_applied_ < log_.committed()) {
    const Index index = ++conf_applied_;
    const std::vector<Entry> entry = log_.slice(index, index + 1, 1);
    if (entry.empty()) throw std::logic_error("raft: committed entry " + std::to_string(index) + " is missing");
    if (entry.front().type != EntryType::config) continue;
    auto change = decodeConfChange(entry.front().data);
    // Every config entry was checked on its way in (validate(), checkShape()).
    if (!change) throw std::logic_error("raft: unreadable membership change " + describe(entry.front()));
    membership_.apply(*change);
    onMembershipChanged();
  }
}

void RaftCore::onMembershipChanged() {
  if (role_ != Role::leader) return;
  if (!isVoter(config_.id)) {
    // Removed (thesis 4.2.2): the commit that got us here was just broadcast (every
    // commit on a leader is), so the others learn of it; leave the lead to them.
    becomeFollower(term_, kNoNode);
    return;
  }
  if (!isVoter(lead_transferee_)) lead_transferee_ = kNoNode;
  for (auto it = progress_.begin(); it != progress_.end();) {
    it = membership_.isMember(it->first) ? std::next(it) : progress_.erase(it);
  }
  std::vector<NodeId> added;
  for (const auto& members : {membership_.voters, membership_.learners}) {
    for (NodeId member : members) {
      if (progress_.contains(member)) continue;
      Progress& pr = progress_[member];
      pr.next = log_.lastIndex() + 1;
      pr.recent_active = true;  // a grace period of one CheckQuorum round
      added.push_back(member);
    }
  }
  for (NodeId member : added) sendAppend(member, true);
  // A smaller quorum may already hold more entries.
  if (maybeCommit()) broadcastAppend();
}

Membership RaftCore::membershipAt(Index index) const {
  Membership at;
  if (snapshot_) {
    at.voters.insert(snapshot_->voters.begin(), snapshot_->voters.end());
    at.learners.insert(snapshot_->learners.begin(), snapshot_->learners.end());
    at.removed.insert(snapshot_->removed.begin(), snapshot_->removed.end());
  } else {
    at.voters.insert(config_.voters.begin(), config_.voters.end());
    at.learners.insert(config_.learners.begin(), config_.learners.end());
  }
  for (const Entry& e : log_.slice(log_.firstIndex(), index + 1, index + 1)) {
    if (e.type != EntryType::config) continue;
    auto change = decodeConfChange(e.data);
    if (!change) throw std::logic_error("raft: unreadable membership change " + describe(e));
    at.apply(*change);
  }
  return at;
}

// ---- Snapshots ---------------------------------------------------------------------

Snapshot RaftCore::compact(Index index, std::string data) {
  if (index <= log_.offset() || index > log_.applied() || index > log_.stableIndex()) {
    throw std::invalid_argument("raft: cannot snapshot at " + std::to_string(index) + ": it must be above " +
                                std::to_string(log_.offset()) + " and at most the applied " +
                                std::to_string(log_.applied()) + " and stable " +
                                std::to_string(log_.stableIndex()) + " index");
  }
  const Membership members = membershipAt(index);
  Snapshot s;
  s.index = index;
  s.term = *log_.term(index);
  s.voters.assign(members.voters.begin(), members.voters.end());
  s.learners.assign(members.learners.begin(), members.learners.end());
  s.removed.assign(members.removed.begin(), members.removed.end());
  s.data = std::move(data);
  log_.compact(index);
  snapshot_ = s;
  return s;
}

// ---- Ready / advance ---------------------------------------------------------------

bool RaftCore::hasReady() const {
  if (ready_outstanding_) return false;
  const bool read_due = std::any_of(read_states_.begin(), read_states_.end(),
                                    [&](const ReadState& r) { return r.index <= log_.committed(); });
  return pending_snapshot_.has_value() || SoftState{leader_, role_} != last_soft_ || hardState() != last_hard_ ||
         !outbox_.empty() ||
         log_.stableIndex() < log_.lastIndex() || log_.applied() < log_.committed() || read_due;
}

Ready RaftCore::ready() {
  if (ready_outstanding_) throw std::logic_error("raft: ready() called before advance() of the previous Ready");
  Ready rd;
  SoftState soft{leader_, role_};
  if (soft != last_soft_) rd.soft_state = soft;
  HardState hard = hardState();
  if (hard != last_hard_) rd.hard_state = hard;
  rd.snapshot = std::move(pending_snapshot_);
  pending_snapshot_.reset();
  rd.entries = log_.unstableEntries();
  rd.messages = std::move(outbox_);
  outbox_.clear();
  rd.committed = log_.nextCommitted();
  rd.must_sync = rd.snapshot.has_value() || !rd.entries.empty() || hard.term != last_hard_.term ||
                 hard.vote != last_hard_.vote;

  last_soft_ = soft;
  last_hard_ = hard;
  ready_outstanding_ = true;
  ready_entries_.clear();
  for (const Entry& e : rd.entries) ready_entries_.emplace_back(e.index, e.term);
  ready_applied_to_ = rd.committed.empty() ? log_.applied() : rd.committed.back().index;
  // A read is due once the state machine has applied its index, which the driver does
  // (this Ready's committed entries) before it serves the reads.
  std::vector<ReadState> later;
  for (ReadState& r : read_states_) (r.index <= ready_applied_to_ ? rd.read_states : later).push_back(std::move(r));
  read_states_ = std::move(later);
  return rd;
}

void RaftCore::advance() {
  if (!ready_outstanding_) throw std::logic_error("raft: advance() without a Ready");
  ready_outstanding_ = false;
  // Overwrites cut a suffix, so the written entries still in the log are a prefix of
  // them: the last one still there says how far the log is durable.
  for (auto it = ready_entries_.rbegin(); it != ready_entries_.rend(); ++it) {
    if (log_.matchTerm(it->first, it->second)) {
      log_.stableTo(it->first, it->second);
      break;
    }
  }
  log_.appliedTo(ready_applied_to_);
  if (role_ == Role::leader) {
    // Our own entries now count towards the quorum (they are durable here).
    if (progress_[config_.id].maybeUpdate(log_.stableIndex()) && maybeCommit()) broadcastAppend();
  }
  applyCommittedConfig();
  releaseHeldReads();
}

}  // namespace zetian::cluster::raft
