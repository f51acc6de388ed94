// The replicated policy's admin endpoints: their routing, trust and bodies through a
// real HealthServer (a scripted engine behind it), and their answers
// (cluster/policy_admin.h) from a scripted Raft service.
#include "cluster/policy_admin.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/unit/cluster/fake_policy_service.h"
#include "tests/unit/cluster/health_server_fixture.h"

namespace zetian::cluster {
namespace {

using testing::FakePolicyService;
using Json = nlohmann::ordered_json;

std::string put(const std::string& target, const std::string& body, const std::string& headers = "") {
  return "PUT " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + headers + "\r\n" + body;
}

// ---- routing, trust and bodies -------------------------------------------------------

TEST_F(HealthServerTest, PolicyRoutesReachTheEngine) {
  startOrFail(options());
  EXPECT_EQ(overUnix("GET", "/policy").status, 200);
  EXPECT_EQ(overUnix("GET", "/policy/history").status, 200);
  EXPECT_EQ(overUnix("POST", "/cluster/remove?node=mx3").status, 200);
  EXPECT_EQ(overUnix("POST", "/cluster/transfer-leader").status, 200);
  EXPECT_EQ(overUnix("POST", "/cluster/transfer-leader?node=mx2").status, 200);
  EXPECT_EQ(roundTrip(connectUnix(socket_path), put("/policy?base_version=12", "[ratelimit]\n")).status, 200);
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"policyGet", "policyHistory", "clusterRemove(|mx3)",
                                                   "clusterTransferLeader(|)", "clusterTransferLeader(|mx2)",
                                                   "policyPut(12|[ratelimit]\n)"}));
}

TEST_F(HealthServerTest, HeadOfAnAnswerGivenLaterHasNoBody) {
  api.set("policyGet", {200, "application/json", R"({"version":1})"});
  api.set("limitsShow", {200, "application/json", R"({"limits":[]})"});
  startOrFail(options());
  for (const char* target : {"/policy", "/limits"}) {
    const RawReply r = overUnix("HEAD", target);
    EXPECT_EQ(r.status, 200) << target;
    EXPECT_EQ(r.body, "") << target;
    EXPECT_NE(r.header("Content-Length"), "0") << target;
  }
}

TEST_F(HealthServerTest, PolicyRoutesRefuseBadRequestsBeforeTheEngine) {
  startOrFail(options());
  const auto unix = [&](const std::string& request) { return roundTrip(connectUnix(socket_path), request); };
  RawReply r = unix(put("/policy?base_version=0", "x"));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("base_version must be a policy version"), std::string::npos) << r.body;
  EXPECT_EQ(unix(put("/policy?base_version=-1", "x")).status, 400);
  EXPECT_EQ(unix(put("/policy?base_version=99999999999999999999", "x")).status, 400);
  EXPECT_EQ(unix(put("/policy?version=3", "x")).status, 400);
  r = unix(put("/policy", ""));
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("needs the policy's TOML text"), std::string::npos) << r.body;
  EXPECT_EQ(overUnix("GET", "/policy?consistent=1").status, 400);
  EXPECT_EQ(overUnix("GET", "/policy/history?all=1").status, 400);
  r = overUnix("POST", "/cluster/remove");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("node is required"), std::string::npos) << r.body;
  EXPECT_EQ(overUnix("POST", "/cluster/remove?node=").status, 400);
  EXPECT_EQ(overUnix("POST", "/cluster/remove?node=a%20b").status, 400);
  EXPECT_EQ(overUnix("POST", "/cluster/transfer-leader?node=a/b").status, 400);
  EXPECT_EQ(overUnix("POST", "/cluster/transfer-leader?to=mx2").status, 400);

  r = overUnix("POST", "/policy");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.header("Allow"), "GET, HEAD, PUT");
  EXPECT_NE(r.body.find("/policy only answers GET (and HEAD) and PUT"), std::string::npos) << r.body;
  r = unix(put("/policy/history", "x"));
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.header("Allow"), "GET, HEAD");
  r = overUnix("GET", "/cluster/remove?node=mx3");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.header("Allow"), "POST");
  EXPECT_EQ(overUnix("GET", "/cluster").status, 404);
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(HealthServerTest, PolicyChangesOverTcpNeedTheTokenAndReadsDoNot) {
  startOrFail(options("127.0.0.1:0", "s3cret-token"));
  const auto tcp = [&](const std::string& request) { return roundTrip(connectTcp(harness.tcpPort()), request); };
  EXPECT_EQ(tcp(put("/policy", "[ratelimit]\n")).status, 403);
  EXPECT_EQ(tcp(put("/policy", "[ratelimit]\n", "Authorization: Bearer wrong\r\n")).status, 403);
  EXPECT_EQ(overTcp("POST", "/cluster/remove?node=mx3").status, 403);
  EXPECT_EQ(overTcp("POST", "/cluster/transfer-leader").status, 403);
  EXPECT_TRUE(api.calls().empty());

  EXPECT_EQ(overTcp("GET", "/policy").status, 200);
  EXPECT_EQ(overTcp("GET", "/policy/history").status, 200);
  EXPECT_EQ(tcp(put("/policy", "[ratelimit]\n", "Authorization: Bearer s3cret-token\r\n")).status, 200);
  EXPECT_EQ(overTcp("POST", "/cluster/remove?node=mx3", "Authorization: Bearer s3cret-token\r\n").status, 200);
  EXPECT_EQ(api.calls().size(), 4u);
}

TEST_F(HealthServerTest, ALargePolicyIsReadWholeAndPassedIntact) {
  startOrFail(options());
  std::string body = "[ratelimit]\nexempt = [\n";
  while (body.size() < 300 * 1024) body += "  \"10.0.0.0/8\",\n";
  body += "]\n";
  const RawReply r = roundTrip(connectUnix(socket_path), put("/policy", body));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"policyPut(|" + body + ")"}));
  // The connection's read bound is back to normal: the next large POST body is refused.
  const std::string post_body(64 * 1024, 'x');
  const RawReply after = roundTrip(connectUnix(socket_path),
                                   "POST /reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: " +
                                       std::to_string(post_body.size()) + "\r\n\r\n" + post_body);
  EXPECT_TRUE(after.status == 0 || after.status == 413) << after.status;
}

TEST_F(HealthServerTest, TwoPoliciesPipelinedOnOneConnectionAreBothRead) {
  startOrFail(options());
  const std::string first(6000, '#');
  const std::string second(9000, '#');
  const auto request = [](const std::string& body, bool last) {
    return "PUT /policy HTTP/1.1\r\nHost: x\r\n" + std::string(last ? "Connection: close\r\n" : "") +
           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  const int fd = connectUnix(socket_path);
  ASSERT_GE(fd, 0);
  testing::sendAll(fd, request(first, false) + request(second, true));
  const std::string raw = testing::readUntilClose(fd, 5s);
  close(fd);
  std::size_t replies = 0;
  for (std::size_t at = raw.find("HTTP/1.1 200"); at != std::string::npos; at = raw.find("HTTP/1.1 200", at + 1)) {
    ++replies;
  }
  EXPECT_EQ(replies, 2u) << raw;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"policyPut(|" + first + ")", "policyPut(|" + second + ")"}));
}

TEST_F(HealthServerTest, APolicyOverTheBoundIsRefusedUnread) {
  HealthServerOptions o = options("127.0.0.1:0", "s3cret-token");
  o.max_policy_bytes = 64 * 1024;
  startOrFail(o);
  const std::string body(64 * 1024 + 1, '#');
  RawReply r = roundTrip(connectUnix(socket_path), put("/policy", body));
  EXPECT_TRUE(r.status == 0 || r.status == 413) << r.status;
  // Over TCP without the token the answer is the refusal, before any body is read.
  const int fd = connectTcp(harness.tcpPort());
  ASSERT_GE(fd, 0);
  testing::sendAll(fd, "PUT /policy HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n");
  r = testing::parseRaw(testing::readUntilClose(fd, 5s));
  close(fd);
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(api.calls().empty());
  EXPECT_EQ(overUnix("GET", "/live").status, 200);
}

// ---- the answers -------------------------------------------------------------------------

Json body(const AdminReply& r) { return Json::parse(r.body); }

AdminReply answerOf(const std::function<void(std::function<void(AdminReply)>)>& call) {
  std::optional<AdminReply> answer;
  int calls = 0;
  call([&](AdminReply r) {
    ++calls;
    answer = std::move(r);
  });
  EXPECT_EQ(calls, 1);
  return answer.value_or(AdminReply{0, "", ""});
}

TEST(PolicyAdmin, WithoutAClusterEveryEndpointIs503AndSaysWhy) {
  const AdminReply none = policyHistoryReply(nullptr);
  EXPECT_EQ(none.status, 503);
  EXPECT_NE(body(none)["error"].get<std::string>().find("without [cluster] enabled"), std::string::npos);
  EXPECT_EQ(answerOf([](auto respond) { readPolicy(nullptr, respond); }).status, 503);
  EXPECT_EQ(answerOf([](auto respond) { removeMember(nullptr, "mx3", respond); }).status, 503);
  EXPECT_EQ(answerOf([](auto respond) { transferLeader(nullptr, "", respond); }).status, 503);

  FakePolicyService service;
  raft::RaftStatus waiting;
  waiting.waiting_for = "3 members running Raft (2 met)";
  service.setStatus(waiting);
  const AdminReply r = answerOf([&](auto respond) { readPolicy(&service, respond); });
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(body(r)["error"],
            "this node is not in a Raft cluster yet (waiting for 3 members running Raft (2 met)); it enforces the "
            "policy of its own file meanwhile");
  EXPECT_TRUE(service.calls().empty());
}

TEST(PolicyAdmin, GetPolicyIsTheDocumentReadThroughTheService) {
  FakePolicyService service;
  AdminReply r = answerOf([&](auto respond) { readPolicy(&service, respond); });
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(body(r)["error"].get<std::string>().find("zetianctl policy apply"), std::string::npos);

  service.setDocument(conf::PolicyDocument{5, "mx2", 1764450000123, "[ratelimit]\n"});
  r = answerOf([&](auto respond) { readPolicy(&service, respond); });
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"version":5,"proposer":"mx2","time_unix_ms":1764450000123,"text":"[ratelimit]\n"})");
  EXPECT_EQ(service.calls(), (std::vector<std::string>{"read(3000)", "read(3000)"}));

  service.answerWith(raft::PolicyResult{503, "no leader", std::nullopt, 0});
  r = answerOf([&](auto respond) { readPolicy(&service, respond); });
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, R"({"error":"no leader"})");
}

TEST(PolicyAdmin, RefusalsKeepTheServicesStatusAndWords) {
  for (const int status : {400, 404, 409, 503, 504}) {
    const AdminReply r = policyRefusal(raft::PolicyResult{status, "because", std::nullopt, 0});
    EXPECT_EQ(r.status, status);
    EXPECT_EQ(r.body, R"({"error":"because"})");
  }
  const AdminReply silent = policyRefusal(raft::PolicyResult{409, "", std::nullopt, 0});
  EXPECT_EQ(silent.status, 409);
  EXPECT_NE(silent.body.find("status 409"), std::string::npos);
  EXPECT_EQ(policyRefusal(raft::PolicyResult{200, "odd", std::nullopt, 0}).status, 500);
}

TEST(PolicyAdmin, AnInvalidPolicyIsRefusedWithItsPlaces) {
  EXPECT_FALSE(policyTextRefusal("[ratelimit]\nexempt = []\n", "<PUT /policy>", false));
  const std::string redis_rule =
      "[[ratelimit.rule]]\nname = \"r\"\nkey = \"client_ip\"\nlimit = 1\nperiod = \"1h\"\nstore = \"redis\"\n";
  EXPECT_FALSE(policyTextRefusal(redis_rule, "<PUT /policy>", true));
  const auto refused = policyTextRefusal(redis_rule, "<PUT /policy>", false);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 400);
  const Json doc = body(*refused);
  EXPECT_EQ(doc["error"], "the policy has 1 error; nothing was proposed");
  ASSERT_EQ(doc["errors"].size(), 1u);
  EXPECT_EQ(doc["errors"][0].get<std::string>().rfind("<PUT /policy>:6:", 0), 0u) << doc;

  const auto two = policyTextRefusal("[node]\nid = \"x\"\n[ratelimit]\nlimt = 3\n", "<PUT /policy>", false);
  ASSERT_TRUE(two);
  EXPECT_EQ(body(*two)["error"], "the policy has 2 errors; nothing was proposed");
}

TEST(PolicyAdmin, CommittedHistoryRemoveAndTransferAnswers) {
  EXPECT_EQ(policyCommitted(8, 44).body, R"({"version":8,"index":44})");

  FakePolicyService service;
  service.setHistory({{1, "mx1", 1000, 3, 120}, {2, "mx2", 2000, 9, 130}});
  const AdminReply history = policyHistoryReply(&service);
  EXPECT_EQ(history.status, 200);
  EXPECT_EQ(history.body, R"([{"version":1,"proposer":"mx1","time_unix_ms":1000,"index":3,"text_bytes":120},)"
                          R"({"version":2,"proposer":"mx2","time_unix_ms":2000,"index":9,"text_bytes":130}])");

  AdminReply r = answerOf([&](auto respond) { removeMember(&service, "mx3", respond); });
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"ok":true,"removed":"mx3","index":31})");
  r = answerOf([&](auto respond) { transferLeader(&service, "", respond); });
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"ok":true,"leader":"mx2"})");
  EXPECT_EQ(service.calls(), (std::vector<std::string>{"remove(mx3|10000)", "transfer(|10000)"}));

  service.answerWith(raft::PolicyResult{404, "no Raft member named mx9", std::nullopt, 0});
  r = answerOf([&](auto respond) { removeMember(&service, "mx9", respond); });
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, R"({"error":"no Raft member named mx9"})");
}

TEST(PolicyAdmin, HealthFieldsWithAndWithoutRaft) {
  JsonWriter without;
  without.beginObject();
  writeRaftHealth(without, std::nullopt);
  without.endObject();
  EXPECT_EQ(without.take(), R"({"leader":null,"raft":null})");

  raft::RaftStatus status = FakePolicyService::inCluster();
  status.members[1].match_index = 29;
  JsonWriter with;
  with.beginObject();
  writeRaftHealth(with, status);
  with.endObject();
  const Json doc = Json::parse(with.take());
  EXPECT_EQ(doc["leader"], "mx2");
  EXPECT_EQ(doc["term"], 7);
  EXPECT_EQ(doc["commit_index"], 30);
  EXPECT_EQ(doc["applied_index"], 29);
  EXPECT_EQ(doc["policy_version"], 4);
  EXPECT_EQ(doc["raft"]["in_cluster"], true);
  EXPECT_EQ(doc["raft"]["role"], "follower");
  EXPECT_EQ(doc["raft"]["voters"], 2);
  EXPECT_EQ(doc["raft"]["voters_reachable"], 2);
  EXPECT_EQ(doc["raft"]["members"][1]["match_index"], 29);
  EXPECT_TRUE(doc["raft"]["members"][0]["match_index"].is_null());

  status.leader.reset();
  status.policy_version.reset();
  JsonWriter leaderless;
  leaderless.beginObject();
  writeRaftHealth(leaderless, status);
  leaderless.endObject();
  const Json none = Json::parse(leaderless.take());
  EXPECT_TRUE(none["leader"].is_null());
  EXPECT_TRUE(none["policy_version"].is_null());

  // Raft runs, but the node is in no Raft cluster yet: no term, log or role to show.
  raft::RaftStatus outside;
  outside.raft_id = 0x1234;
  outside.waiting_for = "3 members with bootstrap_expect to start a cluster (1 met)";
  JsonWriter waiting;
  waiting.beginObject();
  writeRaftHealth(waiting, outside);
  waiting.endObject();
  const Json w = Json::parse(waiting.take());
  EXPECT_TRUE(w.contains("term"));
  EXPECT_TRUE(w["term"].is_null());
  EXPECT_TRUE(w["commit_index"].is_null());
  EXPECT_TRUE(w["applied_index"].is_null());
  EXPECT_TRUE(w["raft"]["role"].is_null());
  EXPECT_EQ(w["raft"]["in_cluster"], false);
  EXPECT_EQ(w["raft"]["waiting_for"], outside.waiting_for);

  EXPECT_EQ(raftRoleOf(status, "mx3"), "learner");
  EXPECT_EQ(raftRoleOf(status, "mx9"), std::nullopt);
  EXPECT_EQ(raftRoleOf(std::nullopt, "mx1"), std::nullopt);
}

}  // namespace
}  // namespace zetian::cluster
