// The keys of cluster-wide limits: [cluster] replication_factor, replication_interval,
// sync_interval and check_timeout, [ratelimit] fail_mode, the rule's consistency and
// [affinity] method. Each default, each valid value, and each refusal with its text and
// its place.
#include <gtest/gtest.h>

#include <string>

#include "conf/load.h"
#include "load_support.h"

namespace zetian::conf {
namespace {

using namespace std::chrono_literals;

const std::string kRule = "[[ratelimit.rule]]\nname = \"r\"\nkey = \"client_ip\"\nlimit = 10\nperiod = \"1h\"\n";

// ---------------------------------------------------------------- defaults

TEST(ClusterLimitKeys, AbsentKeysTakeTheirDefaults) {
  const Config c = good(kRule);
  EXPECT_EQ(c.cluster.replication_factor, 2);
  EXPECT_EQ(c.cluster.replication_interval, 250ms);
  EXPECT_EQ(c.cluster.sync_interval, 1s);
  EXPECT_EQ(c.cluster.check_timeout, 200ms);
  EXPECT_EQ(c.policy.fail_mode, FailMode::Local);
  EXPECT_EQ(c.policy.affinity, AffinityMethod::Key);
  ASSERT_EQ(c.policy.rules.size(), 1u);
  EXPECT_EQ(c.policy.rules[0].consistency, Consistency::Exact);
}

TEST(ClusterLimitKeys, EmptySectionsTakeTheDefaultsToo) {
  const Config c = good("[cluster]\n[ratelimit]\n[affinity]\n" + kRule);
  EXPECT_EQ(c.cluster.replication_factor, 2);
  EXPECT_EQ(c.cluster.check_timeout, 200ms);
  EXPECT_EQ(c.policy.fail_mode, FailMode::Local);
  EXPECT_EQ(c.policy.affinity, AffinityMethod::Key);
}

TEST(ClusterLimitKeys, TheEmbeddedDefaultUsesTheDefaults) {
  const auto r = loadEmbeddedDefault();
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.config->cluster.replication_factor, 2);
  EXPECT_EQ(r.config->cluster.sync_interval, 1s);
  EXPECT_EQ(r.config->policy.fail_mode, FailMode::Local);
  EXPECT_EQ(r.config->policy.affinity, AffinityMethod::Key);
  ASSERT_FALSE(r.config->policy.rules.empty());
  EXPECT_EQ(r.config->policy.rules[0].consistency, Consistency::Exact);
}

// ---------------------------------------------------------------- replication_factor

TEST(ClusterLimitKeys, ReplicationFactorIsOneToNine) {
  for (int n = 1; n <= 9; ++n) {
    EXPECT_EQ(good("[cluster]\nreplication_factor = " + std::to_string(n) + "\n" + kRule).cluster.replication_factor, n);
  }
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_factor = 0\n"), 2, 22,
                  "`cluster.replication_factor` must be from 1 to 9, not 0");
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_factor = 10\n"), 2, 22,
                  "`cluster.replication_factor` must be from 1 to 9, not 10");
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_factor = -2\n"), 2, 22, "must be from 1 to 9, not -2");
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_factor = \"2\"\n"), 2, 22, "must be an integer, written without quotes");
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_factor = 2.0\n"), 2, 22, "whole number");
}

// ---------------------------------------------------------------- intervals

TEST(ClusterLimitKeys, ReplicationIntervalIsTenMillisecondsToTenSeconds) {
  for (auto [text, value] : {std::pair{"10ms", Duration(10ms)}, std::pair{"250ms", Duration(250ms)},
                             std::pair{"1s500ms", Duration(1500ms)}, std::pair{"10s", Duration(10s)}}) {
    EXPECT_EQ(good("[cluster]\nreplication_interval = \"" + std::string(text) + "\"\n" + kRule).cluster.replication_interval,
              value)
        << text;
  }
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_interval = \"9ms\"\n"), 2, 24,
                  "`cluster.replication_interval` must be from 10ms to 10s, not 9ms");
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_interval = \"10s1ms\"\n"), 2, 24, "from 10ms to 10s, not 10001ms");
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_interval = \"1m\"\n"), 2, 24, "from 10ms to 10s, not 1m");
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_interval = 250\n"), 2, 24, "needs a unit");
  EXPECT_ERROR_AT(onlyError("[cluster]\nreplication_interval = \"250\"\n"), 2, 24,
                  "`cluster.replication_interval`: a duration needs a unit");
}

TEST(ClusterLimitKeys, SyncIntervalIsFiftyMillisecondsToOneMinute) {
  for (auto [text, value] : {std::pair{"50ms", Duration(50ms)}, std::pair{"250ms", Duration(250ms)},
                             std::pair{"1s", Duration(1s)}, std::pair{"1m", Duration(1min)}}) {
    EXPECT_EQ(good("[cluster]\nsync_interval = \"" + std::string(text) + "\"\n" + kRule).cluster.sync_interval, value) << text;
  }
  EXPECT_ERROR_AT(onlyError("[cluster]\nsync_interval = \"49ms\"\n"), 2, 17,
                  "`cluster.sync_interval` must be from 50ms to 1m, not 49ms");
  EXPECT_ERROR_AT(onlyError("[cluster]\nsync_interval = \"1m1s\"\n"), 2, 17, "from 50ms to 1m, not 61s");
  EXPECT_ERROR_AT(onlyError("[cluster]\nsync_interval = \"0s\"\n"), 2, 17, "from 50ms to 1m, not 0s");
  EXPECT_ERROR_AT(onlyError("[cluster]\nsync_interval = \"1 s\"\n"), 2, 17, "is not a duration");
}

// ---------------------------------------------------------------- check_timeout

TEST(ClusterLimitKeys, CheckTimeoutIsOneMillisecondToFiveSeconds) {
  for (auto [text, value] : {std::pair{"1ms", Duration(1ms)}, std::pair{"200ms", Duration(200ms)},
                             std::pair{"5s", Duration(5s)}}) {
    EXPECT_EQ(good("[cluster]\ncheck_timeout = \"" + std::string(text) + "\"\n" + kRule).cluster.check_timeout, value) << text;
  }
  EXPECT_ERROR_AT(onlyError("[cluster]\ncheck_timeout = \"0ms\"\n"), 2, 17,
                  "`cluster.check_timeout` must be from 1ms to 5s, not 0s");
  EXPECT_ERROR_AT(onlyError("[cluster]\ncheck_timeout = \"5001ms\"\n"), 2, 17, "from 1ms to 5s, not 5001ms");
  EXPECT_ERROR_AT(onlyError("[cluster]\ncheck_timeout = \"-1s\"\n"), 2, 17, "cannot be negative");
}

TEST(ClusterLimitKeys, CheckTimeoutMustBeBelowTheMilterTimeout) {
  const auto e = onlyError("[milter]\ntimeout = \"1s\"\n[cluster]\ncheck_timeout = \"1s\"\n");
  EXPECT_ERROR_AT(e, 4, 17, "`cluster.check_timeout` (1s) must be below `milter.timeout` (1s)");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"2s\"\n[cluster]\ncheck_timeout = \"5s\"\n"), 4, 17,
                  "`cluster.check_timeout` (5s) must be below `milter.timeout` (2s)");
  // The order of the sections in the file does not matter.
  EXPECT_ERROR_AT(onlyError("[cluster]\ncheck_timeout = \"3s\"\n[milter]\ntimeout = \"3s\"\n"), 2, 17,
                  "must be below `milter.timeout` (3s)");
  EXPECT_EQ(good("[milter]\ntimeout = \"2s\"\n[cluster]\ncheck_timeout = \"1999ms\"\n" + kRule).cluster.check_timeout, 1999ms);
  EXPECT_EQ(good("[milter]\ntimeout = \"1s\"\n[cluster]\ncheck_timeout = \"999ms\"\n" + kRule).cluster.check_timeout, 999ms);
}

TEST(ClusterLimitKeys, CheckTimeoutIsComparedWithAnOverriddenMilterTimeout) {
  const auto r = load("[cluster]\ncheck_timeout = \"2s\"\n" + kRule, {{"milter.timeout", "2s"}});
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_EQ(r.errors[0].line, 2);
  EXPECT_NE(r.errors[0].message.find("must be below `milter.timeout` (2s)"), std::string::npos) << r.errors[0].format();
  EXPECT_TRUE(load("[cluster]\ncheck_timeout = \"2s\"\n" + kRule, {{"milter.timeout", "3s"}}).ok());
}

// ---------------------------------------------------------------- fail_mode

TEST(ClusterLimitKeys, FailModeIsLocalOpenOrClosed) {
  EXPECT_EQ(good("[ratelimit]\nfail_mode = \"local\"\n" + kRule).policy.fail_mode, FailMode::Local);
  EXPECT_EQ(good("[ratelimit]\nfail_mode = \"open\"\n" + kRule).policy.fail_mode, FailMode::Open);
  EXPECT_EQ(good("[ratelimit]\nfail_mode = \"closed\"\n" + kRule).policy.fail_mode, FailMode::Closed);
  const auto e = onlyError("[ratelimit]\nfail_mode = \"reject\"\n");
  EXPECT_ERROR_AT(e, 2, 13, "`ratelimit.fail_mode` must be one of local, open, closed, not \"reject\"");
  EXPECT_EQ(e.message.find("did you mean"), std::string::npos) << e.message;
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nfail_mode = \"Open\"\n"), 2, 13, "did you mean `open`?");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nfail_mode = \"closd\"\n"), 2, 13, "did you mean `closed`?");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nfail_mode = \"\"\n"), 2, 13, "must be one of local, open, closed, not \"\"");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nfail_mode = true\n"), 2, 13, "must be a string");
}

// ---------------------------------------------------------------- consistency

TEST(ClusterLimitKeys, ConsistencyIsExactOrFastPerRule) {
  const Config c = good(kRule + "consistency = \"fast\"\n" +
                        "[[ratelimit.rule]]\nname = \"s\"\nkey = \"sender\"\nlimit = 5\nperiod = \"1h\"\nconsistency = \"exact\"\n" +
                        "[[ratelimit.rule]]\nname = \"g\"\nkey = \"global\"\nlimit = 5\nperiod = \"1h\"\n");
  ASSERT_EQ(c.policy.rules.size(), 3u);
  EXPECT_EQ(c.policy.rules[0].consistency, Consistency::Fast);
  EXPECT_EQ(c.policy.rules[1].consistency, Consistency::Exact);
  EXPECT_EQ(c.policy.rules[2].consistency, Consistency::Exact);
  // Six lines of kRule come first: the bad value is on line 6.
  const auto e = onlyError(kRule + "consistency = \"strict\"\n");
  EXPECT_ERROR_AT(e, 6, 15, "`ratelimit.rule.consistency` must be one of exact, fast, not \"strict\"");
  EXPECT_EQ(e.message.find("did you mean"), std::string::npos) << e.message;
  EXPECT_ERROR_AT(onlyError(kRule + "consistency = \"fst\"\n"), 6, 15, "did you mean `fast`?");
  EXPECT_ERROR_AT(onlyError(kRule + "consistency = \"Exact\"\n"), 6, 15, "did you mean `exact`?");
  EXPECT_ERROR_AT(onlyError(kRule + "consistency = 1\n"), 6, 15, "must be a string");
}

// ---------------------------------------------------------------- [affinity]

TEST(ClusterLimitKeys, AffinityMethodIsKeyOrSourceIp) {
  EXPECT_EQ(good("[affinity]\nmethod = \"key\"\n" + kRule).policy.affinity, AffinityMethod::Key);
  EXPECT_EQ(good("[affinity]\nmethod = \"source_ip\"\n" + kRule).policy.affinity, AffinityMethod::SourceIp);
  EXPECT_EQ(good("affinity = { method = \"source_ip\" }\n" + kRule).policy.affinity, AffinityMethod::SourceIp);
  const auto e = onlyError("[affinity]\nmethod = \"hash\"\n");
  EXPECT_ERROR_AT(e, 2, 10, "`affinity.method` must be one of key, source_ip, not \"hash\"");
  EXPECT_ERROR_AT(onlyError("[affinity]\nmethod = \"source-ip\"\n"), 2, 10, "did you mean `source_ip`?");
  EXPECT_ERROR_AT(onlyError("[affinity]\nmethod = \"keys\"\n"), 2, 10, "did you mean `key`?");
  EXPECT_ERROR_AT(onlyError("[affinity]\nmethod = [\"key\"]\n"), 2, 10, "must be a string");
  EXPECT_ERROR_AT(onlyError("affinity = \"key\"\n"), 1, 12, "must be a table");
}

TEST(ClusterLimitKeys, UnknownKeysInAffinityAreRefused) {
  EXPECT_ERROR_AT(onlyError("[affinity]\nmethd = \"key\"\n"), 2, 1, "unknown key `affinity.methd`; did you mean `affinity.method`?");
  EXPECT_ERROR_AT(onlyError("[affinity]\n  Method = \"key\"\n"), 2, 3, "did you mean `affinity.method`?");
  const auto e = onlyError("[affinity]\nwhatever = 1\n");
  EXPECT_ERROR_AT(e, 2, 1, "unknown key `affinity.whatever`");
  EXPECT_NE(e.message.find("method"), std::string::npos) << e.message;
  EXPECT_ERROR_AT(onlyError("[afinity]\nmethod = \"key\"\n"), 1, 2, "did you mean `affinity`?");
  EXPECT_ERROR_AT(onlyError("affinity.metod = \"key\"\n"), 1, 10, "did you mean `affinity.method`?");
}

TEST(ClusterLimitKeys, KeysInTheWrongSectionSayWhereTheyBelong) {
  EXPECT_ERROR_AT(onlyError("[affinity]\nfail_mode = \"open\"\n"), 2, 1, "`fail_mode` belongs in [ratelimit]");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nmethod = \"key\"\n"), 2, 1, "`method` belongs in [affinity]");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nconsistency = \"fast\"\n"), 2, 1, "`consistency` belongs in [[ratelimit.rule]]");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\ncheck_timeout = \"1s\"\n"), 2, 1, "`check_timeout` belongs in [cluster]");
}

// ---------------------------------------------------------------- --set

TEST(ClusterLimitKeys, OverridesSetEachKey) {
  const Config c = good(kRule, {{"cluster.replication_factor", "3"},
                                {"cluster.replication_interval", "100ms"},
                                {"cluster.sync_interval", "250ms"},
                                {"cluster.check_timeout", "50ms"},
                                {"ratelimit.fail_mode", "closed"},
                                {"affinity.method", "source_ip"}});
  EXPECT_EQ(c.cluster.replication_factor, 3);
  EXPECT_EQ(c.cluster.replication_interval, 100ms);
  EXPECT_EQ(c.cluster.sync_interval, 250ms);
  EXPECT_EQ(c.cluster.check_timeout, 50ms);
  EXPECT_EQ(c.policy.fail_mode, FailMode::Closed);
  EXPECT_EQ(c.policy.affinity, AffinityMethod::SourceIp);
}

TEST(ClusterLimitKeys, BadOverridesAreNamed) {
  const auto r = load(kRule, {{"cluster.replication_factor", "12"}, {"affinity.method", "ip"}});
  ASSERT_EQ(r.errors.size(), 2u) << dump(r);
  EXPECT_EQ(r.errors[0].format(), "--set cluster.replication_factor: `cluster.replication_factor` must be from 1 to 9, not 12");
  EXPECT_EQ(r.errors[1].format(), "--set affinity.method: `affinity.method` must be one of key, source_ip, not \"ip\"");
}

}  // namespace
}  // namespace zetian::conf
