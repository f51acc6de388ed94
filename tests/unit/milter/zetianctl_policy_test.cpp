// zetianctl's replicated-policy and cluster commands (policy get, apply, diff,
// history; cluster remove and transfer-leader) and the Raft fields of status and
// members. Shared fixtures: zetianctl_test_support.h.

#include <gtest/gtest.h>

#include "tests/unit/milter/zetianctl_test_support.h"

namespace zetian::cluster {
namespace {

using namespace ctl_test;

// ---- the replicated policy ---------------------------------------------------------

constexpr const char* kPolicyText =
    "[ratelimit]\n"
    "exempt = []\n"
    "[[ratelimit.rule]]\n"
    "name = \"per-ip\"\n"
    "key = \"client_ip\"\n"
    "limit = 5\n"
    "period = \"1h\"\n";

std::string policyDocumentJson(const std::string& text, int version = 3) {
  std::string escaped;
  for (char c : text) {
    if (c == '\n') {
      escaped += "\\n";
    } else if (c == '"') {
      escaped += "\\\"";
    } else {
      escaped.push_back(c);
    }
  }
  return R"({"version":)" + std::to_string(version) + R"(,"proposer":"mx2","time_unix_ms":1764450000123,"text":")" +
         escaped + "\"}";
}

class ZetianctlPolicyTest : public ZetianctlTest {
 protected:
  std::string writeFile(const std::string& name, const std::string& text) {
    const std::string path = dir.file(name);
    std::ofstream(path) << text;
    return path;
  }
};

TEST_F(ZetianctlPolicyTest, PolicyGetPrintsTheTomlAndJsonTheDocument) {
  api.set("policyGet", {200, "application/json", policyDocumentJson(kPolicyText)});
  ProcessResult r = ctl({"policy", "get"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, kPolicyText);
  r = ctl({"policy", "get", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, policyDocumentJson(kPolicyText) + "\n");
}

TEST_F(ZetianctlPolicyTest, PolicyGetWithoutARaftClusterSaysSoAndFails) {
  api.set("policyGet", {503, "application/json", R"({"error":"this node is not in a Raft cluster yet"})"});
  const ProcessResult r = ctl({"policy", "get"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "zetianctl: this node is not in a Raft cluster yet\n");
}

TEST_F(ZetianctlPolicyTest, ApplySendsTheFileAsIsAndSaysWhatWasCommitted) {
  const std::string text = std::string("# comments travel with the text\n") + kPolicyText;
  const std::string path = writeFile("policy.toml", text);
  api.set("policyPut", {200, "application/json", R"({"version":4,"index":17})"});
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "policy version 4 committed (index 17)\n");
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"policyPut(|" + text + ")"}));
}

TEST_F(ZetianctlPolicyTest, ApplyWithABaseVersionSendsIt) {
  const std::string path = writeFile("policy.toml", kPolicyText);
  api.set("policyPut", {200, "application/json", R"({"version":8,"index":40})"});
  const ProcessResult r = ctl({"policy", "apply", path, "--base-version", "7"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"policyPut(7|" + std::string(kPolicyText) + ")"}));
}

TEST_F(ZetianctlPolicyTest, ALargePolicyIsSentWhole) {
  // Past the server's ordinary 4 KiB body bound, and past curl's 1 KiB Expect threshold.
  std::string text = "[ratelimit]\nexempt = [\n";
  for (int i = 0; i < 5000; ++i) text += "  \"10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24\",\n";
  text += "]\n";
  const std::string path = writeFile("large.toml", text);
  api.set("policyPut", {200, "application/json", R"({"version":2,"index":9})"});
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"policyPut(|" + text + ")"}));
}

TEST_F(ZetianctlScripted, APolicyIsPutAsTomlWithoutWaitingFor100Continue) {
  TempDir files;
  const std::string path = files.file("policy.toml");
  std::ofstream(path) << "[ratelimit]\nexempt = [" << std::string(3000, ' ') << "]\n";
  const ProcessResult r = ctl("HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{\"version\":2,\"index\":9}",
                              {"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(requests.size(), 1u);
  const std::string& head = requests[0];
  EXPECT_EQ(head.rfind("PUT /policy HTTP/1.1\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("\r\nContent-Type: application/toml\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nContent-Length: 3024\r\n"), std::string::npos) << head;
  // The server answers no 100 Continue: curl must not ask for one (and wait a second).
  EXPECT_EQ(head.find("Expect"), std::string::npos) << head;
}

TEST_F(ZetianctlPolicyTest, AnInvalidFileIsRefusedWithItsPlacesAndNothingIsSent) {
  const std::string path = writeFile("bad.toml",
                                     "[ratelimit]\n[[ratelimit.rule]]\nname = \"x\"\nkey = \"client_ip\"\nlimt = 5\n"
                                     "period = \"1h\"\n");
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find(path + ":5:1: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("zetianctl: " + path + " has errors; nothing was sent\n"), std::string::npos) << r.err;
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(ZetianctlPolicyTest, ANodesWholeFileIsNotAPolicyAndSaysWhereToGetOne) {
  const std::string path = writeFile("zetian.toml", "[node]\nid = \"mx1\"\n" + std::string(kPolicyText));
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(path + ":1:2: `[node]` is a node-local table"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("`zetianctl policy get > policy.toml` gives one to edit"), std::string::npos) << r.err;
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(ZetianctlPolicyTest, NoQuorumSaysWhatChangesNeed) {
  const std::string path = writeFile("policy.toml", kPolicyText);
  api.set("policyPut", {503, "application/json", R"({"error":"no quorum: 1 of 3 voters reachable"})"});
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err,
            "zetianctl: the policy was not applied:\n"
            "zetianctl: no quorum: 1 of 3 voters reachable\n"
            "zetianctl: changes need a majority of voters; every node keeps enforcing the policy in force "
            "meanwhile\n");
}

TEST_F(ZetianctlPolicyTest, AConflictSaysToLookAgain) {
  const std::string path = writeFile("policy.toml", kPolicyText);
  api.set("policyPut", {409, "application/json", R"({"error":"version 7 proposed, 8 is current"})"});
  const ProcessResult r = ctl({"policy", "apply", path, "--base-version=6"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("another change landed first"), std::string::npos) << r.err;
}

TEST_F(ZetianctlPolicyTest, DiffExitsLikeDiff) {
  api.set("policyGet", {200, "application/json", policyDocumentJson(kPolicyText)});
  // The same policy, spelled otherwise: no difference.
  std::string same = "[ratelimit]\nexempt = [] # none\n[[ratelimit.rule]]\nperiod = \"60m\"\nlimit = 5\n"
                     "key = \"client_ip\"\nname = \"per-ip\"\n";
  ProcessResult r = ctl({"policy", "diff", writeFile("same.toml", same)});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("no change"), std::string::npos) << r.out;

  std::string other = kPolicyText;
  other.replace(other.find("limit = 5"), 9, "limit = 9");
  const std::string path = writeFile("other.toml", other);
  r = ctl({"policy", "diff", path});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.out.rfind("--- the cluster's policy, version 3\n+++ " + path + "\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("limit"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("9"), std::string::npos) << r.out;

  r = ctl({"policy", "diff", writeFile("broken.toml", "[ratelimit\n")});
  EXPECT_EQ(r.exit_code, 2);
  r = ctl({"policy", "diff", dir.file("missing.toml")});
  EXPECT_EQ(r.exit_code, 2);
  api.set("policyGet", {503, "application/json", R"({"error":"no leader"})"});
  r = ctl({"policy", "diff", path});
  EXPECT_EQ(r.exit_code, 2);
}

TEST_F(ZetianctlPolicyTest, DiffTakesTheNodesWholeFileToo) {
  api.set("policyGet", {200, "application/json", policyDocumentJson(kPolicyText)});
  const std::string node_file = "[node]\nid = \"mx1\"\n" + std::string(kPolicyText);
  const ProcessResult r = ctl({"policy", "diff", writeFile("zetian.toml", node_file)});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST_F(ZetianctlPolicyTest, HistoryIsATable) {
  api.set("policyHistory",
          {200, "application/json",
           R"([{"version":1,"proposer":"mx1","time_unix_ms":1764450000123,"index":3,"text_bytes":120},)"
           R"({"version":2,"proposer":"mx2","time_unix_ms":1764450060000,"index":11,"text_bytes":140}])"});
  ProcessResult r = ctl({"policy", "history"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "VERSION  PROPOSER  TIME (UTC)                INDEX  BYTES\n"
            "1        mx1       2025-11-29T21:00:00.123Z  3      120\n"
            "2        mx2       2025-11-29T21:01:00.000Z  11     140\n");
  r = ctl({"policy", "history", "--json"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("[{\"version\":1,", 0), 0u) << r.out;
  api.set("policyHistory", {200, "application/json", "[]"});
  r = ctl({"policy", "history"});
  EXPECT_EQ(r.out, "no policy version applied yet\n");
}

TEST_F(ZetianctlPolicyTest, ClusterRemoveAndTransferLeader) {
  api.set("clusterRemove", {200, "application/json", R"({"ok":true,"removed":"mx3","index":21})"});
  ProcessResult r = ctl({"cluster", "remove", "mx3"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "mx3 removed from the Raft cluster (index 21)\n");
  api.set("clusterTransferLeader", {200, "application/json", R"({"ok":true,"leader":"mx2"})"});
  r = ctl({"cluster", "transfer-leader", "mx2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "leadership transferred: mx2 leads now\n");
  r = ctl({"cluster", "transfer-leader"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"clusterRemove(|mx3)", "clusterTransferLeader(|mx2)",
                                                   "clusterTransferLeader(|)"}));
  api.set("clusterRemove", {404, "application/json", R"({"error":"no Raft member named mx9"})"});
  r = ctl({"cluster", "remove", "mx9"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: the removal was refused:\nzetianctl: no Raft member named mx9\n");
}

TEST_F(ZetianctlPolicyTest, PolicyAndClusterUsageErrorsExitWith2) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"policy"}, {"policy", "set"}, {"policy", "apply"}, {"policy", "apply", "a", "b"}, {"policy", "get", "x"},
           {"policy", "diff"}, {"--json", "policy", "diff", "f"}, {"policy", "get", "--base-version", "3"},
           {"policy", "apply", "f", "--base-version", "0"}, {"policy", "apply", "f", "--base-version", "x"},
           {"cluster"}, {"cluster", "remove"}, {"cluster", "remove", "a", "b"}, {"cluster", "transfer-leader", "a", "b"},
           {"cluster", "join"}}) {
    const ProcessResult r = ctl(args);
    EXPECT_EQ(r.exit_code, 2) << args.size() << " " << r.err;
    EXPECT_NE(r.err.find("Try `zetianctl --help`."), std::string::npos) << r.err;
  }
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(ZetianctlPolicyTest, StatusAndMembersShowTheRaftFields) {
  api.set("health",
          {200, "application/json",
           R"({"node_id":"mx1","status":"ok","version":"0.1.0","uptime_s":4,"maintenance":false,)"
           R"("leader":"mx2","term":7,"commit_index":30,"applied_index":30,"policy_version":4,)"
           R"("raft":{"in_cluster":true,"waiting_for":"","role":"follower"},)"
           R"("members":[{"id":"mx1","address":"a1","region":"","status":"alive","raft_role":"voter"},)"
           R"({"id":"mx2","address":"a2","region":"","status":"alive","raft_role":"voter"},)"
           R"({"id":"mx4","address":"a4","region":"","status":"alive","raft_role":null}]})"});
  ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("members:      3\n"
                       "leader:       mx2\n"
                       "term:         7\n"
                       "raft role:    follower\n"
                       "policy:       version 4\n"),
            std::string::npos)
      << r.out;
  r = ctl({"members"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("LAST SEEN  RAFT\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("-          voter\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mx4  a4       -       alive   -         -      -     -          -\n"), std::string::npos)
      << r.out;
}

TEST_F(ZetianctlPolicyTest, StatusOfANodeWaitingForARaftCluster) {
  api.set("health", {200, "application/json",
                     R"({"node_id":"mx1","status":"ok","leader":null,"term":0,"policy_version":null,)"
                     R"x("raft":{"in_cluster":false,"waiting_for":"3 members running Raft (2 met)"},"members":[]})x"});
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("raft:         not in a Raft cluster yet (waiting for 3 members running Raft (2 met))\n"
                       "policy:       the node's own file (no replicated version yet)\n"),
            std::string::npos)
      << r.out;
}

TEST_F(ZetianctlPolicyTest, AReloadOnAReplicatedNodeSaysThePolicyStays) {
  api.set("reload", {200, "application/json",
                     R"({"ok":true,"policy_version":4,"rules":2,"policy":"replicated",)"
                     R"("message":"the policy is replicated: use `zetianctl policy apply FILE` to change it"})"});
  const ProcessResult r = ctl({"reload"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "node settings reloaded; the replicated policy stays in force: version 4, 2 rules\n"
            "the policy is replicated: use `zetianctl policy apply FILE` to change it\n");
}

}  // namespace
}  // namespace zetian::cluster
