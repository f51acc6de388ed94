#include "plugin/policy.h"

#include <algorithm>

#include "plugin/zetian.h"

namespace zetian::plugin {

namespace {

unsigned needsOf(const conf::Rule& rule) {
  using conf::Action;
  using conf::KeyKind;
  using conf::Stage;
  unsigned needs = 0;
  const bool blocking = rule.action == Action::Tempfail || rule.action == Action::Reject;
  switch (rule.stage) {
    case Stage::Connect:
      if (blocking) needs |= ZETIAN_NEED_CONNECT_REPLY;
      break;
    case Stage::Helo:
      needs |= ZETIAN_NEED_HELO;
      if (blocking) needs |= ZETIAN_NEED_HELO_REPLY;
      break;
    case Stage::Mail:
      if (blocking) needs |= ZETIAN_NEED_MAIL_REPLY;
      break;
    case Stage::Rcpt:
      needs |= ZETIAN_NEED_RCPT;
      if (blocking) needs |= ZETIAN_NEED_RCPT_REPLY;
      break;
    case Stage::Data:
      needs |= ZETIAN_NEED_DATA;
      break;
  }
  if (rule.key == KeyKind::Helo) needs |= ZETIAN_NEED_HELO;
  if (rule.key == KeyKind::SaslUser) needs |= ZETIAN_NEED_SASL;
  if (rule.action == Action::Tag) needs |= ZETIAN_NEED_ADD_HEADER;
  if (rule.action == Action::Quarantine) needs |= ZETIAN_NEED_QUARANTINE;
  return needs;
}

// Keep a reply on one printable line whatever a key value (a HELO name, an address)
// brings in.
void appendPrintable(std::string& out, std::string_view s) {
  for (unsigned char c : s) out += (c < ' ' || c == 0x7f) ? ' ' : char(c);
}

std::string expand(std::string_view tmpl, const conf::Rule& rule, const std::string& key,
                   state::Nanos retry_after_ns) {
  std::string out;
  std::size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl.compare(i, 2, "%{") == 0) {
      auto close = tmpl.find('}', i);
      if (close != std::string_view::npos) {
        std::string_view name = tmpl.substr(i + 2, close - i - 2);
        bool known = true;
        if (name == "rule") appendPrintable(out, rule.name);
        else if (name == "key") appendPrintable(out, key);
        else if (name == "limit") out += std::to_string(rule.limit);
        else if (name == "period") out += conf::formatDuration(rule.period);
        else if (name == "retry_after") {
          // Whole seconds, rounded up, at least 1: "try again in 0 seconds" helps nobody.
          auto seconds = std::max<state::Nanos>(1, (retry_after_ns + state::kNanosPerSecond - 1) / state::kNanosPerSecond);
          out += std::to_string(seconds);
        } else known = false;
        if (known) {
          i = close + 1;
          continue;
        }
      }
    }
    appendPrintable(out, tmpl.substr(i, 1));
    ++i;
  }
  return out;
}

bool isEnhancedCode(std::string_view s) {
  // class.subject.detail: D.D{1,3}.D{1,3}
  if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
  auto second_dot = s.find('.', 2);
  if (second_dot == std::string_view::npos || second_dot == 2 || second_dot > 5) return false;
  for (std::size_t i = 2; i < s.size(); ++i) {
    if (i == second_dot) continue;
    if (s[i] < '0' || s[i] > '9') return false;
  }
  return s.size() - second_dot - 1 >= 1 && s.size() - second_dot - 1 <= 3;
}

}  // namespace

const CompiledRule* PolicySnapshot::find(const std::string& name) const {
  for (const auto& r : rules)
    if (r.rule.name == name) return &r;
  return nullptr;
}

std::shared_ptr<const PolicySnapshot> compilePolicy(const conf::Policy& policy, Metrics& metrics,
                                                    std::uint64_t version, std::uint64_t id) {
  auto snap = std::make_shared<PolicySnapshot>();
  snap->id = id;
  snap->policy = policy;
  snap->version = version;
  snap->rules.reserve(policy.rules.size());
  for (const auto& rule : policy.rules) {
    CompiledRule c;
    c.rule = rule;
    c.limit.limit = rule.limit;
    c.limit.period_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(rule.period).count();
    c.limit.burst = rule.burst;
    c.key_prefix = rule.name;
    c.key_prefix.push_back('\0');
    c.counters = metrics.ruleCounters(rule.name);
    snap->by_stage[std::size_t(rule.stage)].push_back(snap->rules.size());
    snap->needs |= needsOf(rule);
    snap->rules.push_back(std::move(c));
  }
  return snap;
}

Reply renderReply(const conf::Rule& rule, const std::string& key, state::Nanos retry_after_ns) {
  const bool reject = rule.action == conf::Action::Reject;
  Reply reply;
  std::string_view tmpl;
  std::string custom;
  if (rule.reply) {
    custom = *rule.reply;
    tmpl = custom;
    reply.rcode = std::string(tmpl.substr(0, 3));
    tmpl.remove_prefix(std::min<std::size_t>(3, tmpl.size()));
    while (!tmpl.empty() && tmpl.front() == ' ') tmpl.remove_prefix(1);
    auto space = tmpl.find(' ');
    std::string_view first = tmpl.substr(0, space);
    if (isEnhancedCode(first)) {
      reply.xcode = std::string(first);
      tmpl.remove_prefix(space == std::string_view::npos ? tmpl.size() : space + 1);
    }
  } else if (reject) {
    reply.rcode = "550";
    reply.xcode = "5.7.1";
    tmpl = "Rate limit exceeded (rule %{rule}), message refused";
  } else {
    reply.rcode = "451";
    reply.xcode = "4.7.1";
    tmpl = "Rate limit exceeded (rule %{rule}), try again in %{retry_after} seconds";
  }
  reply.text = expand(tmpl, rule, key, retry_after_ns);
  if (reply.text.size() > kMaxReplyText) reply.text.resize(kMaxReplyText);
  return reply;
}

}  // namespace zetian::plugin
