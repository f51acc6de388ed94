// The Redis Cluster client against a real 3-master Redis Cluster the test starts
// (redis_cluster.h), with the limiter's own scripts: keys spread over the masters,
// exact counts per algorithm, a stage across masters, a slot resharded while checks
// run (MOVED and ASK followed, no decision lost), and a master killed.
#include "cluster/redis/cluster_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/redis/key_slot.h"
#include "cluster/redis/limiter.h"
#include "state/limit.h"
#include "tests/unit/cluster/redis_call_result.h"
#include "tests/unit/cluster/redis_cluster.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::cluster::redis {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using zetian::cluster::testing::RedisCluster;
using zetian::cluster::testing::runOnLoop;
using zetian::cluster::testing::TempDir;

constexpr const char* kPrefix = "t:";

wire::LimitItem item(const std::string& key, std::uint64_t limit, state::Algorithm algorithm = state::Algorithm::TokenBucket,
                     bool blocking = true) {
  wire::LimitItem i;
  i.key = key;
  i.algorithm = static_cast<std::uint8_t>(algorithm);
  i.limit = limit;
  i.period_ns = 3'600'000'000'000;  // an hour: nothing refills during a test
  i.burst = limit;
  i.cost = 1;
  i.blocking = blocking;
  return i;
}

std::uint16_t slotOf(const std::string& key) { return keySlot(kPrefix + key); }

using Result = zetian::cluster::testing::CallResultBox;

class RedisClusterClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_.start();  // first: TearDown needs it even when the cluster does not start
    cluster_ = std::make_unique<RedisCluster>(dir_.path());
    cluster_->start();
  }
  void TearDown() override {
    runOnLoop(loop_, [&] {
      client_.reset();
      return true;
    });
    loop_.stop();
  }

  void startClient(std::vector<std::size_t> seeds = {0}) {
    ClusterOptions o;
    for (const std::size_t s : seeds) o.seeds.push_back({"127.0.0.1", cluster_->node(s).port()});
    o.connection.timeout = 2s;
    o.connection.key_prefix = kPrefix;
    o.connection.min_backoff = 20ms;
    o.connection.max_backoff = 100ms;
    runOnLoop(loop_, [&] {
      client_ = std::make_unique<ClusterClient>(loop_, o, limiterScripts(), [this](conf::LogLevel, std::string_view line) {
        std::lock_guard lock(log_mutex_);
        log_ += std::string(line) + "\n";
      });
      client_->start();
      return true;
    });
  }
  bool waitState(LinkState state, std::chrono::milliseconds deadline = 10s) {
    const auto until = Clock::now() + deadline;
    while (Clock::now() < until) {
      if (client_->status().state == state) return true;
      std::this_thread::sleep_for(2ms);  // polling with a deadline
    }
    return false;
  }
  std::shared_ptr<Result> call(std::vector<wire::LimitItem> items, bool* inline_done = nullptr) {
    auto result = std::make_shared<Result>();
    const bool answered = runOnLoop(loop_, [&] {
      client_->call(std::move(items), Clock::now() + 5s, [result](limits::CallResult r) { result->set(r); });
      std::lock_guard lock(result->mutex);
      return result->value.has_value();
    });
    if (inline_done) *inline_done = answered;
    return result;
  }
  // One call per item, all posted in one loop turn (they run concurrently on the
  // masters); the outcome of each, or nullopt for a failed call.
  std::vector<std::optional<wire::ItemResult>> burst(const std::vector<wire::LimitItem>& items,
                                                     std::vector<limits::FallbackReason>* failures = nullptr) {
    std::vector<std::shared_ptr<Result>> results;
    runOnLoop(loop_, [&] {
      for (const auto& i : items) {
        auto result = std::make_shared<Result>();
        client_->call({i}, Clock::now() + 5s, [result](limits::CallResult r) { result->set(r); });
        results.push_back(result);
      }
      return true;
    });
    std::vector<std::optional<wire::ItemResult>> out;
    for (auto& result : results) {
      auto r = result->wait();
      if (r && !r->failed && r->outcomes.size() == 1) {
        out.push_back(r->outcomes[0].result);
      } else {
        out.push_back(std::nullopt);
        if (failures) failures->push_back(r && r->failed ? *r->failed : limits::FallbackReason::Timeout);
      }
    }
    return out;
  }
  std::string masterOf(const std::string& key) {
    return runOnLoop(loop_, [&] { return client_->masterOf(slotOf(key)); });
  }
  // `count` keys (named after `stem`) whose slots are on `node`, as the cluster says.
  std::vector<std::string> keysOn(std::size_t node, const std::string& stem, std::size_t count) {
    std::vector<std::string> keys;
    for (int n = 0; keys.size() < count && n < 100000; ++n) {
      const std::string key = stem + std::to_string(n);
      if (cluster_->ownerOf(slotOf(key)) == int(node)) keys.push_back(key);
    }
    return keys;
  }
  std::string log() {
    std::lock_guard lock(log_mutex_);
    return log_;
  }

  TempDir dir_;
  std::unique_ptr<RedisCluster> cluster_;
  Loop loop_;
  std::unique_ptr<ClusterClient> client_;
  std::mutex log_mutex_;
  std::string log_;
};

TEST_F(RedisClusterClientTest, EachAlgorithmAdmitsExactlyTheLimitOnKeysSpreadOverTheMasters) {
  startClient();
  ASSERT_TRUE(waitState(LinkState::Ready)) << client_->status().last_error;
  const auto status = client_->status();
  EXPECT_EQ(status.role, "cluster");
  for (std::size_t i = 0; i < cluster_->size(); ++i) {
    EXPECT_NE(status.address.find(cluster_->address(i)), std::string::npos) << status.address;
  }
  const state::Algorithm algorithms[] = {state::Algorithm::TokenBucket, state::Algorithm::Gcra,
                                         state::Algorithm::SlidingWindow, state::Algorithm::FixedWindow};
  std::set<std::string> masters;
  for (const auto algorithm : algorithms) {
    // Six keys per algorithm, two on each master; 30 charges of each, all at once.
    std::vector<std::string> keys;
    for (std::size_t node = 0; node < cluster_->size(); ++node) {
      for (auto& k : keysOn(node, "alg" + std::to_string(int(algorithm)) + "-", 2)) keys.push_back(k);
    }
    std::vector<wire::LimitItem> items;
    for (int n = 0; n < 30; ++n) {
      for (const auto& k : keys) items.push_back(item(k, 10, algorithm));
    }
    const auto outcomes = burst(items);
    std::map<std::string, int> charged;
    for (std::size_t n = 0; n < items.size(); ++n) {
      ASSERT_TRUE(outcomes[n].has_value()) << "a failed call for " << items[n].key;
      charged[items[n].key] += *outcomes[n] == wire::ItemResult::Charged;
    }
    for (const auto& k : keys) {
      EXPECT_EQ(charged[k], 10) << k << " (" << state::algorithmName(algorithm) << ")";
      masters.insert(masterOf(k));
    }
  }
  EXPECT_EQ(masters.size(), 3u);
  EXPECT_GE(client_->counters().slot_map_loads, 1u);
}

TEST_F(RedisClusterClientTest, AStageAcrossMastersFollowsTheCallRule) {
  startClient({0, 1, 2});
  ASSERT_TRUE(waitState(LinkState::Ready)) << client_->status().last_error;
  const std::string a = keysOn(0, "a", 1).at(0);
  const std::string b = keysOn(1, "b", 1).at(0);
  const std::string c = keysOn(2, "c", 1).at(0);
  // b has room for one: the second stage is denied on b, between charges on a and c.
  auto r = call({item(b, 1)})->wait();
  ASSERT_TRUE(r && !r->failed);
  r = call({item(a, 5), item(b, 1), item(c, 5)})->wait();
  ASSERT_TRUE(r && !r->failed);
  ASSERT_EQ(r->outcomes.size(), 3u);
  EXPECT_EQ(r->outcomes[0].result, wire::ItemResult::Returned);
  EXPECT_EQ(r->outcomes[1].result, wire::ItemResult::Denied);
  EXPECT_EQ(r->outcomes[2].result, wire::ItemResult::NotEvaluated);
  // The charges on a and c (made at once on their masters) were given back: a refund
  // that fills a bucket deletes its key.
  const auto until = Clock::now() + 10s;
  auto gone = [&](std::size_t node, const std::string& key) {
    return cluster_->node(node).command("EXISTS " + std::string(kPrefix) + key) == ":0\r\n";
  };
  while (Clock::now() < until && !(gone(0, a) && gone(2, c))) std::this_thread::sleep_for(2ms);
  EXPECT_TRUE(gone(0, a));
  EXPECT_TRUE(gone(2, c));
  EXPECT_EQ(client_->counters().calls, 2u);
}

TEST_F(RedisClusterClientTest, ASlotReshardedWhileChecksRunLosesNoDecision) {
  startClient();
  ASSERT_TRUE(waitState(LinkState::Ready)) << client_->status().last_error;
  // Keys of one slot (a hash tag), on master 0, moving to master 1; and keys elsewhere.
  std::string tag;
  for (int n = 0; tag.empty() && n < 1000; ++n) {
    if (cluster_->ownerOf(keySlot("m" + std::to_string(n))) == 0) tag = "m" + std::to_string(n);
  }
  ASSERT_FALSE(tag.empty());
  const std::uint16_t slot = keySlot(tag);
  std::vector<std::string> moving;
  for (int n = 0; n < 4; ++n) moving.push_back("{" + tag + "}k" + std::to_string(n));
  for (const auto& k : moving) ASSERT_EQ(slotOf(k), slot);
  std::vector<std::string> keys = moving;
  for (auto& k : keysOn(2, "still", 2)) keys.push_back(k);
  const std::string late = "{" + tag + "}late";  // first charged once the slot is migrating
  constexpr int kLimit = 100;
  constexpr int kRounds = 2 * kLimit;

  std::atomic<int> round{0};
  std::map<std::string, int> charged;
  std::vector<limits::FallbackReason> failures;
  std::atomic<bool> late_on{false};
  std::thread checks([&] {
    for (int n = 0; n < kRounds; ++n) {
      std::vector<wire::LimitItem> items;
      for (const auto& k : keys) items.push_back(item(k, kLimit));
      if (late_on) items.push_back(item(late, kLimit));
      const auto outcomes = burst(items, &failures);
      for (std::size_t i = 0; i < items.size(); ++i) {
        charged[items[i].key] += outcomes[i] && *outcomes[i] == wire::ItemResult::Charged;
      }
      round = n + 1;
    }
  });
  auto waitRound = [&](int target) {
    const auto until = Clock::now() + 30s;
    while (round < target && Clock::now() < until) std::this_thread::sleep_for(1ms);  // polling with a deadline
    return round >= target;
  };
  std::vector<std::string> stored;
  for (const auto& k : moving) stored.push_back(kPrefix + k);
  ASSERT_TRUE(waitRound(20));
  cluster_->beginMigration(slot, 0, 1);
  late_on = true;
  ASSERT_TRUE(waitRound(round + 20));
  stored.push_back(kPrefix + late);
  cluster_->migrateKeys(0, 1, stored);  // now each is asked for at 0, and is at 1: ASK
  ASSERT_TRUE(waitRound(round + 20));
  cluster_->endMigration(slot, 0, 1);  // now 0 answers MOVED
  checks.join();

  EXPECT_TRUE(failures.empty()) << failures.size() << " calls failed, the first: " << limits::nameOf(failures.at(0));
  for (const auto& k : keys) EXPECT_EQ(charged[k], kLimit) << k;
  EXPECT_EQ(charged[late], kLimit);
  const auto counters = client_->counters();
  EXPECT_GT(counters.asked, 0u);
  EXPECT_GT(counters.moved, 0u);
  EXPECT_EQ(masterOf(moving[0]), cluster_->address(1));
  // And the moved keys keep their counts at their new master.
  EXPECT_EQ(cluster_->node(1).command("EXISTS " + stored[0]), ":1\r\n");
  auto r = call({item(moving[0], kLimit)})->wait();
  ASSERT_TRUE(r && !r->failed);
  EXPECT_EQ(r->outcomes.at(0).result, wire::ItemResult::Denied);
}

TEST_F(RedisClusterClientTest, ARedisCliReshardWhileChecksRunLosesNoDecision) {
  startClient();
  ASSERT_TRUE(waitState(LinkState::Ready)) << client_->status().last_error;
  // redis-cli moves the source's first slots: keys there, on master 0, moving to 1.
  constexpr std::uint16_t kMoved = 200;
  std::vector<std::string> keys;
  for (int n = 0; keys.size() < 6 && n < 1000000; ++n) {
    if (slotOf("r" + std::to_string(n)) < kMoved) keys.push_back("r" + std::to_string(n));
  }
  ASSERT_EQ(keys.size(), 6u);
  ASSERT_EQ(cluster_->ownerOf(slotOf(keys[0])), 0);
  constexpr int kLimit = 300;
  std::atomic<bool> resharded{false};
  std::atomic<int> round{0};
  std::map<std::string, int> charged;
  std::vector<limits::FallbackReason> failures;
  std::thread checks([&] {
    // Until the resharding is over and every key has had more attempts than its limit.
    for (int n = 0; !resharded || n < 2 * kLimit; ++n) {
      std::vector<wire::LimitItem> items;
      for (const auto& k : keys) items.push_back(item(k, kLimit));
      const auto outcomes = burst(items, &failures);
      for (std::size_t i = 0; i < items.size(); ++i) {
        charged[items[i].key] += outcomes[i] && *outcomes[i] == wire::ItemResult::Charged;
      }
      round = n + 1;
    }
  });
  const auto until = Clock::now() + 30s;
  while (round < 5 && Clock::now() < until) std::this_thread::sleep_for(1ms);  // polling with a deadline
  const std::string reshard = "redis-cli --cluster reshard " + cluster_->address(0) + " --cluster-from " +
                              cluster_->id(0) + " --cluster-to " + cluster_->id(1) + " --cluster-slots " +
                              std::to_string(kMoved) + " --cluster-yes > " + dir_.path() + "/reshard.log 2>&1";
  const int status = std::system(reshard.c_str());
  const int rounds_during = round;
  resharded = true;
  checks.join();
  ASSERT_EQ(status, 0) << "see " << dir_.path() << "/reshard.log";
  EXPECT_TRUE(failures.empty()) << failures.size() << " calls failed, the first: " << limits::nameOf(failures.at(0));
  for (const auto& k : keys) EXPECT_EQ(charged[k], kLimit) << k;
  EXPECT_EQ(cluster_->ownerOf(slotOf(keys[0])), 1);
  EXPECT_GT(client_->counters().moved, 0u);
  EXPECT_GT(rounds_during, 5);
}

TEST_F(RedisClusterClientTest, AKilledMastersKeysFailAtOnceAndTheOthersStillWork) {
  startClient({0, 1, 2});
  ASSERT_TRUE(waitState(LinkState::Ready)) << client_->status().last_error;
  const std::string dead = keysOn(2, "dead", 1).at(0);
  const std::string alive = keysOn(0, "alive", 1).at(0);
  auto r = call({item(dead, 5)})->wait();
  ASSERT_TRUE(r && !r->failed);
  cluster_->node(2).kill();
  ASSERT_TRUE(waitState(LinkState::Down));
  EXPECT_NE(client_->status().last_error.find(cluster_->address(2)), std::string::npos) << client_->status().last_error;
  bool inline_done = false;
  r = call({item(dead, 5)}, &inline_done)->wait();
  EXPECT_TRUE(inline_done);  // no waiting for a connect timeout
  ASSERT_TRUE(r && r->failed);
  EXPECT_EQ(*r->failed, limits::FallbackReason::Unreachable);
  r = call({item(alive, 5)})->wait();
  ASSERT_TRUE(r && !r->failed) << limits::nameOf(*r->failed);
  EXPECT_EQ(r->outcomes.at(0).result, wire::ItemResult::Charged);
  // A stage with both fails (fail_mode decides), and the live master's charge goes back.
  r = call({item(alive, 5), item(dead, 5)})->wait();
  ASSERT_TRUE(r && r->failed);
  EXPECT_EQ(*r->failed, limits::FallbackReason::Unreachable);
  // alive had 1 of 5 charged; the failed stage's charge went back first (same
  // connection, sent before these), so exactly 4 more pass.
  std::vector<wire::LimitItem> more(10, item(alive, 5));
  int passed = 0;
  for (const auto& outcome : burst(more)) passed += outcome && *outcome == wire::ItemResult::Charged;
  EXPECT_EQ(passed, 4);
  EXPECT_NE(log().find("redis_down"), std::string::npos) << log();
}

// Three masters and a replica of master 2 (node 3).
class RedisClusterFailoverTest : public RedisClusterClientTest {
 protected:
  void SetUp() override {
    loop_.start();
    cluster_ = std::make_unique<RedisCluster>(dir_.path(), 3, std::vector<std::size_t>{2});
    cluster_->start();
  }
};

TEST_F(RedisClusterFailoverTest, AFailoverIsFollowedToThePromotedReplicaWithItsCounts) {
  startClient({0, 1});
  ASSERT_TRUE(waitState(LinkState::Ready)) << client_->status().last_error;
  EXPECT_EQ(client_->status().address.find(cluster_->address(3)), std::string::npos);  // never a replica
  const std::string key = keysOn(2, "fo", 1).at(0);
  for (int n = 0; n < 3; ++n) {
    auto r = call({item(key, 10)})->wait();
    ASSERT_TRUE(r && !r->failed);
    EXPECT_EQ(r->outcomes.at(0).result, wire::ItemResult::Charged);
  }
  // The replica has the 3 charges before its master dies (WAIT would not tell: it
  // waits for the writes of its own connection only).
  auto offset = [](const std::string& info, const std::string& field) -> long long {
    const auto at = info.find(field + ":");
    return at == std::string::npos ? -1 : std::atoll(info.c_str() + at + field.size() + 1);
  };
  const long long written = offset(cluster_->node(2).command("INFO replication"), "master_repl_offset");
  ASSERT_GT(written, 0);
  const auto synced_by = Clock::now() + 10s;
  while (offset(cluster_->node(3).command("INFO replication"), "slave_repl_offset") < written &&
         Clock::now() < synced_by) {
    std::this_thread::sleep_for(2ms);  // polling with a deadline
  }
  ASSERT_GE(offset(cluster_->node(3).command("INFO replication"), "slave_repl_offset"), written);
  cluster_->node(2).kill();
  // Until the cluster promotes the replica (cluster-node-timeout 1 s, then an election)
  // the key's checks fail at once; then they go to the new master.
  int passed = 0;
  bool back = false;
  std::map<std::string, int> failures;  // by reason, while the cluster fails over
  const auto until = Clock::now() + 30s;
  while (!back && Clock::now() < until) {
    auto r = call({item(key, 10)})->wait();
    ASSERT_TRUE(r);
    if (r->failed) {
      ++failures[std::string(limits::nameOf(*r->failed))];
      std::this_thread::sleep_for(10ms);  // paces the retries while the cluster fails over
      continue;
    }
    back = true;
    passed += r->outcomes.at(0).result == wire::ItemResult::Charged;
  }
  std::string seen;
  for (const auto& [reason, n] : failures) seen += reason + "=" + std::to_string(n) + " ";
  ASSERT_TRUE(back) << "no answer for the key after the failover; " << client_->status().last_error << "; " << seen;
  // Known down: every check failed at once as unreachable, none waited for a timeout.
  EXPECT_EQ(failures.size(), failures.count("unreachable")) << seen << "\n" << log();
  EXPECT_EQ(masterOf(key), cluster_->address(3));
  std::vector<wire::LimitItem> more(20, item(key, 10));
  for (const auto& outcome : burst(more)) passed += outcome && *outcome == wire::ItemResult::Charged;
  EXPECT_EQ(passed, 7) << log();  // 10 - the 3 the old master had charged
  EXPECT_TRUE(waitState(LinkState::Ready)) << client_->status().last_error << "\n" << log();
}

TEST_F(RedisClusterClientTest, PeekAndEraseGoToTheKeysMaster) {
  startClient();
  ASSERT_TRUE(waitState(LinkState::Ready)) << client_->status().last_error;
  const std::string key = keysOn(1, "admin", 1).at(0);
  auto r = call({item(key, 5)})->wait();
  ASSERT_TRUE(r && !r->failed);
  struct Peek {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
    std::optional<state::Outcome> outcome;
    std::string error;
  };
  auto p = std::make_shared<Peek>();
  runOnLoop(loop_, [&] {
    client_->peek(item(key, 5), [p](std::optional<state::Outcome> outcome, std::string error) {
      std::lock_guard lock(p->mutex);
      p->outcome = outcome;
      p->error = error;
      p->done = true;
      p->cv.notify_all();
    });
    return true;
  });
  {
    std::unique_lock lock(p->mutex);
    ASSERT_TRUE(p->cv.wait_for(lock, 10s, [&] { return p->done; }));
    ASSERT_TRUE(p->outcome) << p->error;
    EXPECT_TRUE(p->outcome->allowed);
  }
  std::atomic<long long> erased{-1};
  runOnLoop(loop_, [&] {
    client_->erase(key, [&erased](long long n, std::string) { erased = n; });
    return true;
  });
  const auto until = Clock::now() + 10s;
  while (erased < 0 && Clock::now() < until) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(erased, 1);
  EXPECT_EQ(cluster_->node(1).command("EXISTS " + std::string(kPrefix) + key), ":0\r\n");
}

TEST_F(RedisClusterClientTest, EraseAllSweepsEveryMasterAndOnlyThePrefix) {
  startClient();
  ASSERT_TRUE(waitState(LinkState::Ready)) << client_->status().last_error;
  std::vector<std::string> keys;
  for (int m = 0; m < 3; ++m) {
    for (const auto& key : keysOn(m, "sweep", 2)) keys.push_back(key);
  }
  keys.push_back(keysOn(0, "other", 1).at(0));
  for (const auto& key : keys) {
    auto r = call({item(key, 5)})->wait();
    ASSERT_TRUE(r && !r->failed);
  }
  std::atomic<long long> erased{-1};
  std::string error;
  runOnLoop(loop_, [&] {
    client_->eraseAll("sweep", [&](long long n, std::string e) {
      error = std::move(e);
      erased = n;
    });
    return true;
  });
  const auto until = Clock::now() + 10s;
  while (erased < 0 && Clock::now() < until) std::this_thread::sleep_for(2ms);  // polling with a deadline
  EXPECT_EQ(erased, 6) << error;
  EXPECT_EQ(error, "");
  // The key under another prefix is still there.
  EXPECT_EQ(cluster_->node(0).command("EXISTS " + std::string(kPrefix) + keys.back()), ":1\r\n");
}

TEST(RedisClusterClientStart, NoReachableSeedFailsCallsAtOnce) {
  Loop loop;
  loop.start();
  std::unique_ptr<ClusterClient> client;
  ClusterOptions o;
  o.seeds.push_back({"127.0.0.1", zetian::cluster::testing::freeTcpPort()});
  o.connection.timeout = 1s;
  o.connection.min_backoff = 20ms;
  runOnLoop(loop, [&] {
    client = std::make_unique<ClusterClient>(loop, o, limiterScripts(), LogSink{});
    client->start();
    return true;
  });
  const auto until = Clock::now() + 10s;
  while (client->status().state != LinkState::Down && Clock::now() < until) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(client->status().state, LinkState::Down);
  EXPECT_NE(client->status().last_error.find("refused"), std::string::npos) << client->status().last_error;
  std::optional<limits::CallResult> result;
  runOnLoop(loop, [&] {
    client->call({item("k", 3)}, Clock::now() + 1s, [&](limits::CallResult r) { result = r; });
    return true;
  });
  ASSERT_TRUE(result);  // at once
  ASSERT_TRUE(result->failed);
  EXPECT_EQ(*result->failed, limits::FallbackReason::Unreachable);
  runOnLoop(loop, [&] {
    client.reset();
    return true;
  });
  loop.stop();
}

TEST(RedisClusterClientStart, ASeedThatIsNoClusterNodeIsAClearError) {
  TempDir dir;
  zetian::cluster::testing::RedisServer plain(dir.path());
  plain.start();
  Loop loop;
  loop.start();
  std::unique_ptr<ClusterClient> client;
  ClusterOptions o;
  o.seeds.push_back({"127.0.0.1", plain.port()});
  o.connection.timeout = 1s;
  o.connection.min_backoff = 20ms;
  std::mutex log_mutex;
  std::string log;
  runOnLoop(loop, [&] {
    client = std::make_unique<ClusterClient>(loop, o, limiterScripts(), [&](conf::LogLevel, std::string_view line) {
      std::lock_guard lock(log_mutex);
      log += std::string(line) + "\n";
    });
    client->start();
    return true;
  });
  const auto until = Clock::now() + 10s;
  while (client->status().state != LinkState::Down && Clock::now() < until) std::this_thread::sleep_for(2ms);
  const auto status = client->status();
  EXPECT_EQ(status.state, LinkState::Down);
  EXPECT_NE(status.last_error.find("cluster support disabled"), std::string::npos) << status.last_error;
  {
    std::lock_guard lock(log_mutex);
    EXPECT_NE(log.find("redis_cluster_map_failed"), std::string::npos) << log;
  }
  std::optional<limits::CallResult> result;
  runOnLoop(loop, [&] {
    client->call({item("k", 3)}, Clock::now() + 1s, [&](limits::CallResult r) { result = r; });
    return true;
  });
  ASSERT_TRUE(result);  // at once: Redis is known not to serve
  ASSERT_TRUE(result->failed);
  EXPECT_EQ(*result->failed, limits::FallbackReason::Unreachable);
  runOnLoop(loop, [&] {
    client.reset();
    return true;
  });
  loop.stop();
}

}  // namespace
}  // namespace zetian::cluster::redis
