// What the checks know of the cluster, kept apart from the checks themselves
// (check.cpp): the placement view the cluster thread publishes, the wait of a node that
// is still forming, the fallback episodes' log lines, and fast mode's lease rounds.
#include <algorithm>
#include <map>
#include <utility>

#include "cluster/limits/lease.h"
#include "conf/text.h"
#include "plugin/check_support.h"
#include "plugin/engine.h"

namespace zetian::plugin {

using cluster::limits::CallResult;
using cluster::limits::FallbackReason;

void Engine::setView(std::shared_ptr<const cluster::placement::View> view) {
  std::shared_ptr<const cluster::placement::View> previous;
  {
    std::lock_guard lock(view_mutex_);
    previous = std::exchange(view_, view);
    view_forming_.store(view && view->forming, std::memory_order_release);
  }
  if (!view || !view->forming) {
    view_formed_.notify_all();
    runFormingWaiters();
  }
  // Leases from a member that left the view end: dropped, not returned (it is gone, or
  // its keys have new owners that never granted them; docs/limiter.md, "Fast mode").
  if (previous && view) {
    for (const auto& id : previous->members) {
      if (id != view->self && !std::binary_search(view->members.begin(), view->members.end(), id)) {
        leases_.dropOwner(id, cluster::limits::OwnerFate::Failed);
      }
    }
  }
  // A fallback episode whose owner left the view is over: its keys have another owner,
  // whose answers are not that owner's, so no answer would ever close it.
  if (!view || episodes_open_.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard lock(episodes_mutex_);
  for (auto it = episodes_.begin(); it != episodes_.end();) {
    const bool gone = !it->first.empty() &&
                      std::find(view->members.begin(), view->members.end(), it->first) == view->members.end();
    if (!gone) {
      ++it;
      continue;
    }
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                          it->second.since);
    logger_->log(conf::LogLevel::Info, "cluster_limits_recovered owner=" + logValue(it->first) +
                                           " fallbacks=" + std::to_string(it->second.fallbacks) +
                                           " duration_ms=" + std::to_string(ms.count()) + " cause=owner_left_view");
    it = episodes_.erase(it);
  }
  episodes_open_.store(episodes_.size(), std::memory_order_relaxed);
}

std::shared_ptr<const cluster::placement::View> Engine::view() const {
  std::lock_guard lock(view_mutex_);
  return view_;
}

// ---- A node that is forming ------------------------------------------------------------
//
// A node that has just started with members to join has no view yet: no owner to ask,
// no quorum. Deciding by fail_mode at once would decide with a bucket that knows
// nothing of the cluster's count (fail_mode local admits the whole limit again), while
// the links are usually up within milliseconds. So a check with cluster-scope rules
// waits for the view, at most check_timeout, then goes on as usual (by fail_mode if the
// view is still not there). Once the view has formed, or after join_timeout, nothing
// waits.

bool Engine::waitsForView(conf::Stage stage) const {
  // Every check asks: a flag, not the view's mutex. A check that sees it set waits
  // under the mutex, which tells the truth.
  if (!config_.cluster.enabled || !view_forming_.load(std::memory_order_acquire)) return false;
  const auto snap = policy();
  for (std::size_t index : snap->by_stage[std::size_t(stage)]) {
    const conf::Rule& rule = snap->rules[index].rule;
    if (rule.store != conf::Store::Redis && rule.scope != conf::Scope::Node) return true;
  }
  return false;
}

void Engine::runFormingWaiters() {
  forming_timer_.cancel();
  auto waiters = std::move(forming_waiters_);
  forming_waiters_.clear();
  for (auto& resume : waiters) resume();
}

// Fallback episodes: one log line when a node starts deciding without an owner (per
// owner and reason), one when the owner answers again, however many checks between.
void Engine::noteFallback(const std::string& owner, FallbackReason reason, conf::FailMode mode,
                          const CompiledRule& rule) {
  std::lock_guard lock(episodes_mutex_);
  auto [it, fresh] = episodes_.try_emplace(owner);
  Episode& e = it->second;
  if (!fresh && e.reason == reason) {
    ++e.fallbacks;
    return;
  }
  e.reason = reason;
  e.fallbacks = 1;
  e.since = std::chrono::steady_clock::now();
  episodes_open_.store(episodes_.size(), std::memory_order_relaxed);
  logger_->log(conf::LogLevel::Warn,
               "cluster_limits_fallback owner=" + logValue(owner.empty() ? "-" : owner) +
                   " reason=" + std::string(cluster::limits::nameOf(reason)) +
                   " fail_mode=" + std::string(conf::failModeName(mode)) + " rule=" + logValue(rule.rule.name) +
                   (owner == kRedisOwner
                        ? " action=\"deciding without Redis until it answers again; GET /health shows the "
                          "connection's last error\""
                        : " action=\"deciding without the key owner until it answers again; check the cluster "
                          "links\""));
}

void Engine::noteAnswered(const std::string& owner) {
  if (episodes_open_.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard lock(episodes_mutex_);
  auto it = episodes_.find(owner);
  if (it == episodes_.end()) return;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                        it->second.since);
  logger_->log(conf::LogLevel::Info, "cluster_limits_recovered owner=" + logValue(owner.empty() ? "-" : owner) +
                                         " fallbacks=" + std::to_string(it->second.fallbacks) +
                                         " duration_ms=" + std::to_string(ms.count()));
  episodes_.erase(it);
  episodes_open_.store(episodes_.size(), std::memory_order_relaxed);
}

void Engine::leaseRound() {
  cluster::limits::LimitService* service = node_ ? node_->limits() : nullptr;
  if (!service) return;
  const auto snap = policy();
  const state::Nanos t = now();
  cluster::limits::LeaseDue due = leases_.due(t, sync_interval_ns_);
  // The rule of a store key (rule name, '\0', value) in the current policy; none when
  // the rule is gone (its tokens then refill at the owner).
  auto ruleOf = [&](const std::string& key) -> const CompiledRule* {
    const std::size_t nul = key.find('\0');
    return nul == std::string::npos ? nullptr : snap->find(key.substr(0, nul));
  };
  auto itemFor = [](const CompiledRule& c, const std::string& key, wire::LimitOp op, std::uint64_t cost) {
    wire::LimitItem item;
    item.op = op;
    item.key = key;
    item.algorithm = static_cast<std::uint8_t>(c.rule.algorithm);
    item.limit = c.limit.limit;
    item.period_ns = c.limit.period_ns;
    item.burst = c.limit.burst;
    item.cost = cost;
    return item;
  };
  std::map<std::string, std::vector<wire::LimitItem>> returns;
  for (const auto& r : due.returns) {
    if (const CompiledRule* c = ruleOf(r.key)) {
      returns[r.owner].push_back(itemFor(*c, r.key, wire::LimitOp::Refund, r.tokens));
    }
  }
  for (auto& [owner, items] : returns) service->refund(owner, std::move(items));
  const auto view = this->view();
  for (const auto& top : due.top_ups) {
    const CompiledRule* c = ruleOf(top.key);
    if (!c || !view || !view->grantsLeases(top.owner)) continue;
    wire::LimitItem item = itemFor(*c, top.key, wire::LimitOp::Lease, top.want);
    const std::uint64_t max_lease =
        cluster::limits::maxLease(cluster::limits::leaseCapacity(c->rule.algorithm, c->limit),
                                  view->candidates(c->rule.scope == conf::Scope::Region).size());
    service->call(top.owner, {std::move(item)}, std::chrono::steady_clock::now() + check_timeout_,
                  [this, key = top.key, owner = top.owner, max_lease](CallResult result) {
                    const std::uint64_t granted =
                        !result.failed && !result.outcomes.empty() &&
                                result.outcomes.front().result == wire::ItemResult::Leased
                            ? result.outcomes.front().remaining
                            : 0;
                    leases_.grant(key, owner, granted, max_lease, now());
                  });
  }
}

}  // namespace zetian::plugin
