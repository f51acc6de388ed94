// [ratelimit], its [[ratelimit.rule]] entries and [affinity]: the part of the
// configuration that is policy. A rule is checked as a whole (key against stage, reply against action), and
// each of its problems is reported, so one pass over a file shows every mistake.
#include <algorithm>
#include <map>

#include "conf/build.h"
#include "conf/syntax.h"
#include "conf/text.h"
#include "state/redis_scripts.h"

namespace zetian::conf {
namespace {

constexpr std::int64_t kMaxCount = 1'000'000'000;  // limit, burst, max_keys

bool isRuleNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

// The earliest stage at which the MTA has told us the key's value.
Stage firstStageOf(KeyKind key) {
  switch (key) {
    case KeyKind::ClientIp:
    case KeyKind::ClientNet:
    case KeyKind::Global: return Stage::Connect;
    case KeyKind::Helo: return Stage::Helo;
    case KeyKind::Sender:
    case KeyKind::SenderDomain:
    case KeyKind::SaslUser: return Stage::Mail;
    case KeyKind::Rcpt:
    case KeyKind::RcptDomain: return Stage::Rcpt;
  }
  return Stage::Connect;
}

// Recipient keys have one value per recipient: only the rcpt stage sees them one by one.
bool onlyAtRcpt(KeyKind key) { return key == KeyKind::Rcpt || key == KeyKind::RcptDomain; }

constexpr std::string_view kRedisNeeded =
    "needs a [redis] section that says where Redis is (`redis.url`, `redis.sentinels` or `redis.cluster`)";

struct RuleBuilder {
  Diagnostics& diag;
  std::map<std::string, int> names;  // rule name -> line of first definition
  Store default_store;                // `ratelimit.store`
  bool redis_given;                   // the file has a [redis] section

  std::optional<Rule> build(const toml::value& table) {
    TableReader r(diag, &table, "ratelimit.rule");
    Rule rule;
    bool ok = true;
    std::vector<std::pair<std::string_view, std::string_view>> absent;  // key, example
    auto need = [&](auto value, std::string_view key, std::string_view example) {
      if (!value) {
        ok = false;
        if (!r.has(key)) absent.emplace_back(key, example);
      }
      return value;
    };

    if (auto name = need(r.string("name"), "name", "name = \"per-client-ip\"")) {
      if (name->empty() || name->size() > 64 || !std::all_of(name->begin(), name->end(), isRuleNameChar)) {
        r.error("name", "`ratelimit.rule.name` must be 1 to 64 characters from A-Z a-z 0-9 _ . -, not " + quoteValue(*name));
        ok = false;
      } else {
        const auto place = diag.placeOf(*r.find("name"));
        const int line = place ? place->line : 0;
        const auto [it, fresh] = names.emplace(*name, line);
        if (!fresh) {
          r.error("name", "there is already a rule named `" + *name + "` (line " + std::to_string(it->second) +
                              "); rule names must be unique");
          ok = false;
        }
        rule.name = *name;
      }
    }

    const auto key = need(r.choice("key", keyKindNames()), "key", "key = \"client_ip\"");
    if (key) rule.key = *key;

    const bool stage_given = r.has("stage");
    auto stage = r.choice("stage", stageNames());
    if (stage_given && !stage) ok = false;
    if (!stage_given && key) stage = onlyAtRcpt(*key) ? Stage::Rcpt : Stage::Mail;
    if (stage) rule.stage = *stage;
    if (key && stage) {
      const std::string key_text = "key \"" + std::string(keyKindName(*key)) + "\"";
      std::string problem;
      if (onlyAtRcpt(*key) && *stage != Stage::Rcpt) {
        problem = key_text + " is only known at stage \"rcpt\", not \"" + std::string(stageName(*stage)) + "\"";
      } else if (*stage < firstStageOf(*key)) {
        problem = key_text + " is not known yet at stage \"" + std::string(stageName(*stage)) + "\"; use stage \"" +
                  std::string(stageName(firstStageOf(*key))) + "\" or later";
      }
      if (!problem.empty()) {
        r.error(stage_given ? "stage" : "key", problem);
        ok = false;
      }
    }

    if (auto limit = need(r.integer("limit", 1, kMaxCount), "limit", "limit = 100")) rule.limit = static_cast<std::uint64_t>(*limit);
    if (auto period = need(r.duration("period", Duration(1)), "period", "period = \"1h\"")) rule.period = *period;
    if (auto burst = r.integer("burst", 1, kMaxCount)) {
      rule.burst = static_cast<std::uint64_t>(*burst);
    } else if (r.has("burst")) {
      ok = false;
    } else {
      rule.burst = rule.limit;
    }

    for (auto [prefix_key, max, field] : {std::tuple{"prefix_v4", 32, &rule.prefix_v4}, std::tuple{"prefix_v6", 128, &rule.prefix_v6}}) {
      const auto prefix = r.integer(prefix_key, 0, max);
      if (r.has(prefix_key) && !prefix) ok = false;
      if (!prefix) continue;
      if (key && *key != KeyKind::ClientNet) {
        r.error(prefix_key, "`ratelimit.rule." + std::string(prefix_key) + "` is only used with key \"client_net\", not \"" +
                                std::string(keyKindName(*key)) + "\"");
        ok = false;
      }
      *field = static_cast<int>(*prefix);
    }

    // True when the key is given with a valid value.
    auto optionalChoice = [&](std::string_view k, auto names, auto& field) {
      if (auto v = r.choice(k, names)) {
        field = *v;
        return true;
      }
      if (r.has(k)) ok = false;
      return false;
    };
    optionalChoice("algorithm", algorithmNames(), rule.algorithm);
    const bool scope_given = optionalChoice("scope", scopeNames(), rule.scope);
    const bool consistency_given = optionalChoice("consistency", consistencyNames(), rule.consistency);
    const bool store_given = optionalChoice("store", storeNames(), rule.store);
    if (!r.has("store")) rule.store = default_store;
    if (rule.store == Store::Redis) {
      if (store_given && !redis_given) {
        r.error("store", "store \"redis\" " + std::string(kRedisNeeded));
        ok = false;
      }
      // Both keys say how the zetian nodes share a count; a Redis count is shared by
      // every node that uses the Redis, each check decided there in one step. Taking
      // them silently would promise a behaviour that does not happen.
      const std::string with = store_given ? "with store \"redis\"" : "with store \"redis\" (from `ratelimit.store`)";
      if (scope_given) {
        r.error("scope", "`ratelimit.rule.scope` does not apply " + with +
                             ": every node that uses this Redis shares the rule's count; remove `scope`" +
                             (store_given ? "" : ", or set store = \"local\" on this rule to count by node, cluster or region"));
        ok = false;
      }
      if (consistency_given) {
        r.error("consistency", "`ratelimit.rule.consistency` does not apply " + with +
                                   ": Redis decides every check itself, checking and charging in one step; remove "
                                   "`consistency`" +
                                   (store_given ? "" : ", or set store = \"local\" on this rule for a count the cluster keeps"));
        ok = false;
      }
      // The scripts are exact within a domain (state/redis_scripts.h); a rule outside it
      // would be refused by every call at run time, so it is refused here.
      if (rule.limit > 0 && rule.period.count() > 0) {
        const state::Limit limit{rule.limit, std::chrono::duration_cast<std::chrono::nanoseconds>(rule.period).count(),
                                 rule.burst};
        if (auto why = state::redisDomainError(rule.algorithm, limit)) {
          r.error(store_given ? "store" : "period",
                  std::string(store_given ? "`ratelimit.rule.store`" : "`ratelimit.rule.period`") +
                      ": this rule cannot be kept in Redis: " + *why + "; lower burst or period, or raise limit");
          ok = false;
        }
      }
    }
    const auto action = r.choice("action", actionNames());
    const bool action_known = action.has_value() || !r.has("action");
    if (action) rule.action = *action;
    if (!action_known) ok = false;
    optionalChoice("senders", senderFilterNames(), rule.senders);
    if (r.has("senders") && stage && *stage < Stage::Mail) {
      r.error("senders", "`ratelimit.rule.senders` needs stage \"mail\" or later: the sender is not known at stage \"" +
                             std::string(stageName(*stage)) + "\"");
      ok = false;
    }

    if (auto reply = r.string("reply")) {
      std::string why;
      if (action_known && !checkReply(*reply, rule.action, &why)) {
        r.error("reply", "`ratelimit.rule.reply`: " + why);
        ok = false;
      }
      rule.reply = *reply;
    } else if (r.has("reply")) {
      ok = false;
    }
    if (absent.size() == 1) {
      r.errorAtTable("this [[ratelimit.rule]] is missing its required key `" + std::string(absent[0].first) + "` (e.g. " +
                     std::string(absent[0].second) + ")");
    } else if (!absent.empty()) {
      std::string keys;
      for (const auto& [k, example] : absent) keys += (keys.empty() ? "`" : ", `") + std::string(k) + "`";
      r.errorAtTable("this [[ratelimit.rule]] is missing its required keys " + keys);
    }
    return ok ? std::optional<Rule>(std::move(rule)) : std::nullopt;
  }
};

}  // namespace

Policy buildPolicy(TableReader& r, Diagnostics& diag, bool redis_given) {
  Policy policy;
  if (auto exempt = r.strings("exempt")) {
    for (const auto& [text, where] : *exempt) {
      std::string why;
      if (auto cidr = Cidr::parse(text, &why)) {
        policy.exempt.push_back(*cidr);
      } else {
        diag.atValue(*where, "`ratelimit.exempt`: " + why);
      }
    }
  } else if (!r.has("exempt")) {
    policy.exempt = {*Cidr::parse("127.0.0.0/8"), *Cidr::parse("::1/128")};
  }
  if (auto b = r.boolean("exempt_authenticated")) policy.exempt_authenticated = *b;
  if (auto n = r.integer("max_keys", 1, kMaxCount)) policy.max_keys = static_cast<std::uint64_t>(*n);
  if (auto m = r.choice("fail_mode", failModeNames())) policy.fail_mode = *m;
  if (auto store = r.choice("store", storeNames())) {
    policy.store = *store;
    if (*store == Store::Redis && !redis_given) r.error("store", "`ratelimit.store` = \"redis\" " + std::string(kRedisNeeded));
  }

  RuleBuilder builder{diag, {}, policy.store, redis_given};
  const std::vector<const toml::value*> tables = r.tables("rule");
  for (const toml::value* table : tables) {
    if (auto rule = builder.build(*table)) policy.rules.push_back(std::move(*rule));
  }
  // Counted on the tables, not on the rules built: a rule with an error is reported as
  // such, not as a missing rule.
  const toml::value* given = r.find("rule");
  if (tables.empty() && (!given || (given->is_array() && given->as_array().empty()))) {
    r.warning("rule", "there is no [[ratelimit.rule]]: zetian-milter will run and limit nothing; add a rule (see "
                      "contrib/zetian.toml) or remove the milter from the MTA");
  }
  return policy;
}

void buildAffinity(TableReader r, Policy& policy) {
  if (auto m = r.choice("method", affinityMethodNames())) policy.affinity = *m;
}

}  // namespace zetian::conf
