// The policy as a document of its own (conf/policy.h, conf/policy_diff.h): the policy
// loader gives the whole-file loader's errors at the same places and refuses the
// node-local tables; the canonical text is stable and loads back to the same policy;
// the diff says what changed.
#include "conf/policy.h"

#include <gtest/gtest.h>

#include "conf/policy_diff.h"
#include "load_support.h"

namespace zetian::conf {
namespace {

using namespace std::chrono_literals;

std::string dumpErrors(const std::vector<ConfigError>& errors) {
  std::string out;
  for (const auto& e : errors) out += e.format() + "\n";
  return out;
}

Policy goodPolicy(std::string_view text, const PolicyLoadOptions& options = {}) {
  auto r = loadPolicy(text, "p.toml", options);
  EXPECT_TRUE(r.ok()) << text << "\n--- errors:\n" << dumpErrors(r.errors);
  return r.policy.value_or(Policy{});
}

ConfigError onlyPolicyError(std::string_view text, const PolicyLoadOptions& options = {}) {
  const auto r = loadPolicy(text, "p.toml", options);
  EXPECT_EQ(r.errors.size(), 1u) << text << "\n--- errors:\n" << dumpErrors(r.errors);
  EXPECT_FALSE(r.policy.has_value());
  return r.errors.empty() ? ConfigError{} : r.errors.front();
}

constexpr std::string_view kRule = R"(
[[ratelimit.rule]]
name = "per-client-ip"
key = "client_ip"
limit = 100
period = "1h"
)";

// A policy that sets every key the policy tables have, none at its default.
constexpr std::string_view kEveryField = R"(
[ratelimit]
exempt = ["192.0.2.0/24", "2001:db8::/32", "10.1.2.3"]
exempt_authenticated = true
max_keys = 5000
fail_mode = "closed"
store = "redis"

[[ratelimit.rule]]
name = "per-net"
key = "client_net"
prefix_v4 = 16
prefix_v6 = 48
stage = "connect"
limit = 7
period = "90m"
burst = 20
algorithm = "gcra"
action = "reject"
reply = "550 5.7.1 \"slow\" down\t%{key} \\ 100%"

[[ratelimit.rule]]
name = "per-sender"
key = "sender"
stage = "rcpt"
limit = 50
period = "1d"
algorithm = "sliding_window"
scope = "region"
consistency = "fast"
store = "local"
action = "tag"
senders = "non_null"

[[ratelimit.rule]]
name = "per-rcpt-domain"
key = "rcpt_domain"
limit = 1000
period = "10s"
algorithm = "fixed_window"
scope = "node"
store = "local"
action = "dry_run"
senders = "null"

[[ratelimit.rule]]
name = "global"
key = "global"
stage = "data"
limit = 3
period = "250ms"
store = "local"
action = "quarantine"

[affinity]
method = "source_ip"
)";

// ---------------------------------------------------------------- loading

TEST(PolicyLoad, EveryFieldIsRead) {
  const Policy p = goodPolicy(kEveryField);
  ASSERT_EQ(p.exempt.size(), 3u);
  EXPECT_EQ(p.exempt[2].toString(), "10.1.2.3/32");
  EXPECT_TRUE(p.exempt_authenticated);
  EXPECT_EQ(p.max_keys, 5000u);
  EXPECT_EQ(p.fail_mode, FailMode::Closed);
  EXPECT_EQ(p.store, Store::Redis);
  EXPECT_EQ(p.affinity, AffinityMethod::SourceIp);
  ASSERT_EQ(p.rules.size(), 4u);
  EXPECT_EQ(p.rules[0].store, Store::Redis);  // from ratelimit.store
  EXPECT_EQ(p.rules[0].prefix_v4, 16);
  EXPECT_EQ(p.rules[0].period, 90min);
  EXPECT_EQ(p.rules[0].reply, "550 5.7.1 \"slow\" down\t%{key} \\ 100%");
  EXPECT_EQ(p.rules[1].consistency, Consistency::Fast);
  EXPECT_EQ(p.rules[1].senders, SenderFilter::NonNull);
  EXPECT_EQ(p.rules[2].stage, Stage::Rcpt);  // the default stage of a recipient key
  EXPECT_EQ(p.rules[3].period, 250ms);
}

TEST(PolicyLoad, GivesThePolicyOfTheSameTablesInAWholeFile) {
  const std::string node_tables = "[node]\nid = \"mx1\"\n[milter]\nsocket = \"inet:9999@127.0.0.1\"\n"
                                  "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n";
  const Config whole = good(node_tables + std::string(kEveryField));
  EXPECT_EQ(goodPolicy(kEveryField), whole.policy);
  // The defaults of absent tables and keys are the whole file's.
  EXPECT_EQ(goodPolicy(""), good("").policy);
  EXPECT_EQ(goodPolicy(kRule), good(kRule).policy);
}

TEST(PolicyLoad, NodeLocalTablesAreRefusedAtTheirHeader) {
  for (std::string_view table : {"node", "milter", "health", "log", "cluster", "redis", "events"}) {
    const std::string text = std::string(kRule) + "\n[" + std::string(table) + "]\n";
    const ConfigError e = onlyPolicyError(text);
    EXPECT_EQ(e.file, "p.toml");
    EXPECT_ERROR_AT(e, 8, 2, "`[" + std::string(table) + "]` is a node-local table: it stays in the node's own file, not in the policy");
  }
}

TEST(PolicyLoad, NodeLocalKeysWrittenDottedAreRefusedAtTheirKey) {
  const ConfigError e = onlyPolicyError("\n  milter.socket = \"inet:1@127.0.0.1\"\n" + std::string(kRule));
  EXPECT_ERROR_AT(e, 2, 3, "`[milter]` is a node-local table");
  // Every node-local table is reported, each at its own place, and nothing of it is read
  // (its bad values give no second error).
  const auto r = loadPolicy("[cluster]\nenabled = \"yes\"\n[log]\nlevel = 5\n", "p.toml");
  ASSERT_EQ(r.errors.size(), 2u) << dumpErrors(r.errors);
  EXPECT_ERROR_AT(r.errors[0], 1, 2, "`[cluster]` is a node-local table");
  EXPECT_ERROR_AT(r.errors[1], 3, 2, "`[log]` is a node-local table");
}

TEST(PolicyLoad, UnknownTablesGetTheLoadersOwnHint) {
  const ConfigError e = onlyPolicyError("[ratelimt]\nmax_keys = 5\n");
  EXPECT_ERROR_AT(e, 1, 2, "unknown key `ratelimt`; did you mean `ratelimit`?");
}

// The same mistakes in a policy document and in a whole file give the same errors, at
// the same FILE:LINE:COL, with the same words.
TEST(PolicyLoad, ErrorsAreTheWholeFileLoadersErrors) {
  const std::vector<std::string> bad = {
      "[ratelimit]\nmax_keys = 0\n",
      "[ratelimit]\nexempt = [\"10.0.0.1/8\", 5]\n",
      "[ratelimit]\nfail_mode = \"opne\"\n",
      "[[ratelimit.rule]]\nname = \"a b\"\nkey = \"client_ip\"\nlimit = 1\nperiod = \"1h\"\n",
      "[[ratelimit.rule]]\nname = \"a\"\nkey = \"rcpt\"\nstage = \"mail\"\nlimit = 1\nperiod = \"1h\"\n",
      "[[ratelimit.rule]]\nname = \"a\"\nlimit = \"1\"\nperiod = 60\n",
      "[[ratelimit.rule]]\nname = \"a\"\nkey = \"helo\"\nlimit = 1\nperiod = \"1h\"\nprefix_v4 = 8\nlimt = 3\n",
      "[[ratelimit.rule]]\nname = \"a\"\nkey = \"client_ip\"\nlimit = 1\nperiod = \"1h\"\naction = \"reject\"\nreply = \"451 x\"\n",
      std::string(kRule) + std::string(kRule),
      "[ratelimit]\nexempt = [\n",
      "[affinity]\nmethod = \"round_robin\"\n",
      "[ratelimit]\nmax_keys = 5\n\xff\n",
      "[ratelimit]\nstore = \"redis\"\n" + std::string(kRule) + "scope = \"node\"\n",
      // A line longer than source.h's kLongLine is broken before parsing; places are
      // still the file's.
      [] {
        std::string line = "[ratelimit]\nexempt = [";
        for (int i = 0; i < 200; ++i) line += "\"10." + std::to_string(i) + ".0.0/16\", ";
        return line + "\"10.1.2.3/8\"]\n";
      }(),
  };
  for (const auto& text : bad) {
    const auto whole = loadString(text, "p.toml");
    const auto policy = loadPolicy(text, "p.toml", PolicyLoadOptions{.node_has_redis = false});
    EXPECT_FALSE(whole.errors.empty()) << text;
    EXPECT_EQ(dumpErrors(policy.errors), dumpErrors(whole.errors)) << text;
  }
}

TEST(PolicyLoad, WarnsAsTheWholeFileLoaderWarns) {
  const auto r = loadPolicy("[ratelimit]\nmax_keys = 5\n", "p.toml");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(dumpErrors(r.warnings), dumpErrors(loadString("[ratelimit]\nmax_keys = 5\n", "p.toml").warnings));
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].message.find("there is no [[ratelimit.rule]]"), std::string::npos);
}

// A document is valid by its text alone: store "redis" needs the node's [redis] only
// when the node is named, and then it is the whole file's error at the same place.
TEST(PolicyLoad, RedisStoreNeedsRedisOnlyWhenTheNodeIsGiven) {
  const std::string text = std::string(kRule) + "store = \"redis\"\n";
  EXPECT_EQ(goodPolicy(text).rules.at(0).store, Store::Redis);
  EXPECT_EQ(goodPolicy(text, PolicyLoadOptions{.node_has_redis = true}).rules.at(0).store, Store::Redis);
  const ConfigError e = onlyPolicyError(text, PolicyLoadOptions{.node_has_redis = false});
  EXPECT_ERROR_AT(e, 7, 9, "store \"redis\" needs a [redis] section");
  EXPECT_EQ(e.format(), onlyError(text).format().replace(0, 6, "p.toml"));
  good("[redis]\nurl = \"redis://127.0.0.1\"\n" + text);

  const std::string table_store = "[ratelimit]\nstore = \"redis\"\n" + std::string(kRule);
  EXPECT_EQ(goodPolicy(table_store).store, Store::Redis);
  EXPECT_ERROR_AT(onlyPolicyError(table_store, PolicyLoadOptions{.node_has_redis = false}), 2, 9,
                  "`ratelimit.store` = \"redis\" needs a [redis] section");
  // What Redis cannot keep is refused with or without the node: it is the rule's own.
  const std::string out_of_domain =
      "[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"3650d\"\nburst = 1000000000\nstore = \"redis\"\n";
  EXPECT_ERROR_AT(onlyPolicyError(out_of_domain), 7, 9, "this rule cannot be kept in Redis");
}

// ---------------------------------------------------------------- canonical text

TEST(PolicyText, EveryFieldRoundTrips) {
  const Policy p = goodPolicy(kEveryField);
  const std::string text = policyText(p);
  const Policy back = goodPolicy(text);
  EXPECT_EQ(back, p) << text;
  EXPECT_EQ(policyText(back), text);
  // Defaults written out load back as themselves; an empty exempt list stays empty.
  for (std::string_view source : {std::string_view(""), kRule, std::string_view("[ratelimit]\nexempt = []\n")}) {
    const Policy q = goodPolicy(source);
    EXPECT_EQ(goodPolicy(policyText(q)), q) << policyText(q);
  }
  EXPECT_TRUE(goodPolicy(policyText(goodPolicy("[ratelimit]\nexempt = []\n"))).exempt.empty());
}

TEST(PolicyText, IsTheCanonicalFormat) {
  EXPECT_EQ(policyText(goodPolicy(kRule)),
            "[ratelimit]\n"
            "exempt = [\"127.0.0.0/8\", \"::1/128\"]\n"
            "exempt_authenticated = false\n"
            "max_keys = 1000000\n"
            "fail_mode = \"local\"\n"
            "store = \"local\"\n"
            "\n"
            "[[ratelimit.rule]]\n"
            "name = \"per-client-ip\"\n"
            "key = \"client_ip\"\n"
            "stage = \"mail\"\n"
            "limit = 100\n"
            "period = \"1h\"\n"
            "burst = 100\n"
            "algorithm = \"token_bucket\"\n"
            "scope = \"cluster\"\n"
            "consistency = \"exact\"\n"
            "store = \"local\"\n"
            "action = \"tempfail\"\n"
            "senders = \"any\"\n"
            "\n"
            "[affinity]\n"
            "method = \"key\"\n");
}

// Two files that say the same policy in other words give the same bytes.
TEST(PolicyText, IsStableAcrossKeyOrderCommentsSpacingAndSpelling) {
  const std::string a = R"(
[ratelimit]
exempt = ["127.0.0.0/8", "::1/128"]
[[ratelimit.rule]]
name = "per-net"
key = "client_net"
limit = 100
period = "1h"
[[ratelimit.rule]]
name = "per-sender"
key = "sender"
limit = 5
period = "1d"
reply = "451 4.7.1 later"
)";
  const std::string b = R"(# the policy of mx2
[affinity]
method   =   "key"      # the default, written out

[[ratelimit.rule]]
period="60m"
limit=100
key="client_net"
prefix_v4 = 24
burst = 100
name="per-net"

[[ratelimit.rule]]
reply = '451 4.7.1 later'
stage = "mail"
algorithm = "token_bucket"
period = "24h"
name = "per-sender"
key = "sender"
limit = 5
)";
  const std::string c = "[node]\nid = \"mx3\"\n[log]\nlevel = \"debug\"\n" + a;
  const std::string canonical = policyText(goodPolicy(a));
  EXPECT_EQ(policyText(goodPolicy(b)), canonical);
  EXPECT_EQ(policyText(good(c).policy), canonical);
  // Rule order means something (the first blocking denial decides): it is kept.
  const std::string swapped = R"(
[[ratelimit.rule]]
name = "per-sender"
key = "sender"
limit = 5
period = "1d"
reply = "451 4.7.1 later"
[[ratelimit.rule]]
name = "per-net"
key = "client_net"
limit = 100
period = "1h"
)";
  EXPECT_NE(policyText(goodPolicy(swapped)), canonical);
}

TEST(PolicyText, RedisRulesLeaveOutWhatRedisRefuses) {
  const std::string text = "[ratelimit]\nstore = \"redis\"\n" + std::string(kRule);
  const std::string canonical = policyText(goodPolicy(text));
  EXPECT_EQ(canonical.find("scope"), std::string::npos) << canonical;
  EXPECT_EQ(canonical.find("consistency"), std::string::npos) << canonical;
  EXPECT_EQ(goodPolicy(canonical, PolicyLoadOptions{.node_has_redis = true}), goodPolicy(text));
}

// ---------------------------------------------------------------- diff

TEST(PolicyDiffTest, SamePolicyInOtherWordsIsNoChange) {
  const PolicyDiff d = diffPolicies(goodPolicy(kRule), goodPolicy(std::string(kRule) + "burst = 100\nstage = \"mail\"\n"));
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(renderPolicyDiff(d), "no change\n");
}

TEST(PolicyDiffTest, ChangedRuleFieldsWithOldAndNewValues) {
  const Policy before = goodPolicy(kRule);
  const Policy after = goodPolicy(std::string(kRule) + "burst = 150\nreply = \"451 4.7.1 later\"\n");
  const PolicyDiff d = diffPolicies(before, after);
  ASSERT_EQ(d.rules_changed.size(), 1u);
  EXPECT_EQ(d.rules_changed[0].name, "per-client-ip");
  ASSERT_EQ(d.rules_changed[0].fields.size(), 2u);
  EXPECT_EQ(d.rules_changed[0].fields[0], (FieldChange{"burst", "100", "150"}));
  EXPECT_EQ(d.rules_changed[0].fields[1], (FieldChange{"reply", std::nullopt, "\"451 4.7.1 later\""}));
  EXPECT_TRUE(d.rules_added.empty());
  EXPECT_TRUE(d.rules_removed.empty());
  EXPECT_TRUE(d.settings.empty());
  EXPECT_EQ(renderPolicyDiff(d),
            "rule \"per-client-ip\": changed\n"
            "    burst: 100 -> 150\n"
            "    reply: (not set) -> \"451 4.7.1 later\"\n");
}

TEST(PolicyDiffTest, AKeyChangeShowsTheKeysThatComeAndGoWithIt) {
  const Policy before = goodPolicy("[[ratelimit.rule]]\nname = \"n\"\nkey = \"client_net\"\nlimit = 1\nperiod = \"1h\"\n");
  const Policy after = goodPolicy("[[ratelimit.rule]]\nname = \"n\"\nkey = \"client_ip\"\nlimit = 1\nperiod = \"1h\"\n");
  const PolicyDiff d = diffPolicies(before, after);
  ASSERT_EQ(d.rules_changed.size(), 1u);
  const auto& f = d.rules_changed[0].fields;
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0], (FieldChange{"key", "\"client_net\"", "\"client_ip\""}));
  EXPECT_EQ(f[1], (FieldChange{"prefix_v4", "24", std::nullopt}));
  EXPECT_EQ(f[2], (FieldChange{"prefix_v6", "64", std::nullopt}));
}

TEST(PolicyDiffTest, RulesAddedRemovedAndReordered) {
  const std::string a = "[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"1h\"\n";
  const std::string b = "[[ratelimit.rule]]\nname = \"b\"\nkey = \"helo\"\nlimit = 2\nperiod = \"1m\"\n";
  const std::string c = "[[ratelimit.rule]]\nname = \"c\"\nkey = \"sender\"\nlimit = 3\nperiod = \"1s\"\n";
  const std::string d_rule = "[[ratelimit.rule]]\nname = \"d\"\nkey = \"rcpt\"\nlimit = 4\nperiod = \"1d\"\n";
  const PolicyDiff d = diffPolicies(goodPolicy(a + b + c), goodPolicy(c + d_rule + a));
  ASSERT_EQ(d.rules_removed.size(), 1u);
  EXPECT_EQ(d.rules_removed[0].name, "b");
  ASSERT_EQ(d.rules_added.size(), 1u);
  EXPECT_EQ(d.rules_added[0].name, "d");
  EXPECT_TRUE(d.rules_changed.empty());
  EXPECT_EQ(d.order_before, (std::vector<std::string>{"a", "c"}));
  EXPECT_EQ(d.order_after, (std::vector<std::string>{"c", "a"}));
  const std::string shown = renderPolicyDiff(d);
  EXPECT_NE(shown.find("rule \"b\": removed\n"), std::string::npos) << shown;
  EXPECT_NE(shown.find("rule \"d\": added\n    key = \"rcpt\"\n    stage = \"rcpt\"\n    limit = 4\n"), std::string::npos)
      << shown;
  EXPECT_NE(shown.find("rule order: \"a\", \"c\" -> \"c\", \"a\"\n"), std::string::npos) << shown;
  // Removing a rule does not reorder the others.
  EXPECT_TRUE(diffPolicies(goodPolicy(a + b + c), goodPolicy(a + c)).order_before.empty());
}

TEST(PolicyDiffTest, ExemptionsAndSettings) {
  const Policy before = goodPolicy("[ratelimit]\nexempt = [\"10.0.0.0/8\", \"192.0.2.0/24\"]\n" + std::string(kRule));
  const Policy after = goodPolicy("[ratelimit]\nexempt = [\"192.0.2.0/24\", \"2001:db8::/32\"]\nfail_mode = \"open\"\n" +
                                  std::string(kRule) + "[affinity]\nmethod = \"source_ip\"\n");
  const PolicyDiff d = diffPolicies(before, after);
  EXPECT_EQ(d.exempt_added, (std::vector<std::string>{"2001:db8::/32"}));
  EXPECT_EQ(d.exempt_removed, (std::vector<std::string>{"10.0.0.0/8"}));
  EXPECT_FALSE(d.exempt_reordered);
  ASSERT_EQ(d.settings.size(), 2u);
  EXPECT_EQ(d.settings[0], (FieldChange{"ratelimit.fail_mode", "\"local\"", "\"open\""}));
  EXPECT_EQ(d.settings[1], (FieldChange{"affinity.method", "\"key\"", "\"source_ip\""}));
  EXPECT_EQ(renderPolicyDiff(d),
            "ratelimit.fail_mode: \"local\" -> \"open\"\n"
            "affinity.method: \"key\" -> \"source_ip\"\n"
            "ratelimit.exempt: added \"2001:db8::/32\"\n"
            "ratelimit.exempt: removed \"10.0.0.0/8\"\n");

  const PolicyDiff reordered =
      diffPolicies(before, goodPolicy("[ratelimit]\nexempt = [\"192.0.2.0/24\", \"10.0.0.0/8\"]\n" + std::string(kRule)));
  EXPECT_TRUE(reordered.exempt_reordered);
  EXPECT_FALSE(reordered.empty());
  EXPECT_EQ(renderPolicyDiff(reordered), "ratelimit.exempt: the same blocks in another order\n");

  // A block written twice is removed once.
  const PolicyDiff twice = diffPolicies(goodPolicy("[ratelimit]\nexempt = [\"10.0.0.0/8\", \"10.0.0.0/8\"]\n" + std::string(kRule)),
                                        goodPolicy("[ratelimit]\nexempt = []\n" + std::string(kRule)));
  EXPECT_EQ(twice.exempt_removed, (std::vector<std::string>{"10.0.0.0/8"}));
}

}  // namespace
}  // namespace zetian::conf
