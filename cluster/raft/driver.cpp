#include "cluster/raft/driver.h"

#include <algorithm>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <utility>

#include "cluster/clock.h"
#include "cluster/raft/identity.h"
#include "cluster/raft/membership.h"
#include "cluster/raft/recovery.h"
#include "cluster/raft/storage.h"
#include "cluster/raft/storage_writer.h"
#include "cluster/wire/raft_codec.h"
#include "conf/policy.h"

namespace zetian::cluster::raft {

using wire::RaftControl;
using wire::RaftControlKind;

RaftDriver::RaftDriver(Loop& loop, DriverOptions options, RaftHost& host, LogSink log)
    : loop_(loop), options_(std::move(options)), host_(host), log_(std::move(log)) {}

RaftDriver::~RaftDriver() {
  if (writer_) writer_->stop();
}

void RaftDriver::logLine(conf::LogLevel level, const std::string& line) const {
  if (log_) log_(level, line);
}

bool RaftDriver::start(std::string* error) {
  checkThread();
  const std::filesystem::path dir(options_.dir);
  OpenedStorage opened;
  try {
    opened = Storage::open(dir);
  } catch (const std::exception& e) {
    *error = std::string("cannot use the Raft folder: ") + e.what();
    return false;
  }
  for (const auto& warning : opened.recovered.warnings) {
    logLine(conf::LogLevel::Warn, "raft_storage_repaired detail=" + logValue(warning));
  }
  // Whose folder is this?
  std::optional<Identity> identity;
  try {
    if (auto text = opened.storage->readIdentity()) {
      std::string why;
      identity = decodeIdentity(*text, &why);
      if (!identity) {
        *error = (dir / kIdentityFileName).string() + " is damaged (" + why + "): move " + dir.string() +
                 " aside, remove this node from the cluster (`zetianctl cluster remove " + options_.node_id +
                 "` on another node) and start it again";
        return false;
      }
    }
    if (identity && identity->node_id != options_.node_id) {
      *error = dir.string() + " belongs to node " + backquoted(identity->node_id) + ", not " +
               backquoted(options_.node_id) + ": point node.state_dir elsewhere, or move that folder aside";
      return false;
    }
    if (!identity) {
      if (opened.recovered.snapshot || !opened.recovered.entries.empty() || opened.recovered.hard_state.term != 0) {
        *error = dir.string() + " holds Raft state but no identity file: move it aside and start again";
        return false;
      }
      identity = Identity{options_.node_id, drawRaftId()};
      opened.storage->saveIdentity(encodeIdentity(*identity));
    }
  } catch (const std::exception& e) {
    *error = std::string("cannot use the Raft folder: ") + e.what();
    return false;
  }
  self_ = identity->raft_id;

  const RecoveredState& recovered = opened.recovered;
  DurableState durable;
  if (recovered.snapshot) {
    try {
      durable = durableFromRecovered(recovered);
    } catch (const std::exception& e) {
      *error = std::string("the Raft folder cannot be recovered: ") + e.what();
      return false;
    }
    std::string why;
    auto restored = PolicyState::restore(durable.snapshot->data, durable.snapshot->index, &why);
    if (!restored) {
      *error = "the Raft snapshot in " + dir.string() + " cannot be read (" + why +
               "): move the folder aside, remove this node from the cluster and start it again";
      return false;
    }
    state_ = std::move(*restored);
    last_snapshot_index_ = durable.snapshot->index;
    in_cluster_ = true;
  } else {
    if (!recovered.entries.empty()) {
      *error = dir.string() + " holds log entries but no snapshot, which this version never writes: move it aside";
      return false;
    }
    durable.hard_state = recovered.hard_state;
    durable.hard_state.commit = 0;
  }
  written_hard_state_ = durable.hard_state;
  try {
    buildCore(std::move(durable));
  } catch (const std::exception& e) {
    *error = std::string("the Raft state cannot be loaded: ") + e.what();
    return false;
  }
  writer_ = std::make_unique<StorageWriter>(loop_, std::move(opened.storage));
  const auto tick = std::max(std::chrono::milliseconds(1), options_.election_timeout / kElectionTicks);
  tick_ = loop_.every(tick, [this] { onTick(); });
  logLine(conf::LogLevel::Info, "raft_started raft_id=" + hexId(self_) + " in_cluster=" +
                                    (in_cluster_ ? "true" : "false") + " term=" + std::to_string(core_->term()) +
                                    " commit=" + std::to_string(core_->log().committed()) +
                                    (in_cluster_ ? " policy_version=" + std::to_string(state_.version()) : ""));
  // The committed log after the snapshot is applied first (the first Ready, which
  // writes nothing, runs now), so the listener hears the newest version at once rather
  // than the snapshot's and then each later one; entries replayed from the log up to
  // the stored commit index log no events (they happened before this start).
  replay_until_ = core_->log().committed();
  pump();
  if (state_.current()) notePolicyApplied();
  if (in_cluster_) checkRemoved();
  return true;
}

void RaftDriver::buildCore(DurableState durable) {
  Config config;
  config.id = self_;
  if (durable.snapshot) {
    config.voters = durable.snapshot->voters;
  } else {
    config.voters = {kOutsideVoter};
  }
  config.election_ticks = kElectionTicks;
  config.heartbeat_ticks = 1;
  config.pre_vote = true;
  config.check_quorum = true;
  config.seed = std::random_device{}();
  config.max_entries_per_append = kMaxEntriesPerAppend;
  if (durable.snapshot) config.applied = durable.snapshot->index;
  core_ = std::make_unique<RaftCore>(std::move(config), std::move(durable));
  soft_ = SoftState{core_->leader(), core_->role()};
}

void RaftDriver::stop() {
  checkThread();
  if (writer_) writer_->stop();
  tick_.cancel();
  if (!stopped_) {
    stopped_ = true;
    stop_reason_ = "shutting down";
  }
  answerAll(503, "shutting down");
}

void RaftDriver::failStorage(const std::string& what) {
  logLine(conf::LogLevel::Error,
          "raft_storage_failed error=" + logValue(what) +
              " action=\"this node stops taking part in Raft and keeps enforcing policy version " +
              std::to_string(state_.version()) + "; free the disk or fix it, then restart the node\"");
  stopped_ = true;
  stop_reason_ = "the Raft storage failed on this node (" + what + "); restart it";
  answerAll(503, stop_reason_);
  tick_.cancel();
}

// ---- the Ready cycle -----------------------------------------------------------------

void RaftDriver::pump() {
  if (stopped_ || write_in_flight_ || !core_) return;
  if (!core_->hasReady()) {
    if (commit_dirty_) saveCommit();
    return;
  }
  Ready ready = core_->ready();
  std::optional<StoredSnapshot> snapshot;
  if (ready.snapshot) snapshot = toStoredSnapshot(*ready.snapshot);
  HardState latest = ready.hard_state.value_or(written_hard_state_);
  if (ready.hard_state) latest.commit = ready.hard_state->commit;
  // The hard state goes to disk when term or vote changed (a vote must never be
  // forgotten), and with the commit index after a policy change was applied.
  std::optional<HardState> hard_state;
  if (ready.hard_state && (ready.hard_state->term != written_hard_state_.term ||
                           ready.hard_state->vote != written_hard_state_.vote)) {
    hard_state = *ready.hard_state;
  } else if (commit_dirty_) {
    hard_state = HardState{core_->term(), core_->vote(), std::max(written_hard_state_.commit, latest.commit)};
    if (ready.hard_state) hard_state->commit = std::max(hard_state->commit, ready.hard_state->commit);
  }
  if (hard_state) {
    // Never store a commit index beyond what this write leaves on disk.
    Index stored_last = core_->log().stableIndex();
    if (!ready.entries.empty()) stored_last = std::max(stored_last, ready.entries.back().index);
    if (snapshot) stored_last = std::max(stored_last, snapshot->index);
    hard_state->commit = std::min(hard_state->commit, stored_last);
    commit_dirty_ = false;
  }
  std::vector<Entry> entries = ready.entries;
  const bool sync = ready.must_sync && !entries.empty() && !hard_state;
  if (!snapshot && entries.empty() && !hard_state) {
    onWritten(std::move(ready), std::nullopt);
    return;
  }
  // A leader's appends may leave before its own write (thesis 10.2.1): it counts its
  // own entries towards commit only after advance(), and the commit index it sends
  // rests on durable copies only. So the followers' fsyncs run beside its own. Votes
  // and acknowledgements still wait for the write.
  if (core_->role() == Role::leader) {
    std::vector<Message> early;
    std::vector<Message> later;
    for (Message& m : ready.messages) {
      const bool replication = m.type == MessageType::append || m.type == MessageType::heartbeat ||
                               m.type == MessageType::snapshot;
      (replication ? early : later).push_back(std::move(m));
    }
    ready.messages = std::move(later);
    sendMessages(std::move(early));
  }
  write_in_flight_ = true;
  if (hard_state) written_hard_state_ = *hard_state;
  auto shared = std::make_shared<Ready>(std::move(ready));
  writer_->submit(
      [snapshot = std::move(snapshot), entries = std::move(entries), hard_state, sync](Storage& storage) {
        if (snapshot) storage.installSnapshot(*snapshot);
        if (!entries.empty()) storage.append(entries);
        if (hard_state) {
          storage.saveHardState(*hard_state);  // syncs the appends first
        } else if (sync) {
          storage.sync();
        }
      },
      [this, shared](std::optional<std::string> failure) {
        write_in_flight_ = false;
        onWritten(std::move(*shared), std::move(failure));
      });
}

// A policy was applied and no Ready is due: the commit index goes to disk now, so a
// node restarted at once enforces that policy before it hears a leader.
void RaftDriver::saveCommit() {
  commit_dirty_ = false;
  HardState hard_state{core_->term(), core_->vote(), std::min(core_->log().committed(), core_->log().stableIndex())};
  if (hard_state == written_hard_state_) return;
  written_hard_state_ = hard_state;
  write_in_flight_ = true;
  writer_->submit([hard_state](Storage& storage) { storage.saveHardState(hard_state); },
                  [this](std::optional<std::string> failure) {
                    write_in_flight_ = false;
                    if (failure) {
                      failStorage(*failure);
                      return;
                    }
                    pump();
                  });
}

void RaftDriver::onWritten(Ready ready, std::optional<std::string> failure) {
  if (failure) {
    failStorage(*failure);
    return;
  }
  if (stopped_) return;
  if (ready.snapshot) loadSnapshot(*ready.snapshot);
  sendMessages(std::move(ready.messages));
  applyEntries(ready.committed);
  for (const ReadState& read : ready.read_states) {
    std::uint64_t id = 0;
    try {
      id = std::stoull(read.context);
    } catch (const std::exception&) {
      continue;
    }
    auto it = waiters_.find(id);
    if (it == waiters_.end() || it->second.kind != WaitKind::read) continue;
    PolicyResult result;
    result.document = state_.current();
    result.index = read.index;
    finish(id, std::move(result));
  }
  core_->advance();
  if (ready.soft_state) onSoftState(*ready.soft_state);
  maybeSnapshot();
  broadcastStatus(false);
  pump();
}

void RaftDriver::sendMessages(std::vector<Message> messages) {
  for (Message& m : messages) {
    auto peer = peerOf(m.to);
    if (!peer) continue;  // no link: Raft resends what matters
    if (wire::raftPayloadBytes(m) > wire::kMaxRaftPayloadBytes) {
      logLine(conf::LogLevel::Error, "raft_message_too_large to=" + logValue(*peer) + " type=" +
                                         std::string(messageTypeName(m.type)));
      continue;
    }
    host_.sendRaft(*peer, wire::RaftFrame{std::move(m)});
  }
}

void RaftDriver::loadSnapshot(const Snapshot& snapshot) {
  std::string why;
  auto restored = PolicyState::restore(snapshot.data, snapshot.index, &why);
  if (!restored) {
    // The leader's state machine wrote it; a node that cannot read it cannot go on.
    failStorage("the leader's snapshot at index " + std::to_string(snapshot.index) + " cannot be read: " + why);
    return;
  }
  state_ = std::move(*restored);
  last_snapshot_index_ = snapshot.index;
  ++snapshots_installed_;
  if (!in_cluster_) {
    in_cluster_ = true;
    logLine(conf::LogLevel::Info, "raft_joined leader=" + logValue(nameOf(core_->leader())) +
                                      " policy_version=" + std::to_string(state_.version()));
  } else {
    logLine(conf::LogLevel::Info, "raft_snapshot_installed index=" + std::to_string(snapshot.index) +
                                      " policy_version=" + std::to_string(state_.version()));
  }
  // Callers waiting for entries the snapshot covers: done if history shows them.
  std::vector<std::pair<std::uint64_t, PolicyResult>> results;
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    Waiter& w = it->second;
    if (w.kind == WaitKind::entry && w.index <= snapshot.index) {
      PolicyResult result;
      result.index = w.index;
      const auto& history = state_.history();
      const bool found = std::any_of(history.begin(), history.end(),
                                     [&](const PolicyHistoryItem& h) { return h.index == w.index; });
      if (found) {
        result.document = state_.current();
      } else {
        result.status = 503;
        result.error = "the change's outcome is unknown here (this node caught up by snapshot): see `zetianctl policy history`";
      }
      results.push_back({it->first, std::move(result)});
    }
  }
  finishAll(std::move(results));
  if (state_.current()) notePolicyApplied();
}

void RaftDriver::applyEntries(const std::vector<Entry>& entries) {
  bool policy_changed = false;
  for (const Entry& entry : entries) {
    if (entry.index <= state_.appliedIndex()) continue;
    const ApplyResult result = state_.apply(entry);
    const bool replayed = entry.index <= replay_until_;
    switch (result.kind) {
      case ApplyKind::policy_applied:
        policy_changed = true;
        logLine(replayed ? conf::LogLevel::Debug : conf::LogLevel::Info,
                "policy_committed version=" + std::to_string(result.version) +
                                          " index=" + std::to_string(entry.index) + " proposer=" +
                                          logValue(state_.current() ? state_.current()->proposer : ""));
        break;
      case ApplyKind::policy_conflict:
      case ApplyKind::policy_invalid:
      case ApplyKind::malformed:
        logLine(conf::LogLevel::Warn, "raft_entry_skipped index=" + std::to_string(entry.index) +
                                          " error=" + logValue(result.error));
        break;
      default:
        break;
    }
    if (entry.type == EntryType::config && !replayed) {
      if (auto change = decodeConfChange(entry.data)) {
        logLine(conf::LogLevel::Info, "raft_membership_changed change=" + logValue(entry.data) + " node=" +
                                          logValue(nameOf(change->node)) + " voters=" +
                                          std::to_string(core_->membership().voters.size()) + " learners=" +
                                          std::to_string(core_->membership().learners.size()));
        host_.raftEvent("raft_membership_changed", {{"ZETIAN_RAFT_CHANGE", entry.data.substr(0, entry.data.find(' '))},
                                                    {"ZETIAN_RAFT_NODE", nameOf(change->node)}});
      }
    }
    if (entry.type == EntryType::config) checkRemoved();
    auto it = std::find_if(waiters_.begin(), waiters_.end(), [&](const auto& w) {
      return w.second.kind == WaitKind::entry && w.second.index == entry.index;
    });
    if (it != waiters_.end()) {
      PolicyResult answer_result;
      answer_result.index = entry.index;
      if (it->second.term != entry.term) {
        answer_result.status = 503;
        answer_result.error = "the leader changed before the change was committed, and it was dropped: make it again";
      } else if (result.kind == ApplyKind::policy_conflict) {
        answer_result.status = 409;
        answer_result.error = "the policy changed meanwhile (" + result.error + "): get it again and make the change on top of it";
      } else if (result.kind == ApplyKind::policy_invalid || result.kind == ApplyKind::malformed) {
        answer_result.status = 400;
        answer_result.error = result.error;
      } else {
        answer_result.document = state_.current();
      }
      finish(it->first, std::move(answer_result));
    }
  }
  if (policy_changed) {
    commit_dirty_ = true;
    notePolicyApplied();
  }
  if (stopped_) answerAll(503, stop_reason_);
}

// A node that learns it was removed stops taking part (the others drop what it says
// anyway, membership.h) and keeps enforcing the last policy it applied.
void RaftDriver::checkRemoved() {
  if (stopped_ || !core_->membership().removed.contains(self_)) return;
  logLine(conf::LogLevel::Warn,
          "raft_removed action=\"this node was removed from the Raft cluster; it keeps enforcing policy version " +
              std::to_string(state_.version()) +
              "; to bring it back, stop it, move node.state_dir/raft aside and start it\"");
  stopped_ = true;
  stop_reason_ = "this node was removed from the Raft cluster";
}

void RaftDriver::notePolicyApplied() {
  const auto& current = state_.current();
  if (!current || current->version == notified_version_) return;
  notified_version_ = current->version;
  if (listener_) listener_(*current);
}

void RaftDriver::maybeSnapshot() {
  if (stopped_ || !in_cluster_ || write_in_flight_) return;
  const Index applied = state_.appliedIndex();
  if (applied < last_snapshot_index_ + options_.snapshot_every) return;
  // compact() takes applied and stable entries only.
  if (applied > core_->log().stableIndex() || applied > core_->log().applied()) return;
  Snapshot snapshot;
  try {
    snapshot = core_->compact(applied, state_.encode());
  } catch (const std::exception& e) {
    logLine(conf::LogLevel::Warn, "raft_snapshot_skipped error=" + logValue(e.what()));
    return;
  }
  last_snapshot_index_ = snapshot.index;
  ++snapshots_taken_;
  write_in_flight_ = true;
  writer_->submit(
      [stored = toStoredSnapshot(snapshot)](Storage& storage) {
        storage.saveSnapshot(stored);
        storage.compact(stored.index);
      },
      [this, index = snapshot.index](std::optional<std::string> failure) {
        write_in_flight_ = false;
        if (failure) {
          failStorage(*failure);
          return;
        }
        logLine(conf::LogLevel::Info, "raft_snapshot_taken index=" + std::to_string(index));
        pump();
      });
}

// ---- time, links, membership ---------------------------------------------------------

void RaftDriver::onTick() {
  if (stopped_) return;
  core_->tick();
  expireWaiters();
  retryWaiters();
  if (in_cluster_) {
    leaderDuties();
  } else {
    maybeBootstrap();
    maybeJoin();
  }
  broadcastStatus(false);
  pump();
}

void RaftDriver::onSoftState(const SoftState& soft) {
  const NodeId old_leader = soft_.leader;
  soft_ = soft;
  if (soft.leader != old_leader) {
    ++leader_changes_;
    const std::string leader = soft.leader == kNoNode ? "" : nameOf(soft.leader);
    logLine(conf::LogLevel::Info, "raft_leader_changed leader=" + (leader.empty() ? std::string("none") : logValue(leader)) +
                                      " term=" + std::to_string(core_->term()));
    host_.raftEvent("raft_leader_changed", {{"ZETIAN_RAFT_LEADER", leader},
                                            {"ZETIAN_RAFT_TERM", std::to_string(core_->term())}});
  }
  // Transfers wait for their target to lead.
  std::vector<std::pair<std::uint64_t, PolicyResult>> results;
  for (const auto& [id, waiter] : waiters_) {
    if (waiter.kind == WaitKind::leader && soft.leader != kNoNode && soft.leader == waiter.target) {
      results.push_back({id, PolicyResult{200, "", state_.current(), 0}});
    }
  }
  finishAll(std::move(results));
}

void RaftDriver::onPeerUp(const std::string& peer) {
  checkThread();
  peers_[peer] = PeerState{};
  if (!stopped_) host_.sendRaft(peer, ownStatus());
}

void RaftDriver::onPeerDown(const std::string& peer) {
  checkThread();
  if (auto it = peers_.find(peer); it != peers_.end()) {
    // The leader's link closed (its process died, most often): campaign within the
    // rest of the timeout rather than a whole one (core.h, leaderLinkLost).
    if (core_ && !stopped_ && it->second.raft_id != kNoNode && it->second.raft_id == core_->leader()) {
      core_->leaderLinkLost(it->second.raft_id);
    }
    peers_.erase(it);
  }
  // Forwarded requests to a leader that is gone fail now rather than at the deadline.
  std::vector<std::pair<std::uint64_t, PolicyResult>> results;
  for (const auto& [id, waiter] : waiters_) {
    if (waiter.kind == WaitKind::forwarded && waiter.target != self_ && !peerOf(waiter.target)) {
      results.push_back({id, PolicyResult{503, "the link to the leader closed before it answered: try again",
                                          std::nullopt, 0}});
    }
  }
  finishAll(std::move(results));
}

void RaftDriver::onFrame(const std::string& peer, const wire::RaftFrame& frame) {
  checkThread();
  if (stopped_ || !core_) return;
  auto it = peers_.find(peer);
  // The sender's Status (sent first on every link) says which Raft id it speaks for.
  if (it == peers_.end() || it->second.raft_id != frame.message.from) return;
  core_->step(frame.message);
  pump();
}

void RaftDriver::onControl(const std::string& peer, const RaftControl& control) {
  checkThread();
  auto it = peers_.find(peer);
  if (it == peers_.end()) return;
  PeerState& state = it->second;
  if (control.kind == RaftControlKind::Status) {
    if (state.raft_id != kNoNode && state.raft_id != control.raft_id) live_names_.erase(state.raft_id);
    state.raft_id = control.raft_id;
    state.status_seen = true;
    state.in_cluster = control.flags & wire::kRaftInCluster;
    state.bootstrap = control.flags & wire::kRaftBootstrap;
    state.leader = control.leader;
    live_names_[control.raft_id] = peer;
    return;
  }
  if (state.raft_id != control.raft_id || stopped_) return;
  switch (control.kind) {
    case RaftControlKind::Join:
      handleJoin(peer, control);
      break;
    case RaftControlKind::Propose:
    case RaftControlKind::Change:
    case RaftControlKind::Transfer:
      handleForward(peer, control);
      break;
    case RaftControlKind::Reply:
      handleReply(control);
      break;
    default:
      break;
  }
}

RaftControl RaftDriver::ownStatus() const {
  RaftControl status;
  status.kind = RaftControlKind::Status;
  status.raft_id = self_;
  if (in_cluster_ && !stopped_) status.flags |= wire::kRaftInCluster;
  if (options_.bootstrap_expect > 0) status.flags |= wire::kRaftBootstrap;
  status.leader = in_cluster_ ? soft_.leader : kNoNode;
  status.term = core_ ? core_->term() : 0;
  status.index = static_cast<std::uint64_t>(options_.bootstrap_expect);
  return status;
}

void RaftDriver::broadcastStatus(bool force) {
  if (!core_) return;
  RaftControl status = ownStatus();
  if (!force && status == last_status_) return;
  last_status_ = status;
  for (const auto& [peer, state] : peers_) host_.sendRaft(peer, status);
}

void RaftDriver::maybeBootstrap() {
  if (bootstrapping_ || write_in_flight_ || options_.bootstrap_expect <= 0 || stopped_) return;
  std::vector<std::string> candidates{options_.node_id};
  for (const auto& [peer, state] : peers_) {
    if (!state.status_seen) continue;
    if (state.in_cluster) return;  // a cluster exists: join it (maybeJoin)
    if (state.bootstrap) candidates.push_back(peer);
  }
  if (candidates.size() < static_cast<std::size_t>(options_.bootstrap_expect)) return;
  if (*std::min_element(candidates.begin(), candidates.end()) != options_.node_id) return;

  // Start the cluster: a snapshot at index 2 (this node's name, then its file's policy
  // as version 1) with this node as the only voter. The others join it.
  PolicyState fresh;
  const Entry name_entry{1, 1, EntryType::normal, encodeMemberName({self_, options_.node_id})};
  conf::PolicyDocument document{1, options_.node_id, unixMillis(), options_.seed_policy_text};
  Entry policy_entry{1, 2, EntryType::normal, ""};
  try {
    policy_entry.data = conf::encodePolicyDocument(document);
  } catch (const std::exception& e) {
    logLine(conf::LogLevel::Error, "raft_bootstrap_failed error=" + logValue(e.what()));
    bootstrapping_ = true;  // never again in this process: the file must change
    return;
  }
  fresh.apply(name_entry);
  const ApplyResult applied = fresh.apply(policy_entry);
  if (applied.kind != ApplyKind::policy_applied) {
    logLine(conf::LogLevel::Error, "raft_bootstrap_failed error=" + logValue(applied.error));
    bootstrapping_ = true;
    return;
  }
  Snapshot snapshot;
  snapshot.index = 2;
  snapshot.term = 1;
  snapshot.voters = {self_};
  snapshot.data = fresh.encode();
  const HardState hard_state{1, kNoNode, 2};
  bootstrapping_ = true;
  logLine(conf::LogLevel::Info, "raft_bootstrapping members=" + std::to_string(candidates.size()) +
                                    " expect=" + std::to_string(options_.bootstrap_expect));
  write_in_flight_ = true;
  writer_->submit(
      [stored = toStoredSnapshot(snapshot), hard_state](Storage& storage) {
        storage.installSnapshot(stored);
        storage.saveHardState(hard_state);
      },
      [this, snapshot, hard_state, fresh = std::move(fresh)](std::optional<std::string> failure) mutable {
        write_in_flight_ = false;
        if (failure) {
          failStorage(*failure);
          return;
        }
        DurableState durable;
        durable.hard_state = hard_state;
        durable.snapshot = snapshot;
        written_hard_state_ = hard_state;
        buildCore(std::move(durable));
        state_ = std::move(fresh);
        last_snapshot_index_ = snapshot.index;
        in_cluster_ = true;
        logLine(conf::LogLevel::Info, "raft_cluster_started policy_version=1 raft_id=" + hexId(self_));
        host_.raftEvent("raft_cluster_started", {});
        notePolicyApplied();
        core_->campaign();
        broadcastStatus(true);
        pump();
      });
}

void RaftDriver::maybeJoin() {
  if (stopped_ || bootstrapping_) return;
  const auto now = Clock::now();
  if (now < next_join_at_) return;
  for (const auto& [peer, state] : peers_) {
    if (!state.in_cluster || state.leader == kNoNode) continue;
    auto leader = peerOf(state.leader);
    if (!leader) continue;
    RaftControl join;
    join.kind = RaftControlKind::Join;
    join.raft_id = self_;
    join.text = options_.node_id;
    if (host_.sendRaft(*leader, join)) {
      logLine(conf::LogLevel::Info, "raft_join_requested leader=" + logValue(*leader));
      next_join_at_ = now + options_.election_timeout * 2;
    }
    return;
  }
}

void RaftDriver::handleJoin(const std::string& peer, const RaftControl& control) {
  if (!in_cluster_ || core_->role() != Role::leader) return;
  const NodeId id = control.raft_id;
  const Membership& members = core_->membership();
  if (members.isMember(id)) return;  // already added: it is being sent the log
  if (members.removed.contains(id)) {
    logLine(conf::LogLevel::Warn, "raft_join_refused node=" + logValue(peer) +
                                      " reason=\"its Raft id was removed; it must rejoin with an emptied raft folder\"");
    return;
  }
  const auto now = Clock::now();
  auto last = last_join_proposed_.find(id);
  if (last != last_join_proposed_.end() && now - last->second < options_.election_timeout * 4) return;
  std::string name_data;
  try {
    name_data = encodeMemberName({id, control.text});
  } catch (const std::exception& e) {
    logLine(conf::LogLevel::Warn, "raft_join_refused node=" + logValue(peer) + " reason=" + logValue(e.what()));
    return;
  }
  if (control.text != peer) return;  // a node joins under its own name only
  const ProposeResult named = core_->propose(std::move(name_data));
  if (!named.accepted) return;
  const ProposeResult added = core_->proposeConfChange({ChangeType::add_learner, id});
  if (!added.accepted) {
    logLine(conf::LogLevel::Debug, "raft_join_deferred node=" + logValue(peer) + " reason=" + logValue(added.refusal));
    pump();
    return;
  }
  last_join_proposed_[id] = now;
  logLine(conf::LogLevel::Info, "raft_adding_learner node=" + logValue(peer) + " raft_id=" + hexId(id));
  pump();
}

void RaftDriver::leaderDuties() {
  if (core_->role() != Role::leader) return;
  const Membership& members = core_->membership();
  if (members.voters.size() >= options_.max_voters || members.learners.empty()) return;
  const Index commit = core_->log().committed();
  for (NodeId learner : members.learners) {
    auto pr = core_->progress().find(learner);
    if (pr == core_->progress().end() || pr->second.match < commit || !peerOf(learner)) continue;
    const ProposeResult promoted = core_->proposeConfChange({ChangeType::promote, learner});
    if (promoted.accepted) {
      logLine(conf::LogLevel::Info, "raft_promoting node=" + logValue(nameOf(learner)));
    }
    return;  // one change at a time
  }
}

}  // namespace zetian::cluster::raft
