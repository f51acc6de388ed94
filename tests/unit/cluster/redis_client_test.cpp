// The Redis client against a real redis-server, with two small scripts of the test's
// own (a counter with a limit, and its refund): the connection's behaviour, not the
// algorithms (tests/unit/state covers those).
#include "cluster/redis/client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/cluster/redis_call_result.h"
#include "tests/unit/cluster/redis_server.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::cluster::redis {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using zetian::cluster::testing::RedisServer;
using zetian::cluster::testing::runOnLoop;
using zetian::cluster::testing::TempDir;

// ARGV: limit, cost. Reply: {allowed, remaining, retry_after_ns}.
constexpr const char* kCount = R"lua(
local limit = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + cost > limit then return {0, limit - used, 1000} end
redis.call('INCRBY', KEYS[1], cost)
redis.call('PEXPIRE', KEYS[1], 60000)
return {1, limit - used - cost, 0}
)lua";
constexpr const char* kRefund = R"lua(
local left = redis.call('DECRBY', KEYS[1], tonumber(ARGV[2]))
if left <= 0 then redis.call('DEL', KEYS[1]) end
return {1, 0, 0}
)lua";

Scripts testScripts() {
  Scripts s;
  s.all = {{"count", kCount}, {"refund", kRefund}};
  s.which = [](const wire::LimitItem& item) { return item.op == wire::LimitOp::Refund ? 1u : 0u; };
  s.args = [](const wire::LimitItem& item, std::string*) -> std::optional<std::vector<std::string>> {
    return std::vector<std::string>{std::to_string(item.limit), std::to_string(item.cost)};
  };
  s.outcome = [](const std::vector<long long>& r) -> std::optional<state::Outcome> {
    if (r.size() != 3) return std::nullopt;
    return state::Outcome{r[0] == 1, double(r[1]), r[2]};
  };
  return s;
}

wire::LimitItem item(const std::string& key, std::uint64_t limit, bool blocking = true) {
  wire::LimitItem i;
  i.key = key;
  i.limit = limit;
  i.period_ns = 3'600'000'000'000;
  i.burst = limit;
  i.cost = 1;
  i.blocking = blocking;
  return i;
}

using Result = zetian::cluster::testing::CallResultBox;

class RedisClientTest : public ::testing::Test {
 protected:
  void SetUp() override { loop_.start(); }
  void TearDown() override {
    runOnLoop(loop_, [&] {
      client_.reset();
      return true;
    });
    loop_.stop();
  }

  void startClient(ClientOptions options) {
    runOnLoop(loop_, [&] {
      client_ = std::make_unique<Client>(loop_, options, testScripts(), [this](conf::LogLevel, std::string_view line) {
        std::lock_guard lock(log_mutex_);
        log_ += std::string(line) + "\n";
      });
      client_->start();
      return true;
    });
  }
  ClientOptions optionsFor(const RedisServer& server) {
    ClientOptions o;
    o.target.host = "127.0.0.1";
    o.target.port = server.port();
    o.timeout = 1s;
    o.key_prefix = "t:";
    o.min_backoff = 20ms;
    o.max_backoff = 100ms;
    return o;
  }
  bool waitState(LinkState state, std::chrono::milliseconds deadline = 10s) {
    const auto until = Clock::now() + deadline;
    while (Clock::now() < until) {
      if (client_->status().state == state) return true;
      std::this_thread::sleep_for(2ms);  // polling with a deadline
    }
    return false;
  }
  // Posts a call; `inline_done` says whether it was answered before call() returned.
  std::shared_ptr<Result> call(std::vector<wire::LimitItem> items, bool* inline_done = nullptr,
                               std::chrono::milliseconds deadline = 10s) {
    auto result = std::make_shared<Result>();
    const bool answered = runOnLoop(loop_, [&] {
      client_->call(std::move(items), Clock::now() + deadline, [result](limits::CallResult r) { result->set(r); });
      std::lock_guard lock(result->mutex);
      return result->value.has_value();
    });
    if (inline_done) *inline_done = answered;
    return result;
  }
  std::string log() {
    std::lock_guard lock(log_mutex_);
    return log_;
  }

  TempDir dir_;
  Loop loop_;
  std::unique_ptr<Client> client_;
  std::mutex log_mutex_;
  std::string log_;
};

TEST_F(RedisClientTest, AStagesItemsRunInOrderAndABlockingDenialGivesBackTheOthers) {
  RedisServer server(dir_.path());
  server.start();
  startClient(optionsFor(server));
  ASSERT_TRUE(waitState(LinkState::Ready));
  auto r = call({item("a", 5), item("b", 0), item("c", 5)})->wait();
  ASSERT_TRUE(r && !r->failed);
  ASSERT_EQ(r->outcomes.size(), 3u);
  EXPECT_EQ(r->outcomes[0].result, wire::ItemResult::Returned);
  EXPECT_EQ(r->outcomes[1].result, wire::ItemResult::Denied);
  EXPECT_EQ(r->outcomes[2].result, wire::ItemResult::NotEvaluated);
  // The pipeline charged a and c; both are given back.
  const auto until = Clock::now() + 10s;
  while (Clock::now() < until && (server.command("EXISTS t:a") != ":0\r\n" || server.command("EXISTS t:c") != ":0\r\n")) {
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_EQ(server.command("EXISTS t:a"), ":0\r\n");
  EXPECT_EQ(server.command("EXISTS t:c"), ":0\r\n");
  EXPECT_EQ(client_->counters().calls, 1u);
}

TEST_F(RedisClientTest, ABurstOfCallsAdmitsExactlyTheLimit) {
  RedisServer server(dir_.path());
  server.start();
  startClient(optionsFor(server));
  ASSERT_TRUE(waitState(LinkState::Ready));
  std::vector<std::shared_ptr<Result>> results;
  runOnLoop(loop_, [&] {
    for (int i = 0; i < 30; ++i) {
      auto result = std::make_shared<Result>();
      client_->call({item("burst", 10)}, Clock::now() + 10s, [result](limits::CallResult r) { result->set(r); });
      results.push_back(result);
    }
    return true;
  });
  int charged = 0;
  for (auto& result : results) {
    auto r = result->wait();
    ASSERT_TRUE(r && !r->failed);
    charged += r->outcomes.at(0).result == wire::ItemResult::Charged;
  }
  EXPECT_EQ(charged, 10);
}

TEST_F(RedisClientTest, ScriptsLostByTheServerAreLoadedAgain) {
  RedisServer server(dir_.path());
  server.start();
  startClient(optionsFor(server));
  ASSERT_TRUE(waitState(LinkState::Ready));
  ASSERT_EQ(server.command("SCRIPT FLUSH"), "+OK\r\n");
  auto r = call({item("k", 3)})->wait();
  ASSERT_TRUE(r && !r->failed) << (r && r->failed ? limits::nameOf(*r->failed) : "no answer");
  EXPECT_EQ(r->outcomes.at(0).result, wire::ItemResult::Charged);
  EXPECT_EQ(client_->counters().errors[std::size_t(ErrorKind::NoScript)], 1u);
}

TEST_F(RedisClientTest, WhileRedisIsDownACallFailsAtOnceAndTheClientComesBack) {
  RedisServer server(dir_.path());
  server.start();
  startClient(optionsFor(server));
  ASSERT_TRUE(waitState(LinkState::Ready));
  server.kill();
  ASSERT_TRUE(waitState(LinkState::Down));
  bool inline_done = false;
  auto r = call({item("k", 3)}, &inline_done)->wait();
  EXPECT_TRUE(inline_done);  // no waiting for a connect timeout
  ASSERT_TRUE(r && r->failed);
  EXPECT_EQ(*r->failed, limits::FallbackReason::Unreachable);
  EXPECT_NE(log().find("redis_down address="), std::string::npos) << log();
  RedisServer again(dir_.path(), {}, server.port());
  again.start();
  ASSERT_TRUE(waitState(LinkState::Ready));
  r = call({item("k", 3)})->wait();
  ASSERT_TRUE(r && !r->failed);
  EXPECT_EQ(r->outcomes.at(0).result, wire::ItemResult::Charged);
  EXPECT_NE(log().find("redis_up address="), std::string::npos) << log();
  EXPECT_GE(client_->counters().connects, 2u);
}

TEST_F(RedisClientTest, AWrongPasswordIsAClearError) {
  RedisServer server(dir_.path(), {"--requirepass", "right"});
  server.start();
  auto o = optionsFor(server);
  o.password = "wrong";
  startClient(o);
  ASSERT_TRUE(waitState(LinkState::Down));
  const auto status = client_->status();
  EXPECT_NE(status.last_error.find("AUTH refused"), std::string::npos) << status.last_error;
  EXPECT_NE(status.last_error.find("redis.password_file"), std::string::npos) << status.last_error;
  // Logged once for the episode, however many retries.
  const auto until = Clock::now() + 10s;
  while (Clock::now() < until && client_->counters().errors[std::size_t(ErrorKind::Auth)] < 3) {
    std::this_thread::sleep_for(2ms);  // polling with a deadline
  }
  EXPECT_GE(client_->counters().errors[std::size_t(ErrorKind::Auth)], 3u);
  const std::string text = log();
  EXPECT_EQ(text.find("redis_down"), text.rfind("redis_down")) << text;
}

TEST_F(RedisClientTest, AnUnreachableRedisAtStartFailsTheWaitingCallsOnceItKnows) {
  const std::uint16_t port = zetian::cluster::testing::freeTcpPort();
  ClientOptions o;
  o.target.host = "127.0.0.1";
  o.target.port = port;
  o.timeout = 2s;
  o.min_backoff = 20ms;
  startClient(o);
  auto r = call({item("k", 3)})->wait();
  ASSERT_TRUE(r && r->failed);
  EXPECT_EQ(*r->failed, limits::FallbackReason::Unreachable);
  EXPECT_NE(client_->status().last_error.find("refused"), std::string::npos) << client_->status().last_error;
}

TEST_F(RedisClientTest, AReplicaIsRefusedWithWhatToDo) {
  RedisServer master(dir_.path());
  master.start();
  RedisServer replica(dir_.path(), {"--replicaof", "127.0.0.1", std::to_string(master.port())});
  replica.start();
  startClient(optionsFor(replica));
  ASSERT_TRUE(waitState(LinkState::Down));
  const auto status = client_->status();
  EXPECT_EQ(status.role, "slave");
  EXPECT_NE(status.last_error.find("not a master"), std::string::npos) << status.last_error;
}

TEST_F(RedisClientTest, ACallPastItsDeadlineTimesOutAndItsLateChargeIsGivenBack) {
  RedisServer server(dir_.path());
  server.start();
  auto o = optionsFor(server);
  // The pause (1.5 s) ends after the call's deadline (1 s after the call) and before the
  // connection would count as stuck (2 s after it), for a call made up to 0.5 s late.
  o.timeout = 1s;
  startClient(o);
  ASSERT_TRUE(waitState(LinkState::Ready));
  ASSERT_EQ(server.command("CLIENT PAUSE 1500 ALL"), "+OK\r\n");
  auto r = call({item("late", 5)})->wait();
  ASSERT_TRUE(r && r->failed);
  EXPECT_EQ(*r->failed, limits::FallbackReason::Timeout);
  const auto until = Clock::now() + 10s;
  while (Clock::now() < until && client_->counters().late_answers == 0) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(client_->counters().late_answers, 1u);
  while (Clock::now() < until && server.command("EXISTS t:late") != ":0\r\n") std::this_thread::sleep_for(2ms);
  EXPECT_EQ(server.command("EXISTS t:late"), ":0\r\n");
  EXPECT_EQ(client_->status().state, LinkState::Ready);
}

// --- Sentinel: one master, one replica, three Sentinels, all real processes ---

bool waitFor(const std::function<bool()>& ready, std::chrono::milliseconds deadline) {
  const auto until = Clock::now() + deadline;
  while (Clock::now() < until) {
    if (ready()) return true;
    std::this_thread::sleep_for(5ms);  // polling with a deadline
  }
  return ready();
}

class RedisSentinelTest : public RedisClientTest {
 protected:
  // The master, its replica and three Sentinels that agree on both (quorum 2, a master
  // down after 500 ms), the replica in sync.
  void startSet() {
    // No 5 s wait for more replicas before the first sync.
    master_ = std::make_unique<RedisServer>(dir_.path(), std::vector<std::string>{"--repl-diskless-sync-delay", "0"});
    master_->start();
    replica_ = std::make_unique<RedisServer>(
        dir_.path(), std::vector<std::string>{"--replicaof", "127.0.0.1", std::to_string(master_->port())});
    replica_->start();
    for (int i = 0; i < 3; ++i) {
      const std::string conf = dir_.path() + "/sentinel-" + std::to_string(i) + ".conf";
      std::ofstream(conf) << "sentinel monitor mymaster 127.0.0.1 " << master_->port() << " 2\n"
                          << "sentinel down-after-milliseconds mymaster 500\n"
                          << "sentinel failover-timeout mymaster 2000\n";
      sentinels_.push_back(std::make_unique<RedisServer>(dir_.path(), std::vector<std::string>{"--sentinel"}, 0, conf));
      sentinels_.back()->start();
    }
    ASSERT_TRUE(waitFor([&] { return replica_->command("INFO replication").find("master_link_status:up") !=
                                     std::string::npos; },
                        20s))
        << "the replica never synced";
    // Each Sentinel has found the replica and the two others (hello messages, every 2 s).
    const std::string agreed = "address=127.0.0.1:" + std::to_string(master_->port()) + ",slaves=1,sentinels=3";
    for (auto& s : sentinels_) {
      ASSERT_TRUE(waitFor([&] { return s->command("INFO sentinel").find(agreed) != std::string::npos; }, 30s))
          << "a Sentinel never saw the whole set: " << s->command("INFO sentinel");
    }
  }
  ClientOptions sentinelOptions(const std::string& master_name = "mymaster") {
    ClientOptions o = optionsFor(*master_);
    o.target = Target{};
    // A Sentinel that is not running comes first: the client must go on to the others.
    o.sentinels.push_back(SentinelAddress{"127.0.0.1", testing::freeTcpPort()});
    for (auto& s : sentinels_) o.sentinels.push_back(SentinelAddress{"127.0.0.1", s->port()});
    o.master_name = master_name;
    return o;
  }
  int charged(const std::string& key, int tries, std::uint64_t limit) {
    int n = 0;
    for (int i = 0; i < tries; ++i) {
      auto r = call({item(key, limit)})->wait();
      EXPECT_TRUE(r && !r->failed) << (r && r->failed ? limits::nameOf(*r->failed) : "no answer");
      if (r && !r->failed && r->outcomes.at(0).result == wire::ItemResult::Charged) ++n;
    }
    return n;
  }

  std::unique_ptr<RedisServer> master_;
  std::unique_ptr<RedisServer> replica_;
  std::vector<std::unique_ptr<RedisServer>> sentinels_;
};

TEST_F(RedisSentinelTest, FollowsTheNewMasterAfterAFailoverAndTheLimitHolds) {
  startSet();
  // A reconnection by backoff would come 20 to 40 s after the kill: following the new
  // master sooner is the Sentinels' +switch-master at work.
  ClientOptions options = sentinelOptions();
  options.min_backoff = options.max_backoff = 40s;
  startClient(options);
  ASSERT_TRUE(waitState(LinkState::Ready));
  EXPECT_NE(client_->status().address.find(":" + std::to_string(master_->port())), std::string::npos)
      << client_->status().address;
  EXPECT_EQ(client_->status().role, "master");
  EXPECT_EQ(charged("k", 6, 10), 6);
  // On the replica before the master goes, so the failover loses no count.
  // (WAIT from a connection of its own would wait for nothing: it waits for that
  // connection's writes.)
  ASSERT_TRUE(waitFor([&] { return replica_->command("GET t:k") == "$1\r\n6\r\n"; }, 10s))
      << replica_->command("GET t:k");

  const auto killed = Clock::now();
  master_->kill();
  ASSERT_TRUE(waitState(LinkState::Down));
  // Known down: a call fails at once (fail_mode decides), it does not wait.
  const auto asked = Clock::now();
  bool inline_done = false;
  auto down = call({item("k", 10)}, &inline_done)->wait();
  ASSERT_TRUE(down && down->failed);
  EXPECT_EQ(*down->failed, limits::FallbackReason::Unreachable);
  EXPECT_LT(Clock::now() - asked, 500ms);

  // The Sentinels promote the replica; the client follows it.
  const std::string replica = ":" + std::to_string(replica_->port());
  ASSERT_TRUE(waitFor([&] {
    const auto st = client_->status();
    return st.state == LinkState::Ready && st.address.find(replica) != std::string::npos;
  }, 15s)) << client_->status().address << " " << client_->status().last_error << "\n" << log();
  const auto followed = Clock::now() - killed;
  EXPECT_EQ(client_->status().role, "master");
  EXPECT_NE(log().find("redis_master_switch"), std::string::npos) << log();
  std::cout << "followed the new master " << std::chrono::duration_cast<std::chrono::milliseconds>(followed).count()
            << " ms after the kill\n";
  // The limit of 10 holds across the failover: 6 before, 4 after.
  EXPECT_EQ(charged("k", 10, 10), 4);
}

TEST_F(RedisSentinelTest, AMasterNameNoSentinelKnowsIsAClearError) {
  startSet();
  startClient(sentinelOptions("othermaster"));
  ASSERT_TRUE(waitFor([&] { return client_->status().last_error.find("othermaster") != std::string::npos; }, 10s))
      << client_->status().last_error;
  EXPECT_EQ(client_->status().state, LinkState::Down);
  EXPECT_NE(client_->status().last_error.find("monitors no master named othermaster"), std::string::npos)
      << client_->status().last_error;
  EXPECT_NE(client_->status().last_error.find("redis.master_name"), std::string::npos);
  auto r = call({item("k", 10)})->wait();
  ASSERT_TRUE(r && r->failed);
  EXPECT_EQ(*r->failed, limits::FallbackReason::Unreachable);
}

}  // namespace
}  // namespace zetian::cluster::redis
