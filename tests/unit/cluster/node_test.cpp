// ClusterNode in one process: two and three nodes, each on its own Loop (cluster
// thread), linked over real loopback TCP. Many "milter" threads query the nodes through
// Loop::call at the same time, which is what the TSan build checks; the multi-process
// behaviour (kill -9, TLS, strangers) is tested in tests/integration.
#include "cluster/node.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cluster/loop.h"

namespace zetian::cluster {
namespace {

using namespace std::chrono_literals;

struct TestNode {
  std::unique_ptr<Loop> loop = std::make_unique<Loop>();
  std::unique_ptr<ClusterNode> node;  // created and destroyed on the loop thread
  std::string endpoint;
  std::mutex log_mutex;
  std::vector<std::string> log;

  TestNode(const std::string& id, const std::vector<std::string>& seeds) {
    loop->start();
    NodeOptions o;
    o.node_id = id;
    o.bind = "127.0.0.1:0";
    o.secret = "unit-test-secret-0123456789abcdef";
    o.seeds = seeds;
    o.detector.heartbeat_interval = 100ms;
    o.detector.failure_detection_timeout = 1000ms;
    o.join_timeout = 3000ms;
    auto sink = [this](conf::LogLevel, std::string_view line) {
      std::lock_guard lock(log_mutex);
      log.emplace_back(line);
    };
    auto started = loop->call(
        [&, sink] {
          node = std::make_unique<ClusterNode>(*loop, o, sink, [] { return NodeLoad{3, 1.5}; });
          std::string error;
          if (!node->start(&error)) return error;
          endpoint = node->advertise();
          return std::string();
        },
        5s);
    EXPECT_TRUE(started.has_value());
    EXPECT_EQ(started.value_or("timeout"), "");
  }

  ~TestNode() {
    std::promise<void> left;
    if (loop->post([&] {
          node->leave([&] {
            node.reset();
            left.set_value();
          });
        })) {
      left.get_future().wait();
    }
    loop->stop();
  }

  std::map<std::string, std::string> view() {
    auto members = loop->call([&] { return node->members(); }, 5s);
    std::map<std::string, std::string> out;
    if (!members) return out;
    for (const auto& m : *members) out[m.id] = m.status;
    return out;
  }
};

bool waitFor(const std::function<bool()>& done, std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(10ms);  // polling interval, not synchronisation
  }
  return done();
}

TEST(ClusterNode, TwoNodesLinkAndSeeEachOtherActiveWithLoad) {
  TestNode a("a", {});
  TestNode b("b", {a.endpoint});
  const std::map<std::string, std::string> full{{"a", "active"}, {"b", "active"}};
  ASSERT_TRUE(waitFor([&] { return a.view() == full && b.view() == full; }, 10s));
  auto members = a.loop->call([&] { return a.node->members(); }, 5s);
  ASSERT_TRUE(members);
  ASSERT_EQ(members->size(), 2u);
  EXPECT_TRUE((*members)[0].self);
  EXPECT_EQ((*members)[1].id, "b");
  EXPECT_EQ((*members)[1].address, b.endpoint);
  EXPECT_EQ((*members)[1].load.sessions, 3u);
  EXPECT_DOUBLE_EQ((*members)[1].load.messages_per_s, 1.5);
  EXPECT_GT((*members)[1].last_seen_unix_ms, 0);
}

TEST(ClusterNode, AThirdNodeSeededWithOneMemberLearnsTheOther) {
  TestNode a("a", {});
  TestNode b("b", {a.endpoint});
  TestNode c("c", {a.endpoint});
  const std::map<std::string, std::string> full{{"a", "active"}, {"b", "active"}, {"c", "active"}};
  EXPECT_TRUE(waitFor([&] { return a.view() == full && b.view() == full && c.view() == full; }, 15s))
      << "b sees " << b.view().size() << ", c sees " << c.view().size();
}

TEST(ClusterNode, LeaveIsSeenAsLeftNotFailed) {
  TestNode a("a", {});
  auto b = std::make_unique<TestNode>("b", std::vector<std::string>{a.endpoint});
  ASSERT_TRUE(waitFor([&] { return a.view()["b"] == "active"; }, 10s));
  b.reset();  // leave(): a goodbye, flushed
  EXPECT_TRUE(waitFor([&] { return a.view()["b"] == "left"; }, 2s));
  auto counters = a.loop->call([&] { return a.node->counters(); }, 5s);
  ASSERT_TRUE(counters);
  EXPECT_EQ(counters->events["node_left"], 1u);
  EXPECT_EQ(counters->events.count("node_failed"), 0u);
}

TEST(ClusterNode, ManyThreadsQueryingTheClusterThreadAtOnce) {
  TestNode a("a", {});
  TestNode b("b", {a.endpoint});
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::vector<std::thread> milter_threads;
  for (int t = 0; t < 8; ++t) {
    milter_threads.emplace_back([&] {
      while (!stop.load()) {
        TestNode& target = answered.load() % 2 ? a : b;
        auto size = target.loop->call([&] { return target.node->size(); }, 5s);
        if (size) answered.fetch_add(1);
      }
    });
  }
  const std::map<std::string, std::string> full{{"a", "active"}, {"b", "active"}};
  const bool converged = waitFor([&] { return a.view() == full && b.view() == full; }, 10s);
  stop = true;
  for (auto& t : milter_threads) t.join();
  EXPECT_TRUE(converged);
  EXPECT_GT(answered.load(), 100);
}

TEST(ClusterNode, AWrongSecretIsRefusedAndNeverListed) {
  TestNode a("a", {});
  TestNode b("b", {a.endpoint});
  ASSERT_TRUE(waitFor([&] { return a.view()["b"] == "active"; }, 10s));
  // A third node whose secret differs: same code path, different key.
  Loop loop;
  loop.start();
  std::unique_ptr<ClusterNode> intruder;
  std::atomic<int> refusals{0};
  ASSERT_TRUE(loop.call(
      [&] {
        NodeOptions o;
        o.node_id = "intruder";
        o.bind = "127.0.0.1:0";
        o.secret = "some-other-secret-0123456789abcdef";
        o.seeds = {a.endpoint, b.endpoint};
        o.detector.heartbeat_interval = 100ms;
        auto sink = [&](conf::LogLevel, std::string_view line) {
          if (line.find("cluster_link_refused") != std::string_view::npos) refusals.fetch_add(1);
        };
        intruder = std::make_unique<ClusterNode>(loop, o, sink, nullptr);
        std::string error;
        return intruder->start(&error);
      },
      5s).value_or(false));
  EXPECT_TRUE(waitFor([&] { return refusals.load() >= 2; }, 5s));
  auto refused = a.loop->call([&] { return a.node->counters().links_refused; }, 5s);
  EXPECT_GE(refused.value_or(0), 1u);
  EXPECT_EQ(a.view().count("intruder"), 0u);
  auto own = loop.call([&] { return intruder->members().size(); }, 5s);
  EXPECT_EQ(own.value_or(0), 1u);
  std::promise<void> gone;
  loop.post([&] {
    intruder.reset();
    gone.set_value();
  });
  gone.get_future().wait();
  loop.stop();
}

}  // namespace
}  // namespace zetian::cluster
