// The Raft driver inside real ClusterNodes: each node on its own Loop (cluster thread)
// with its own raft folder, linked over loopback TCP, the writer thread fsyncing for
// real. Forming a cluster (bootstrap_expect), replicating a policy proposed on a
// follower, conflicts, a full restart, a late node joining as a learner and promoted,
// removal, leadership transfer, snapshots and catching up by one. The multi-process
// cases (kill -9, Postfix, partitions in network namespaces) are in tests/integration.
#include "cluster/node.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/loop.h"
#include "cluster/raft/policy_service.h"
#include "conf/policy.h"
#include "test_support.h"

namespace zetian::cluster {
namespace {

using namespace std::chrono_literals;
using raft::PolicyResult;

std::string policyWithLimit(int limit) {
  return "[ratelimit]\n\n[[ratelimit.rule]]\nname = \"per_ip\"\nkey = \"client_ip\"\nlimit = " +
         std::to_string(limit) + "\nperiod = \"1m\"\n";
}

struct RaftTestNode {
  std::string id;
  std::string state_dir;
  std::unique_ptr<Loop> loop = std::make_unique<Loop>();
  std::unique_ptr<ClusterNode> node;
  std::string endpoint;
  std::mutex mutex;
  std::vector<std::uint64_t> applied_versions;  // what the policy listener saw

  RaftTestNode(std::string node_id, std::string dir, const std::vector<std::string>& seeds, int bootstrap_expect,
               const std::function<void(NodeOptions&)>& adjust = {})
      : id(std::move(node_id)), state_dir(std::move(dir)) {
    loop->start();
    NodeOptions o;
    o.node_id = id;
    o.state_dir = state_dir;
    o.bind = "127.0.0.1:0";
    o.secret = "unit-test-secret-0123456789abcdef";
    o.seeds = seeds;
    o.detector.heartbeat_interval = 100ms;
    o.detector.failure_detection_timeout = 1000ms;
    o.join_timeout = 3000ms;
    raft::DriverOptions r;
    r.node_id = id;
    r.dir = state_dir + "/raft";
    r.bootstrap_expect = bootstrap_expect;
    r.election_timeout = 300ms;
    r.snapshot_every = 1000;
    r.seed_policy_text = policyWithLimit(10);
    o.raft = r;
    if (adjust) adjust(o);
    auto started = loop->call(
        [&] {
          node = std::make_unique<ClusterNode>(*loop, o, nullptr, [] { return NodeLoad{}; });
          node->policy()->setPolicyListener([this](const conf::PolicyDocument& d) {
            std::lock_guard lock(mutex);
            applied_versions.push_back(d.version);
          });
          std::string error;
          if (!node->start(&error)) return error;
          endpoint = node->advertise();
          return std::string();
        },
        10s);
    EXPECT_TRUE(started.has_value());
    EXPECT_EQ(started.value_or("timeout"), "");
  }

  ~RaftTestNode() {
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

  raft::RaftStatus status() {
    return testing::runOnLoop(*loop, [&] { return node->policy()->status(); });
  }
  std::uint64_t version() { return status().policy_version.value_or(0); }
  bool leads() { return status().role == "leader"; }

  // Runs an asynchronous PolicyService call on the loop and waits for its answer.
  PolicyResult await(const std::function<void(raft::PolicyService&, std::function<void(PolicyResult)>)>& call) {
    auto promise = std::make_shared<std::promise<PolicyResult>>();
    auto future = promise->get_future();
    EXPECT_TRUE(loop->post([&, promise] {
      call(*node->policy(), [promise](PolicyResult r) { promise->set_value(std::move(r)); });
    }));
    if (future.wait_for(30s) != std::future_status::ready) return PolicyResult{0, "no answer in 30 s", {}, 0};
    return future.get();
  }
  PolicyResult propose(const std::string& text, std::optional<std::uint64_t> base = std::nullopt) {
    return await([&](raft::PolicyService& s, auto done) { s.proposePolicy(text, base, 10000, std::move(done)); });
  }
};

bool waitFor(const std::function<bool()>& done, std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(20ms);  // polling interval, not synchronisation
  }
  return done();
}

class RaftNodeTest : public ::testing::Test {
 protected:
  testing::TempDir root;
  std::string dir(const std::string& id) {
    const std::string d = root.path() + "/" + id;
    std::filesystem::create_directories(d);
    return d;
  }
  static RaftTestNode* leaderOf(const std::vector<RaftTestNode*>& nodes) {
    for (auto* n : nodes) {
      if (n->leads()) return n;
    }
    return nullptr;
  }
  static bool allAt(const std::vector<RaftTestNode*>& nodes, std::uint64_t version) {
    for (auto* n : nodes) {
      if (n->version() != version) return false;
    }
    return true;
  }
};

TEST_F(RaftNodeTest, ThreeNodesFormOneClusterFromTheSmallestIdsFile) {
  RaftTestNode a("a", dir("a"), {}, 3);
  RaftTestNode b("b", dir("b"), {a.endpoint}, 3);
  RaftTestNode c("c", dir("c"), {a.endpoint}, 3);
  std::vector<RaftTestNode*> all{&a, &b, &c};
  ASSERT_TRUE(waitFor([&] {
    for (auto* n : all) {
      auto s = n->status();
      if (!s.in_cluster || s.voters != 3 || !s.leader) return false;
    }
    return true;
  }, 20s)) << "b: " << b.status().waiting_for << " c: " << c.status().waiting_for;
  EXPECT_TRUE(allAt(all, 1));
  for (auto* n : all) {
    auto s = n->status();
    EXPECT_EQ(s.members.size(), 3u);
    for (const auto& m : s.members) EXPECT_EQ(m.role, "voter") << m.id;
    EXPECT_EQ(*s.leader, *a.status().leader);
    auto doc = testing::runOnLoop(*n->loop, [&] { return n->node->policy()->policy(); });
    ASSERT_TRUE(doc);
    EXPECT_EQ(doc->proposer, "a");
    EXPECT_EQ(doc->text, policyWithLimit(10));
  }
}

TEST_F(RaftNodeTest, APolicyProposedOnAFollowerIsAppliedEverywhereAndAStaleBaseIsAConflict) {
  RaftTestNode a("a", dir("a"), {}, 3);
  RaftTestNode b("b", dir("b"), {a.endpoint}, 3);
  RaftTestNode c("c", dir("c"), {a.endpoint}, 3);
  std::vector<RaftTestNode*> all{&a, &b, &c};
  ASSERT_TRUE(waitFor([&] { return leaderOf(all) && allAt(all, 1) && a.status().voters == 3; }, 20s));
  RaftTestNode* follower = nullptr;
  for (auto* n : all) {
    if (!n->leads()) follower = n;
  }
  ASSERT_NE(follower, nullptr);
  const PolicyResult r = follower->propose(policyWithLimit(20), 1);
  ASSERT_EQ(r.status, 200) << r.error;
  ASSERT_TRUE(r.document);
  EXPECT_EQ(r.document->version, 2u);
  EXPECT_EQ(r.document->proposer, follower->id);
  // Answered only once applied on the node that asked.
  EXPECT_EQ(follower->version(), 2u);
  EXPECT_TRUE(waitFor([&] { return allAt(all, 2); }, 10s));
  {
    std::lock_guard lock(b.mutex);
    EXPECT_EQ(b.applied_versions, (std::vector<std::uint64_t>{1, 2}));
  }
  // Made against version 1 while 2 is current: refused, nothing changes.
  const PolicyResult stale = b.propose(policyWithLimit(30), 1);
  EXPECT_EQ(stale.status, 409) << stale.error;
  EXPECT_NE(stale.error.find("version 2 is current"), std::string::npos) << stale.error;
  // A policy larger than Raft replicates is refused before anything is proposed.
  std::string huge = policyWithLimit(50) + "# " + std::string(128 * 1024, 'x') + "\n";
  const PolicyResult too_big = follower->propose(huge);
  EXPECT_EQ(too_big.status, 400) << too_big.error;
  EXPECT_NE(too_big.error.find("at most 131072"), std::string::npos) << too_big.error;
  // Without a base: on top of whatever is current.
  const PolicyResult next = c.propose(policyWithLimit(40));
  ASSERT_EQ(next.status, 200) << next.error;
  EXPECT_EQ(next.document->version, 3u);
  auto history = testing::runOnLoop(*a.loop, [&] { return a.node->policy()->history(); });
  EXPECT_TRUE(waitFor([&] { return allAt(all, 3); }, 10s));
  history = testing::runOnLoop(*a.loop, [&] { return a.node->policy()->history(); });
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[1].proposer, follower->id);
  EXPECT_EQ(history[2].proposer, "c");
  // A linearizable read on a follower sees the newest version.
  const PolicyResult read = b.await([](raft::PolicyService& s, auto done) { s.readPolicy(5000, std::move(done)); });
  ASSERT_EQ(read.status, 200) << read.error;
  EXPECT_EQ(read.document->version, 3u);
}

TEST_F(RaftNodeTest, AFullRestartKeepsThePolicyAndElectsALeader) {
  {
    RaftTestNode a("a", dir("a"), {}, 3);
    RaftTestNode b("b", dir("b"), {a.endpoint}, 3);
    RaftTestNode c("c", dir("c"), {a.endpoint}, 3);
    std::vector<RaftTestNode*> all{&a, &b, &c};
    ASSERT_TRUE(waitFor([&] { return leaderOf(all) && allAt(all, 1) && a.status().voters == 3; }, 20s));
    ASSERT_EQ(c.propose(policyWithLimit(77)).status, 200);
    ASSERT_TRUE(waitFor([&] { return allAt(all, 2); }, 10s));
  }
  // Started again from their folders, without bootstrap: they are members already.
  RaftTestNode a("a", dir("a"), {}, 0);
  RaftTestNode b("b", dir("b"), {a.endpoint}, 0);
  RaftTestNode c("c", dir("c"), {a.endpoint}, 0);
  std::vector<RaftTestNode*> all{&a, &b, &c};
  // The policy is in force before any leader is heard.
  EXPECT_EQ(a.version(), 2u);
  ASSERT_TRUE(waitFor([&] { return leaderOf(all) != nullptr && allAt(all, 2); }, 20s));
  auto doc = testing::runOnLoop(*b.loop, [&] { return b.node->policy()->policy(); });
  ASSERT_TRUE(doc);
  EXPECT_EQ(doc->text, policyWithLimit(77));
  ASSERT_EQ(b.propose(policyWithLimit(78)).status, 200);
  EXPECT_TRUE(waitFor([&] { return allAt(all, 3); }, 10s));
}

TEST_F(RaftNodeTest, ALateNodeJoinsAsALearnerIsPromotedAndCaughtUpBySnapshot) {
  auto small_snapshots = [](NodeOptions& o) { o.raft->snapshot_every = 10; };
  RaftTestNode a("a", dir("a"), {}, 2, small_snapshots);
  RaftTestNode b("b", dir("b"), {a.endpoint}, 2, small_snapshots);
  std::vector<RaftTestNode*> two{&a, &b};
  ASSERT_TRUE(waitFor([&] { return leaderOf(two) && allAt(two, 1) && a.status().voters == 2; }, 20s));
  for (int i = 0; i < 15; ++i) ASSERT_EQ(a.propose(policyWithLimit(100 + i)).status, 200);
  ASSERT_TRUE(waitFor([&] { return allAt(two, 16); }, 10s));
  // bootstrap_expect 0: it only joins.
  RaftTestNode d("d", dir("d"), {a.endpoint}, 0, small_snapshots);
  std::vector<RaftTestNode*> three{&a, &b, &d};
  ASSERT_TRUE(waitFor([&] {
    auto s = d.status();
    return s.in_cluster && s.role != "learner" && s.voters == 3 && d.version() == 16;
  }, 20s)) << d.status().waiting_for << " role " << d.status().role;
  EXPECT_GE(d.status().snapshots_installed, 1u);
  ASSERT_EQ(d.propose(policyWithLimit(5)).status, 200);
  EXPECT_TRUE(waitFor([&] { return allAt(three, 17); }, 10s));
}

TEST_F(RaftNodeTest, TransferMovesTheLeadAndRemoveTakesAMemberOut) {
  RaftTestNode a("a", dir("a"), {}, 3);
  RaftTestNode b("b", dir("b"), {a.endpoint}, 3);
  RaftTestNode c("c", dir("c"), {a.endpoint}, 3);
  std::vector<RaftTestNode*> all{&a, &b, &c};
  ASSERT_TRUE(waitFor([&] { return leaderOf(all) && allAt(all, 1) && a.status().voters == 3; }, 20s));
  RaftTestNode* leader = leaderOf(all);
  RaftTestNode* other = leader == &c ? &b : &c;
  // Asked on a node that is not the leader, for a third one.
  RaftTestNode* asker = leader == &a ? &b : &a;
  if (asker == other) asker = leader;
  const PolicyResult moved = asker->await(
      [&](raft::PolicyService& s, auto done) { s.transferLeader(other->id, 10000, std::move(done)); });
  ASSERT_EQ(moved.status, 200) << moved.error;
  ASSERT_TRUE(waitFor([&] {
    for (auto* n : all) {
      if (n->status().leader != other->id) return false;
    }
    return true;
  }, 5s));
  const PolicyResult unknown = a.await(
      [&](raft::PolicyService& s, auto done) { s.removeMember("nobody", 5000, std::move(done)); });
  EXPECT_EQ(unknown.status, 404);
  RaftTestNode* removed = other == &a ? &b : &a;
  const PolicyResult gone = other->await(
      [&](raft::PolicyService& s, auto done) { s.removeMember(removed->id, 10000, std::move(done)); });
  ASSERT_EQ(gone.status, 200) << gone.error;
  EXPECT_TRUE(waitFor([&] { return other->status().voters == 2; }, 5s));
  // The two that remain still commit.
  ASSERT_EQ(other->propose(policyWithLimit(9)).status, 200);
}

TEST_F(RaftNodeTest, AlonePeerRefusesChangesWithNoQuorumAndKeepsItsPolicy) {
  auto a = std::make_unique<RaftTestNode>("a", dir("a"), std::vector<std::string>{}, 3);
  auto b = std::make_unique<RaftTestNode>("b", dir("b"), std::vector<std::string>{a->endpoint}, 3);
  RaftTestNode c("c", dir("c"), {a->endpoint}, 3);
  std::vector<RaftTestNode*> all{a.get(), b.get(), &c};
  ASSERT_TRUE(waitFor([&] { return leaderOf(all) && allAt(all, 1) && c.status().voters == 3; }, 20s));
  a.reset();
  b.reset();
  ASSERT_TRUE(waitFor([&] { return c.status().voters_reachable == 1; }, 10s));
  const PolicyResult r = c.propose(policyWithLimit(3));
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.error.find("no quorum: 1 of 3 voters reachable"), std::string::npos) << r.error;
  EXPECT_EQ(c.version(), 1u);
}

}  // namespace
}  // namespace zetian::cluster
