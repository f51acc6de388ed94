// Reloads: what a reload applies live, what it reports as needing a restart, the
// order of swap and sweep under concurrent checks, and POST /reload off the loop.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include "conf/schema.h"
#include "plugin/engine.h"
#include "plugin/reload_settings.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::plugin {
namespace {

using namespace std::chrono_literals;

class EngineReloadTest : public ::testing::Test {
 protected:
  void write(const std::string& body) {
    std::ofstream out(path_);
    out << body;
  }
  std::unique_ptr<Engine> open(const std::string& body) {
    write(body);
    Errors errors;
    auto engine = Engine::open(path_, {}, &errors);
    EXPECT_TRUE(engine) << (errors.empty() ? "" : errors.front());
    return engine;
  }
  std::string logText() {
    std::ifstream in(log_path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }

  cluster::testing::TempDir temp_;
  const std::string dir_ = temp_.path();
  const std::string path_ = dir_ + "/zetian.toml";
  const std::string log_path_ = dir_ + "/zetian.log";
};

TEST(EngineReloadSettings, EveryConfigurationKeyIsDecidedExactlyOnce) {
  std::multiset<std::string_view> covered;
  for (const auto& s : reloadSettings()) {
    covered.insert(s.key);
    if (!s.also.empty()) covered.insert(s.also);
    EXPECT_NE(conf::findSchemaKey(s.key), nullptr) << s.key << " is not a configuration key";
    EXPECT_TRUE(s.effect == ReloadEffect::Live || s.same != nullptr) << s.key << ": a restart key must be compared";
  }
  for (const auto& key : conf::schemaKeys()) {
    if (key.type == conf::ValueType::Table || key.type == conf::ValueType::TableArray) continue;
    std::string_view path = key.path;
    if (path.starts_with("ratelimit.rule.")) path = "ratelimit.rule";
    EXPECT_EQ(covered.count(path), 1u) << path << ": add it to plugin/reload_settings.cpp (live or restart)";
  }
}

TEST(EngineReloadSettings, ComparesEveryRestartKeyFieldByField) {
  conf::Config a;
  EXPECT_TRUE(settingsNeedingRestart(a, a).empty());
  conf::Config b = a;
  b.milter.user = "zetian";
  b.milter.timeout = 3s;
  b.cluster.tls = conf::ClusterTls{"c.pem", "k.pem", "ca.pem"};
  b.redis.timeout = 1s;
  b.events.exec = "/bin/true";
  b.policy.max_keys = 5;
  b.log.level = conf::LogLevel::Debug;  // live: not reported
  b.policy.exempt_authenticated = true;  // live
  EXPECT_EQ(settingsNeedingRestart(a, b),
            (std::vector<std::string_view>{"milter.timeout", "milter.user", "ratelimit.max_keys", "cluster.tls.cert",
                                           "cluster.tls.key", "cluster.tls.ca", "redis.timeout", "events.exec"}));
}

TEST(EngineReloadSettings, EveryPolicyHostKeyNeedsARestart) {
  conf::Config a;
  conf::Config b = a;
  b.policy_host.socket = "inet:10031@127.0.0.1";
  b.policy_host.max_connections = 5;
  b.policy_host.idle_timeout = 1min;
  b.policy_host.request_timeout = 1s;
  b.policy_host.session_timeout = 1h;
  b.policy_host.max_sessions = 7;
  b.policy_host.tempfail_action = conf::PolicyTempfailAction::DeferIfPermit;
  EXPECT_EQ(settingsNeedingRestart(a, b),
            (std::vector<std::string_view>{"policy.socket", "policy.max_connections", "policy.idle_timeout",
                                           "policy.request_timeout", "policy.session_timeout", "policy.max_sessions",
                                           "policy.tempfail_action"}));
}

constexpr const char* kRule = R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "per-ip"
key = "client_ip"
limit = 5
period = "1h"
)";

TEST_F(EngineReloadTest, RestartKeysAreNamedInOneLineAndTheLogLevelAppliesLive) {
  const std::string head = "[log]\ntarget = \"file\"\nfile = \"" + log_path_ + "\"\n";
  auto e = open(head + "level = \"warn\"\n" + kRule);
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->logger().enabled(conf::LogLevel::Info));
  EXPECT_STREQ(e->option("milter.default_action"), "accept");

  write(head + "level = \"info\"\n"
               "[milter]\nuser = \"nobody\"\ntimeout = \"30s\"\ndefault_action = \"tempfail\"\n"
               "[events]\nexec = \"/bin/true\"\n"
               "[cluster]\nheartbeat_interval = \"2s\"\n" +
        std::string(kRule));
  Errors errors;
  ASSERT_TRUE(e->reload(&errors)) << errors.front();
  EXPECT_TRUE(e->logger().enabled(conf::LogLevel::Info));
  EXPECT_FALSE(e->logger().enabled(conf::LogLevel::Debug));
  EXPECT_STREQ(e->option("milter.default_action"), "tempfail");

  const std::string log = logText();
  const std::string line =
      "reload: these settings need a restart and were not applied: milter.timeout, milter.user, "
      "cluster.heartbeat_interval, events.exec\n";
  EXPECT_NE(log.find(line), std::string::npos) << log;
  EXPECT_EQ(log.find("log.level"), std::string::npos) << log;
  EXPECT_EQ(log.find("default_action"), std::string::npos) << log;

  // Still not applied: a second reload says so again; the live ones stay quiet.
  ASSERT_TRUE(e->reload(&errors));
  const std::string again = logText();
  EXPECT_NE(again.find(line, again.find(line) + 1), std::string::npos) << again;
}

TEST_F(EngineReloadTest, PolicyHostSettingsAreOptionsAndAChangeIsLoggedAsNeedingARestart) {
  const std::string head = "[log]\ntarget = \"file\"\nfile = \"" + log_path_ + "\"\n";
  auto e = open(head + "[milter]\nsocket = \"\"\n[policy]\nsocket = \"inet:10031@127.0.0.1\"\nmax_connections = 50\n"
                       "idle_timeout = \"5m\"\nrequest_timeout = \"1500ms\"\nsession_timeout = \"1h\"\n"
                       "max_sessions = 2000\ntempfail_action = \"defer_if_permit\"\n" +
                std::string(kRule));
  ASSERT_TRUE(e);
  EXPECT_STREQ(e->option("milter.socket"), "");
  EXPECT_STREQ(e->option("policy.socket"), "inet:10031@127.0.0.1");
  EXPECT_STREQ(e->option("policy.max_connections"), "50");
  EXPECT_STREQ(e->option("policy.idle_timeout_ms"), "300000");
  EXPECT_STREQ(e->option("policy.request_timeout_ms"), "1500");
  EXPECT_STREQ(e->option("policy.session_timeout_ms"), "3600000");
  EXPECT_STREQ(e->option("policy.max_sessions"), "2000");
  EXPECT_STREQ(e->option("policy.tempfail_action"), "defer_if_permit");
  EXPECT_EQ(e->option("policy.idle_timeout"), nullptr);  // only the _ms spelling

  write(head + "[milter]\nsocket = \"\"\n[policy]\nsocket = \"inet:10032@127.0.0.1\"\nmax_connections = 50\n"
               "idle_timeout = \"5m\"\nrequest_timeout = \"1500ms\"\nsession_timeout = \"1h\"\n"
               "max_sessions = 3000\n" +
        std::string(kRule));
  Errors errors;
  ASSERT_TRUE(e->reload(&errors)) << errors.front();
  const std::string log = logText();
  EXPECT_NE(log.find("reload: these settings need a restart and were not applied: policy.socket, policy.max_sessions, "
                     "policy.tempfail_action\n"),
            std::string::npos)
      << log;
  // The running values stay: the host read them at start.
  EXPECT_STREQ(e->option("policy.socket"), "inet:10031@127.0.0.1");
  EXPECT_STREQ(e->option("policy.tempfail_action"), "defer_if_permit");
}

TEST_F(EngineReloadTest, WithoutAPolicySectionThePolicyHostIsOffAndItsDefaultsAreOptions) {
  auto e = open(kRule);
  ASSERT_TRUE(e);
  EXPECT_STREQ(e->option("milter.socket"), "inet:8891@127.0.0.1");
  EXPECT_STREQ(e->option("policy.socket"), "");
  EXPECT_STREQ(e->option("policy.max_connections"), "1000");
  EXPECT_STREQ(e->option("policy.idle_timeout_ms"), "600000");
  EXPECT_STREQ(e->option("policy.request_timeout_ms"), "10000");
  EXPECT_STREQ(e->option("policy.session_timeout_ms"), "600000");
  EXPECT_STREQ(e->option("policy.max_sessions"), "100000");
  EXPECT_STREQ(e->option("policy.tempfail_action"), "reply");
}

TEST_F(EngineReloadTest, WithTheMilterOffASingleNodesAddressIsThePolicySocket) {
  auto e = open("[log]\nlevel = \"error\"\ntarget = \"stderr\"\n[milter]\nsocket = \"\"\n[policy]\n"
                "socket = \"unix:/run/zetian/policy.sock\"\n" +
                std::string(kRule));
  ASSERT_TRUE(e);
  const auto reply = e->health();
  EXPECT_NE(reply.body.find("\"address\":\"unix:/run/zetian/policy.sock\""), std::string::npos) << reply.body;
  EXPECT_NE(reply.body.find("\"policy_host\":null"), std::string::npos) << reply.body;  // no host reported yet
}

TEST_F(EngineReloadTest, AReloadThatChangesOnlyThePolicyReportsNoRestart) {
  const std::string head = "[log]\nlevel = \"info\"\ntarget = \"file\"\nfile = \"" + log_path_ + "\"\n";
  auto e = open(head + kRule);
  ASSERT_TRUE(e);
  std::string other = kRule;
  other.replace(other.find("limit = 5"), 9, "limit = 7");
  write(head + other);
  Errors errors;
  ASSERT_TRUE(e->reload(&errors));
  EXPECT_EQ(e->policy()->rules.at(0).rule.limit, 7u);
  EXPECT_EQ(logText().find("need a restart"), std::string::npos) << logText();
}

TEST_F(EngineReloadTest, AReloadCannotMoveARuleToARedisThisProcessHasNoConnectionTo) {
  const std::string head = "[log]\nlevel = \"info\"\ntarget = \"file\"\nfile = \"" + log_path_ + "\"\n";
  auto e = open(head + kRule);
  ASSERT_TRUE(e);
  std::string redis_rule = kRule;
  redis_rule += "store = \"redis\"\n[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n";
  write(head + redis_rule);
  Errors errors;
  EXPECT_FALSE(e->reload(&errors));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("restart zetian-milter to use Redis"), std::string::npos) << errors[0];
  EXPECT_EQ(e->policy()->rules.at(0).rule.store, conf::Store::Local);  // the policy is kept
  EXPECT_NE(logText().find("reload refused"), std::string::npos) << logText();
}

// The rule changes key and period: the old rule's buckets are keyed by client address,
// the new one's by sender. After the reload, once every checker has gone through a
// check that began after it, no bucket of the old kind may be left: one would have
// been written by a check on the old snapshot after the sweep.
TEST_F(EngineReloadTest, NoBucketOfAChangedRuleSurvivesTheReloadUnderEightCheckingThreads) {
  const std::string head =
      "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n[ratelimit]\nexempt = []\nmax_keys = 100000\n";
  const std::string before = head + "[[ratelimit.rule]]\nname = \"r\"\nkey = \"client_ip\"\nlimit = 1000000\nperiod = \"1h\"\n";
  const std::string after = head + "[[ratelimit.rule]]\nname = \"r\"\nkey = \"sender\"\nlimit = 1000000\nperiod = \"1m\"\n";
  const std::string prefix("r\0", 2);
  for (int round = 0; round < 5; ++round) {
    auto e = open(before);
    ASSERT_TRUE(e);
    constexpr int kThreads = 8;
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> checks[kThreads] = {};
    std::vector<std::thread> checkers;
    for (int t = 0; t < kThreads; ++t) {
      checkers.emplace_back([&, t] {
        std::uint64_t i = 0;
        while (!stop.load()) {
          const std::string ip = "10." + std::to_string(t) + "." + std::to_string((i / 250) % 250) + "." +
                                 std::to_string(i % 250);
          auto s = e->openSession(ip.c_str(), nullptr);
          zetian_verdict v;
          e->resetMessage(*s);
          e->check(*s, conf::Stage::Mail, "<a@example.org>", &v);
          e->closeSession(std::move(s));
          ++i;
          checks[t].store(i);
        }
      });
    }
    // Let every checker run before the reload, so some are mid-check when it swaps.
    for (int t = 0; t < kThreads; ++t) {
      while (checks[t].load() < 50) std::this_thread::yield();
    }
    write(after);
    Errors errors;
    // Asserted once the checkers are joined: an ASSERT here would leave them running.
    const bool reloaded = e->reload(&errors);
    std::uint64_t seen[kThreads];
    for (int t = 0; t < kThreads; ++t) seen[t] = checks[t].load();
    for (int t = 0; t < kThreads; ++t) {
      while (checks[t].load() < seen[t] + 2) std::this_thread::yield();
    }
    stop.store(true);
    for (auto& t : checkers) t.join();
    ASSERT_TRUE(reloaded) << errors.front();

    std::size_t old_kind = 0, new_kind = 0;
    e->store().forEach(prefix, [&](std::string_view key, const state::BucketState&) {
      (key.find('@') == std::string_view::npos ? old_kind : new_kind) += 1;
    });
    EXPECT_EQ(old_kind, 0u) << "round " << round << ": buckets of the old rule survived the reload";
    EXPECT_GT(new_kind, 0u);
  }
}

// POST /reload of a large file: the loop keeps answering /live while the reload runs.
TEST_F(EngineReloadTest, PostReloadRunsOffTheLoopSoLiveAnswersMeanwhile) {
  const std::string socket = dir_ + "/health.sock";
  const std::string head = "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n[health]\nsocket = \"" + socket + "\"\n";
  auto e = open(head + kRule);
  ASSERT_TRUE(e);
  Errors errors;
  ASSERT_TRUE(e->start(&errors)) << errors.front();

  std::string large = head + "[ratelimit]\nexempt = [\n";
  for (int i = 0; i < 10000; ++i) {
    large += "  \"10." + std::to_string(i / 256 % 256) + "." + std::to_string(i % 256) + ".0/24\",\n";
  }
  large += "]\n[[ratelimit.rule]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = 9\nperiod = \"1h\"\n";
  write(large);

  // The gate holds the reload in progress until the test has seen /live answered.
  std::mutex mutex;
  std::condition_variable cv;
  bool entered = false, released = false;
  e->setReloadGateForTest([&] {
    std::unique_lock lock(mutex);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
  });
  // A generous wait for the answer: a sanitizer build parses the file slowly.
  auto reload = std::async(std::launch::async, [&] {
    const int fd = cluster::testing::connectUnix(socket);
    cluster::testing::sendAll(fd, cluster::testing::simpleRequest("POST", "/reload"));
    const std::string raw = cluster::testing::readUntilClose(fd, 120s);
    close(fd);
    return cluster::testing::parseRaw(raw);
  });
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return entered; })) << "POST /reload never reached the worker";
  }
  const auto live = cluster::testing::roundTrip(cluster::testing::connectUnix(socket),
                                                cluster::testing::simpleRequest("GET", "/live"));
  EXPECT_EQ(live.status, 200) << "GET /live got no answer while a reload was in progress";
  EXPECT_EQ(reload.wait_for(0s), std::future_status::timeout) << "the reload answered before it was released";
  {
    std::lock_guard lock(mutex);
    released = true;
  }
  cv.notify_all();
  const auto reply = reload.get();
  EXPECT_EQ(reply.status, 200) << reply.body;
  EXPECT_NE(reply.body.find("\"ok\":true"), std::string::npos) << reply.body;
  EXPECT_EQ(e->policy()->rules.at(0).rule.limit, 9u);
  EXPECT_EQ(e->policy()->policy.exempt.size(), 10000u);
}

// Requests that arrive while a reload runs share the next reload: a burst costs two
// reloads, and every request is answered by one that read the file after it came.
TEST_F(EngineReloadTest, PostReloadsThatArriveDuringAReloadShareTheNextOne) {
  const std::string socket = dir_ + "/health.sock";
  const std::string head = "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n[health]\nsocket = \"" + socket + "\"\n";
  auto e = open(head + kRule);
  ASSERT_TRUE(e);
  Errors errors;
  ASSERT_TRUE(e->start(&errors)) << errors.front();

  std::mutex mutex;
  std::condition_variable cv;
  int entered = 0;
  bool released = false;
  e->setReloadGateForTest([&] {
    std::unique_lock lock(mutex);
    ++entered;
    cv.notify_all();
    cv.wait(lock, [&] { return released; });
  });
  auto post = [&] {
    return std::async(std::launch::async, [&] {
      const int fd = cluster::testing::connectUnix(socket);
      cluster::testing::sendAll(fd, cluster::testing::simpleRequest("POST", "/reload"));
      const std::string raw = cluster::testing::readUntilClose(fd, 120s);
      close(fd);
      return cluster::testing::parseRaw(raw);
    });
  };
  auto first = post();
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(cv.wait_for(lock, 10s, [&] { return entered == 1; })) << "POST /reload never reached the worker";
  }
  // Five more while the first is held: they wait for the next reload, together.
  std::vector<std::future<cluster::testing::RawReply>> burst;
  for (int i = 0; i < 5; ++i) burst.push_back(post());
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (e->reloadsWaitingForTest() < 5 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);  // polling a condition with a deadline
  }
  ASSERT_EQ(e->reloadsWaitingForTest(), 5u);
  {
    std::lock_guard lock(mutex);
    released = true;
  }
  cv.notify_all();
  EXPECT_EQ(first.get().status, 200);
  for (auto& f : burst) EXPECT_EQ(f.get().status, 200);
  std::lock_guard lock(mutex);
  EXPECT_EQ(entered, 2) << "the burst did not share one reload";
}

TEST_F(EngineReloadTest, PostReloadOfABrokenFileAnswers422AndKeepsThePolicy) {
  const std::string socket = dir_ + "/health.sock";
  const std::string head = "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n[health]\nsocket = \"" + socket + "\"\n";
  auto e = open(head + kRule);
  ASSERT_TRUE(e);
  Errors errors;
  ASSERT_TRUE(e->start(&errors)) << errors.front();
  write(head + kRule + "bogus = 1\n");
  const auto reply = cluster::testing::roundTrip(cluster::testing::connectUnix(socket),
                                                 cluster::testing::simpleRequest("POST", "/reload"));
  EXPECT_EQ(reply.status, 422) << reply.body;
  EXPECT_NE(reply.body.find("zetian.toml:"), std::string::npos) << reply.body;
  EXPECT_EQ(e->policy()->rules.at(0).rule.limit, 5u);
}

// An engine that keeps POST /reload's responder for the test to call (or not).
class HeldReload : public cluster::testing::FakeAdmin {
 public:
  void reloadAsync(std::function<void(cluster::AdminReply)> respond) override {
    std::lock_guard lock(mutex_);
    held_ = std::move(respond);
    cv_.notify_all();
  }
  bool waitHeld() {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, 10s, [this] { return static_cast<bool>(held_); });
  }
  std::function<void(cluster::AdminReply)> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(held_, nullptr);
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::function<void(cluster::AdminReply)> held_;
};

TEST_F(EngineReloadTest, AdminServerClosesAPendingReloadWhenItStopsAndDropsTheLateAnswer) {
  HeldReload api;
  cluster::testing::ServerHarness harness(api);
  cluster::HealthServerOptions options;
  options.unix_path = dir_ + "/health.sock";
  ASSERT_EQ(harness.start(options), "");
  const int fd = cluster::testing::connectUnix(options.unix_path);
  ASSERT_GE(fd, 0);
  cluster::testing::sendAll(fd, cluster::testing::simpleRequest("POST", "/reload"));
  ASSERT_TRUE(api.waitHeld());
  auto respond = api.take();
  harness.destroyServer();
  bool closed = false;
  const std::string raw = cluster::testing::readUntilClose(fd, 10s, &closed);
  close(fd);
  EXPECT_TRUE(closed) << "the client of a pending reload was left hanging";
  const auto reply = cluster::testing::parseRaw(raw);
  EXPECT_TRUE(reply.status == 0 || reply.status == 503) << raw;
  // The engine answers after the server is gone: dropped, nothing touched.
  cluster::testing::runOnLoop(harness.loop(), [&] {
    respond(cluster::AdminReply{200, "application/json", "{}"});
    return 0;
  });
}

TEST_F(EngineReloadTest, AdminServerSurvivesAClientThatHangsUpBeforeTheReloadAnswers) {
  HeldReload api;
  cluster::testing::ServerHarness harness(api);
  cluster::HealthServerOptions options;
  options.unix_path = dir_ + "/health.sock";
  ASSERT_EQ(harness.start(options), "");
  const int fd = cluster::testing::connectUnix(options.unix_path);
  ASSERT_GE(fd, 0);
  cluster::testing::sendAll(fd, cluster::testing::simpleRequest("POST", "/reload"));
  ASSERT_TRUE(api.waitHeld());
  close(fd);
  // The server notices the hang-up on its next turn; /live proves it had that turn.
  const auto live = cluster::testing::roundTrip(cluster::testing::connectUnix(options.unix_path),
                                                cluster::testing::simpleRequest("GET", "/live"));
  EXPECT_EQ(live.status, 200);
  auto respond = api.take();
  cluster::testing::runOnLoop(harness.loop(), [&] {
    respond(cluster::AdminReply{200, "application/json", "{}"});
    return 0;
  });
  const auto again = cluster::testing::roundTrip(cluster::testing::connectUnix(options.unix_path),
                                                 cluster::testing::simpleRequest("GET", "/live"));
  EXPECT_EQ(again.status, 200);
}

TEST_F(EngineReloadTest, HealthShowsNoLeaderAndNoTermWithoutRaft) {
  auto e = open("[log]\nlevel = \"error\"\ntarget = \"stderr\"\n" + std::string(kRule));
  ASSERT_TRUE(e);
  const auto reply = e->health();
  EXPECT_NE(reply.body.find("\"leader\":null"), std::string::npos) << reply.body;
  EXPECT_EQ(reply.body.find("\"term\""), std::string::npos) << reply.body;
}

}  // namespace
}  // namespace zetian::plugin
