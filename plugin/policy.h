// A policy snapshot: the validated conf::Policy compiled for the hot path.
//
// Snapshots are immutable and shared: a check takes one reference for its whole
// evaluation, and a reload publishes a new snapshot without waiting for readers.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "conf/config.h"
#include "plugin/metrics.h"
#include "state/limit.h"

namespace zetian::plugin {

struct CompiledRule {
  conf::Rule rule;
  state::Limit limit;
  std::string key_prefix;  // rule name + '\0': the store key is prefix + key value
  std::shared_ptr<RuleCounters> counters;
};

struct PolicySnapshot {
  conf::Policy policy;
  std::vector<CompiledRule> rules;
  // Indices into `rules` per stage, in file order.
  std::array<std::vector<std::size_t>, 5> by_stage;
  unsigned needs = 0;  // ZETIAN_NEED_* bits
  std::uint64_t version = 0;  // per engine: 1, 2, 3... one per reload
  std::uint64_t id = 0;       // unique in the process

  const CompiledRule* find(const std::string& name) const;
};

std::shared_ptr<const PolicySnapshot> compilePolicy(const conf::Policy& policy, Metrics& metrics,
                                                    std::uint64_t version, std::uint64_t id);

// An SMTP reply split the way libmilter wants it.
struct Reply {
  std::string rcode;  // "451"
  std::string xcode;  // "4.7.1", or empty
  std::string text;   // no CR/LF, at most kMaxReplyText bytes
};
inline constexpr std::size_t kMaxReplyText = 400;

// The reply for a rule that denied: its own `reply` with %{rule}, %{key}, %{limit},
// %{period} and %{retry_after} expanded, or the default for its action.
Reply renderReply(const conf::Rule& rule, const std::string& key, state::Nanos retry_after_ns);

}  // namespace zetian::plugin
