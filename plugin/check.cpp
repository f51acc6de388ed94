// Engine::check(): one SMTP stage against the rules, locally and across the cluster.
//
// A check runs in three steps:
//   1. prepare: the stage's rules that apply, their store keys, and for each the node
//      that decides it: this node (scope "node", or a key this node owns) or the key's
//      owner. Items are grouped by owner; group 0 is this node's own store.
//   2. decide: group 0 on the local store; every other group is one call to its owner
//      (limits/service.h), all sent from one closure on the cluster thread so calls to
//      the same owner share a frame. A group whose owner cannot answer falls back by
//      [ratelimit] fail_mode.
//   3. finish: the first blocking denial in rule order decides and everything charged
//      anywhere is given back (a refused message costs nothing, on every owner); tag
//      and quarantine denials before it leave their marks; logs and counters.
// Each group is evaluated with the same function wherever it runs (evaluateCall), so a
// stage whose rules are all local behaves exactly as it always has. Groups evaluated on
// different owners run at the same time: a rule after the deciding denial may be charged
// for a moment before it is given back.
//
// What the checks know of the cluster (the view, a forming node's wait, fallback
// episodes, lease rounds) is in cluster_view.cpp.
#include <algorithm>
#include <utility>
#include <condition_variable>
#include <mutex>

#include "cluster/limits/evaluate.h"
#include "cluster/limits/lease.h"
#include "cluster/placement/hrw.h"
#include "conf/text.h"
#include "plugin/check_support.h"
#include "plugin/engine.h"

namespace zetian::plugin {

using cluster::limits::CallResult;
using cluster::limits::FallbackReason;
using cluster::limits::ItemSpec;

namespace {

const conf::Cidr kLoopback4 = *conf::Cidr::parse("127.0.0.0/8");
const conf::Cidr kLoopback6 = *conf::Cidr::parse("::1/128");

constexpr std::uint64_t kCost = 1;

// How long a synchronous check waits beyond check_timeout for the cluster thread to say
// so itself (it fails every call at its deadline); only a stalled loop needs this.
constexpr auto kLoopSlack = std::chrono::milliseconds(50);

bool blocking(conf::Action action) { return action == conf::Action::Tempfail || action == conf::Action::Reject; }

bool clientKeyed(conf::KeyKind kind) {
  return kind == conf::KeyKind::ClientIp || kind == conf::KeyKind::ClientNet || kind == conf::KeyKind::Helo;
}

}  // namespace

struct Engine::CheckJob {
  struct Item {
    const CompiledRule* rule = nullptr;
    std::size_t begin = 0, end = 0;  // the store key in `keys`
    std::size_t placement_end = 0;   // the placement descriptor follows it, up to here
    std::size_t group = 0;
    wire::LimitOutcome outcome;
    bool fail_open = false;  // denied by this node's bucket under fail_mode open: not enforced
    bool leased = false;     // fast mode: allowed from this node's lease, no group
  };
  // Fast mode: tokens to ask the owner for, riding a call (after its rule items).
  struct LeaseAsk {
    std::size_t item = 0;  // the rule item whose key the lease is for
    std::uint64_t want = 0;
    std::uint64_t max_lease = 0;
    std::uint64_t granted = 0;  // from the answer
  };
  struct Group {
    std::string owner;  // empty: this node's store
    std::vector<std::size_t> items;
    std::optional<FallbackReason> failed;
    bool closed = false;  // fail_mode closed: the stage is refused
    bool answered = false;
    std::vector<LeaseAsk> leases;
    // `owner` is this node, which awaits the key's hand-off: the call waits on the
    // cluster thread until it is settled (cluster/limits/service.h, "Settling").
    bool own = false;
    // The rules of this group keep their count in Redis (store = "redis"); `owner` is
    // kRedisOwner, for the fallback episodes' log lines.
    bool redis = false;
  };

  Session* session = nullptr;
  conf::Stage stage = conf::Stage::Connect;
  zetian_verdict* verdict = nullptr;
  state::Nanos started = 0;
  std::shared_ptr<const PolicySnapshot> snapshot;  // held while calls are out
  const PolicySnapshot* snap = nullptr;
  std::string keys;
  std::vector<Item> items;
  std::vector<Group> groups;

  // Remote groups still out; guarded by mutex (the cluster thread answers them).
  std::mutex mutex;
  std::condition_variable answered;
  std::size_t outstanding = 0;
  bool abandoned = false;  // a synchronous check stopped waiting: late answers are refunded

  std::string_view storeKey(const Item& item) const {
    return std::string_view(keys).substr(item.begin, item.end - item.begin);
  }
  std::string_view placement(const Item& item) const {
    return std::string_view(keys).substr(item.end, item.placement_end - item.end);
  }
  // Ready for the next check, keeping every buffer's capacity (group 0 included), so a
  // thread's local checks allocate nothing once warm.
  void clear() {
    snapshot.reset();
    snap = nullptr;
    keys.clear();
    items.clear();
    if (groups.empty()) groups.emplace_back();
    groups.resize(1);
    groups[0].items.clear();
    groups[0].failed.reset();
    groups[0].closed = false;
    groups[0].answered = false;
    groups[0].leases.clear();
    outstanding = 0;
    abandoned = false;
  }
};

namespace {

ItemSpec specOf(const Engine::CheckJob& job, const Engine::CheckJob::Item& item) {
  ItemSpec spec;
  spec.op = wire::LimitOp::Charge;
  spec.key = job.storeKey(item);
  spec.placement = job.placement(item);
  spec.algorithm = item.rule->rule.algorithm;
  spec.limit = item.rule->limit;
  spec.cost = kCost;
  spec.blocking = blocking(item.rule->rule.action);
  return spec;
}

}  // namespace

void Engine::logDecision(const Session& s, conf::Stage stage, const CompiledRule& c, std::string_view key,
                         const wire::LimitOutcome& outcome, Verdict verdict) {
  const bool denial = verdict != Verdict::Allow;
  const auto level = denial ? conf::LogLevel::Info : conf::LogLevel::Debug;
  if (!logger_->enabled(level)) return;
  std::string line = denial ? "deny" : "decision";
  line += " session=" + std::to_string(s.id) + " stage=" + std::string(conf::stageName(stage)) +
          " rule=" + logValue(c.rule.name) + " key=" + logValue(key) + " verdict=" + verdictName(verdict);
  if (verdict == Verdict::DryRun) line += " dry_run=would_deny";
  line += " remaining=" + std::to_string(outcome.remaining);
  if (denial) {
    line += " retry_after_ms=" + std::to_string(outcome.retry_after_ns / 1'000'000);
    line += " limit=" + std::to_string(c.rule.limit) + "/" + conf::formatDuration(c.rule.period);
  }
  if (s.facts.client_ip) line += " client=" + s.facts.client_ip_text;
  if (s.facts.sender) line += " sender=" + logValue(s.facts.sender->normalized());
  logger_->log(level, line);
}

// Step 1. Returns false when the stage has nothing to check (the verdict stays continue).
bool Engine::prepareCheck(CheckJob& job, Session& s, conf::Stage stage, const char* arg) {
  std::optional<Address> rcpt;
  switch (stage) {
    case conf::Stage::Connect:
    case conf::Stage::Data:
      break;
    case conf::Stage::Helo:
      s.facts.helo = toLowerAscii(arg ? arg : "");
      break;
    case conf::Stage::Mail:
      resetMessage(s);
      s.facts.sender = Address::parse(arg ? arg : "");
      metrics_.messages_total.fetch_add(1, std::memory_order_relaxed);
      break;
    case conf::Stage::Rcpt:
      rcpt = Address::parse(arg ? arg : "");
      break;
  }
  if (stage == conf::Stage::Helo && s.helo_passed) return false;
  const PolicySnapshot& snap = *job.snap;
  const auto& rule_indices = snap.by_stage[std::size_t(stage)];
  if (rule_indices.empty()) {
    if (stage == conf::Stage::Helo) s.helo_passed = true;
    return false;
  }
  if (s.facts.client_ip) {
    for (const auto& cidr : snap.policy.exempt) {
      if (cidr.contains(*s.facts.client_ip)) {
        metrics_.exempt_address_total.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
    }
  }
  if (snap.policy.exempt_authenticated && !s.facts.sasl_user.empty()) {
    metrics_.exempt_authenticated_total.fetch_add(1, std::memory_order_relaxed);
    return false;
  }

  if (job.groups.empty()) job.groups.emplace_back();  // group 0: this node's store
  std::shared_ptr<const cluster::placement::View> view;
  std::shared_ptr<const std::vector<std::string>> unsettled;
  for (std::size_t index : rule_indices) {
    const CompiledRule& c = snap.rules[index];
    if (!appliesToSender(c.rule, s.facts)) continue;
    CheckJob::Item item;
    item.rule = &c;
    item.begin = job.keys.size();
    job.keys += c.key_prefix;
    if (!appendKey(c.rule, s.facts, rcpt ? &*rcpt : nullptr, job.keys)) {
      job.keys.resize(item.begin);
      continue;
    }
    item.end = job.keys.size();
    item.placement_end = item.end;
    if (c.rule.store == conf::Store::Redis) {
      // One group for the stage's Redis rules: one pipelined round trip.
      auto it = std::find_if(job.groups.begin() + 1, job.groups.end(), [](const CheckJob::Group& g) { return g.redis; });
      if (it == job.groups.end()) {
        job.groups.push_back(CheckJob::Group{std::string(kRedisOwner), {}, std::nullopt, false, false, {}, false, true});
        it = job.groups.end() - 1;
      }
      item.group = std::size_t(it - job.groups.begin());
      job.groups[item.group].items.push_back(job.items.size());
      job.items.push_back(item);
      continue;
    }
    if (config_.cluster.enabled && c.rule.scope != conf::Scope::Node) {
      if (!view) {
        std::lock_guard lock(view_mutex_);
        view = view_;
        unsettled = unsettled_;
      }
      // The placement descriptor (placement/view.h) goes right after the store key.
      const bool region = c.rule.scope == conf::Scope::Region;
      const bool by_client =
          snap.policy.affinity == conf::AffinityMethod::SourceIp && clientKeyed(c.rule.key) && s.facts.client_ip;
      if (region) job.keys += 'R';
      if (by_client) job.keys.append("ip:").append(s.facts.client_ip_text);
      item.placement_end = job.keys.size();
      std::string owner;
      std::optional<FallbackReason> failed;
      const auto candidates =
          view ? view->candidates(region) : std::span<const cluster::placement::NodeId>();
      if (!view || !view->quorum || candidates.empty()) {
        failed = FallbackReason::NoQuorum;
      } else {
        noteAnswered("");  // a no-quorum episode ends with the quorum
        const auto hash = cluster::placement::hashKey(job.placement(item), job.storeKey(item));
        owner = *cluster::placement::ownerOf(hash, candidates);
        if (owner == view->self) {
          // Owned here. While a hand-off to this node is awaited, a key it holds no
          // state for, whose previous owner is that peer, is decided once settled.
          bool settle = false;
          if (unsettled && !unsettled->empty()) {
            const auto before = cluster::placement::heldBefore(hash, *view, region);
            settle = before && std::binary_search(unsettled->begin(), unsettled->end(), *before) &&
                     !store_->find(job.storeKey(item));
          }
          if (!settle) owner.clear();
        }
      }
      const bool own = !owner.empty() && owner == view->self;
      std::uint64_t lease_want = 0, max_lease = 0;
      if (!owner.empty() && !own && c.rule.consistency == conf::Consistency::Fast && view->grantsLeases(owner)) {
        // Fast mode: decided here from this node's lease when it holds the tokens;
        // otherwise asked of the owner like exact mode, with a top-up riding along.
        if (leases_.tryConsume(job.storeKey(item), kCost, job.started)) {
          item.leased = true;
          item.outcome.result = wire::ItemResult::Charged;
          job.items.push_back(item);
          continue;
        }
        max_lease = cluster::limits::maxLease(cluster::limits::leaseCapacity(c.rule.algorithm, c.limit),
                                              candidates.size());
        lease_want = leases_.topUpWant(job.storeKey(item), owner, kCost, job.started, sync_interval_ns_, max_lease);
      }
      if (!owner.empty() || failed) {
        auto it = std::find_if(job.groups.begin() + 1, job.groups.end(), [&](const CheckJob::Group& g) {
          return g.owner == owner && g.failed == failed;
        });
        if (it == job.groups.end()) {
          job.groups.push_back(CheckJob::Group{owner, {}, failed, false, false, {}, own, false});
          it = job.groups.end() - 1;
        }
        item.group = std::size_t(it - job.groups.begin());
        if (lease_want > 0) it->leases.push_back(CheckJob::LeaseAsk{job.items.size(), lease_want, max_lease, 0});
      }
    }
    job.groups[item.group].items.push_back(job.items.size());
    job.items.push_back(item);
  }
  return !job.items.empty();
}

void Engine::evaluateLocally(CheckJob& job, std::size_t group) {
  thread_local std::vector<ItemSpec> specs;
  thread_local std::vector<wire::LimitOutcome> outcomes;
  const auto& indices = job.groups[group].items;
  specs.clear();
  for (std::size_t i : indices) specs.push_back(specOf(job, job.items[i]));
  outcomes.resize(specs.size());
  cluster::limits::evaluateCall(*store_, specs, job.started, outcomes);
  for (std::size_t k = 0; k < indices.size(); ++k) job.items[indices[k]].outcome = outcomes[k];
  job.groups[group].answered = true;
  // Cluster-scope keys this node owns: their state goes to the replicas.
  if (group != 0 || !config_.cluster.enabled) return;
  for (std::size_t i : indices) {
    const auto& item = job.items[i];
    if (item.rule->rule.scope == conf::Scope::Node) continue;
    const auto result = item.outcome.result;
    if (result == wire::ItemResult::NotEvaluated || result == wire::ItemResult::Denied) continue;
    changes_.add(job.storeKey(item), job.placement(item), item.rule->rule.algorithm, item.rule->limit);
  }
}

void Engine::fallBack(CheckJob& job, std::size_t group, FallbackReason reason) {
  CheckJob::Group& g = job.groups[group];
  const conf::FailMode mode = job.snap->policy.fail_mode;
  for (std::size_t i : g.items) job.items[i].rule->counters->fallback(reason);
  noteFallback(g.owner, reason, mode, *job.items[g.items.front()].rule);
  switch (mode) {
    case conf::FailMode::Local:
      evaluateLocally(job, group);
      break;
    case conf::FailMode::Open:
      evaluateLocally(job, group);
      for (std::size_t i : g.items) {
        if (job.items[i].outcome.result == wire::ItemResult::Denied) job.items[i].fail_open = true;
      }
      break;
    case conf::FailMode::Closed:
      g.closed = true;
      g.answered = true;
      break;
  }
}

// Step 3, on whichever thread saw the last answer.
void Engine::finishCheck(CheckJob& job) {
  Session& s = *job.session;
  zetian_verdict* verdict = job.verdict;
  // Groups without an answer follow fail_mode; answered groups end an open episode.
  for (std::size_t g = 1; g < job.groups.size(); ++g) {
    CheckJob::Group& group = job.groups[g];
    if (group.failed) {
      fallBack(job, g, *group.failed);
    } else if (!group.owner.empty()) {
      noteAnswered(group.owner);
      // Tokens the owner charged for this node's lease are the lease's, whatever the
      // stage's verdict.
      for (const auto& ask : group.leases) {
        leases_.grant(job.storeKey(job.items[ask.item]), group.owner, ask.granted, ask.max_lease, now());
      }
    }
  }
  // The deciding item: the first blocking denial in rule order, or a stage refused by
  // fail_mode closed.
  std::optional<std::size_t> decider;
  const CheckJob::Group* closed = nullptr;
  for (const auto& group : job.groups) {
    if (group.closed && !group.items.empty()) {
      closed = &group;
      break;
    }
  }
  if (!closed) {
    for (std::size_t i = 0; i < job.items.size(); ++i) {
      const auto& item = job.items[i];
      if (item.outcome.result == wire::ItemResult::Denied && !item.fail_open &&
          blocking(item.rule->rule.action)) {
        decider = i;
        break;
      }
    }
  }
  const bool refused = decider || closed;
  const std::size_t marks_before = s.marks.size();
  for (std::size_t i = 0; i < job.items.size(); ++i) {
    const auto& item = job.items[i];
    const CompiledRule& c = *item.rule;
    const std::string_view key = job.storeKey(item).substr(c.key_prefix.size());
    switch (item.outcome.result) {
      case wire::ItemResult::Charged:
      case wire::ItemResult::Returned:
        c.counters->count(Verdict::Allow);
        logDecision(s, job.stage, c, key, item.outcome, Verdict::Allow);
        break;
      case wire::ItemResult::Denied: {
        const Verdict v = item.fail_open ? Verdict::Allow : verdictFor(c.rule.action);
        c.counters->count(v);
        logDecision(s, job.stage, c, key, item.outcome, v);
        if ((v == Verdict::Tag || v == Verdict::Quarantine) && !refused) {
          s.marks.push_back({c.rule.action, c.rule.name,
                             "rule=" + c.rule.name + "; limit=" + std::to_string(c.rule.limit) + "/" +
                                 conf::formatDuration(c.rule.period)});
        }
        break;
      }
      case wire::ItemResult::NotEvaluated:
      case wire::ItemResult::Refunded:
      case wire::ItemResult::Leased:
        break;
    }
  }
  if (refused) {
    refundCharged(job);
    s.marks.resize(marks_before);
    if (decider) {
      const auto& item = job.items[*decider];
      const CompiledRule& c = *item.rule;
      const std::string key(job.storeKey(item).substr(c.key_prefix.size()));
      Reply reply = renderReply(c.rule, key, item.outcome.retry_after_ns);
      verdict->action = verdictFor(c.rule.action) == Verdict::Reject ? ZETIAN_REJECT : ZETIAN_TEMPFAIL;
      copyTruncated(verdict->rcode, sizeof verdict->rcode, reply.rcode);
      copyTruncated(verdict->xcode, sizeof verdict->xcode, reply.xcode);
      copyTruncated(verdict->text, sizeof verdict->text, reply.text);
      copyTruncated(verdict->rule, sizeof verdict->rule, c.rule.name);
    } else {
      verdict->action = ZETIAN_TEMPFAIL;
      copyTruncated(verdict->rcode, sizeof verdict->rcode, "451");
      copyTruncated(verdict->xcode, sizeof verdict->xcode, "4.7.1");
      copyTruncated(verdict->text, sizeof verdict->text, "Rate limiter unavailable, try again later");
      copyTruncated(verdict->rule, sizeof verdict->rule, job.items[closed->items.front()].rule->rule.name);
    }
  }
  if (job.stage == conf::Stage::Helo && verdict->action == ZETIAN_CONTINUE) s.helo_passed = true;
  metrics_.decision_latency.observe(now() - job.started);
}

// Gives back everything the stage charged, on this node and on every owner.
void Engine::refundCharged(CheckJob& job) {
  std::vector<std::pair<std::string, std::vector<wire::LimitItem>>> remote;
  for (const auto& item : job.items) {
    if (item.outcome.result != wire::ItemResult::Charged) continue;
    if (item.leased) {
      leases_.giveBack(job.storeKey(item), kCost);
      continue;
    }
    const CheckJob::Group& group = job.groups[item.group];
    if (group.owner.empty() || group.failed || group.own) {
      store_->refund(job.storeKey(item), item.rule->rule.algorithm, item.rule->limit, job.started, kCost);
      continue;
    }
    auto it = std::find_if(remote.begin(), remote.end(), [&](const auto& r) { return r.first == group.owner; });
    if (it == remote.end()) {
      remote.emplace_back(group.owner, std::vector<wire::LimitItem>{});
      it = remote.end() - 1;
    }
    it->second.push_back(cluster::limits::toWire(specOf(job, item)));
  }
  if (remote.empty()) return;
  auto send = [this, remote = std::move(remote)]() mutable {
    cluster::limits::LimitService* service = node_ ? node_->limits() : nullptr;
    for (auto& [owner, items] : remote) {
      if (owner == kRedisOwner) {
        if (redis_) redis_->refund(std::move(items));
      } else if (service) {
        service->refund(owner, std::move(items));
      }
    }
  };
  if (loop_.isThisThread()) {
    send();
  } else if (!loop_.post(std::move(send))) {
    // The loop is stopping or flooded: the charge stays on the owner and refills.
  }
}

// Step 2 for the remote groups: one closure on the cluster thread sends every call.
// `all_answered` runs once, on the cluster thread, when the last group has its answer.
void Engine::sendCalls(const std::shared_ptr<CheckJob>& job, std::function<void()> all_answered) {
  struct Call {
    std::size_t group;
    std::string owner;
    std::vector<wire::LimitItem> items;
    bool redis = false;
  };
  std::vector<Call> calls;
  for (std::size_t g = 1; g < job->groups.size(); ++g) {
    const auto& group = job->groups[g];
    if (group.failed) continue;
    Call call{g, group.owner, {}, group.redis};
    call.items.reserve(group.items.size() + group.leases.size());
    for (std::size_t i : group.items) call.items.push_back(cluster::limits::toWire(specOf(*job, job->items[i])));
    for (const auto& ask : group.leases) {
      wire::LimitItem lease = cluster::limits::toWire(specOf(*job, job->items[ask.item]));
      lease.op = wire::LimitOp::Lease;
      lease.cost = ask.want;
      lease.blocking = false;
      call.items.push_back(std::move(lease));
    }
    calls.push_back(std::move(call));
  }
  {
    std::lock_guard lock(job->mutex);
    job->outstanding = calls.size();
  }
  if (calls.empty()) {
    all_answered();
    return;
  }
  const auto sent = std::chrono::steady_clock::now();
  const auto deadline = sent + check_timeout_;
  const auto redis_deadline = sent + redis_timeout_;  // [redis] timeout for Redis rules
  // The answer to one group; the last one completes the check. Runs exactly once per
  // group: on the cluster thread, or here if the calls could not be posted.
  auto on_answer = [this, job, all_answered](std::size_t g, CallResult result) {
    bool last = false;
    {
      std::lock_guard lock(job->mutex);
      auto& group = job->groups[g];
      if (job->abandoned) {
        // The milter thread decided without this answer: give back what it charged.
        if (!result.failed) {
          std::vector<wire::LimitItem> back;
          for (std::size_t k = 0; k < group.items.size() && k < result.outcomes.size(); ++k) {
            if (result.outcomes[k].result == wire::ItemResult::Charged) {
              back.push_back(cluster::limits::toWire(specOf(*job, job->items[group.items[k]])));
            }
          }
          for (std::size_t k = 0; k < group.leases.size(); ++k) {
            const std::size_t at = group.items.size() + k;
            if (at >= result.outcomes.size() || result.outcomes[at].result != wire::ItemResult::Leased ||
                result.outcomes[at].remaining == 0) {
              continue;
            }
            wire::LimitItem lease = cluster::limits::toWire(specOf(*job, job->items[group.leases[k].item]));
            lease.cost = result.outcomes[at].remaining;
            back.push_back(std::move(lease));
          }
          if (group.redis) {
            if (redis_) redis_->refund(std::move(back));
          } else if (auto* service = node_ ? node_->limits() : nullptr) {
            service->refund(group.owner, std::move(back));
          }
        }
        return;
      }
      group.answered = true;
      if (result.failed) {
        group.failed = result.failed;
      } else {
        for (std::size_t k = 0; k < group.items.size(); ++k) job->items[group.items[k]].outcome = result.outcomes[k];
        for (std::size_t k = 0; k < group.leases.size(); ++k) {
          const auto& outcome = result.outcomes[group.items.size() + k];
          if (outcome.result == wire::ItemResult::Leased) group.leases[k].granted = outcome.remaining;
        }
      }
      last = --job->outstanding == 0;
    }
    if (last) all_answered();
  };
  auto shared_calls = std::make_shared<std::vector<Call>>(std::move(calls));
  const bool posted = loop_.post([this, shared_calls, deadline, redis_deadline, on_answer] {
    cluster::limits::LimitService* service = node_ ? node_->limits() : nullptr;
    for (auto& call : *shared_calls) {
      const std::size_t g = call.group;
      if (call.redis) {
        if (!redis_) {
          on_answer(g, CallResult{FallbackReason::Closed, {}});
          continue;
        }
        redis_->call(std::move(call.items), redis_deadline,
                     [on_answer, g](CallResult result) { on_answer(g, std::move(result)); });
        continue;
      }
      if (!service) {
        on_answer(call.group, CallResult{FallbackReason::Closed, {}});
        continue;
      }
      service->call(call.owner, std::move(call.items), deadline,
                    [on_answer, g](CallResult result) { on_answer(g, std::move(result)); });
    }
  });
  if (!posted) {
    const FallbackReason reason = shut_down_.load() ? FallbackReason::Closed : FallbackReason::Overloaded;
    for (const auto& call : *shared_calls) on_answer(call.group, CallResult{reason, {}});
  }
}

int Engine::check(Session& s, conf::Stage stage, const char* arg, zetian_verdict* verdict) {
  const state::Nanos started = now();
  fillContinue(verdict);
  if (maintenanceRefusal(s, stage, verdict)) return ZETIAN_TEMPFAIL;
  if (waitsForView(stage)) {
    std::unique_lock lock(view_mutex_);
    view_formed_.wait_for(lock, check_timeout_, [&] { return !view_ || !view_->forming || shut_down_.load(); });
  }
  // The job lives in this thread while every decision is local (no allocation once
  // warm); a check that calls other nodes moves to a shared job the cluster thread
  // can hold.
  thread_local CheckJob local;
  local.clear();
  local.session = &s;
  local.stage = stage;
  local.verdict = verdict;
  local.started = started;
  local.snap = pinPolicy();
  struct Unpin {
    ~Unpin() { unpinPolicy(); }
  } unpin;
  if (!prepareCheck(local, s, stage, arg)) return verdict->action;
  evaluateLocally(local, 0);
  if (local.groups.size() == 1) {
    finishCheck(local);
    return verdict->action;
  }
  auto job = std::make_shared<CheckJob>();
  job->session = &s;
  job->stage = stage;
  job->verdict = verdict;
  job->started = started;
  job->snapshot = pinnedPolicy();  // the pinned one: late answers still read its rules
  job->snap = local.snap;
  job->keys = local.keys;
  job->items = local.items;
  job->groups = local.groups;
  sendCalls(job, [job] { job->answered.notify_all(); });
  {
    std::unique_lock lock(job->mutex);
    const bool has_redis =
        std::any_of(job->groups.begin(), job->groups.end(), [](const CheckJob::Group& g) { return g.redis; });
    const auto wait = (has_redis ? std::max(check_timeout_, redis_timeout_) : check_timeout_) + kLoopSlack;
    if (!job->answered.wait_for(lock, wait, [&] { return job->outstanding == 0; })) {
      // The cluster thread did not even report the deadline: decide without it.
      job->abandoned = true;
      for (auto& group : job->groups) {
        if (!group.answered) group.failed = FallbackReason::Timeout;
      }
    }
  }
  finishCheck(*job);
  return verdict->action;
}

void Engine::checkAsync(Session& s, conf::Stage stage, const char* arg, zetian_verdict* verdict,
                        std::function<void()> done) {
  const state::Nanos started = now();
  fillContinue(verdict);
  if (maintenanceRefusal(s, stage, verdict)) {
    done();
    return;
  }
  if (waitsForView(stage)) {
    // Resumed on the loop thread once the view has formed, or at check_timeout.
    // `done` runs once even if the check throws after calling it.
    auto fired = std::make_shared<std::atomic<bool>>(false);
    std::function<void()> once = [done = std::move(done), fired] {
      if (!fired->exchange(true)) done();
    };
    auto resume = [this, s = &s, stage, arg = std::string(arg ? arg : ""), has_arg = arg != nullptr, verdict,
                   once, started] {
      try {
        checkAsyncNow(*s, stage, has_arg ? arg.c_str() : nullptr, verdict, once, started);
      } catch (const std::exception& e) {
        internalFailure("check", e.what(), verdict);
        once();
      } catch (...) {
        internalFailure("check", "unknown exception", verdict);
        once();
      }
    };
    auto shared = std::make_shared<decltype(resume)>(std::move(resume));
    const bool posted = loop_.post([this, shared] {
      const auto current = view();
      if (!current || !current->forming) {
        (*shared)();
        return;
      }
      forming_waiters_.push_back([shared] { (*shared)(); });
      if (!forming_timer_.active()) forming_timer_ = loop_.after(check_timeout_, [this] { runFormingWaiters(); });
    });
    if (posted) return;
    // The loop is stopping or flooded: decide now, by fail_mode.
  }
  checkAsyncNow(s, stage, arg, verdict, std::move(done), started);
}

void Engine::checkAsyncNow(Session& s, conf::Stage stage, const char* arg, zetian_verdict* verdict,
                           std::function<void()> done, state::Nanos started) {
  auto job = std::make_shared<CheckJob>();
  job->session = &s;
  job->stage = stage;
  job->verdict = verdict;
  job->started = started;
  // A shared reference, not a pin: the job may outlive this call.
  job->snapshot = policy();
  job->snap = job->snapshot.get();
  if (!prepareCheck(*job, s, stage, arg)) {
    done();
    return;
  }
  evaluateLocally(*job, 0);
  if (job->groups.size() == 1) {
    finishCheck(*job);
    done();
    return;
  }
  sendCalls(job, [this, job, done = std::move(done)] {
    try {
      finishCheck(*job);
    } catch (const std::exception& e) {
      internalFailure("check", e.what(), job->verdict);
    } catch (...) {
      internalFailure("check", "unknown exception", job->verdict);
    }
    done();
  });
}

// Fast mode, on the cluster thread every sync_interval / 4: top up the leases in use,
// give back what idle or oversized leases hold.
bool Engine::maintenanceRefusal(const Session& s, conf::Stage stage, zetian_verdict* verdict) {
  if (stage != conf::Stage::Connect || !maintenance_.load(std::memory_order_relaxed) || !s.facts.client_ip ||
      kLoopback4.contains(*s.facts.client_ip) || kLoopback6.contains(*s.facts.client_ip)) {
    return false;
  }
  // Draining: 421 closes the SMTP session at once and the client tries another MX.
  // Loopback is spared: local submission, monitoring, and Postfix's non-SMTP mail
  // (which must never be refused) all come from there.
  verdict->action = ZETIAN_TEMPFAIL;
  std::snprintf(verdict->rcode, sizeof verdict->rcode, "421");
  std::snprintf(verdict->xcode, sizeof verdict->xcode, "4.3.2");
  std::snprintf(verdict->text, sizeof verdict->text, "%s", "This server is in maintenance, please try another");
  std::snprintf(verdict->rule, sizeof verdict->rule, "%s", "maintenance");
  metrics_.maintenance_refusals_total.fetch_add(1, std::memory_order_relaxed);
  if (logger_->enabled(conf::LogLevel::Debug)) {
    logger_->log(conf::LogLevel::Debug, "maintenance_refused session=" + std::to_string(s.id) +
                                            " client=" + s.facts.client_ip_text);
  }
  return true;
}

}  // namespace zetian::plugin
