// Engines whose rules keep their counts in Redis (store = "redis"), against a real
// redis-server: one count shared by engines that are not clustered, the admin
// endpoints on Redis-held keys, and fail_mode while Redis is down.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "plugin/engine.h"
#include "tests/unit/cluster/redis_server.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::plugin {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using cluster::testing::RedisServer;
using cluster::testing::TempDir;

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { server_.start(); }

  // An engine, not clustered, whose one rule (3 an hour per client IP) is in Redis.
  std::unique_ptr<Engine> engine(const std::string& id, const std::string& fail_mode = "local") {
    const std::string path = dir_.file(id + ".toml");
    std::ofstream(path) << "[node]\nid = \"" << id << "\"\nstate_dir = \"" << dir_.file(id) << "\"\n"
                        << "[log]\nlevel = \"info\"\ntarget = \"file\"\nfile = \"" << dir_.file(id + ".log") << "\"\n"
                        << "[health]\nsocket = \"" << dir_.file(id + ".sock") << "\"\n"
                        << "[redis]\nurl = \"redis://127.0.0.1:" << server_.port() << "/0\"\ntimeout = \"500ms\"\n"
                        << "[ratelimit]\nexempt = []\nfail_mode = \"" << fail_mode << "\"\n"
                        << "[[ratelimit.rule]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = 3\nperiod = \"1h\"\n"
                        << "store = \"redis\"\n";
    Errors errors;
    auto e = Engine::open(path, {}, &errors);
    if (!e || !e->start(&errors)) {
      ADD_FAILURE() << (errors.empty() ? "no error" : errors.front());
      return nullptr;
    }
    return e;
  }

  static int mail(Engine& e, const std::string& ip) {
    zetian_verdict v;
    auto s = e.openSession(ip.c_str(), nullptr);
    const int action = e.check(*s, conf::Stage::Mail, "<a@example.org>", &v);
    e.closeSession(std::move(s));
    return action;
  }

  nlohmann::json request(const std::string& id, const std::string& method, const std::string& target) {
    const auto reply = cluster::testing::roundTrip(cluster::testing::connectUnix(dir_.file(id + ".sock")),
                                                   cluster::testing::simpleRequest(method, target));
    auto doc = nlohmann::json::parse(reply.body, nullptr, false);
    if (doc.is_discarded()) ADD_FAILURE() << "not JSON: " << reply.body;
    doc["_status"] = reply.status;
    return doc;
  }

  double metric(const std::string& id, const std::string& series) {
    const auto reply = cluster::testing::roundTrip(cluster::testing::connectUnix(dir_.file(id + ".sock")),
                                                   cluster::testing::simpleRequest("GET", "/metrics"));
    const auto at = reply.body.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::stod(reply.body.substr(at + series.size() + 2));
  }

  bool waitRedisState(const std::string& id, const std::string& state) {
    const auto until = Clock::now() + 10s;
    while (Clock::now() < until) {
      if (request(id, "GET", "/health")["redis"].value("state", "") == state) return true;
      std::this_thread::sleep_for(5ms);  // polling with a deadline
    }
    return false;
  }

  TempDir dir_;
  RedisServer server_{dir_.path()};
};

TEST_F(RedisStoreTest, TwoEnginesThatAreNotClusteredShareOneCount) {
  auto a = engine("a");
  auto b = engine("b");
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(waitRedisState("a", "up"));
  ASSERT_TRUE(waitRedisState("b", "up"));
  int passed = 0;
  for (int i = 0; i < 10; ++i) passed += mail(i % 2 ? *b : *a, "192.0.2.9") == ZETIAN_CONTINUE;
  EXPECT_EQ(passed, 3);
  const auto health = request("a", "GET", "/health");
  EXPECT_EQ(health["redis"]["role"], "master");
  EXPECT_TRUE(health["redis"]["last_error"].is_null());
  EXPECT_EQ(metric("a", "zetian_redis_up"), 1);
}

TEST_F(RedisStoreTest, LimitsShowAndResetWorkOnRedisHeldKeys) {
  auto e = engine("a");
  ASSERT_TRUE(e);
  ASSERT_TRUE(waitRedisState("a", "up"));
  EXPECT_EQ(mail(*e, "192.0.2.10"), ZETIAN_CONTINUE);
  EXPECT_EQ(mail(*e, "192.0.2.10"), ZETIAN_CONTINUE);
  auto shown = request("a", "GET", "/limits?rule=per-ip&key=192.0.2.10");
  ASSERT_EQ(shown["_status"], 200) << shown.dump();
  ASSERT_EQ(shown["limits"].size(), 1u) << shown.dump();
  EXPECT_EQ(shown["limits"][0]["remaining"], 1);
  EXPECT_EQ(shown["limits"][0]["store"], "redis");
  // A key Redis does not hold is not shown (as for the local store).
  EXPECT_EQ(request("a", "GET", "/limits?key=192.0.2.250")["limits"].size(), 0u);
  // A listing says which rules it cannot list.
  auto listing = request("a", "GET", "/limits");
  EXPECT_EQ(listing["not_listed"], nlohmann::json::array({"per-ip"})) << listing.dump();
  auto reset = request("a", "POST", "/limits/reset?rule=per-ip&key=192.0.2.10");
  ASSERT_EQ(reset["_status"], 200) << reset.dump();
  EXPECT_EQ(reset["reset"], 1);
  EXPECT_EQ(request("a", "GET", "/limits?rule=per-ip&key=192.0.2.10")["limits"].size(), 0u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(mail(*e, "192.0.2.10"), ZETIAN_CONTINUE);
  EXPECT_EQ(mail(*e, "192.0.2.10"), ZETIAN_TEMPFAIL);
  // Every key of the rule, and only those: a key of the same text under a prefix that
  // merely starts like the rule's stays.
  EXPECT_EQ(mail(*e, "192.0.2.11"), ZETIAN_CONTINUE);
  EXPECT_EQ(mail(*e, "192.0.2.12"), ZETIAN_CONTINUE);
  ASSERT_EQ(server_.command("SET zetian:per-ip2 x"), "+OK\r\n");
  auto all = request("a", "POST", "/limits/reset?rule=per-ip&key=*");
  ASSERT_EQ(all["_status"], 200) << all.dump();
  EXPECT_EQ(all["reset"], 3);
  EXPECT_EQ(server_.command("EXISTS zetian:per-ip2"), ":1\r\n");
  EXPECT_EQ(mail(*e, "192.0.2.10"), ZETIAN_CONTINUE);
}

TEST_F(RedisStoreTest, WhileRedisIsDownFailModeDecidesAtOnce) {
  auto local = engine("a", "local");
  auto closed = engine("b", "closed");
  ASSERT_TRUE(local && closed);
  ASSERT_TRUE(waitRedisState("a", "up"));
  ASSERT_TRUE(waitRedisState("b", "up"));
  server_.kill();
  ASSERT_TRUE(waitRedisState("a", "down"));
  ASSERT_TRUE(waitRedisState("b", "down"));
  // local: this node's own bucket holds the limit.
  int passed = 0;
  for (int i = 0; i < 5; ++i) passed += mail(*local, "192.0.2.11") == ZETIAN_CONTINUE;
  EXPECT_EQ(passed, 3);
  // closed: refused.
  zetian_verdict v;
  auto s = closed->openSession("192.0.2.11", nullptr);
  EXPECT_EQ(closed->check(*s, conf::Stage::Mail, "<a@example.org>", &v), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.rcode, "451");
  closed->closeSession(std::move(s));
  EXPECT_FALSE(request("a", "GET", "/health")["redis"]["last_error"].is_null());
  EXPECT_EQ(metric("a", "zetian_redis_up"), 0);
}

}  // namespace
}  // namespace zetian::plugin
