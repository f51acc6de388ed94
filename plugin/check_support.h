// Small pieces the engine's files share: filling verdicts, mapping actions.
#pragma once

#include <algorithm>
#include <cstring>
#include <string_view>

#include "conf/config.h"
#include "plugin/keys.h"
#include "plugin/metrics.h"
#include "plugin/zetian.h"

namespace zetian::plugin {

// The owner of a group of store = "redis" rules, as fallback episodes log it: '@' is not
// allowed in a node id, so it names no node.
inline constexpr std::string_view kRedisOwner = "@redis";

inline void copyTruncated(char* dst, std::size_t size, std::string_view src) {
  std::size_t n = std::min(size - 1, src.size());
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

inline void fillContinue(zetian_verdict* v) {
  v->action = ZETIAN_CONTINUE;
  v->rcode[0] = v->xcode[0] = v->text[0] = v->rule[0] = '\0';
}

inline Verdict verdictFor(conf::Action action) {
  switch (action) {
    case conf::Action::Tempfail: return Verdict::Tempfail;
    case conf::Action::Reject: return Verdict::Reject;
    case conf::Action::Tag: return Verdict::Tag;
    case conf::Action::Quarantine: return Verdict::Quarantine;
    case conf::Action::DryRun: return Verdict::DryRun;
  }
  return Verdict::Tempfail;
}

inline bool appliesToSender(const conf::Rule& rule, const SessionFacts& facts) {
  switch (rule.senders) {
    case conf::SenderFilter::Any: return true;
    case conf::SenderFilter::Null: return facts.sender && facts.sender->null;
    case conf::SenderFilter::NonNull: return facts.sender && !facts.sender->null;
  }
  return true;
}

}  // namespace zetian::plugin
