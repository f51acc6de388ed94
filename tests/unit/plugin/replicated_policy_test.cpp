// The replicated policy on a real engine with a scripted Raft service behind it
// (fake_policy_service.h): each applied version is published as a reload would be, a
// version this node cannot use keeps the policy, a reload leaves the replicated policy
// alone, PUT /policy answers only once the version is in force here, and /health and
// /metrics show the Raft state.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "plugin/engine.h"
#include "tests/unit/cluster/fake_policy_service.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::plugin {
namespace {

using namespace std::chrono_literals;
using cluster::testing::FakePolicyService;

constexpr const char* kPolicy5 = R"([ratelimit]
exempt = []
[[ratelimit.rule]]
name = "per-ip"
key = "client_ip"
limit = 5
period = "1h"
)";

std::string withLimit(unsigned limit) {
  std::string text = kPolicy5;
  text.replace(text.find("limit = 5"), 9, "limit = " + std::to_string(limit));
  return text;
}

conf::PolicyDocument document(std::uint64_t version, std::string text) {
  return conf::PolicyDocument{version, "mx2", 1764450000000 + version, std::move(text)};
}

// Polls `done` until it holds or 10 s pass.
template <typename Fn>
bool eventually(Fn done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return done();
}

class ReplicatedPolicyTest : public ::testing::Test {
 protected:
  std::string head() const {
    return "[node]\nid = \"mx1\"\n[log]\nlevel = \"info\"\ntarget = \"file\"\nfile = \"" + log_path_ +
           "\"\n[health]\nsocket = \"" + socket_ + "\"\n";
  }
  void write(const std::string& body) { std::ofstream(path_) << body; }
  // An engine on the file head() + `policy`, started with the fake service.
  std::unique_ptr<Engine> start(const std::string& policy) {
    write(head() + policy);
    Errors errors;
    auto engine = Engine::open(path_, {}, &errors);
    EXPECT_TRUE(engine) << (errors.empty() ? "" : errors.front());
    if (!engine) return nullptr;
    engine->setPolicyServiceForTest(&service_);
    EXPECT_TRUE(engine->start(&errors)) << (errors.empty() ? "" : errors.front());
    return engine;
  }
  std::string logText() const {
    std::ifstream in(log_path_);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  cluster::testing::RawReply request(const std::string& raw) {
    return cluster::testing::roundTrip(cluster::testing::connectUnix(socket_), raw);
  }
  cluster::testing::RawReply put(const std::string& body, const std::string& query = "") {
    return request("PUT /policy" + query + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body);
  }
  std::string metricsText() { return request(cluster::testing::simpleRequest("GET", "/metrics")).body; }
  static unsigned limitOf(Engine& e) { return static_cast<unsigned>(e.policy()->rules.at(0).rule.limit); }

  cluster::testing::TempDir temp_;
  const std::string path_ = temp_.file("zetian.toml");
  const std::string log_path_ = temp_.file("zetian.log");
  const std::string socket_ = temp_.file("health.sock");
  FakePolicyService service_;
};

TEST_F(ReplicatedPolicyTest, AnAppliedVersionIsPublishedAndTheFileDifferenceIsLoggedOnce) {
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  EXPECT_TRUE(service_.hasListener());
  EXPECT_EQ(e->replicatedVersion(), 0u);

  service_.apply(document(1, withLimit(9)));
  ASSERT_TRUE(eventually([&] { return limitOf(*e) == 9; }));
  EXPECT_EQ(e->replicatedVersion(), 1u);
  EXPECT_EQ(e->policy()->version, 1u);  // the cluster's number, the same on every node
  service_.apply(document(2, withLimit(11)));
  ASSERT_TRUE(eventually([&] { return limitOf(*e) == 11; }));
  EXPECT_EQ(e->policy()->version, 2u);

  const std::string log = logText();
  EXPECT_NE(log.find("policy_applied version=1 proposer=mx2 rules=1"), std::string::npos) << log;
  EXPECT_NE(log.find("policy_applied version=2 proposer=mx2 rules=1"), std::string::npos) << log;
  const auto differs = log.find("policy_file_differs version=1 file=");
  ASSERT_NE(differs, std::string::npos) << log;
  EXPECT_NE(log.find("zetianctl policy diff " + path_, differs), std::string::npos) << log;
  EXPECT_EQ(log.find("policy_file_differs", differs + 1), std::string::npos) << log;
}

TEST_F(ReplicatedPolicyTest, ThePolicyRecoveredAtStartIsInForceWhenStartReturns) {
  service_.setDocument(document(6, withLimit(17)));
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  EXPECT_EQ(limitOf(*e), 17u);
  EXPECT_EQ(e->replicatedVersion(), 6u);
}

TEST_F(ReplicatedPolicyTest, TheSamePolicySpelledOtherwiseIsNoDifference) {
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  const std::string same = "[ratelimit] # the same\nexempt = []\n[[ratelimit.rule]]\nperiod = \"60m\"\nlimit = 5\n"
                           "key = \"client_ip\"\nname = \"per-ip\"\n";
  service_.apply(document(1, same));
  ASSERT_TRUE(eventually([&] { return e->replicatedVersion() == 1; }));
  EXPECT_EQ(logText().find("policy_file_differs"), std::string::npos) << logText();
}

TEST_F(ReplicatedPolicyTest, AVersionThisNodeCannotUseKeepsThePolicyAndIsCounted) {
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  service_.apply(document(1, withLimit(9)));
  ASSERT_TRUE(eventually([&] { return limitOf(*e) == 9; }));
  // Valid as a document, but this node has no [redis].
  service_.apply(document(2, withLimit(12) + "store = \"redis\"\n"));
  ASSERT_TRUE(eventually([&] {
    return metricsText().find("zetian_policy_apply_failures_total 1\n") != std::string::npos;
  }));
  EXPECT_EQ(limitOf(*e), 9u);
  EXPECT_EQ(e->replicatedVersion(), 1u);
  const std::string log = logText();
  EXPECT_NE(log.find("policy_apply_failed version=2 error=\"<policy version 2>:8:"), std::string::npos) << log;
  EXPECT_NE(log.find("kept=1"), std::string::npos) << log;
  // The cluster goes on: the next version this node can use replaces it.
  service_.apply(document(3, withLimit(13)));
  ASSERT_TRUE(eventually([&] { return limitOf(*e) == 13; }));
  EXPECT_EQ(e->replicatedVersion(), 3u);
}

TEST_F(ReplicatedPolicyTest, AVersionDeliveredAgainChangesNothing) {
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  service_.apply(document(2, withLimit(9)));
  ASSERT_TRUE(eventually([&] { return limitOf(*e) == 9; }));
  service_.apply(document(1, withLimit(3)));  // older than the one in force
  service_.apply(document(3, withLimit(10)));
  ASSERT_TRUE(eventually([&] { return limitOf(*e) == 10; }));
  EXPECT_EQ(logText().find("policy_applied version=1"), std::string::npos) << logText();
}

TEST_F(ReplicatedPolicyTest, AReloadOnAReplicatedNodeReloadsNodeKeysButNotThePolicy) {
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  service_.apply(document(1, withLimit(9)));
  ASSERT_TRUE(eventually([&] { return limitOf(*e) == 9; }));

  // The file changes its log level (node-local, live) and its policy (not applied).
  std::string next = head() + withLimit(7);
  next.replace(next.find("level = \"info\""), 14, "level = \"debug\"");
  write(next);
  Errors errors;
  ASSERT_TRUE(e->reload(&errors)) << errors.front();
  EXPECT_TRUE(e->logger().enabled(conf::LogLevel::Debug));
  EXPECT_EQ(limitOf(*e), 9u);
  const std::string log = logText();
  EXPECT_NE(log.find("reload ok config="), std::string::npos) << log;
  EXPECT_NE(log.find("policy=replicated policy_version=1 file_policy=differs"), std::string::npos) << log;
  EXPECT_NE(log.find("reload_policy_not_applied version=1"), std::string::npos) << log;

  const auto reply = request(cluster::testing::simpleRequest("POST", "/reload"));
  EXPECT_EQ(reply.status, 200) << reply.body;
  EXPECT_NE(reply.body.find("\"policy\":\"replicated\""), std::string::npos) << reply.body;
  EXPECT_NE(reply.body.find("the policy is replicated: use `zetianctl policy apply FILE` to change it"),
            std::string::npos)
      << reply.body;

  // A file whose policy tables match the cluster's: no message.
  write(head() + withLimit(9));
  const auto same = request(cluster::testing::simpleRequest("POST", "/reload"));
  EXPECT_EQ(same.status, 200) << same.body;
  EXPECT_NE(same.body.find("\"policy\":\"replicated\""), std::string::npos) << same.body;
  EXPECT_EQ(same.body.find("\"message\""), std::string::npos) << same.body;
}

TEST_F(ReplicatedPolicyTest, PutPolicyAnswersOnceTheVersionIsInForceHere) {
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  const std::string text = "# the new limit\n" + withLimit(21);
  const auto reply = put(text, "?base_version=0");
  EXPECT_EQ(reply.status, 400) << reply.body;  // base_version starts at 1
  const auto done = put(text);
  EXPECT_EQ(done.status, 200) << done.body;
  EXPECT_EQ(done.body, R"({"version":1,"index":31})");
  // Answered after the publish: this node's next check already has it.
  EXPECT_EQ(limitOf(*e), 21u);
  EXPECT_EQ(service_.proposed(), (std::vector<std::string>{text}));
  EXPECT_EQ(service_.calls(), (std::vector<std::string>{"setPolicyListener", "propose(|10000)"}));

  const auto second = put(withLimit(22), "?base_version=1");
  EXPECT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(second.body, R"({"version":2,"index":32})");
  EXPECT_EQ(limitOf(*e), 22u);
  EXPECT_EQ(service_.calls().back(), "propose(1|10000)");
}

TEST_F(ReplicatedPolicyTest, PutPolicyRefusesWhatThisNodeCannotUseAndProposesNothing) {
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  auto reply = put(withLimit(3) + "store = \"redis\"\n");
  EXPECT_EQ(reply.status, 400) << reply.body;
  EXPECT_NE(reply.body.find("nothing was proposed"), std::string::npos) << reply.body;
  EXPECT_NE(reply.body.find("<PUT /policy>:8:9: "), std::string::npos) << reply.body;
  reply = put("[node]\nid = \"other\"\n");
  EXPECT_EQ(reply.status, 400) << reply.body;
  EXPECT_TRUE(service_.proposed().empty());
  EXPECT_EQ(limitOf(*e), 5u);
}

TEST_F(ReplicatedPolicyTest, PutPolicyPassesTheServicesRefusalOn) {
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  service_.answerWith(cluster::raft::PolicyResult{503, "no quorum: 1 of 3 voters reachable", std::nullopt, 0});
  auto reply = put(withLimit(9));
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(reply.body, R"({"error":"no quorum: 1 of 3 voters reachable"})");
  service_.answerWith(cluster::raft::PolicyResult{409, "version 3 proposed, 4 is current", std::nullopt, 0});
  reply = put(withLimit(9), "?base_version=2");
  EXPECT_EQ(reply.status, 409);
  EXPECT_EQ(limitOf(*e), 5u);
}

TEST_F(ReplicatedPolicyTest, HealthAndMetricsShowTheRaftState) {
  auto e = start(kPolicy5);
  ASSERT_TRUE(e);
  const auto health = request(cluster::testing::simpleRequest("GET", "/health"));
  EXPECT_EQ(health.status, 200);
  for (const char* field : {"\"leader\":\"mx2\"", "\"term\":7", "\"commit_index\":30", "\"applied_index\":29",
                            "\"policy_version\":4", "\"raft\":{\"in_cluster\":true", "\"raft_role\":\"voter\"",
                            "\"voters_reachable\":2"}) {
    EXPECT_NE(health.body.find(field), std::string::npos) << field << "\n" << health.body;
  }
  const std::string metrics = metricsText();
  for (const char* line : {"zetian_raft_term 7\n", "zetian_raft_commit_index 30\n", "zetian_raft_applied_index 29\n",
                           "zetian_raft_is_leader 0\n", "zetian_raft_leader_changes_total 3\n",
                           "zetian_policy_apply_failures_total 0\n"}) {
    EXPECT_NE(metrics.find(line), std::string::npos) << line;
  }
  const auto history = request(cluster::testing::simpleRequest("GET", "/policy/history"));
  EXPECT_EQ(history.status, 200);
  EXPECT_EQ(history.body, "[]");
}

TEST(ReplicatedPolicyWithoutRaft, EndpointsAre503AndHealthHasNoTerm) {
  cluster::testing::TempDir temp;
  const std::string socket = temp.file("health.sock");
  const std::string path = temp.file("zetian.toml");
  std::ofstream(path) << "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n[health]\nsocket = \"" << socket << "\"\n"
                      << kPolicy5;
  Errors errors;
  auto e = Engine::open(path, {}, &errors);
  ASSERT_TRUE(e);
  ASSERT_TRUE(e->start(&errors)) << errors.front();
  for (const auto& [method, target] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/policy"}, {"GET", "/policy/history"}, {"POST", "/cluster/remove?node=x"},
           {"POST", "/cluster/transfer-leader"}}) {
    const auto r = cluster::testing::roundTrip(cluster::testing::connectUnix(socket),
                                               cluster::testing::simpleRequest(method, target));
    EXPECT_EQ(r.status, 503) << target;
    EXPECT_NE(r.body.find("without [cluster] enabled"), std::string::npos) << r.body;
  }
  const auto health = cluster::testing::roundTrip(cluster::testing::connectUnix(socket),
                                                 cluster::testing::simpleRequest("GET", "/health"));
  EXPECT_NE(health.body.find("\"leader\":null"), std::string::npos) << health.body;
  EXPECT_EQ(health.body.find("\"term\""), std::string::npos) << health.body;
  EXPECT_NE(health.body.find("\"raft_role\":null"), std::string::npos) << health.body;
  const auto metrics = cluster::testing::roundTrip(cluster::testing::connectUnix(socket),
                                                  cluster::testing::simpleRequest("GET", "/metrics"));
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.body.find("zetian_raft_term"), std::string::npos);
}

}  // namespace
}  // namespace zetian::plugin
