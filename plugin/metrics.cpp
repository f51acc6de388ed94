#include "plugin/metrics.h"

#include <cstdio>

namespace zetian::plugin {

const char* verdictName(Verdict v) {
  switch (v) {
    case Verdict::Allow: return "allow";
    case Verdict::Tempfail: return "tempfail";
    case Verdict::Reject: return "reject";
    case Verdict::Tag: return "tag";
    case Verdict::Quarantine: return "quarantine";
    case Verdict::DryRun: return "dry_run";
    case Verdict::kCount: break;
  }
  return "unknown";
}

std::size_t stripeOfThisThread() {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t stripe = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
  return stripe;
}

void LatencyHistogram::observe(std::int64_t nanos) {
  if (nanos < 0) nanos = 0;
  double seconds = double(nanos) / 1e9;
  std::size_t i = 0;
  while (i < kBoundsSeconds.size() && seconds > kBoundsSeconds[i]) ++i;
  Stripe& s = stripes_[stripeOfThisThread()].value;
  s.buckets[i].fetch_add(1, std::memory_order_relaxed);
  s.count.fetch_add(1, std::memory_order_relaxed);
  s.sum_nanos.fetch_add(std::uint64_t(nanos), std::memory_order_relaxed);
}

void LatencyHistogram::render(std::string& out, const char* name, const char* help) const {
  char line[256];
  std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
  out += line;
  std::array<std::uint64_t, kBoundsSeconds.size() + 1> buckets{};
  std::uint64_t count = 0, sum_nanos = 0;
  for (const auto& padded : stripes_) {
    const Stripe& s = padded.value;
    for (std::size_t i = 0; i < buckets.size(); ++i) buckets[i] += s.buckets[i].load(std::memory_order_relaxed);
    count += s.count.load(std::memory_order_relaxed);
    sum_nanos += s.sum_nanos.load(std::memory_order_relaxed);
  }
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < kBoundsSeconds.size(); ++i) {
    cumulative += buckets[i];
    std::snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %llu\n", name, kBoundsSeconds[i],
                  static_cast<unsigned long long>(cumulative));
    out += line;
  }
  cumulative += buckets[kBoundsSeconds.size()];
  std::snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.9f\n%s_count %llu\n", name,
                static_cast<unsigned long long>(cumulative), name,
                double(sum_nanos) / 1e9, name, static_cast<unsigned long long>(count));
  out += line;
}

std::shared_ptr<RuleCounters> Metrics::ruleCounters(const std::string& rule) {
  std::lock_guard lock(rules_mutex_);
  auto& slot = rules_[rule];
  if (!slot) slot = std::make_shared<RuleCounters>();
  return slot;
}

void Metrics::renderRules(std::string& out) const {
  out += "# HELP zetian_decisions_total Rule evaluations by rule and verdict.\n";
  out += "# TYPE zetian_decisions_total counter\n";
  std::lock_guard lock(rules_mutex_);
  for (const auto& [name, counters] : rules_) {
    for (std::size_t v = 0; v < std::size_t(Verdict::kCount); ++v) {
      out += "zetian_decisions_total{rule=\"" + promLabel(name) + "\",verdict=\"" + verdictName(Verdict(v)) +
             "\"} " + std::to_string(counters->decisions[v].load()) + "\n";
    }
  }
  out += "# HELP zetian_fallbacks_total Cluster-scope checks decided without the key owner (by fail_mode), by rule and reason.\n";
  out += "# TYPE zetian_fallbacks_total counter\n";
  for (const auto& [name, counters] : rules_) {
    for (std::size_t r = 0; r < cluster::limits::kFallbackReasons; ++r) {
      out += "zetian_fallbacks_total{rule=\"" + promLabel(name) + "\",reason=\"" +
             std::string(cluster::limits::nameOf(cluster::limits::FallbackReason(r))) + "\"} " +
             std::to_string(counters->fallbacks[r].load(std::memory_order_relaxed)) + "\n";
    }
  }
}

std::string promLabel(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

}  // namespace zetian::plugin
