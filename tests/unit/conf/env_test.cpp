// Configuration from the environment (conf/env.h): names resolved against the schema,
// values read as --set reads them, errors that name the variable, secrets kept out of
// every message.
#include "conf/env.h"

#include <gtest/gtest.h>

#include <array>
#include <set>

#include "conf/schema.h"
#include "load_support.h"

namespace zetian::conf {
namespace {

TEST(EnvNames, EveryKeyHasItsName) {
  EXPECT_EQ(envNameOf("node.id"), "ZETIAN_NODE_ID");
  EXPECT_EQ(envNameOf("cluster.shared_secret_file"), "ZETIAN_CLUSTER_SHARED_SECRET_FILE");
  EXPECT_EQ(envNameOf("cluster.tls.cert"), "ZETIAN_CLUSTER_TLS_CERT");
  // Every settable key of the real schema resolves to itself: no two keys share a name.
  for (const auto& key : schemaKeys()) {
    if (key.type == ValueType::Table || key.type == ValueType::TableArray || key.path.starts_with("ratelimit.rule.")) {
      continue;
    }
    const EnvKey resolved = resolveEnvName(envNameOf(key.path), schemaKeys());
    EXPECT_EQ(resolved.path, key.path) << resolved.error;
  }
}

TEST(EnvNames, SpelledInUpperCaseOnly) {
  EXPECT_TRUE(isEnvName("ZETIAN_NODE_ID"));
  EXPECT_FALSE(isEnvName("ZETIAN_"));
  EXPECT_FALSE(isEnvName("zetian_node_id"));
  EXPECT_FALSE(isEnvName("node.id"));
  EXPECT_FALSE(isEnvName("ZETIAN_NODE.ID"));
}

TEST(EnvNames, UnknownNameSuggestsTheClosest) {
  EXPECT_EQ(resolveEnvName("ZETIAN_NODE_IDX", schemaKeys()).error, "no such key; did you mean ZETIAN_NODE_ID?");
  EXPECT_EQ(resolveEnvName("ZETIAN_CLUSTR_SEEDS", schemaKeys()).error, "no such key; did you mean ZETIAN_CLUSTER_SEEDS?");
  const EnvKey far = resolveEnvName("ZETIAN_WHATEVER_THIS_IS", schemaKeys());
  EXPECT_TRUE(far.path.empty());
  EXPECT_NE(far.error.find("ZETIAN_NODE_ID for node.id"), std::string::npos) << far.error;
}

TEST(EnvNames, SectionsAndTableArraysAreRefused) {
  const EnvKey section = resolveEnvName("ZETIAN_CLUSTER_TLS", schemaKeys());
  EXPECT_TRUE(section.path.empty());
  EXPECT_NE(section.error.find("names the section [cluster.tls]"), std::string::npos) << section.error;
  EXPECT_NE(section.error.find("ZETIAN_CLUSTER_TLS_CERT"), std::string::npos) << section.error;
  const EnvKey rule = resolveEnvName("ZETIAN_RATELIMIT_RULE_LIMIT", schemaKeys());
  EXPECT_TRUE(rule.path.empty());
  EXPECT_NE(rule.error.find("edit the file"), std::string::npos) << rule.error;
}

TEST(EnvNames, TwoKeysWithOneNameAreAnErrorNotAGuess) {
  // "a.b_c" and "a_b.c" both spell ZETIAN_A_B_C: where the section ends is not guessed.
  constexpr std::array schema{KeySchema{"a", ValueType::Table}, KeySchema{"a.b_c", ValueType::String},
                              KeySchema{"a_b", ValueType::Table}, KeySchema{"a_b.c", ValueType::String},
                              KeySchema{"a_b.d", ValueType::String}};
  const EnvKey both = resolveEnvName("ZETIAN_A_B_C", schema);
  EXPECT_TRUE(both.path.empty());
  EXPECT_EQ(both.error, "ambiguous: it is the name of both `a.b_c` and `a_b.c`; set them in the file or with --set");
  EXPECT_EQ(resolveEnvName("ZETIAN_A_B_D", schema).path, "a_b.d");
}

TEST(EnvNames, VariablesOfOtherUsesAreNotConfiguration) {
  for (const char* name : {"ZETIAN_TEST_CLOCK_OFFSET_MS", "ZETIAN_TEST_CAPABILITIES", "ZETIAN_MILTER", "ZETIAN_CTL",
                           "ZETIAN_EVENT", "ZETIAN_CLUSTER_STATE"}) {
    EXPECT_TRUE(isNonConfigEnvName(name)) << name;
  }
  // Configuration keys are never skipped, even when another tool reads the same name
  // (ZETIAN_HEALTH_SOCKET, zetianctl's; ZETIAN_NODE_ID, the event hook's). A section's
  // name may be (ZETIAN_MILTER, the test harness's): it sets nothing.
  for (const auto& key : schemaKeys()) {
    if (key.type == ValueType::Table || key.type == ValueType::TableArray) continue;
    EXPECT_FALSE(isNonConfigEnvName(envNameOf(key.path))) << key.path;
  }
}

TEST(EnvOverrides, AppliedLikeSetWithTheirTypes) {
  const Config c = good("[node]\nid = \"from-file\"\n",
                        {{"ZETIAN_NODE_ID", "mx7"},
                         {"ZETIAN_CLUSTER_SEEDS", "[\"mx2.example.net:7946\", \"mx3.example.net:7946\"]"},
                         {"ZETIAN_RATELIMIT_MAX_KEYS", "42"},
                         {"ZETIAN_RATELIMIT_EXEMPT_AUTHENTICATED", "true"},
                         {"ZETIAN_MILTER_TIMEOUT", "1m"}});
  EXPECT_EQ(c.node.id, "mx7");
  EXPECT_EQ(c.cluster.seeds, (std::vector<std::string>{"mx2.example.net:7946", "mx3.example.net:7946"}));
  EXPECT_EQ(c.policy.max_keys, 42u);
  EXPECT_TRUE(c.policy.exempt_authenticated);
  EXPECT_EQ(c.milter.timeout, std::chrono::minutes(1));
}

TEST(EnvOverrides, StringKeysTakeTheTextAsItIs) {
  // TOML would read these as an integer and a boolean; the keys are strings.
  const Config c = good("", {{"ZETIAN_NODE_ID", "42"}, {"ZETIAN_HEALTH_ADMIN_TOKEN", "12345678901234567890123"}});
  EXPECT_EQ(c.node.id, "42");
  EXPECT_EQ(c.health.admin_token, "12345678901234567890123");
  EXPECT_EQ(good("", {{"ZETIAN_NODE_ID", "\"quoted\""}}).node.id, "quoted");
}

TEST(EnvOverrides, FileThenEnvironmentThenSet) {
  // The host passes the environment first and --set after it: the later one wins.
  EXPECT_EQ(good("[log]\nlevel = \"info\"\n", {{"ZETIAN_LOG_LEVEL", "debug"}}).log.level, LogLevel::Debug);
  EXPECT_EQ(good("[log]\nlevel = \"info\"\n", {{"ZETIAN_LOG_LEVEL", "debug"}, {"log.level", "error"}}).log.level,
            LogLevel::Error);
}

TEST(EnvOverrides, ErrorsNameTheVariable) {
  const auto r = load("[log]\nlevel = \"info\"\n", {{"ZETIAN_NODE_IDX", "mx1"},
                                                    {"ZETIAN_LOG_LEVEL", "loud"},
                                                    {"ZETIAN_RATELIMIT_MAX_KEYS", "many"},
                                                    {"ZETIAN_CLUSTER_SEEDS", "mx2:7946"},
                                                    {"log.target", "nowhere"}});
  ASSERT_EQ(r.errors.size(), 5u) << dump(r);
  EXPECT_EQ(r.errors[0].format(), "ZETIAN_NODE_IDX: no such key; did you mean ZETIAN_NODE_ID?");
  EXPECT_EQ(r.errors[1].format().rfind("ZETIAN_LOG_LEVEL: `log.level` must be one of", 0), 0u) << dump(r);
  EXPECT_EQ(r.errors[2].format().rfind("ZETIAN_RATELIMIT_MAX_KEYS: `ratelimit.max_keys` must be an integer", 0), 0u)
      << dump(r);
  EXPECT_EQ(r.errors[3].format().rfind("ZETIAN_CLUSTER_SEEDS: `cluster.seeds` must be an array of strings", 0), 0u)
      << dump(r);
  EXPECT_EQ(r.errors[4].format().rfind("--set log.target: ", 0), 0u) << dump(r);
}

TEST(EnvOverrides, OtherZetianVariablesAreSkipped) {
  const auto r = load("", {{"ZETIAN_MILTER", "/usr/sbin/zetian-milter"}, {"ZETIAN_TEST_CLOCK_OFFSET_MS", "5"}});
  EXPECT_TRUE(r.ok()) << dump(r);
}

TEST(EnvOverrides, SecretsNeverAppearInErrors) {
  TempDir dir;
  const std::string short_file = dir.write("short", "tiny-secret\n");
  const std::vector<std::vector<Override>> cases = {
      {{"ZETIAN_CLUSTER_ENABLED", "true"}, {"ZETIAN_CLUSTER_SHARED_SECRET", "tiny-secret"}},
      {{"ZETIAN_CLUSTER_SHARED_SECRET", "tiny-secret"}, {"ZETIAN_CLUSTER_SHARED_SECRET_FILE", short_file}},
      {{"ZETIAN_REDIS_PASSWORD", "tiny-secret"}, {"ZETIAN_REDIS_PASSWORD_FILE", short_file}},
      {{"ZETIAN_HEALTH_ADMIN_TOKEN", "tiny-secret"}, {"ZETIAN_HEALTH_ADMIN_TOKEN_FILE", short_file}},
  };
  for (const auto& overrides : cases) {
    const auto r = load("", overrides);
    ASSERT_FALSE(r.ok()) << overrides.front().key;
    for (const auto& e : r.errors) EXPECT_EQ(e.format().find("tiny-secret"), std::string::npos) << e.format();
  }
}

}  // namespace
}  // namespace zetian::conf
