// Cluster-scope checks across real engines in one process: three (sometimes four)
// Engines, each with [cluster] enabled on its own 127.0.0.1 port, seeded with each
// other and a fast failure detector; a bare ClusterNode with its own store plays an
// owner the test can kill without a goodbye or block on its loop. No MTA: the
// integration tests (tests/integration/test_cluster_limits.py) bring Postfix.
//
// Timing: every wait polls with a deadline; the deadlines are generous (a loaded
// 2-core machine, TSan) except where the duration itself is the subject.
//
// This file: exact limits, fail modes, timeouts. The asynchronous checks, a forming
// node, joins and frames: cluster_check_async_test.cpp.
#include "tests/unit/plugin/cluster_check_fixture.h"

namespace zetian::plugin {
namespace {

TEST_F(ClusterCheckTest, ExactLimitAdmitsTenOfThirtyOneByOneRoundRobin) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 10))));
  int allowed = 0;
  for (int i = 0; i < 30; ++i) {
    const int action = mail(engine(i % 3), "192.0.2.1", "<a@example.org>");
    ASSERT_TRUE(action == ZETIAN_CONTINUE || action == ZETIAN_TEMPFAIL) << action;
    if (action == ZETIAN_CONTINUE) ++allowed;
  }
  EXPECT_EQ(allowed, 10);
  // Decided by the owner: no check fell back.
  for (const auto& m : members_) EXPECT_EQ(fallbacks(*m, "per-ip", "timeout"), 0) << m->id;
  for (const auto& m : members_) EXPECT_EQ(fallbacks(*m, "per-ip", "unreachable"), 0) << m->id;
}

// 30 sessions at once, each on its own thread, spread over the three engines.
int burst(std::vector<Engine*> engines, int sessions, const std::function<std::string(int)>& ip,
          const std::function<std::string(int)>& sender) {
  std::atomic<int> allowed{0}, other{0};
  std::latch go(sessions);
  std::vector<std::thread> threads;
  for (int i = 0; i < sessions; ++i) {
    threads.emplace_back([&, i] {
      Engine& e = *engines[std::size_t(i) % engines.size()];
      auto s = e.openSession(ip(i).c_str(), nullptr);
      zetian_verdict v;
      go.arrive_and_wait();
      const int action = e.check(*s, conf::Stage::Mail, sender(i).c_str(), &v);
      if (action == ZETIAN_CONTINUE) {
        ++allowed;
      } else if (action != ZETIAN_TEMPFAIL) {
        ++other;
      }
      e.closeSession(std::move(s));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(other.load(), 0);
  return allowed.load();
}

TEST_F(ClusterCheckTest, ExactLimitAdmitsTenOfThirtyArrivingAtOnce) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 10))));
  const int allowed = burst({&engine(0), &engine(1), &engine(2)}, 30, [](int) { return "192.0.2.1"; },
                            [](int) { return "<a@example.org>"; });
  EXPECT_EQ(allowed, 10);
}

// ---- 2. a per-sender rule holds across client addresses ------------------------------

TEST_F(ClusterCheckTest, PerSenderLimitHoldsAcrossClientAddresses) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-sender", "sender", 10))));
  int allowed = 0;
  for (int i = 0; i < 30; ++i) {
    const std::string ip = "198.51.100." + std::to_string(i + 1);
    if (mail(engine(i % 3), ip, "<bulk@example.org>") == ZETIAN_CONTINUE) ++allowed;
  }
  EXPECT_EQ(allowed, 10);
  // At once, another sender, each session from its own address.
  const int at_once = burst({&engine(0), &engine(1), &engine(2)}, 30,
                            [](int i) { return "203.0.113." + std::to_string(i + 1); },
                            [](int) { return "<other@example.org>"; });
  EXPECT_EQ(at_once, 10);
}

// ---- 3. scope = "node" stays local --------------------------------------------------

TEST_F(ClusterCheckTest, NodeScopeCountsOnEachNode) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 10, "scope = \"node\"\n"))));
  int allowed = 0;
  for (int i = 0; i < 30; ++i) {
    if (mail(engine(i % 3), "192.0.2.1", "<a@example.org>") == ZETIAN_CONTINUE) ++allowed;
  }
  EXPECT_EQ(allowed, 30);
  EXPECT_EQ(mail(engine(0), "192.0.2.1", "<a@example.org>"), ZETIAN_TEMPFAIL);
}

// ---- [affinity] method = "source_ip" ---------------------------------------------------

// Client-keyed rules are owned by the owner of "ip:<client>"; a sender rule stays with
// the owner of its own key.
TEST_F(ClusterCheckTest, SourceIpAffinityPutsClientKeysOnTheClientsOwner) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 10) + rule("per-sender", "sender", 10)) +
                                       "[affinity]\nmethod = \"source_ip\"\n"));
  // A client whose "ip:" placement is n2 while its per-ip key alone would go elsewhere.
  std::string ip;
  for (int skip = 0; ip.empty() && skip < 1000; ++skip) {
    const std::string candidate = ipOwnedBy("per-ip", "n3", skip);
    if (ownerOf("ip:" + candidate) == "n2") ip = candidate;
  }
  ASSERT_FALSE(ip.empty());
  const std::string sender = "affine@example.org";
  const std::string sender_owner = ownerOf(storeKey("per-sender", sender));
  ASSERT_EQ(mail(engine(0), ip, "<" + sender + ">"), ZETIAN_CONTINUE);
  std::map<std::string, Engine*> by_id;
  for (const auto& m : members_) by_id[m->id] = m->engine.get();
  for (const auto& [id, e] : by_id) {
    EXPECT_EQ(full(e->store(), *e, "per-ip", storeKey("per-ip", ip)), id != "n2") << id;
    EXPECT_EQ(full(e->store(), *e, "per-sender", storeKey("per-sender", sender)), id != sender_owner) << id;
  }
}

// ---- 4. charge-then-refund across owners ----------------------------------------------

TEST_F(ClusterCheckTest, ADenialOnOneOwnerGivesBackTheChargeMadeOnAnother) {
  ASSERT_NO_FATAL_FAILURE(
      startCluster(policy(rule("first", "client_ip", 100) + rule("second", "sender", 1))));
  // first's key on an owner other than the checking engine (n1), second's on another.
  const std::string ip = ipOwnedBy("first", "n2");
  std::string sender;
  for (int i = 0; sender.empty(); ++i) {
    const std::string candidate = "s" + std::to_string(i) + "@example.org";
    if (ownerOf(storeKey("second", candidate)) != "n2") sender = candidate;
  }
  // Spend second's single token from another client (whose first key is elsewhere).
  const std::string spender = ipOwnedBy("first", "n3");
  ASSERT_EQ(mail(engine(0), spender, "<" + sender + ">"), ZETIAN_CONTINUE);

  zetian_verdict v;
  ASSERT_EQ(mail(engine(0), ip, "<" + sender + ">", &v), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.rule, "second");
  EXPECT_STREQ(v.rcode, "451");
  // n2 charged first's key, and is given it back (asynchronously).
  const std::string key = storeKey("first", ip);
  EXPECT_TRUE(waitFor([&] { return full(engine(1).store(), engine(1), "first", key); }, 10s));
  // Every other client of first's still finds its own charge there: the refund is the
  // key's, not a reset of the store.
  EXPECT_FALSE(full(engine(2).store(), engine(2), "first", storeKey("first", spender)));
}

// ---- 5. fail_mode when the owner is down ----------------------------------------------

// A cluster of n1..n3 and the bare owner "d", which is killed without a goodbye; the
// others keep listing it (failure_detection_timeout 10 s) while the test checks.
// A member whose link closes leaves every view at once (its keys go to their first
// replica), so the owner that cannot answer here is one that announced no limiter
// capability: it stays a member and owns keys, and checks for them fall back.
class FailModeTest : public ClusterCheckTest {
 protected:
  // Returns a client address whose per-ip key d owns; d announces no limiter.
  std::string startWithOwnerWithoutLimiter(const std::string& fail_mode, int limit) {
    settings_["failure_detection_timeout"] = "\"10s\"";
    settings_["check_timeout"] = "\"2s\"";
    startCluster(policy(rule("per-ip", "client_ip", limit), fail_mode), true, 0);
    if (HasFatalFailure()) return "";
    return ipOwnedBy("per-ip", "d");
  }

  bool stillListed(const std::string& id) {
    auto view = engine(0).view();
    return std::find(view->members.begin(), view->members.end(), id) != view->members.end();
  }
};

TEST_F(FailModeTest, LocalDecidesWithThisNodesBucketAtOnceAndLogsOneEpisode) {
  const std::string ip = startWithOwnerWithoutLimiter("local", 3);
  ASSERT_FALSE(ip.empty());
  const auto timeout = 2000ms;
  std::vector<int> actions;
  auto slowest = Clock::duration::zero();
  for (int i = 0; i < 8; ++i) {
    const auto began = Clock::now();
    actions.push_back(mail(engine(0), ip, "<a@example.org>"));
    slowest = std::max(slowest, Clock::now() - began);
  }
  ASSERT_TRUE(stillListed("d")) << "d left the view during the test: nothing was tested";
  // The local bucket: 3 allowed, then denied; nobody waited for the owner.
  EXPECT_EQ(std::count(actions.begin(), actions.end(), ZETIAN_CONTINUE), 3);
  EXPECT_EQ(std::count(actions.begin(), actions.end(), ZETIAN_TEMPFAIL), 5);
  EXPECT_LT(slowest, timeout / 2);
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "unsupported"), 8);
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "timeout"), 0);
  const std::string log = readFile(members_[0]->log);
  EXPECT_EQ(countOf(log, "cluster_limits_fallback"), 1u) << log;
  EXPECT_NE(log.find("cluster_limits_fallback owner=d reason=unsupported fail_mode=local"), std::string::npos)
      << log;
  EXPECT_EQ(countOf(log, "cluster_limits_recovered"), 0u) << log;

  // d comes back upgraded (same id, same port, a fresh store, the limiter announced):
  // the episode is over once it has left the view, and d answers again afterwards.
  const auto port = owner_->port;
  owner_->kill();
  owner_.reset();
  owner_ = std::make_unique<BareOwner>();
  owner_->id = "d";
  owner_->port = port;
  owner_->state_dir = dir_.file("d");
  owner_->settings = settings_;
  for (const auto& m : members_) owner_->seeds.push_back(endpoint(m->port));
  ASSERT_NO_FATAL_FAILURE(owner_->start());
  ASSERT_TRUE(waitViews(4));
  ASSERT_TRUE(waitFor([&] { return countOf(readFile(members_[0]->log), "cluster_limits_recovered") > 0; }, 20s))
      << readFile(members_[0]->log);
  mail(engine(0), ip, "<a@example.org>");
  const std::string after = readFile(members_[0]->log);
  EXPECT_EQ(countOf(after, "cluster_limits_recovered owner=d"), 1u) << after;
  EXPECT_EQ(countOf(after, "cluster_limits_fallback"), 1u) << after;
  EXPECT_GE(owner_->callsServed(), 1u);
}

// The owner never comes back: once it leaves the view, its keys move to another member,
// and the episode ends then (cause=owner_left_view), not with an answer from d, which
// will never come.
TEST_F(FailModeTest, AnEpisodeEndsWhenTheViewMovesTheKeyToAnOwnerThatAnswers) {
  settings_["failure_detection_timeout"] = "\"1s\"";
  settings_["check_timeout"] = "\"2s\"";
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 100), "local"), true, 0));
  // d owns the key now; among n1..n3 it goes to a member other than n1 (the checker).
  const std::vector<std::string> survivors{"n1", "n2", "n3"};
  std::string ip;
  for (int skip = 0; ip.empty() && skip < 1000; ++skip) {
    const std::string candidate = ipOwnedBy("per-ip", "d", skip);
    if (*cluster::placement::ownerOf(storeKey("per-ip", candidate), survivors) != "n1") ip = candidate;
  }
  ASSERT_FALSE(ip.empty());
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_CONTINUE);
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_CONTINUE);
  ASSERT_TRUE(stillListed("d"));
  ASSERT_EQ(countOf(readFile(members_[0]->log), "cluster_limits_fallback owner=d"), 1u);

  owner_->kill();
  ASSERT_TRUE(waitViews(3));
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_CONTINUE);
  const std::string log = readFile(members_[0]->log);
  EXPECT_EQ(countOf(log, "cluster_limits_recovered"), 1u) << log;
  EXPECT_EQ(countOf(log, "cluster_limits_fallback"), 1u) << log;
  EXPECT_NE(log.find("cause=owner_left_view"), std::string::npos) << log;
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "unsupported"), 2);
}

// A member that announced no limiter capability (an older version) owns keys all the
// same; checks for them follow fail_mode at once, and nothing is sent to it.
TEST_F(FailModeTest, AnOwnerWithoutTheLimiterCapabilityFallsBackAtOnce) {
  settings_["check_timeout"] = "\"2s\"";
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 2), "local"), true, 0));
  const std::string ip = ipOwnedBy("per-ip", "d");
  std::vector<int> actions;
  const auto began = Clock::now();
  for (int i = 0; i < 4; ++i) actions.push_back(mail(engine(i % 3), ip, "<a@example.org>"));
  EXPECT_LT(Clock::now() - began, 1000ms);
  // Each node's own bucket: n1 twice, n2 and n3 once, all within the limit of 2.
  EXPECT_EQ(std::count(actions.begin(), actions.end(), ZETIAN_CONTINUE), 4);
  for (const auto& m : members_) EXPECT_GE(fallbacks(*m, "per-ip", "unsupported"), 1) << m->id;
  EXPECT_EQ(owner_->callsServed(), 0u);
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_TEMPFAIL);  // n1's third: its limit is 2
}

TEST_F(FailModeTest, OpenDoesNotEnforceTheLocalBucketsDenial) {
  const std::string ip = startWithOwnerWithoutLimiter("open", 2);
  ASSERT_FALSE(ip.empty());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_CONTINUE) << i;
  ASSERT_TRUE(stillListed("d"));
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "unsupported"), 5);
  // Counted locally all the same: this node's bucket for the key is spent.
  EXPECT_FALSE(full(engine(0).store(), engine(0), "per-ip", storeKey("per-ip", ip)));
}

TEST_F(FailModeTest, ClosedTempfailsTheStageWith451) {
  const std::string ip = startWithOwnerWithoutLimiter("closed", 5);
  ASSERT_FALSE(ip.empty());
  zetian_verdict v;
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>", &v), ZETIAN_TEMPFAIL);
  ASSERT_TRUE(stillListed("d"));
  EXPECT_STREQ(v.rcode, "451");
  EXPECT_STREQ(v.xcode, "4.7.1");
  EXPECT_STREQ(v.rule, "per-ip");
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "unsupported"), 1);
  // Nothing was charged here: a refused stage costs nothing.
  EXPECT_TRUE(full(engine(0).store(), engine(0), "per-ip", storeKey("per-ip", ip)));
}

// ---- 6. an owner that does not answer in time -----------------------------------------

TEST_F(ClusterCheckTest, AnOwnerThatDoesNotAnswerTimesOutAndItsLateChargeIsRefunded) {
  settings_["failure_detection_timeout"] = "\"10s\"";
  settings_["check_timeout"] = "\"50ms\"";
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 5)), true));
  const std::string ip = ipOwnedBy("per-ip", "d");
  const std::string key = storeKey("per-ip", ip);
  ASSERT_NO_FATAL_FAILURE(owner_->block());

  const auto began = Clock::now();
  zetian_verdict v;
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>", &v), ZETIAN_CONTINUE);
  const auto took = Clock::now() - began;
  EXPECT_GE(took, 45ms);
  EXPECT_LT(took, 1000ms);  // about check_timeout; generous for a loaded machine
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "timeout"), 1);
  // Decided with n1's own bucket (fail_mode local).
  EXPECT_FALSE(full(engine(0).store(), engine(0), "per-ip", key));

  // d answers late: it charged, and n1 gives the charge back.
  owner_->release();
  ASSERT_TRUE(waitFor([&] { return owner_->callsServed() >= 1; }, 10s));
  EXPECT_TRUE(waitFor([&] { return full(owner_->store, engine(0), "per-ip", key); }, 10s));
}

// ---- 7. the asynchronous check ----------------------------------------------------------

}  // namespace
}  // namespace zetian::plugin
