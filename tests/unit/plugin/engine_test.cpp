// The engine's decisions, through real config files, the real store and real
// policy snapshots; no MTA (the integration tests bring Postfix).
#include "plugin/engine.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "tests/unit/cluster/test_support.h"

namespace zetian::plugin {
namespace {

using namespace std::chrono_literals;

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/zetian-engine-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    path_ = dir_ + "/zetian.toml";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  void writeConfig(const std::string& body) {
    std::ofstream out(path_);
    out << "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n" << body;
  }

  std::unique_ptr<Engine> open(const std::string& body) {
    writeConfig(body);
    Errors errors;
    auto engine = Engine::open(path_, {}, &errors);
    EXPECT_TRUE(engine) << (errors.empty() ? "" : errors.front());
    return engine;
  }

  static int check(Engine& e, Session& s, conf::Stage stage, const char* arg, zetian_verdict* v = nullptr) {
    zetian_verdict local;
    return e.check(s, stage, arg, v ? v : &local);
  }

  // One message: MAIL FROM then each RCPT; returns the MAIL verdict's action.
  static int sendMessage(Engine& e, Session& s, const char* from, zetian_verdict* v = nullptr) {
    e.resetMessage(s);
    return check(e, s, conf::Stage::Mail, from, v);
  }

  std::string dir_;
  std::string path_;
};

constexpr const char* kPerIpFive = R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "per-ip"
key = "client_ip"
stage = "mail"
limit = 5
period = "1h"
)";

TEST_F(EngineTest, LogLevelSetAtRunTimeLastsUntilAReloadWhichKeepsTheEnvironment) {
  {
    std::ofstream out(path_);
    out << "[log]\nlevel = \"error\"\ntarget = \"stderr\"\nheartbeats = true\n" << kPerIpFive;
  }
  Errors errors;
  // As zetian-milter passes them: the environment, then --set.
  auto e = Engine::open(path_, {{"ZETIAN_LOG_LEVEL", "warn"}, {"ZETIAN_LOG_SYNC", "true"}}, &errors);
  ASSERT_TRUE(e) << (errors.empty() ? "" : errors.front());
  EXPECT_EQ(e->logger().level(), conf::LogLevel::Warn);

  auto r = e->logLevel("");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find(R"("level":"warn")"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(R"("heartbeats":true,"sync":true)"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find(R"("changed":false)"), std::string::npos) << r.body;

  r = e->logLevel("debug");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find(R"("level":"debug","previous":"warn","changed":true,"file_level":"warn")"), std::string::npos)
      << r.body;
  EXPECT_EQ(e->logger().level(), conf::LogLevel::Debug);
  EXPECT_TRUE(e->logger().traceWanted(true));
  EXPECT_NE(e->health().body.find(R"("log_level":"debug")"), std::string::npos);

  r = e->logLevel("loud");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(e->logger().level(), conf::LogLevel::Debug);
  EXPECT_EQ(e->logLevel("warning").status, 200);
  EXPECT_EQ(e->logger().level(), conf::LogLevel::Warn);
  EXPECT_FALSE(e->logger().traceWanted(true));  // trace lines need debug
  EXPECT_EQ(e->logLevel("info").status, 200);

  // A reload reads the file (error) and the same environment again (warn).
  ASSERT_TRUE(e->reload(&errors)) << (errors.empty() ? "" : errors.front());
  EXPECT_EQ(e->logger().level(), conf::LogLevel::Warn);
  EXPECT_TRUE(e->logger().traceSwitch(false));
}

TEST_F(EngineTest, FiveMessagesPassAndTheSixthTempfailsWith451) {
  auto e = open(kPerIpFive);
  auto s = e->openSession("192.0.2.1", "client.example");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE) << i;
  zetian_verdict v;
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>", &v), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.rcode, "451");
  EXPECT_STREQ(v.xcode, "4.7.1");
  EXPECT_STREQ(v.rule, "per-ip");
  EXPECT_NE(std::string(v.text).find("per-ip"), std::string::npos) << v.text;
  // Another client has its own bucket.
  auto other = e->openSession("192.0.2.2", nullptr);
  EXPECT_EQ(sendMessage(*e, *other, "<a@example.org>"), ZETIAN_CONTINUE);
}

TEST_F(EngineTest, MaintenanceAnswers421AtConnectExceptToLoopbackAndAsksForTheConnectReply) {
  auto e = open(kPerIpFive);
  EXPECT_FALSE(e->needs() & ZETIAN_NEED_CONNECT_REPLY);
  auto before = e->openSession("192.0.2.1", nullptr);
  EXPECT_EQ(check(*e, *before, conf::Stage::Connect, nullptr), ZETIAN_CONTINUE);

  const auto on = e->maintenance(true);
  EXPECT_EQ(on.status, 200);
  EXPECT_NE(on.body.find(R"("maintenance":true)"), std::string::npos) << on.body;
  EXPECT_TRUE(e->inMaintenance());
  EXPECT_TRUE(e->needs() & ZETIAN_NEED_CONNECT_REPLY);
  auto remote = e->openSession("192.0.2.1", nullptr);
  zetian_verdict v;
  EXPECT_EQ(check(*e, *remote, conf::Stage::Connect, nullptr, &v), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.rcode, "421");
  EXPECT_STREQ(v.xcode, "4.3.2");
  auto remote6 = e->openSession("2001:db8::1", nullptr);
  EXPECT_EQ(check(*e, *remote6, conf::Stage::Connect, nullptr), ZETIAN_TEMPFAIL);
  for (const char* local : {"127.0.0.1", "127.1.2.3", "::1"}) {
    auto s = e->openSession(local, "localhost");
    EXPECT_EQ(check(*e, *s, conf::Stage::Connect, nullptr), ZETIAN_CONTINUE) << local;
  }
  // A session already past connect is left to finish its mail.
  EXPECT_EQ(sendMessage(*e, *before, "<a@example.org>"), ZETIAN_CONTINUE);
  EXPECT_NE(e->metrics().body.find("zetian_maintenance 1"), std::string::npos);

  e->maintenance(false);
  EXPECT_FALSE(e->needs() & ZETIAN_NEED_CONNECT_REPLY);
  auto after = e->openSession("192.0.2.1", nullptr);
  EXPECT_EQ(check(*e, *after, conf::Stage::Connect, nullptr), ZETIAN_CONTINUE);
}

TEST_F(EngineTest, TheLimitIsSharedByAllSessionsOfOneClient) {
  auto e = open(kPerIpFive);
  for (int i = 0; i < 5; ++i) {
    auto s = e->openSession("192.0.2.1", nullptr);
    EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
    e->closeSession(std::move(s));
  }
  auto s = e->openSession("192.0.2.1", nullptr);
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_TEMPFAIL);
}

TEST_F(EngineTest, ExemptAddressesAreNeverLimited) {
  auto e = open(R"(
[ratelimit]
exempt = ["192.0.2.0/24", "2001:db8::/32"]
[[ratelimit.rule]]
name = "per-ip"
key = "client_ip"
limit = 1
period = "1h"
)");
  auto s = e->openSession("192.0.2.9", nullptr);
  auto s6 = e->openSession("2001:db8::9", nullptr);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
    EXPECT_EQ(sendMessage(*e, *s6, "<a@example.org>"), ZETIAN_CONTINUE);
  }
  auto outside = e->openSession("198.51.100.1", nullptr);
  EXPECT_EQ(sendMessage(*e, *outside, "<a@example.org>"), ZETIAN_CONTINUE);
  EXPECT_EQ(sendMessage(*e, *outside, "<a@example.org>"), ZETIAN_TEMPFAIL);
}

TEST_F(EngineTest, RejectActionAnswers550) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "hard"
key = "sender"
limit = 1
period = "1d"
action = "reject"
)");
  auto s = e->openSession("192.0.2.1", nullptr);
  EXPECT_EQ(sendMessage(*e, *s, "<spam@example.org>"), ZETIAN_CONTINUE);
  zetian_verdict v;
  EXPECT_EQ(sendMessage(*e, *s, "<SPAM@EXAMPLE.ORG>", &v), ZETIAN_CONTINUE)
      << "the local part is case-sensitive: SPAM is another sender";
  EXPECT_EQ(sendMessage(*e, *s, "<spam@Example.Org>", &v), ZETIAN_REJECT);
  EXPECT_STREQ(v.rcode, "550");
  EXPECT_STREQ(v.xcode, "5.7.1");
}

TEST_F(EngineTest, ADeniedMessageChargesNoRuleAndTheFirstDenialDecides) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "per-ip"
key = "client_ip"
limit = 10
period = "1h"
[[ratelimit.rule]]
name = "per-sender"
key = "sender"
limit = 1
period = "1h"
[[ratelimit.rule]]
name = "global"
key = "global"
limit = 2
period = "1h"
action = "reject"
)");
  auto s = e->openSession("192.0.2.1", nullptr);
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
  zetian_verdict v;
  // per-sender denies first (global would still pass): per-ip must be refunded.
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>", &v), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.rule, "per-sender");
  auto snap = e->policy();
  const auto* per_ip = snap->find("per-ip");
  auto peek = e->store().peek(per_ip->key_prefix + "192.0.2.1", per_ip->rule.algorithm, per_ip->limit, Engine::now(), 1);
  ASSERT_TRUE(peek);
  EXPECT_NEAR(peek->remaining, 8.0, 0.01) << "one message charged, then one charged back after the denial";
  // A new sender passes per-sender; global (2) is then exhausted by the 2nd message overall.
  EXPECT_EQ(sendMessage(*e, *s, "<b@example.org>"), ZETIAN_CONTINUE);
  EXPECT_EQ(sendMessage(*e, *s, "<c@example.org>", &v), ZETIAN_REJECT);
  EXPECT_STREQ(v.rule, "global");
}

TEST_F(EngineTest, RecipientRulesCountEachRecipient) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "rcpts"
key = "global"
stage = "rcpt"
limit = 3
period = "1h"
)");
  auto s = e->openSession("192.0.2.1", nullptr);
  sendMessage(*e, *s, "<a@example.org>");
  int accepted = 0, refused = 0;
  for (int i = 0; i < 5; ++i) {
    std::string rcpt = "<r" + std::to_string(i) + "@example.net>";
    (check(*e, *s, conf::Stage::Rcpt, rcpt.c_str()) == ZETIAN_CONTINUE ? accepted : refused)++;
  }
  EXPECT_EQ(accepted, 3);
  EXPECT_EQ(refused, 2);
  EXPECT_NE(e->needs() & ZETIAN_NEED_RCPT_REPLY, 0u);
}

TEST_F(EngineTest, TagMarksTheMessageWithAHeaderAndLetsItThrough) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "soft"
key = "client_ip"
limit = 1
period = "10m"
action = "tag"
)");
  EXPECT_NE(e->needs() & ZETIAN_NEED_ADD_HEADER, 0u);
  auto s = e->openSession("192.0.2.1", nullptr);
  std::vector<std::pair<std::string, std::string>> headers;
  auto collect = [](void* ctx, const char* name, const char* value) {
    static_cast<decltype(headers)*>(ctx)->emplace_back(name, value);
  };
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
  e->eom(*s, collect, nullptr, &headers);
  EXPECT_TRUE(headers.empty());
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
  e->eom(*s, collect, nullptr, &headers);
  ASSERT_EQ(headers.size(), 1u);
  EXPECT_EQ(headers[0].first, "X-Zetian-RateLimit");
  EXPECT_EQ(headers[0].second, "rule=soft; limit=1/10m");
}

TEST_F(EngineTest, QuarantineAsksOnceAtEndOfMessage) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "q"
key = "client_ip"
limit = 1
period = "1h"
action = "quarantine"
)");
  auto s = e->openSession("192.0.2.1", nullptr);
  int quarantined = 0;
  auto q = [](void* ctx, const char*) { ++*static_cast<int*>(ctx); };
  sendMessage(*e, *s, "<a@example.org>");
  e->eom(*s, nullptr, q, &quarantined);
  EXPECT_EQ(quarantined, 0);
  sendMessage(*e, *s, "<a@example.org>");
  e->eom(*s, nullptr, q, &quarantined);
  EXPECT_EQ(quarantined, 1);
}

TEST_F(EngineTest, DryRunNeverDenies) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "try"
key = "client_ip"
limit = 1
period = "1h"
action = "dry_run"
)");
  auto s = e->openSession("192.0.2.1", nullptr);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
  auto counters = e->counters().ruleCounters("try");
  EXPECT_EQ(counters->decisions[std::size_t(Verdict::DryRun)].load(), 4u);
  EXPECT_EQ(counters->decisions[std::size_t(Verdict::Allow)].load(), 1u);
}

TEST_F(EngineTest, AuthenticatedSessionsSkipRulesOnlyWhenConfigured) {
  const char* body = R"(
[ratelimit]
exempt = []
exempt_authenticated = %s
[[ratelimit.rule]]
name = "per-ip"
key = "client_ip"
limit = 1
period = "1h"
)";
  for (bool exempt : {true, false}) {
    char text[512];
    std::snprintf(text, sizeof text, body, exempt ? "true" : "false");
    auto e = open(text);
    auto s = e->openSession("192.0.2.1", nullptr);
    s->facts.sasl_user = "alice";
    sendMessage(*e, *s, "<a@example.org>");
    EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), exempt ? ZETIAN_CONTINUE : ZETIAN_TEMPFAIL);
  }
}

TEST_F(EngineTest, NullSenderRulesSeeOnlyBounces) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "bounces"
key = "client_ip"
limit = 1
period = "1h"
senders = "null"
)");
  auto s = e->openSession("192.0.2.1", nullptr);
  EXPECT_EQ(sendMessage(*e, *s, "<>"), ZETIAN_CONTINUE);
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
  EXPECT_EQ(sendMessage(*e, *s, "<>"), ZETIAN_TEMPFAIL);
}

TEST_F(EngineTest, CustomReplyExpandsPlaceholdersAndKeepsPercent) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "per-ip"
key = "client_ip"
limit = 2
period = "1h"
reply = "452 4.7.1 %{rule}: %{key} sent %{limit} per %{period}; 100% full, retry in %{retry_after}s"
)");
  auto s = e->openSession("192.0.2.1", nullptr);
  sendMessage(*e, *s, "<a@example.org>");
  sendMessage(*e, *s, "<a@example.org>");
  zetian_verdict v;
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>", &v), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.rcode, "452");
  EXPECT_STREQ(v.xcode, "4.7.1");
  EXPECT_EQ(std::string(v.text), "per-ip: 192.0.2.1 sent 2 per 1h; 100% full, retry in 1800s");
}

TEST_F(EngineTest, HeloRulesChargeOncePerSessionNotPerEhlo) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "sessions"
key = "client_ip"
stage = "helo"
limit = 2
period = "1h"
)");
  auto s = e->openSession("192.0.2.1", nullptr);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(check(*e, *s, conf::Stage::Helo, "Client.Example"), ZETIAN_CONTINUE);
  auto s2 = e->openSession("192.0.2.1", nullptr);
  EXPECT_EQ(check(*e, *s2, conf::Stage::Helo, "client.example"), ZETIAN_CONTINUE);
  auto s3 = e->openSession("192.0.2.1", nullptr);
  EXPECT_EQ(check(*e, *s3, conf::Stage::Helo, "client.example"), ZETIAN_TEMPFAIL);
}

// A small store (1024 hash slots): one page can cover the whole table.
constexpr const char* kPerIpAndSender = R"(
[ratelimit]
exempt = []
max_keys = 1000
[[ratelimit.rule]]
name = "per-ip"
key = "client_ip"
stage = "mail"
limit = 5
period = "1h"
[[ratelimit.rule]]
name = "per-sender"
key = "sender"
stage = "mail"
limit = 5
period = "1h"
)";

TEST_F(EngineTest, LimitsShowWithAKeyLooksItUpUnderEachRule) {
  auto e = open(kPerIpAndSender);
  for (int i = 0; i < 3; ++i) {
    auto s = e->openSession(("192.0.2." + std::to_string(i)).c_str(), nullptr);
    for (int m = 0; m <= i; ++m) sendMessage(*e, *s, "<a@example.org>");
  }
  cluster::LimitsQuery q;
  q.key = "192.0.2.2";
  cluster::AdminReply r = e->limitsShow(q);
  ASSERT_EQ(r.status, 200) << r.body;
  nlohmann::json doc = nlohmann::json::parse(r.body);
  ASSERT_EQ(doc["limits"].size(), 1u) << r.body;
  EXPECT_EQ(doc["limits"][0]["rule"], "per-ip");
  EXPECT_EQ(doc["limits"][0]["key"], "192.0.2.2");
  // Its third message was refused by per-sender (a@example.org's sixth), which
  // charges no rule: two charges here.
  EXPECT_EQ(doc["limits"][0]["remaining"], 3);
  EXPECT_EQ(doc["truncated"], false);
  EXPECT_EQ(doc["more"], false);
  EXPECT_TRUE(doc["next"].is_null());

  q.key = "a@example.org";  // the sender key, held under per-sender only
  doc = nlohmann::json::parse(e->limitsShow(q).body);
  ASSERT_EQ(doc["limits"].size(), 1u);
  EXPECT_EQ(doc["limits"][0]["rule"], "per-sender");
  EXPECT_EQ(doc["limits"][0]["remaining"], 0);  // six messages against a limit of five

  q.rule = "per-ip";
  doc = nlohmann::json::parse(e->limitsShow(q).body);
  EXPECT_TRUE(doc["limits"].empty()) << "the rule filter applies to a key lookup";
  q.key = "198.51.100.7";
  doc = nlohmann::json::parse(e->limitsShow(q).body);
  EXPECT_TRUE(doc["limits"].empty());
  q.rule = "no-such-rule";
  EXPECT_EQ(e->limitsShow(q).status, 404);
}

TEST_F(EngineTest, LimitsShowListsAPageAtATimeAndTheNextTokenWalksThemAll) {
  auto e = open(kPerIpAndSender);
  for (int i = 0; i < 25; ++i) {
    auto s = e->openSession(("192.0.2." + std::to_string(i)).c_str(), nullptr);
    sendMessage(*e, *s, ("<u" + std::to_string(i) + "@example.org>").c_str());
  }
  for (const std::string rule : {"", "per-ip"}) {
    std::multiset<std::string> seen;
    cluster::LimitsQuery q;
    q.rule = rule;
    q.limit = 4;
    int pages = 0;
    while (true) {
      const cluster::AdminReply r = e->limitsShow(q);
      ASSERT_EQ(r.status, 200) << r.body;
      const nlohmann::json doc = nlohmann::json::parse(r.body);
      EXPECT_LE(doc["limits"].size(), 4u);
      for (const auto& l : doc["limits"]) seen.insert(l["rule"].get<std::string>() + " " + l["key"].get<std::string>());
      EXPECT_EQ(doc["more"], !doc["next"].is_null());
      EXPECT_EQ(doc["truncated"], doc["more"]);
      ++pages;
      if (doc["next"].is_null()) break;
      q.after = doc["next"].get<std::string>();
      ASSERT_LT(pages, 1000);
    }
    const std::set<std::string> unique(seen.begin(), seen.end());
    EXPECT_EQ(unique.size(), seen.size()) << "a bucket was listed twice";
    EXPECT_EQ(seen.size(), rule.empty() ? 50u : 25u) << rule;
    EXPECT_GE(pages, rule.empty() ? 13 : 7);
    EXPECT_TRUE(seen.contains("per-ip 192.0.2.17"));
    EXPECT_EQ(seen.contains("per-sender u17@example.org"), rule.empty());
  }
  // The default page is 100: everything here.
  const nlohmann::json doc = nlohmann::json::parse(e->limitsShow(cluster::LimitsQuery{}).body);
  EXPECT_EQ(doc["limits"].size(), 50u);
  EXPECT_TRUE(doc["next"].is_null());
}

TEST_F(EngineTest, LimitsShowRefusesAForgedPageToken) {
  auto e = open(kPerIpFive);
  cluster::LimitsQuery q;
  for (const char* bad : {"x", "12-zz", "-", "1-2"}) {
    q.after = bad;
    const cluster::AdminReply r = e->limitsShow(q);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_NE(r.body.find("after"), std::string::npos) << r.body;
  }
}

TEST_F(EngineTest, ReloadSwapsThePolicyAndARefusedFileKeepsTheOldOne) {
  auto e = open(kPerIpFive);
  auto s = e->openSession("192.0.2.1", nullptr);
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
  writeConfig(std::string(kPerIpFive) + "bogus_key = 1\n");
  Errors errors;
  EXPECT_FALSE(e->reload(&errors));
  ASSERT_FALSE(errors.empty());
  EXPECT_NE(errors.front().find(path_), std::string::npos) << errors.front();
  EXPECT_EQ(e->policy()->rules.at(0).rule.limit, 5u);

  std::string lower = kPerIpFive;
  lower.replace(lower.find("limit = 5"), 9, "limit = 2");
  writeConfig(lower);
  errors.clear();
  EXPECT_TRUE(e->reload(&errors)) << (errors.empty() ? "" : errors.front());
  // Same rule, same algorithm and period: the message already sent still counts.
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_CONTINUE);
  EXPECT_EQ(sendMessage(*e, *s, "<a@example.org>"), ZETIAN_TEMPFAIL);
}

TEST_F(EngineTest, NeedsAskOnlyForWhatRulesUse) {
  auto e = open(kPerIpFive);
  unsigned needs = e->needs();
  EXPECT_NE(needs & ZETIAN_NEED_MAIL_REPLY, 0u);
  EXPECT_EQ(needs & (ZETIAN_NEED_HELO | ZETIAN_NEED_RCPT | ZETIAN_NEED_DATA | ZETIAN_NEED_ADD_HEADER |
                     ZETIAN_NEED_CONNECT_REPLY | ZETIAN_NEED_SASL),
            0u);
}

TEST_F(EngineTest, ConcurrentSessionsNeverAdmitMoreThanTheLimitWhileReloadsRunBeside) {
  auto e = open(R"(
[ratelimit]
exempt = []
[[ratelimit.rule]]
name = "per-ip"
key = "client_ip"
limit = 50
period = "1h"
)");
  std::atomic<int> allowed{0};
  std::atomic<bool> done{false};
  std::thread reloader([&] {
    do {
      Errors errors;
      EXPECT_TRUE(e->reload(&errors)) << (errors.empty() ? "" : errors.front());
    } while (!done.load());
  });
  std::vector<std::thread> senders;
  for (int t = 0; t < 8; ++t) {
    senders.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        auto s = e->openSession("192.0.2.1", nullptr);
        zetian_verdict v;
        e->resetMessage(*s);
        if (e->check(*s, conf::Stage::Mail, "<a@example.org>", &v) == ZETIAN_CONTINUE) ++allowed;
        e->closeSession(std::move(s));
      }
    });
  }
  for (auto& t : senders) t.join();
  done.store(true);
  reloader.join();
  // Reloading the same rule keeps its bucket: exactly the limit got through.
  EXPECT_EQ(allowed.load(), 50);
  EXPECT_GT(e->policy()->version, 1u);
}

// The health server's own counters reach /metrics: a connection over the cap of 64 per
// listener is refused, and /metrics, asked on one of the 64 held, counts it; the other
// counters are there from the start at 0, so a rate() over them never starts late.
TEST_F(EngineTest, MetricsCountHealthConnectionsRefusedOverTheCap) {
  const std::string socket = dir_ + "/health.sock";
  auto e = open("[health]\nsocket = \"" + socket + "\"\n" + std::string(kPerIpFive));
  ASSERT_TRUE(e);
  Errors errors;
  ASSERT_TRUE(e->start(&errors)) << errors.front();

  std::vector<int> held;
  for (int i = 0; i < 64; ++i) {
    held.push_back(cluster::testing::connectUnix(socket));
    ASSERT_GE(held.back(), 0) << i;
  }
  // The server takes the backlog in order: by the time it sees this one, the 64 are its.
  const int over = cluster::testing::connectUnix(socket);
  ASSERT_GE(over, 0);
  bool closed = false;
  const std::string unanswered = cluster::testing::readUntilClose(over, 10s, &closed);
  close(over);
  EXPECT_TRUE(closed) << "the 65th connection was not closed";
  EXPECT_EQ(unanswered, "");

  const auto reply = cluster::testing::roundTrip(held.front(), cluster::testing::simpleRequest("GET", "/metrics"));
  for (std::size_t i = 1; i < held.size(); ++i) close(held[i]);
  ASSERT_EQ(reply.status, 200) << reply.head;
  EXPECT_NE(reply.body.find("\n# TYPE zetian_health_connections_refused_total counter\n"
                            "zetian_health_connections_refused_total 1\n"),
            std::string::npos)
      << reply.body;
  for (const char* zero : {"zetian_health_accept_errors_total", "zetian_health_connections_shed_total",
                           "zetian_health_requests_timed_out_total", "zetian_health_connections_overflowed_total"}) {
    EXPECT_NE(reply.body.find(std::string("\n# TYPE ") + zero + " counter\n" + zero + " 0\n"), std::string::npos)
        << zero;
  }
}

// Without a health server (an engine not started) there is nothing to count: the
// health counters are absent, not zero.
TEST_F(EngineTest, MetricsShowNoHealthCountersWithoutAHealthServer) {
  auto e = open(kPerIpFive);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->metrics().body.find("zetian_health_"), std::string::npos);
}

}  // namespace
}  // namespace zetian::plugin
