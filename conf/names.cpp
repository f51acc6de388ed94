#include "conf/names.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <string>

#include "conf/text.h"

namespace zetian::conf {
namespace {

constexpr std::array<NamedValue<KeyKind>, 9> kKeyKinds{{
    {"client_ip", KeyKind::ClientIp},
    {"client_net", KeyKind::ClientNet},
    {"helo", KeyKind::Helo},
    {"sender", KeyKind::Sender},
    {"sender_domain", KeyKind::SenderDomain},
    {"sasl_user", KeyKind::SaslUser},
    {"rcpt", KeyKind::Rcpt},
    {"rcpt_domain", KeyKind::RcptDomain},
    {"global", KeyKind::Global},
}};
constexpr std::array<NamedValue<Stage>, 5> kStages{{
    {"connect", Stage::Connect},
    {"helo", Stage::Helo},
    {"mail", Stage::Mail},
    {"rcpt", Stage::Rcpt},
    {"data", Stage::Data},
}};
constexpr std::array<NamedValue<Scope>, 3> kScopes{{
    {"node", Scope::Node},
    {"cluster", Scope::Cluster},
    {"region", Scope::Region},
}};
constexpr std::array<NamedValue<Action>, 5> kActions{{
    {"tempfail", Action::Tempfail},
    {"reject", Action::Reject},
    {"tag", Action::Tag},
    {"quarantine", Action::Quarantine},
    {"dry_run", Action::DryRun},
}};
constexpr std::array<NamedValue<SenderFilter>, 3> kSenderFilters{{
    {"any", SenderFilter::Any},
    {"null", SenderFilter::Null},
    {"non_null", SenderFilter::NonNull},
}};
constexpr std::array<NamedValue<DefaultAction>, 2> kDefaultActions{{
    {"accept", DefaultAction::Accept},
    {"tempfail", DefaultAction::Tempfail},
}};
constexpr std::array<NamedValue<PolicyTempfailAction>, 2> kPolicyTempfailActions{{
    {"reply", PolicyTempfailAction::Reply},
    {"defer_if_permit", PolicyTempfailAction::DeferIfPermit},
}};
constexpr std::array<NamedValue<LogLevel>, 4> kLogLevels{{
    {"error", LogLevel::Error},
    {"warn", LogLevel::Warn},
    {"info", LogLevel::Info},
    {"debug", LogLevel::Debug},
}};
constexpr std::array<NamedValue<LogTarget>, 3> kLogTargets{{
    {"syslog", LogTarget::Syslog},
    {"stderr", LogTarget::Stderr},
    {"file", LogTarget::File},
}};
constexpr std::array<NamedValue<Discovery>, 3> kDiscoveries{{
    {"seeds", Discovery::Seeds},
    {"dns", Discovery::Dns},
    {"multicast", Discovery::Multicast},
}};
constexpr std::array<NamedValue<Consistency>, 2> kConsistencies{{
    {"exact", Consistency::Exact},
    {"fast", Consistency::Fast},
}};
constexpr std::array<NamedValue<FailMode>, 3> kFailModes{{
    {"local", FailMode::Local},
    {"open", FailMode::Open},
    {"closed", FailMode::Closed},
}};
constexpr std::array<NamedValue<AffinityMethod>, 2> kAffinityMethods{{
    {"key", AffinityMethod::Key},
    {"source_ip", AffinityMethod::SourceIp},
}};
constexpr std::array<NamedValue<Store>, 2> kStores{{
    {"local", Store::Local},
    {"redis", Store::Redis},
}};
// Spelled as state::algorithmName() spells them; a unit test checks both agree.
constexpr std::array<NamedValue<state::Algorithm>, 4> kAlgorithms{{
    {"token_bucket", state::Algorithm::TokenBucket},
    {"gcra", state::Algorithm::Gcra},
    {"sliding_window", state::Algorithm::SlidingWindow},
    {"fixed_window", state::Algorithm::FixedWindow},
}};

template <class E, std::size_t N>
std::string_view nameOf(const std::array<NamedValue<E>, N>& table, E value) {
  for (const auto& entry : table) {
    if (entry.value == value) return entry.name;
  }
  return "?";
}

struct Unit {
  std::string_view suffix;
  std::int64_t ms;
};
// Largest first: formatDuration picks the first that divides, parseDuration must try
// "ms" before "m".
constexpr std::array<Unit, 5> kUnits{{
    {"d", 86'400'000},
    {"h", 3'600'000},
    {"m", 60'000},
    {"s", 1'000},
    {"ms", 1},
}};
// Ten years: beyond any sensible period or timeout, far below overflow in nanoseconds.
constexpr std::int64_t kMaxDurationMs = 3650LL * 86'400'000;

}  // namespace

std::span<const NamedValue<KeyKind>> keyKindNames() { return kKeyKinds; }
std::span<const NamedValue<Stage>> stageNames() { return kStages; }
std::span<const NamedValue<Scope>> scopeNames() { return kScopes; }
std::span<const NamedValue<Action>> actionNames() { return kActions; }
std::span<const NamedValue<SenderFilter>> senderFilterNames() { return kSenderFilters; }
std::span<const NamedValue<DefaultAction>> defaultActionNames() { return kDefaultActions; }
std::span<const NamedValue<LogLevel>> logLevelNames() { return kLogLevels; }
std::span<const NamedValue<LogTarget>> logTargetNames() { return kLogTargets; }
std::span<const NamedValue<Discovery>> discoveryNames() { return kDiscoveries; }
std::span<const NamedValue<Consistency>> consistencyNames() { return kConsistencies; }
std::span<const NamedValue<FailMode>> failModeNames() { return kFailModes; }
std::span<const NamedValue<AffinityMethod>> affinityMethodNames() { return kAffinityMethods; }
std::span<const NamedValue<state::Algorithm>> algorithmNames() { return kAlgorithms; }
std::span<const NamedValue<Store>> storeNames() { return kStores; }
std::span<const NamedValue<PolicyTempfailAction>> policyTempfailActionNames() { return kPolicyTempfailActions; }

std::string_view keyKindName(KeyKind k) { return nameOf(kKeyKinds, k); }
std::string_view stageName(Stage s) { return nameOf(kStages, s); }
std::string_view scopeName(Scope s) { return nameOf(kScopes, s); }
std::string_view actionName(Action a) { return nameOf(kActions, a); }
std::string_view senderFilterName(SenderFilter f) { return nameOf(kSenderFilters, f); }
std::string_view defaultActionName(DefaultAction a) { return nameOf(kDefaultActions, a); }
std::string_view logLevelName(LogLevel l) { return nameOf(kLogLevels, l); }
std::string_view logTargetName(LogTarget t) { return nameOf(kLogTargets, t); }
std::string_view discoveryName(Discovery d) { return nameOf(kDiscoveries, d); }
std::string_view consistencyName(Consistency c) { return nameOf(kConsistencies, c); }
std::string_view failModeName(FailMode m) { return nameOf(kFailModes, m); }
std::string_view affinityMethodName(AffinityMethod m) { return nameOf(kAffinityMethods, m); }
std::string_view storeName(Store s) { return nameOf(kStores, s); }
std::string_view policyTempfailActionName(PolicyTempfailAction a) { return nameOf(kPolicyTempfailActions, a); }

std::string formatDuration(Duration d) {
  const std::int64_t ms = d.count();
  if (ms == 0) return "0s";
  for (const auto& unit : kUnits) {
    if (ms % unit.ms == 0) return std::to_string(ms / unit.ms) + std::string(unit.suffix);
  }
  return std::to_string(ms) + "ms";
}

std::optional<Duration> parseDuration(std::string_view text, std::string* error) {
  auto fail = [&](std::string message) -> std::optional<Duration> {
    if (error) *error = std::move(message);
    return std::nullopt;
  };
  static constexpr std::string_view kExamples = "\"250ms\", \"5s\", \"10m\", \"1h\", \"1d\" or \"1h30m\"";
  if (text.empty()) return fail("a duration cannot be empty; write e.g. " + std::string(kExamples));
  const auto is_digit = [](char c) { return c >= '0' && c <= '9'; };
  if (std::all_of(text.begin(), text.end(), is_digit)) {
    return fail("a duration needs a unit: write \"" + std::string(text.substr(0, 20)) + "s\" for seconds (units: ms, s, m, h, d)");
  }
  std::int64_t total = 0;
  std::string_view rest = text;
  // kUnits is ordered largest first: each part must use a unit after the previous
  // part's, so every duration has exactly one spelling and "1h1h" or "30s1h" (a typo
  // more often than an intent) are refused rather than summed.
  std::size_t next_unit = 0;
  const Unit* previous = nullptr;
  while (!rest.empty()) {
    std::size_t n = 0;
    while (n < rest.size() && is_digit(rest[n])) ++n;
    if (n == 0) {
      if (rest.front() == '-') return fail("a duration cannot be negative");
      return fail(quoteValue(text) + " is not a duration; write e.g. " + std::string(kExamples));
    }
    if (n > 1 && rest.front() == '0') {
      return fail(quoteValue(text) + ": a number in a duration cannot start with 0; write \"1h\", not \"01h\"");
    }
    std::int64_t amount = 0;
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + n, amount);
    if (ec != std::errc() || end != rest.data() + n) return fail(quoteValue(text) + " is too long a duration");
    rest.remove_prefix(n);
    if (!rest.empty() && rest.front() == '.') {
      return fail("a duration takes whole numbers: write \"1h30m\" rather than \"1.5h\", \"1500ms\" rather than \"1.5s\"");
    }
    std::size_t index = kUnits.size();
    // "ms" must win over "m": try the two-letter suffix first.
    if (rest.substr(0, 2) == "ms") {
      index = 4;
    } else if (!rest.empty()) {
      for (std::size_t i = 0; i < kUnits.size(); ++i) {
        if (kUnits[i].suffix.size() == 1 && rest.front() == kUnits[i].suffix.front()) index = i;
      }
    }
    if (index == kUnits.size()) {
      if (rest.empty()) return fail("a duration needs a unit after the last number (units: ms, s, m, h, d)");
      const char c = rest.front();
      if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        return fail(quoteValue(text) + " has an unknown unit; units are ms, s, m, h, d");
      }
      return fail(quoteValue(text) + " is not a duration; write e.g. " + std::string(kExamples));
    }
    const Unit* unit = &kUnits[index];
    if (index < next_unit) {
      if (unit == previous) {
        return fail(quoteValue(text) + " uses the unit \"" + std::string(unit->suffix) +
                    "\" twice; give each unit once, e.g. \"2h\" rather than \"1h1h\"");
      }
      return fail(quoteValue(text) + " has \"" + std::string(unit->suffix) + "\" after \"" + std::string(previous->suffix) +
                  "\"; write the units from the largest to the smallest (d, h, m, s, ms), e.g. \"1h30s\"");
    }
    next_unit = index + 1;
    previous = unit;
    rest.remove_prefix(unit->suffix.size());
    if (amount > kMaxDurationMs / unit->ms || total + amount * unit->ms > kMaxDurationMs) {
      return fail(quoteValue(text) + " is too long; the longest duration is 3650d");
    }
    total += amount * unit->ms;
  }
  return Duration(total);
}

}  // namespace zetian::conf
