// zetianctl's commands about the node itself (status, health, members, metrics,
// reload, maintenance, log level, limits show and reset), the real binary against a
// real HealthServer with a scripted engine. Shared fixtures: zetianctl_test_support.h.

#include <gtest/gtest.h>

#include "tests/unit/milter/zetianctl_test_support.h"

namespace zetian::cluster {
namespace {

using namespace ctl_test;

// ---- commands ----------------------------------------------------------------------

TEST_F(ZetianctlTest, StatusSummarisesHealth) {
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "node:         mx1\n"
            "status:       ok\n"
            "version:      0.1.0\n"
            "uptime:       1d 2h 3m 4s\n"
            "maintenance:  off\n"
            "members:      2\n");
  EXPECT_EQ(r.err, "");
}

TEST_F(ZetianctlTest, StatusFailsWhenHealthIsNotOk) {
  api.set("health", {503, "application/json",
                     R"({"node_id":"mx1","status":"draining","version":"0.1.0","uptime_s":5,)"
                     R"("maintenance":true,"members":[]})"});
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("status:       draining\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("uptime:       5s\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("maintenance:  on\n"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("503"), std::string::npos) << r.err;
}

// A /health document with `policy_host` set to `host` (JSON text).
std::string healthWithPolicyHost(const std::string& host) {
  return R"({"node_id":"mx1","status":"ok","version":"0.1.0","uptime_s":5,"maintenance":false,"members":[],)"
         R"("policy_host":)" + host + "}";
}

TEST_F(ZetianctlTest, StatusShowsThePolicyHostOffWhenItIsNull) {
  api.set("health", {200, "application/json", healthWithPolicyHost("null")});
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "node:         mx1\n"
            "status:       ok\n"
            "version:      0.1.0\n"
            "uptime:       5s\n"
            "maintenance:  off\n"
            "members:      0\n"
            "policy host:  off\n");
}

TEST_F(ZetianctlTest, StatusSummarisesThePolicyHostsFigures) {
  api.set("health", {200, "application/json",
                     healthWithPolicyHost(R"({"socket":"inet:10031@127.0.0.1","connections":3,"max_connections":1000,)"
                                          R"("sessions":2,"requests_total":1234,"malformed_total":0})")});
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\npolicy host:  inet:10031@127.0.0.1, 3 connections (max 1000), 2 sessions, 1234 requests, "
                       "0 malformed\n"),
            std::string::npos)
      << r.out;
}

TEST_F(ZetianctlTest, StatusPrintsAQuestionMarkForAFigureThePolicyHostLeftOut) {
  api.set("health", {200, "application/json",
                     healthWithPolicyHost(R"({"connections":3,"sessions":"many","requests_total":12,)"
                                          R"("malformed_total":1})")});
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\npolicy host:  ?, 3 connections (max ?), ? sessions, 12 requests, 1 malformed\n"),
            std::string::npos)
      << r.out;
}

TEST_F(ZetianctlTest, StatusEscapesAPolicySocketWithControlCharacters) {
  api.set("health", {200, "application/json",
                     healthWithPolicyHost(R"({"socket":"unix:/run/p\u001b[2J","connections":0,"max_connections":1,)"
                                          R"("sessions":0,"requests_total":0,"malformed_total":0})")});
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("policy host:  unix:/run/p"), std::string::npos) << r.out;
}

TEST_F(ZetianctlTest, StatusWithoutPolicyHostInTheDocumentPrintsNoSuchLine) {
  const ProcessResult r = ctl({"status"});  // kHealth: a node from before the policy host
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("policy host"), std::string::npos) << r.out;
}

TEST_F(ZetianctlTest, StatusJsonShowsThePolicyHostAsSent) {
  const std::string doc = healthWithPolicyHost(R"({"socket":"unix:/run/p.sock","connections":1})");
  api.set("health", {200, "application/json", doc});
  const ProcessResult r = ctl({"--json", "status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, doc + "\n");
}

TEST_F(ZetianctlTest, StatusJsonIsTheDocumentAsSent) {
  const ProcessResult r = ctl({"--json", "status"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, std::string(kHealth) + "\n");
}

TEST_F(ZetianctlTest, HealthPrettyPrintsAndJsonIsRaw) {
  ProcessResult r = ctl({"health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("{\n  \"node_id\": \"mx1\",\n  \"status\": \"ok\",\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("        \"messages_per_s\": 3.25\n"), std::string::npos) << r.out;

  r = ctl({"health", "--json"});  // options may follow the command too
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, std::string(kHealth) + "\n");
}

TEST_F(ZetianctlTest, MaintenanceOnAndOffPostToTheServer) {
  api.set("maintenance(on)", {200, "application/json", R"({"ok":true,"maintenance":true,"changed":true})"});
  ProcessResult r = ctl({"maintenance", "on"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "maintenance on: new SMTP sessions get 421 4.3.2 (loopback exempt)\n");
  api.set("maintenance(off)", {200, "application/json", R"({"ok":true,"maintenance":false,"changed":false})"});
  r = ctl({"maintenance", "off"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "maintenance off: taking mail again (it already was)\n");
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"maintenance(on)", "maintenance(off)"}));
  for (const auto& bad : std::vector<std::vector<std::string>>{{"maintenance"}, {"maintenance", "yes"},
                                                               {"maintenance", "on", "now"}}) {
    EXPECT_EQ(ctl(bad).exit_code, 2);
  }
}

TEST_F(ZetianctlTest, LogLevelShowsAndSets) {
  api.set("logLevel()", {200, "application/json",
                         R"({"ok":true,"level":"info","previous":"info","changed":false,"file_level":"info",)"
                         R"("heartbeats":true,"sync":false})"});
  ProcessResult r = ctl({"log", "level"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "log level: info (file: info; heartbeats on, sync off)\n");
  api.set("logLevel(debug)", {200, "application/json",
                              R"({"ok":true,"level":"debug","previous":"info","changed":true,"file_level":"info",)"
                              R"("heartbeats":true,"sync":false})"});
  r = ctl({"log", "level", "debug"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "log level: debug (file: info; heartbeats on, sync off)\nwas info; a reload sets the file's level again\n");
  api.set("logLevel(warning)", {400, "application/json", R"({"error":"no"})"});
  EXPECT_EQ(ctl({"log", "level", "warning"}).exit_code, 1);
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"logLevel()", "logLevel(debug)", "logLevel(warning)"}));
  // Refused before anything is sent.
  for (const auto& bad : std::vector<std::vector<std::string>>{{"log"}, {"log", "lvl"}, {"log", "level", "loud"},
                                                               {"log", "level", "debug", "now"}}) {
    EXPECT_EQ(ctl(bad).exit_code, 2);
  }
  EXPECT_EQ(api.calls().size(), 3u);
}

TEST_F(ZetianctlTest, MembersIsATable) {
  const ProcessResult r = ctl({"members"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "ID   ADDRESS        REGION  STATUS   SESSIONS  MSG/S  KEYS  LAST SEEN\n"
            "mx1  10.0.0.1:7946  eu      alive    12        3.25   1234  2026-11-27T05:28:29.161Z\n"
            "mx2  10.0.0.2:7946  -       suspect  0         0      -     -\n");
}

TEST_F(ZetianctlTest, MembersJsonIsTheMembersArray) {
  const ProcessResult r = ctl({"--json", "members"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind(R"([{"id":"mx1","address":"10.0.0.1:7946")", 0), 0u) << r.out;
}

TEST_F(ZetianctlTest, MetricsIsTheRawText) {
  const ProcessResult r = ctl({"metrics"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "# TYPE zetian_sessions_total counter\nzetian_sessions_total 7\n");
}

TEST_F(ZetianctlTest, ReloadSaysSo) {
  ProcessResult r = ctl({"reload"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "policy reloaded\n");
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"reload"}));

  api.set("reload", {200, "application/json", R"({"ok":true,"policy_version":4,"rules":3})"});
  r = ctl({"reload"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "policy reloaded: version 4, 3 rules\n");
}

TEST_F(ZetianctlTest, ARefusedReloadPrintsTheServersErrorsAndFails) {
  api.set("reload", {422, "application/json",
                     R"({"ok":false,"errors":["/etc/zetian/zetian.toml:12:3: unknown key `limt`; did you mean `limit`?",)"
                     R"("/etc/zetian/zetian.toml:20:1: bad duration \"5x\""]})"});
  const ProcessResult r = ctl({"reload"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err,
            "zetianctl: reload refused; the running policy stays in force:\n"
            "/etc/zetian/zetian.toml:12:3: unknown key `limt`; did you mean `limit`?\n"
            "/etc/zetian/zetian.toml:20:1: bad duration \"5x\"\n");
}

TEST_F(ZetianctlTest, OkFalseIsARefusalEvenWithStatus200) {
  api.set("reload", {200, "application/json", R"({"ok":false,"errors":["nope"]})"});
  const ProcessResult r = ctl({"reload"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("\nnope\n"), std::string::npos) << r.err;
}

TEST_F(ZetianctlTest, ReloadJsonPrintsTheReplyAndKeepsTheExitCode) {
  api.set("reload", {422, "application/json", R"({"ok":false,"errors":["x"]})"});
  const ProcessResult r = ctl({"--json", "reload"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "{\"ok\":false,\"errors\":[\"x\"]}\n");
}

TEST_F(ZetianctlTest, LimitsShowIsATable) {
  const ProcessResult r = ctl({"limits", "show"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "RULE           KEY                   REMAINING  LIMIT   RETRY_AFTER\n"
            "per-client-ip  192.0.2.1             3          100/1h  -\n"
            "per-sender     user+tag@example.com  0          10/1m   12.5s\n");
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsShow(||limit=1000|after=)"}));
}

TEST_F(ZetianctlTest, LimitsShowSendsItsFiltersIntact) {
  const ProcessResult r =
      ctl({"limits", "show", "--rule", "per-sender", "--key=a b&c=d+e@example.com/%"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsShow(per-sender|a b&c=d+e@example.com/%)"}));
}

TEST_F(ZetianctlTest, LimitsShowJsonIsTheServersEntriesInOneDocument) {
  const ProcessResult r = ctl({"--json", "limits", "show", "--key", "<>"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, R"({"limits":[{"rule":"per-client-ip","key":"192.0.2.1","remaining":3,"retry_after_s":0,)"
                   R"("limit":100,"period":"1h"},{"rule":"per-sender","key":"user+tag@example.com",)"
                   R"("remaining":0,"retry_after_s":12.5,"limit":10,"period":"1m"}],)"
                   R"("truncated":false,"more":false,"next":null})"
                   "\n");
  // A lookup by key is one answer: no paging parameters.
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsShow(|<>)"}));
}

// Three pages as the store can give them: the middle one empty but not the last.
class ZetianctlPagesTest : public ZetianctlTest {
 protected:
  static std::string entry(const char* key, int remaining) {
    return std::string(R"({"rule":"per-ip","key":")") + key + R"(","remaining":)" + std::to_string(remaining) +
           R"(,"retry_after_s":0,"limit":5,"period":"1h"})";
  }
  static AdminReply page(const std::vector<std::string>& entries, const char* next) {
    std::string body = R"({"limits":[)";
    for (std::size_t i = 0; i < entries.size(); ++i) body += (i > 0 ? "," : "") + entries[i];
    const bool more = next != nullptr;
    body += std::string(R"(],"truncated":)") + (more ? "true" : "false") + R"(,"more":)" + (more ? "true" : "false") +
            R"(,"next":)" + (more ? std::string("\"") + next + "\"" : std::string("null")) + "}";
    return {200, "application/json", body};
  }
  void SetUp() override {
    ZetianctlTest::SetUp();
    // Anything not scripted below answers 500, so a request the CLI should not make fails the test.
    api.set("limitsShow", {500, "application/json", R"({"error":"unexpected request"})"});
    api.setCall("limitsShow(||limit=1000|after=)", page({entry("192.0.2.1", 1), entry("192.0.2.2", 2)}, "3-6b31"));
    // Later pages ask for what the default cap of 1000 still leaves.
    api.setCall("limitsShow(||limit=998|after=3-6b31)", page({}, "9"));
    api.setCall("limitsShow(||limit=998|after=9)", page({entry("192.0.2.3", 3)}, nullptr));
  }
};

TEST_F(ZetianctlPagesTest, LimitsShowFollowsNextUntilItIsNull) {
  const ProcessResult r = ctl({"limits", "show"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "RULE    KEY        REMAINING  LIMIT  RETRY_AFTER\n"
            "per-ip  192.0.2.1  1          5/1h   -\n"
            "per-ip  192.0.2.2  2          5/1h   -\n"
            "per-ip  192.0.2.3  3          5/1h   -\n");
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsShow(||limit=1000|after=)",
                                                   "limitsShow(||limit=998|after=3-6b31)",
                                                   "limitsShow(||limit=998|after=9)"}));
}

TEST_F(ZetianctlPagesTest, LimitsShowJsonMergesEveryPage) {
  const ProcessResult r = ctl({"--json", "limits", "show"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, R"({"limits":[)" + entry("192.0.2.1", 1) + "," + entry("192.0.2.2", 2) + "," +
                       entry("192.0.2.3", 3) + R"(],"truncated":false,"more":false,"next":null})" + "\n");
  EXPECT_EQ(api.calls().size(), 3u);
}

TEST_F(ZetianctlPagesTest, LimitsShowStopsAtTheLimitAndSaysWhereItStopped) {
  // Each page asks for no more than is still wanted.
  api.setCall("limitsShow(||limit=2|after=)", page({entry("192.0.2.1", 1), entry("192.0.2.2", 2)}, "3-6b31"));
  ProcessResult r = ctl({"limits", "show", "--limit", "2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "RULE    KEY        REMAINING  LIMIT  RETRY_AFTER\n"
            "per-ip  192.0.2.1  1          5/1h   -\n"
            "per-ip  192.0.2.2  2          5/1h   -\n"
            "(stopped at 2 counters, the --limit; there may be more: raise --limit or narrow with --rule "
            "and --key)\n");
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsShow(||limit=2|after=)"}));

  // --json says so too, with the cursor to go on from.
  api.clearCalls();
  r = ctl({"--json", "limits", "show", "--limit=2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, R"({"limits":[)" + entry("192.0.2.1", 1) + "," + entry("192.0.2.2", 2) +
                       R"(],"truncated":true,"more":true,"next":"3-6b31"})" + "\n");

  // Three wanted: the later pages ask for the one still missing.
  api.clearCalls();
  api.setCall("limitsShow(||limit=3|after=)", page({entry("192.0.2.1", 1), entry("192.0.2.2", 2)}, "3-6b31"));
  api.setCall("limitsShow(||limit=1|after=3-6b31)", page({}, "9"));
  api.setCall("limitsShow(||limit=1|after=9)", page({entry("192.0.2.3", 3)}, nullptr));
  r = ctl({"limits", "show", "--limit", "3"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find("stopped"), std::string::npos) << r.out;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsShow(||limit=3|after=)",
                                                   "limitsShow(||limit=1|after=3-6b31)",
                                                   "limitsShow(||limit=1|after=9)"}));
}

TEST_F(ZetianctlPagesTest, ByDefaultAThousandCountersAreShown) {
  std::vector<std::string> thousand;
  for (int i = 0; i < 1000; ++i) thousand.push_back(entry(("k" + std::to_string(i)).c_str(), 1));
  api.setCall("limitsShow(||limit=1000|after=)", page(thousand, "77"));
  const ProcessResult r = ctl({"limits", "show"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1 + 1000 + 1) << r.out.substr(0, 200);
  EXPECT_NE(r.out.find("\n(stopped at 1000 counters, the --limit by default; there may be more"), std::string::npos);
  EXPECT_EQ(api.calls().size(), 1u);
}

TEST_F(ZetianctlPagesTest, APageLargerThanAskedIsCutAndNoCursorIsGiven) {
  api.setCall("limitsShow(||limit=1|after=)", page({entry("192.0.2.1", 1), entry("192.0.2.2", 2)}, "3-6b31"));
  const ProcessResult r = ctl({"--json", "limits", "show", "--limit", "1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, R"({"limits":[)" + entry("192.0.2.1", 1) + R"(],"truncated":true,"more":true,"next":null})" + "\n");
}

TEST_F(ZetianctlPagesTest, ACursorThatDoesNotMoveIsRefused) {
  api.setCall("limitsShow(||limit=998|after=3-6b31)", page({entry("192.0.2.9", 1)}, "3-6b31"));
  const ProcessResult r = ctl({"limits", "show"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("sent back the same `next`"), std::string::npos) << r.err;
  EXPECT_EQ(api.calls().size(), 2u);
}

TEST_F(ZetianctlPagesTest, ALaterPageThatFailsPrintsNoPartOfTheListing) {
  api.setCall("limitsShow(||limit=998|after=9)", {400, "application/json", R"({"error":"after must be the `next` of a previous /limits page"})"});
  for (const bool json : {false, true}) {
    std::vector<std::string> args = {"limits", "show"};
    if (json) args.insert(args.begin(), "--json");
    const ProcessResult r = ctl(args);
    EXPECT_EQ(r.exit_code, 1) << json;
    EXPECT_EQ(r.out, "") << json;
    EXPECT_EQ(r.err, "zetianctl: after must be the `next` of a previous /limits page\n") << json;
  }
}

TEST_F(ZetianctlPagesTest, AFailedFirstPageIsShownAsSentWithJson) {
  api.setCall("limitsShow(nope||limit=1000|after=)", {404, "application/json", R"({"error":"no rule named 'nope'"})"});
  ProcessResult r = ctl({"--json", "limits", "show", "--rule", "nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "{\"error\":\"no rule named 'nope'\"}\n");
  r = ctl({"limits", "show", "--rule", "nope"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: no rule named 'nope'\n");
}

TEST_F(ZetianctlTest, LimitsShowSaysWhenNothingIsHeld) {
  api.set("limitsShow", {200, "application/json", R"({"limits":[]})"});
  ProcessResult r = ctl({"limits", "show"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "no counters held\n");
  r = ctl({"limits", "show", "--rule", "x"});
  EXPECT_EQ(r.out, "no counters match\n");
}

TEST_F(ZetianctlTest, HostileKeysCannotDriveTheTerminal) {
  api.set("limitsShow", {200, "application/json",
                         R"({"limits":[{"rule":"per-helo","key":"\u001b[2J\u001b]0;pwned\u0007\u009b",)"
                         R"("remaining":1,"retry_after_s":0,"limit":5,"period":"1h"}]})"});
  const ProcessResult r = ctl({"limits", "show"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
  EXPECT_EQ(r.out.find('\x07'), std::string::npos);
  EXPECT_EQ(r.out.find("\xc2\x9b"), std::string::npos);
  EXPECT_NE(r.out.find("\\x1b[2J\\x1b]0;pwned\\x07\\x9b"), std::string::npos) << r.out;
}

TEST_F(ZetianctlTest, LimitsResetSendsRuleAndKey) {
  ProcessResult r = ctl({"limits", "reset", "per-sender", "user+tag@example.com"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "counter reset: rule per-sender, key user+tag@example.com\n");
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsReset(per-sender|user+tag@example.com)"}));

  api.set("limitsReset", {200, "application/json", R"({"ok":true,"reset":12})"});
  r = ctl({"limits", "reset", "per-sender", "*"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "counter reset: rule per-sender, key * (12 counters cleared)\n");
}

TEST_F(ZetianctlTest, LimitsShowNotesATruncatedList) {
  api.set("limitsShow", {200, "application/json",
                         R"({"limits":[{"rule":"r","key":"k","remaining":1,"retry_after_s":0,)"
                         R"("limit":5,"period":"1h"}],"truncated":true})"});
  const ProcessResult r = ctl({"limits", "show"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(only the first 1 counters are listed; narrow with --rule and --key)\n"),
            std::string::npos)
      << r.out;
}

TEST_F(ZetianctlTest, ARefusedResetFails) {
  api.set("limitsReset", {404, "application/json", R"({"ok":false,"errors":["no rule named `x`"]})"});
  const ProcessResult r = ctl({"limits", "reset", "x", "k"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: reset refused:\nno rule named `x`\n");
}

TEST_F(ZetianctlTest, AServerErrorIsReported) {
  api.set("health", {500, "text/plain", "oops\nmore"});
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: GET /health: the server answered 500 Internal Server Error: oops\n");
}

TEST_F(ZetianctlTest, AJsonErrorFromTheServerIsShown) {
  api.throwOn("metrics");
  const ProcessResult r = ctl({"metrics"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: internal error: engine exploded\n");
}

TEST_F(ZetianctlTest, AReplyThatIsNotJsonIsReported) {
  api.set("health", {200, "application/json", "{\"node_id\": "});
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("the reply to GET /health is not valid JSON (at byte"), std::string::npos)
      << r.err;
}

TEST_F(ZetianctlTest, MissingFieldsShowAsDashes) {
  api.set("health", {200, "application/json", R"({"status":"ok","members":[{"id":"mx9"}]})"});
  ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("node:         -\n"), std::string::npos) << r.out;
  r = ctl({"members"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out,
            "ID   ADDRESS  REGION  STATUS  SESSIONS  MSG/S  KEYS  LAST SEEN\n"
            "mx9  -        -       -       -         -      -     -\n");
}

}  // namespace
}  // namespace zetian::cluster
