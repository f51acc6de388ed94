#include "cluster/limits/service.h"

#include <algorithm>
#include <array>
#include <span>

#include "cluster/placement/hrw.h"
#include "state/transfer.h"

namespace zetian::cluster::limits {

namespace {

// Late answers are refunded if they come within this many expired calls; older ones
// are forgotten (their charges refill with time).
constexpr std::size_t kExpiredRemembered = 4096;
// Keys looked at per loop turn by a hand-off walk, and by the sweep that forgets keys
// the store no longer holds: bounded work per turn, whatever the number of keys.
constexpr std::size_t kWalkKeysPerStep = 4096;
constexpr std::size_t kPruneKeysPerTick = 1024;

std::chrono::milliseconds ceilMillis(LimitService::Clock::duration d) {
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(d);
  return ms < std::chrono::milliseconds(0) ? std::chrono::milliseconds(0) : ms;
}

}  // namespace

std::string_view nameOf(FallbackReason reason) {
  static constexpr std::array<std::string_view, kFallbackReasons> kNames{
      "timeout", "unreachable", "unsupported", "refused", "no_quorum", "closed", "overloaded"};
  return kNames[static_cast<std::size_t>(reason)];
}

LimitService::LimitService(Loop& loop, PeerDirectory& peers, state::BucketStore& store,
                           std::function<state::Nanos()> now, ReplicationOptions replication)
    : loop_(loop),
      peers_(peers),
      store_(store),
      now_(std::move(now)),
      replication_(std::move(replication)),
      settle_timeout_(replication_.check_timeout / 2) {
  loop_.checkThisThread();
  if (replication_.interval.count() > 0) {
    replication_timer_ = loop_.every(replication_.interval, [this] { onReplicationTick(); });
  }
}

LimitService::~LimitService() {
  loop_.checkThisThread();
  deadline_timer_.cancel();
  flush_timer_.cancel();
  replication_timer_.cancel();
  flush_walk_.cancel();
  settle_timer_.cancel();
  auto parked = std::move(parked_);
  parked_.clear();
  for (auto& p : parked) {
    if (p.done) p.done(CallResult{FallbackReason::Closed, {}});
  }
  // Exactly once, also at shutdown: every waiting check gets its answer.
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, p] : pending) {
    if (p.done) p.done(CallResult{FallbackReason::Closed, {}});
  }
}

std::size_t LimitService::pending() const {
  loop_.checkThisThread();
  return pending_.size();
}

std::uint64_t LimitService::keysOwned() const {
  loop_.checkThisThread();
  return keys_owned_;
}

ServiceCounters LimitService::counters() const {
  loop_.checkThisThread();
  ServiceCounters c = counters_;
  c.keys_known = keys_.size();
  return c;
}

void LimitService::call(const std::string& owner, std::vector<wire::LimitItem> items, Clock::time_point deadline,
                        Done done, bool forwarded) {
  loop_.checkThisThread();
  if (owner == replication_.self) {
    // This node's own check of a key whose hand-off may still be on its way.
    if (items.empty() || items.size() > wire::kMaxLimitItemsPerCall) {
      done(CallResult{FallbackReason::Refused, {}});
      return;
    }
    wire::LimitCall own{0, std::move(items)};
    if (mustSettle(own)) {
      ++counters_.calls_held;
      parked_.push_back(Parked{"", std::move(own), std::move(done)});
      return;
    }
    wire::LimitAnswer answer = serve(own, now_());
    done(CallResult{std::nullopt, std::move(answer.outcomes)});
    return;
  }
  const std::optional<std::uint64_t> caps = peers_.peerCapabilities(owner);
  const bool link_coming = !caps && peers_.linkComing(owner);
  if (!caps && !link_coming) {
    done(CallResult{FallbackReason::Unreachable, {}});
    return;
  }
  if (caps && !(*caps & wire::kCapLimiter)) {
    done(CallResult{FallbackReason::Unsupported, {}});
    return;
  }
  if (items.empty() || items.size() > wire::kMaxLimitItemsPerCall) {
    // The engine splits nothing: a stage with more cluster rules for one owner than a
    // call can carry is refused here, and falls back, rather than sent in pieces whose
    // stop-at-first-denial would not be atomic.
    done(CallResult{FallbackReason::Refused, {}});
    return;
  }
  const std::uint64_t id = next_id_++ | (forwarded ? wire::kForwardedCallBit : 0);
  wire::LimitCall wire_call{id, items};
  pending_.emplace(id, Pending{owner, std::move(items), deadline, std::move(done)});
  deadlines_.emplace_back(deadline, id);
  armDeadline();
  if (link_coming) {
    awaiting_link_[owner].push_back(std::move(wire_call));
    return;
  }
  queue(owner, std::move(wire_call));
}

void LimitService::onPeerUp(const std::string& peer) {
  loop_.checkThisThread();
  auto it = awaiting_link_.find(peer);
  if (it == awaiting_link_.end()) return;
  std::vector<wire::LimitCall> calls = std::move(it->second);
  awaiting_link_.erase(it);
  const std::optional<std::uint64_t> caps = peers_.peerCapabilities(peer);
  for (auto& call : calls) {
    if (!pending_.count(call.request_id)) continue;  // its deadline passed
    if (!caps || !(*caps & wire::kCapLimiter)) {
      finish(call.request_id, CallResult{caps ? FallbackReason::Unsupported : FallbackReason::Unreachable, {}});
      continue;
    }
    queue(peer, std::move(call));
  }
}

void LimitService::refund(const std::string& owner, std::vector<wire::LimitItem> items) {
  loop_.checkThisThread();
  if (items.empty()) return;
  const std::optional<std::uint64_t> caps = peers_.peerCapabilities(owner);
  if (!caps || !(*caps & wire::kCapLimiter)) return;
  for (auto& item : items) {
    item.op = wire::LimitOp::Refund;
    item.blocking = false;
  }
  counters_.refunds_sent += items.size();
  for (std::size_t begin = 0; begin < items.size(); begin += wire::kMaxLimitItemsPerCall) {
    const std::size_t end = std::min(items.size(), begin + wire::kMaxLimitItemsPerCall);
    queue(owner, wire::LimitCall{next_refund_id_++,
                                 std::vector<wire::LimitItem>(items.begin() + begin, items.begin() + end)});
  }
}

void LimitService::queue(const std::string& owner, wire::LimitCall call) {
  auto it = outgoing_.find(owner);
  if (it != outgoing_.end() && (it->second.calls.size() + 1 > wire::kMaxLimitCalls ||
                                it->second.items + call.items.size() > wire::kMaxLimitItemsPerFrame)) {
    // The frame for this turn is full: send it now and start the next. Sending may
    // close the link and so call onPeerDown(), which changes outgoing_: nothing from
    // before the send is used after it.
    Outgoing full = std::move(it->second);
    outgoing_.erase(it);
    ++counters_.frames_sent;
    if (!peers_.sendToPeer(owner, wire::LimitRequest{std::move(full.calls)})) {
      // Every pending call to the owner, this one included, has failed: do not send it.
      onPeerDown(owner);
      return;
    }
  }
  Outgoing& out = outgoing_[owner];
  out.items += call.items.size();
  out.calls.push_back(std::move(call));
  ++counters_.calls_sent;
  if (!flush_posted_) {
    flush_posted_ = true;
    // Later in this turn, after the rest of the mailbox batch and the frames already
    // read: every call queued meanwhile joins the frame, and nothing waits a turn.
    flush_timer_ = loop_.soon([this] { flush(); });
  }
}

void LimitService::flush() {
  flush_posted_ = false;
  auto outgoing = std::move(outgoing_);
  outgoing_.clear();
  for (auto& [owner, out] : outgoing) {
    if (out.calls.empty()) continue;
    ++counters_.frames_sent;
    if (!peers_.sendToPeer(owner, wire::LimitRequest{std::move(out.calls)})) onPeerDown(owner);
  }
}

void LimitService::finish(std::uint64_t id, CallResult result) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Done done = std::move(it->second.done);
  pending_.erase(it);
  if (done) done(std::move(result));
}

void LimitService::armDeadline() {
  while (!deadlines_.empty() && !pending_.count(deadlines_.front().second)) deadlines_.pop_front();
  if (deadlines_.empty()) {
    deadline_timer_.cancel();
    deadline_armed_for_ = {};
    return;
  }
  const Clock::time_point first = deadlines_.front().first;
  if (deadline_armed_for_ == first) return;
  deadline_armed_for_ = first;
  deadline_timer_ = loop_.after(ceilMillis(first - Clock::now()), [this] { onDeadline(); });
}

void LimitService::onDeadline() {
  deadline_armed_for_ = {};
  const Clock::time_point now = Clock::now();
  // Deadlines are nearly in order; one out of order (a shorter deadline queued later)
  // waits at most until the one before it.
  while (!deadlines_.empty() && deadlines_.front().first <= now) {
    const std::uint64_t id = deadlines_.front().second;
    deadlines_.pop_front();
    auto it = pending_.find(id);
    if (it == pending_.end()) continue;
    Pending p = std::move(it->second);
    pending_.erase(it);
    Done done = std::move(p.done);
    p.done = nullptr;
    expired_.emplace(id, std::move(p));
    expired_order_.push_back(id);
    while (expired_order_.size() > kExpiredRemembered) {
      expired_.erase(expired_order_.front());
      expired_order_.pop_front();
    }
    if (done) done(CallResult{FallbackReason::Timeout, {}});
  }
  armDeadline();
}

void LimitService::onPeerDown(const std::string& peer) {
  loop_.checkThisThread();
  outgoing_.erase(peer);
  awaiting_link_.erase(peer);
  std::vector<std::uint64_t> ids;
  for (const auto& [id, p] : pending_) {
    if (p.owner == peer) ids.push_back(id);
  }
  for (std::uint64_t id : ids) finish(id, CallResult{FallbackReason::Unreachable, {}});
  std::erase_if(expired_, [&](const auto& entry) { return entry.second.owner == peer; });
  // Its calls waiting here have no one to answer to; its hand-off will not come.
  std::erase_if(parked_, [&](const Parked& p) { return p.from == peer; });
  handoff_due_.erase(peer);
  if (unsettled_.erase(peer) > 0) {
    publishUnsettled();
    releaseParked();
    armSettle();
  }
}

// Evaluates one call on this node's store, as its owner, and remembers what it charged
// for replication.
wire::LimitAnswer LimitService::serve(const wire::LimitCall& call, state::Nanos now) {
  thread_local std::vector<ItemSpec> specs;
  specs.clear();
  for (const auto& item : call.items) specs.push_back(fromWire(item));
  wire::LimitAnswer answer;
  answer.request_id = call.request_id;
  answer.outcomes.resize(specs.size());
  evaluateCall(store_, specs, now, answer.outcomes);
  for (std::size_t i = 0; i < call.items.size(); ++i) {
    const auto result = answer.outcomes[i].result;
    if (result == wire::ItemResult::NotEvaluated || result == wire::ItemResult::Denied) continue;
    const wire::LimitItem& item = call.items[i];
    remember(item.key, item.placement, specs[i].algorithm, specs[i].limit, true);
  }
  ++counters_.calls_served;
  return answer;
}

void LimitService::onRequest(const std::string& peer, const wire::LimitRequest& request) {
  loop_.checkThisThread();
  wire::LimitReply reply;
  reply.answers.reserve(request.calls.size());
  const state::Nanos now = now_();
  for (const wire::LimitCall& call : request.calls) {
    if (const auto owner = forwardTo(call)) {
      forward(peer, *owner, call);
      continue;
    }
    if (mustSettle(call)) {
      // Answered in a reply of its own once settled; replies are matched by id.
      ++counters_.calls_held;
      parked_.push_back(Parked{peer, call, nullptr});
      continue;
    }
    reply.answers.push_back(serve(call, now));
  }
  // A request within the caps gives a reply within the caps (one outcome per item).
  if (!reply.answers.empty()) peers_.sendToPeer(peer, reply);
}

// ---- Forwarding ----------------------------------------------------------------------

std::optional<std::string> LimitService::forwardTo(const wire::LimitCall& call) const {
  if (!view_ || (call.request_id & wire::kForwardedCallBit) || call.items.empty()) return std::nullopt;
  std::optional<std::string> target;
  for (const wire::LimitItem& item : call.items) {
    const auto owner = placement::ownerOf(placement::hashKey(item.placement, item.key),
                                          view_->candidates(placement::regionScoped(item.placement)));
    if (!owner || *owner == replication_.self || (target && *target != *owner)) return std::nullopt;
    target = owner;
  }
  const std::optional<std::uint64_t> caps = peers_.peerCapabilities(*target);
  if (!caps || !(*caps & wire::kCapLimiter)) return std::nullopt;
  return target;
}

void LimitService::forward(const std::string& from, const std::string& owner, const wire::LimitCall& call) {
  ++counters_.calls_forwarded;
  if (call.request_id & kRefundIdBit) {
    // No one waits for a refund's answer: pass the items on.
    queue(owner, wire::LimitCall{next_refund_id_++ | wire::kForwardedCallBit, call.items});
    return;
  }
  const std::uint64_t id = call.request_id;
  // When the owner cannot be asked after all, this node answers itself, as it did
  // before forwarding. Past the deadline the requester has decided without an answer
  // (it waits as long): it gets a refusal, which charges nothing, and what the owner
  // charged late is refunded to the owner.
  this->call(
      owner, call.items, Clock::now() + replication_.check_timeout,
      [this, from, id, items = call.items](CallResult result) {
        wire::LimitAnswer answer;
        if (result.failed == FallbackReason::Timeout || result.failed == FallbackReason::Closed) {
          answer.request_id = id;
          answer.status = wire::CallStatus::Refused;
        } else if (result.failed) {
          answer = serve(wire::LimitCall{id, items}, now_());
        } else {
          answer.request_id = id;
          answer.outcomes = std::move(result.outcomes);
        }
        wire::LimitReply reply;
        reply.answers.push_back(std::move(answer));
        peers_.sendToPeer(from, reply);
      },
      /*forwarded=*/true);
}

// ---- Settling ------------------------------------------------------------------------

bool LimitService::mustSettle(const wire::LimitCall& call) const {
  if (unsettled_.empty() || !view_) return false;
  for (const wire::LimitItem& item : call.items) {
    if (item.op == wire::LimitOp::Refund) continue;
    const auto before = placement::heldBefore(placement::hashKey(item.placement, item.key), *view_,
                                              placement::regionScoped(item.placement));
    if (before && unsettled_.count(*before) && !store_.find(item.key)) return true;
  }
  return false;
}

// Answers the parked calls that need not wait any longer (all of them with `all`).
void LimitService::releaseParked(bool all) {
  if (parked_.empty()) return;
  std::vector<Parked> ready;
  std::deque<Parked> still;
  for (auto& p : parked_) {
    if (all || !mustSettle(p.call)) {
      ready.push_back(std::move(p));
    } else {
      still.push_back(std::move(p));
    }
  }
  parked_ = std::move(still);
  if (ready.empty()) return;
  const state::Nanos now = now_();
  std::map<std::string, wire::LimitReply> replies;
  std::vector<std::pair<Done, CallResult>> own;
  for (auto& p : ready) {
    wire::LimitAnswer answer = serve(p.call, now);
    if (p.from.empty()) {
      own.emplace_back(std::move(p.done), CallResult{std::nullopt, std::move(answer.outcomes)});
    } else {
      replies[p.from].answers.push_back(std::move(answer));
    }
  }
  for (auto& [peer, reply] : replies) {
    // kMaxLimitCalls per frame, as the requests came.
    for (std::size_t begin = 0; begin < reply.answers.size(); begin += wire::kMaxLimitCalls) {
      const std::size_t end = std::min(reply.answers.size(), begin + wire::kMaxLimitCalls);
      wire::LimitReply part;
      part.answers.assign(std::make_move_iterator(reply.answers.begin() + begin),
                          std::make_move_iterator(reply.answers.begin() + end));
      peers_.sendToPeer(peer, part);
    }
  }
  // Last: a callback may call back into this service.
  for (auto& [done, result] : own) {
    if (done) done(std::move(result));
  }
}

void LimitService::armSettle() {
  if (unsettled_.empty()) {
    settle_timer_.cancel();
    return;
  }
  Clock::time_point first = Clock::time_point::max();
  for (const auto& [peer, until] : unsettled_) first = std::min(first, until);
  settle_timer_ = loop_.after(ceilMillis(first - Clock::now()), [this] { onSettleTimer(); });
}

void LimitService::onSettleTimer() {
  const Clock::time_point now = Clock::now();
  const std::size_t before = unsettled_.size();
  std::erase_if(unsettled_, [&](const auto& entry) { return entry.second <= now; });
  if (unsettled_.size() != before) publishUnsettled();
  releaseParked(unsettled_.empty());
  armSettle();
}

void LimitService::publishUnsettled() {
  if (!replication_.on_unsettled) return;
  auto peers = std::make_shared<std::vector<std::string>>();
  for (const auto& [peer, until] : unsettled_) peers->push_back(peer);
  replication_.on_unsettled(std::move(peers));
}

void LimitService::sendHandoffDone() {
  for (const std::string& peer : handoff_due_) {
    const std::optional<std::uint64_t> caps = peers_.peerCapabilities(peer);
    if (!caps || !(*caps & wire::kCapHandoffDone)) continue;
    peers_.sendToPeer(peer, wire::BucketSync{wire::SyncReason::Handoff, ++sync_sequence_, true, {}});
  }
  handoff_due_.clear();
}

void LimitService::onReply(const std::string& peer, const wire::LimitReply& reply) {
  loop_.checkThisThread();
  for (const wire::LimitAnswer& answer : reply.answers) {
    if (answer.request_id & kRefundIdBit) continue;  // a refund's answer: nothing to do
    auto it = pending_.find(answer.request_id);
    if (it != pending_.end() && it->second.owner == peer) {
      if (answer.status != wire::CallStatus::Ok || answer.outcomes.size() != it->second.items.size()) {
        finish(answer.request_id, CallResult{FallbackReason::Refused, {}});
      } else {
        finish(answer.request_id, CallResult{std::nullopt, answer.outcomes});
      }
      continue;
    }
    auto late = expired_.find(answer.request_id);
    if (late != expired_.end() && late->second.owner == peer) {
      // We decided without this answer: give back what it charged.
      ++counters_.late_replies;
      std::vector<wire::LimitItem> back;
      if (answer.status == wire::CallStatus::Ok && answer.outcomes.size() == late->second.items.size()) {
        for (std::size_t i = 0; i < answer.outcomes.size(); ++i) {
          const wire::LimitOutcome& outcome = answer.outcomes[i];
          if (outcome.result == wire::ItemResult::Charged) back.push_back(late->second.items[i]);
          if (outcome.result == wire::ItemResult::Leased && outcome.remaining > 0) {
            // Tokens granted for a lease no one will hold.
            back.push_back(late->second.items[i]);
            back.back().cost = outcome.remaining;
          }
        }
      }
      expired_.erase(late);
      refund(peer, std::move(back));
      continue;
    }
    ++counters_.unmatched_replies;
  }
}

// ---- Replication and hand-off ------------------------------------------------------

void LimitService::remember(const std::string& key, std::string_view placement, state::Algorithm algorithm,
                            const state::Limit& limit, bool changed) {
  auto [it, fresh] = keys_.try_emplace(key);
  KeyMeta& meta = it->second;
  if (fresh || meta.placement != placement) meta.placement.assign(placement);
  meta.algorithm = algorithm;
  meta.limit = limit;
  if (changed) changed_.insert(key);
}

std::vector<placement::NodeId> LimitService::placementOf(const std::string& key, const KeyMeta& meta,
                                                         const placement::View& view) const {
  return placement::placement(placement::hashKey(meta.placement, key),
                              view.candidates(placement::regionScoped(meta.placement)),
                              std::max<std::size_t>(1, replication_.factor));
}

void LimitService::takeChanges() {
  if (!replication_.changes) return;
  for (KeyChange& change : replication_.changes->take()) {
    remember(change.key, change.placement, change.algorithm, change.limit, true);
  }
}

void LimitService::onView(std::shared_ptr<const placement::View> view) {
  loop_.checkThisThread();
  // The keys charged here since the last round are known before the walk, so a key
  // charged just before ownership moved is handed off too.
  takeChanges();
  // A walk under way restarts towards the newest view from the view it started from:
  // a key it already handed off is handed off again only if it moved again.
  if (!walking_) walk_from_ = view_;
  view_ = std::move(view);
  releaseParked();  // a call may have a new owner, or this node no longer owns its key
  if (!walk_from_ || keys_.empty()) {
    walking_ = false;
    restarted_.clear();
    sendHandoffDone();
    return;
  }
  walking_ = true;
  walk_cursor_.reset();
  walkStep();
}

// Both sides of settling on a view change.
//
// As the old owner: every member new in the view gets this node's marker when the walk
// ends (every member, when this node itself just became a candidate).
//
// As the new owner: a peer linked anew may have keys to hand here, and so may every
// member, linked or still pending, while this node has been a candidate for less than
// settle_timeout (it has just joined or come back). Each such peer's marker is awaited,
// for settle_timeout at most; one already received since this node became a candidate
// is not awaited again, and a peer gone from the view is no longer awaited.
void LimitService::noteNewcomers(const placement::View* before, const placement::View& after) {
  const auto contains = [](std::span<const placement::NodeId> ids, const std::string& id) {
    return std::binary_search(ids.begin(), ids.end(), id);
  };
  const auto had = [&](const std::string& id) { return before && contains(before->candidates(false), id); };
  const auto now_in = after.candidates(false);
  const bool self_in = contains(now_in, replication_.self);
  const bool self_new = self_in && !had(replication_.self);
  const Clock::time_point now = Clock::now();
  bool changed = false;
  if (self_new) {
    self_since_ = now;
    settled_.clear();
  } else if (!self_in) {
    self_since_.reset();
    settled_.clear();
  }
  changed |= std::erase_if(unsettled_, [&](const auto& entry) {
               return !self_in || (!contains(now_in, entry.first) && !contains(after.pending, entry.first));
             }) > 0;
  // A peer that left the candidates is a newcomer again when it comes back.
  std::erase_if(settled_, [&](const std::string& id) { return had(id) && !contains(now_in, id); });
  const bool window = self_since_ && now < *self_since_ + settle_timeout_;
  const Clock::time_point until = window ? *self_since_ + settle_timeout_
                                         : now + settle_timeout_;
  for (const std::string& id : now_in) {
    if (id == replication_.self) continue;
    const bool newcomer = self_new || !had(id);
    if (newcomer) handoff_due_.insert(id);
    if (!self_in || settled_.count(id) || !(newcomer || window)) continue;
    const std::optional<std::uint64_t> caps = peers_.peerCapabilities(id);
    if (!caps || !(*caps & wire::kCapHandoffDone) || !(*caps & wire::kCapBucketSync)) {
      changed |= unsettled_.erase(id) > 0;  // an older peer sends no marker
      continue;
    }
    changed |= unsettled_.emplace(id, until).second;
  }
  if (window) {
    for (const std::string& id : after.pending) {
      if (!settled_.count(id)) changed |= unsettled_.emplace(id, until).second;
    }
  }
  if (changed) {
    publishUnsettled();
    armSettle();
  }
}

void LimitService::beforeView(const placement::View& view) {
  loop_.checkThisThread();
  noteNewcomers(view_.get(), view);
}

void LimitService::onPeerRestarted(const std::string& peer) {
  loop_.checkThisThread();
  takeChanges();
  handoff_due_.insert(peer);
  if (!view_ || keys_.empty()) {
    if (!walking_) sendHandoffDone();
    return;
  }
  restarted_.insert(peer);
  if (!walking_) walk_from_ = view_;
  walking_ = true;
  walk_cursor_.reset();
  walkStep();
}

void LimitService::walkStep(bool bounded) {
  if (!walking_ || !view_ || !walk_from_) {
    walking_ = false;
    return;
  }
  const state::Nanos now = now_();
  auto it = walk_cursor_ ? keys_.upper_bound(*walk_cursor_) : keys_.begin();
  std::size_t visited = 0;
  for (; it != keys_.end() && visited < kWalkKeysPerStep; ++it, ++visited) {
    const auto before = placementOf(it->first, it->second, *walk_from_);
    const auto after = placementOf(it->first, it->second, *view_);
    const bool owned_before = !before.empty() && before.front() == replication_.self;
    const bool owned_after = !after.empty() && after.front() == replication_.self;
    const bool to_restarted = !after.empty() && restarted_.count(after.front()) > 0;
    if ((owned_before && !owned_after && !after.empty()) || to_restarted) {
      if (walk_moved_ == 0 && replication_.emit) replication_.emit("rebalancing_started", 0);
      stage(after.front(), it->first, it->second, wire::SyncReason::Handoff, now);
      ++walk_moved_;
      ++counters_.buckets_handed_off;
    } else if (owned_after && before != after) {
      changed_.insert(it->first);  // new replicas get it at the next round
    }
  }
  sendStaged();
  if (it != keys_.end()) {
    walk_cursor_ = std::prev(it)->first;
    // The next turn of the loop goes on: mail and heartbeats run in between.
    if (bounded) flush_walk_ = loop_.after(std::chrono::milliseconds(0), [this] { walkStep(); });
    return;
  }
  walking_ = false;
  walk_cursor_.reset();
  walk_from_.reset();
  restarted_.clear();
  sendHandoffDone();
  if (walk_moved_ > 0) {
    ++counters_.rebalances;
    if (replication_.emit) replication_.emit("rebalancing_completed", walk_moved_);
  }
  walk_moved_ = 0;
}

void LimitService::finishWalk() {
  loop_.checkThisThread();
  while (walking_) walkStep(/*bounded=*/false);
}

void LimitService::onReplicationTick() {
  takeChanges();
  const state::Nanos now = now_();
  if (view_ && replication_.factor > 1) {
    for (const std::string& key : changed_) {
      auto it = keys_.find(key);
      if (it == keys_.end()) continue;
      const auto members = placementOf(key, it->second, *view_);
      // Only the owner replicates: a node that charged a key without owning it (a
      // fallback, a stale view) would spread a partial count.
      if (members.empty() || members.front() != replication_.self) continue;
      for (std::size_t i = 1; i < members.size(); ++i) {
        stage(members[i], key, it->second, wire::SyncReason::Replication, now);
        ++counters_.buckets_replicated;
      }
    }
    sendStaged();
  }
  changed_.clear();
  // Forget keys the store has dropped (refilled and expired): nothing left to move.
  auto it = prune_cursor_ ? keys_.upper_bound(*prune_cursor_) : keys_.begin();
  for (std::size_t n = 0; it != keys_.end() && n < kPruneKeysPerTick; ++n) {
    if (!store_.find(it->first)) {
      it = keys_.erase(it);
      continue;
    }
    if (view_) {
      const auto members = placementOf(it->first, it->second, *view_);
      if (!members.empty() && members.front() == replication_.self) ++sweep_owned_;
    }
    ++it;
  }
  if (it == keys_.end()) {
    keys_owned_ = sweep_owned_;
    sweep_owned_ = 0;
  }
  // upper_bound resumes after the cursor: the cursor is the key before `it`.
  if (it == keys_.end() || it == keys_.begin()) {
    prune_cursor_.reset();
  } else {
    prune_cursor_ = std::prev(it)->first;
  }
}

void LimitService::stage(const std::string& peer, const std::string& key, const KeyMeta& meta,
                         wire::SyncReason reason, state::Nanos now) {
  if (peer == replication_.self) return;
  const std::optional<std::uint64_t> caps = peers_.peerCapabilities(peer);
  if (!caps || !(*caps & wire::kCapBucketSync)) return;
  const std::optional<state::HeldBucket> held = store_.find(key);
  if (!held) return;  // full again: the receiver's copy refills as well
  const state::PortableBucket portable = state::toPortable(held->algorithm, held->state, now);
  wire::SyncedBucket bucket;
  bucket.key = key;
  bucket.placement = meta.placement;
  bucket.algorithm = static_cast<std::uint8_t>(held->algorithm);
  bucket.limit = meta.limit.limit;
  bucket.period_ns = meta.limit.period_ns;
  bucket.burst = meta.limit.burst;
  bucket.level = portable.level;
  bucket.count = portable.count;
  bucket.stamp_age_ns = portable.stamp_age_ns;
  bucket.initialised = portable.initialised;
  auto& batch = staged_[static_cast<std::size_t>(reason)][peer];
  batch.push_back(std::move(bucket));
  if (batch.size() >= wire::kMaxSyncBuckets) {
    // A hand-off ends with its marker (sendHandoffDone), not with a frame of the walk.
    wire::BucketSync sync{reason, ++sync_sequence_, reason != wire::SyncReason::Handoff, std::move(batch)};
    batch.clear();
    peers_.sendToPeer(peer, sync);
  }
}

void LimitService::sendStaged() {
  for (std::size_t r = 0; r < 2; ++r) {
    for (auto& [peer, batch] : staged_[r]) {
      if (batch.empty()) continue;
      const auto reason = static_cast<wire::SyncReason>(r);
      wire::BucketSync sync{reason, ++sync_sequence_, reason != wire::SyncReason::Handoff, std::move(batch)};
      batch.clear();
      peers_.sendToPeer(peer, sync);
    }
    staged_[r].clear();
  }
}

void LimitService::onSync(const std::string& peer, const wire::BucketSync& sync) {
  loop_.checkThisThread();
  const state::Nanos now = now_();
  for (const wire::SyncedBucket& bucket : sync.buckets) {
    const state::Algorithm algorithm = static_cast<state::Algorithm>(bucket.algorithm);
    const state::Limit limit{bucket.limit, bucket.period_ns, bucket.burst};
    state::PortableBucket portable;
    portable.algorithm = algorithm;
    portable.level = bucket.level;
    portable.count = bucket.count;
    portable.stamp_age_ns = bucket.stamp_age_ns;
    portable.initialised = bucket.initialised;
    store_.merge(bucket.key, algorithm, limit, state::fromPortable(portable, limit, now), now);
    // A hand-off makes this node the owner: it replicates onward at its next round.
    remember(bucket.key, bucket.placement, algorithm, limit, sync.reason == wire::SyncReason::Handoff);
    ++counters_.buckets_received;
  }
  // The peer's marker: its hand-off towards this node is complete.
  if (sync.reason == wire::SyncReason::Handoff && sync.last) {
    settled_.insert(peer);
    if (unsettled_.erase(peer) > 0) {
      publishUnsettled();
      armSettle();
    }
  }
  releaseParked();
}

}  // namespace zetian::cluster::limits
