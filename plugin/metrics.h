// Counters the engine keeps for /metrics. Hot-path updates are relaxed atomic
// increments; rendering walks them on the cluster thread.
//
// Per-rule counters are looked up by name once, when a policy snapshot is built, and
// survive reloads: a rule that keeps its name keeps counting, so Prometheus never
// sees a counter go backwards.
#pragma once

#include "cluster/limits/service.h"

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace zetian::plugin {

// Every libmilter thread counts on every check. One shared atomic bounces its cache
// line between cores on each increment, the classic scaling limit of counters on a
// many-core host; instead each thread adds to one of a few stripes, on cache lines of
// their own, and a reader sums them. (On the 2-vCPU test machine the difference is
// within noise: see docs/BENCHMARKS.md.)
inline constexpr std::size_t kStripes = 16;
std::size_t stripeOfThisThread();

template <typename Slot>
struct alignas(64) Padded {
  Slot value{};
};

class StripedCounter {
 public:
  void fetch_add(std::uint64_t n, std::memory_order = std::memory_order_relaxed) {
    stripes_[stripeOfThisThread()].value.fetch_add(n, std::memory_order_relaxed);
  }
  std::uint64_t load(std::memory_order = std::memory_order_relaxed) const {
    std::uint64_t sum = 0;
    for (const auto& s : stripes_) sum += s.value.load(std::memory_order_relaxed);
    return sum;
  }

 private:
  std::array<Padded<std::atomic<std::uint64_t>>, kStripes> stripes_;
};

enum class Verdict { Allow = 0, Tempfail, Reject, Tag, Quarantine, DryRun, kCount };
const char* verdictName(Verdict v);

struct RuleCounters {
  std::array<StripedCounter, std::size_t(Verdict::kCount)> decisions{};
  // Checks decided without the key's owner, by FallbackReason (zetian_fallbacks_total).
  std::array<std::atomic<std::uint64_t>, cluster::limits::kFallbackReasons> fallbacks{};
  void count(Verdict v) { decisions[std::size_t(v)].fetch_add(1); }
  void fallback(cluster::limits::FallbackReason reason) {
    fallbacks[std::size_t(reason)].fetch_add(1, std::memory_order_relaxed);
  }
};

class LatencyHistogram {
 public:
  static constexpr std::array<double, 15> kBoundsSeconds = {
      1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2, 1e-1};
  void observe(std::int64_t nanos);
  void render(std::string& out, const char* name, const char* help) const;

 private:
  struct Stripe {
    std::array<std::atomic<std::uint64_t>, kBoundsSeconds.size() + 1> buckets{};
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> sum_nanos{0};
  };
  std::array<Padded<Stripe>, kStripes> stripes_;
};

struct Metrics {
  StripedCounter sessions_total;
  std::atomic<std::int64_t> sessions_active{0};
  std::atomic<std::uint64_t> maintenance_refusals_total{0};
  StripedCounter messages_total;
  StripedCounter exempt_address_total;
  StripedCounter exempt_authenticated_total;
  std::atomic<std::uint64_t> internal_errors_total{0};
  std::atomic<std::uint64_t> reloads_ok_total{0};
  std::atomic<std::uint64_t> reloads_failed_total{0};
  // Replicated policy versions this node could not use (it kept the one in force).
  std::atomic<std::uint64_t> policy_apply_failures_total{0};
  LatencyHistogram decision_latency;
  LatencyHistogram redis_latency;  // each Redis script run, sent to answered

  // The counters for a rule name, created on first use.
  std::shared_ptr<RuleCounters> ruleCounters(const std::string& rule);
  // Prometheus text format 0.0.4 for everything above; `extra` is appended as is.
  void renderRules(std::string& out) const;

 private:
  mutable std::mutex rules_mutex_;  // guards rules_
  std::map<std::string, std::shared_ptr<RuleCounters>> rules_;
};

// Escape a Prometheus label value.
std::string promLabel(const std::string& value);

}  // namespace zetian::plugin
