#include "cluster/limits/service.h"

#include <algorithm>
#include <array>

namespace zetian::cluster::limits {

namespace {

// Late answers are refunded if they come within this many expired calls; older ones
// are forgotten (their charges refill with time).
constexpr std::size_t kExpiredRemembered = 4096;

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
                           std::function<state::Nanos()> now)
    : loop_(loop), peers_(peers), store_(store), now_(std::move(now)) {}

LimitService::~LimitService() {
  loop_.checkThisThread();
  deadline_timer_.cancel();
  flush_timer_.cancel();
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

ServiceCounters LimitService::counters() const {
  loop_.checkThisThread();
  return counters_;
}

void LimitService::call(const std::string& owner, std::vector<wire::LimitItem> items, Clock::time_point deadline,
                        Done done) {
  loop_.checkThisThread();
  const std::optional<std::uint64_t> caps = peers_.peerCapabilities(owner);
  if (!caps) {
    done(CallResult{FallbackReason::Unreachable, {}});
    return;
  }
  if (!(*caps & wire::kCapLimiter)) {
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
  const std::uint64_t id = next_id_++;
  wire::LimitCall wire_call{id, items};
  pending_.emplace(id, Pending{owner, std::move(items), deadline, std::move(done)});
  deadlines_.emplace_back(deadline, id);
  armDeadline();
  queue(owner, std::move(wire_call));
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
  Outgoing& out = outgoing_[owner];
  if (out.calls.size() + 1 > wire::kMaxLimitCalls || out.items + call.items.size() > wire::kMaxLimitItemsPerFrame) {
    // The frame for this turn is full: send it now and start the next.
    Outgoing full = std::move(out);
    out = Outgoing{};
    ++counters_.frames_sent;
    if (!peers_.sendToPeer(owner, wire::LimitRequest{std::move(full.calls)})) onPeerDown(owner);
  }
  out.items += call.items.size();
  outgoing_[owner].calls.push_back(std::move(call));
  ++counters_.calls_sent;
  if (!flush_posted_) {
    flush_posted_ = true;
    // After the rest of this turn's mailbox: every call posted meanwhile joins the frame.
    flush_timer_ = loop_.after(std::chrono::milliseconds(0), [this] { flush(); });
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
  std::vector<std::uint64_t> ids;
  for (const auto& [id, p] : pending_) {
    if (p.owner == peer) ids.push_back(id);
  }
  for (std::uint64_t id : ids) finish(id, CallResult{FallbackReason::Unreachable, {}});
  std::erase_if(expired_, [&](const auto& entry) { return entry.second.owner == peer; });
}

void LimitService::onRequest(const std::string& peer, const wire::LimitRequest& request) {
  loop_.checkThisThread();
  wire::LimitReply reply;
  reply.answers.reserve(request.calls.size());
  std::vector<ItemSpec> specs;
  const state::Nanos now = now_();
  for (const wire::LimitCall& call : request.calls) {
    specs.clear();
    for (const auto& item : call.items) specs.push_back(fromWire(item));
    wire::LimitAnswer answer;
    answer.request_id = call.request_id;
    answer.outcomes.resize(specs.size());
    evaluateCall(store_, specs, now, answer.outcomes);
    reply.answers.push_back(std::move(answer));
    ++counters_.calls_served;
  }
  // A request within the caps gives a reply within the caps (one outcome per item).
  peers_.sendToPeer(peer, reply);
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
          if (answer.outcomes[i].result == wire::ItemResult::Charged) back.push_back(late->second.items[i]);
        }
      }
      expired_.erase(late);
      refund(peer, std::move(back));
      continue;
    }
    ++counters_.unmatched_replies;
  }
}

}  // namespace zetian::cluster::limits
