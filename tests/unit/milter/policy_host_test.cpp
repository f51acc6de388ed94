// policy::Host against a real engine (libzetian, node-scope rules, so every check is
// decided inline): how Postfix's requests become engine sessions, stages and answers.
#include "milter/policy_host.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "plugin/zetian.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::milter::policy {
namespace {

using namespace std::chrono_literals;
using Clock = Host::Clock;

class PolicyHostTest : public ::testing::Test {
 protected:
  // `rules`: [[ratelimit.rule]] tables; `ratelimit`: lines for [ratelimit] itself.
  void open(const std::string& rules, const std::string& ratelimit = "", HostOptions options = {}) {
    std::ofstream(path_) << "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n"
                         << "[health]\nsocket = \"" << dir_ << "/health.sock\"\n"
                         << "[ratelimit]\nexempt = []\n"
                         << ratelimit << "\n"
                         << rules;
    engine_ = zetian_engine_open(path_.c_str(), nullptr, 0, nullptr, nullptr);
    ASSERT_NE(engine_, nullptr);
    host_ = std::make_unique<Host>(engine_, options, [](std::function<void()>) {
      ADD_FAILURE() << "a node-scope check completed later";
    });
  }

  void TearDown() override {
    host_.reset();
    if (engine_) zetian_engine_close(engine_);
  }

  static std::string rule(const std::string& name, const std::string& stage, int limit,
                          const std::string& action = "tempfail", const std::string& key = "client_ip") {
    return "[[ratelimit.rule]]\nname = \"" + name + "\"\nkey = \"" + key + "\"\nstage = \"" + stage +
           "\"\nlimit = " + std::to_string(limit) + "\nburst = " + std::to_string(limit) +
           "\nperiod = \"1h\"\nscope = \"node\"\naction = \"" + action + "\"\n";
  }

  // A request as Postfix 3.7 sends it, for SMTP connection `port` of 192.0.2.7.
  static PolicyView request(ProtocolState state, std::uint32_t port, const std::string& instance,
                            const std::string& recipient = "", std::uint64_t count = 0) {
    PolicyView v;
    v.request = "smtpd_access_policy";
    v.state = state;
    v.protocol_state = protocolStateName(state);
    v.client_address = "192.0.2.7";
    v.client_name = "unknown";
    v.client_port = port;
    v.server_address = "192.0.2.1";
    v.server_port = 25;
    v.helo_name = "client.example";
    v.sender = "a@example.org";
    v.recipient = recipient;
    v.recipient_count = count;
    v.instance = instance;
    return v;
  }

  Answer ask(const PolicyView& v, std::uint64_t connection = 1, Clock::time_point now = Clock::now()) {
    Answer got;
    int calls = 0;
    host_->handle(connection, v, now, [&](const Answer& a) {
      got = a;
      ++calls;
    });
    EXPECT_EQ(calls, 1) << "every request gets one answer, inline for node-scope rules";
    return got;
  }

  // One message behind smtpd_recipient_restrictions alone: a RCPT request per recipient.
  std::vector<Answer> message(std::uint32_t port, const std::string& instance, int recipients) {
    std::vector<Answer> out;
    for (int i = 0; i < recipients; ++i)
      out.push_back(ask(request(ProtocolState::Rcpt, port, instance, "r" + std::to_string(i) + "@example.net", i)));
    return out;
  }

  cluster::testing::TempDir temp_;
  const std::string dir_ = temp_.path();
  const std::string path_ = dir_ + "/zetian.toml";
  zetian_engine* engine_ = nullptr;
  std::unique_ptr<Host> host_;
};

TEST_F(PolicyHostTest, AMailRuleBehindTheRecipientHookCountsMessagesNotRecipients) {
  open(rule("per-ip", "mail", 2));
  for (const char* instance : {"i1", "i2"})
    for (const Answer& a : message(1000, instance, 3)) EXPECT_EQ(a.kind, AnswerKind::Dunno) << instance;
  const auto third = message(1000, "i3", 2);
  EXPECT_EQ(third[0].kind, AnswerKind::Tempfail);
  EXPECT_EQ(third[0].text.rfind("action=451 4.7.1 ", 0), 0u) << third[0].text;
  // The mail stage's denial answers the rest of the transaction without a new charge.
  EXPECT_EQ(third[1].text, third[0].text);
  EXPECT_EQ(host_->sessions(), 1u);
}

TEST_F(PolicyHostTest, TheSameRecipientAskedByFourRestrictionListsIsChargedOnce) {
  open(rule("per-rcpt", "rcpt", 2));
  const PolicyView first = request(ProtocolState::Rcpt, 1000, "i1", "a@example.net", 0);
  EXPECT_EQ(ask(first).kind, AnswerKind::Dunno);
  for (int i = 0; i < 3; ++i) {
    const Answer again = ask(first);
    EXPECT_TRUE(again.repeated);
    EXPECT_EQ(again.kind, AnswerKind::Dunno);
  }
  EXPECT_EQ(host_->counters().repeats, 3u);
  EXPECT_EQ(ask(request(ProtocolState::Rcpt, 1000, "i1", "b@example.net", 1)).kind, AnswerKind::Dunno);
  // A recipient the client repeats after it was accepted has another recipient_count:
  // counted again, as behind the milter, and this one is over the limit.
  EXPECT_EQ(ask(request(ProtocolState::Rcpt, 1000, "i1", "a@example.net", 2)).kind, AnswerKind::Tempfail);
}

TEST_F(PolicyHostTest, AConnectDenialAnswersEveryLaterRequestOfThatSmtpConnection) {
  open(rule("conns", "connect", 1));
  EXPECT_EQ(message(1000, "i1", 1)[0].kind, AnswerKind::Dunno);
  EXPECT_EQ(message(1000, "i2", 1)[0].kind, AnswerKind::Dunno) << "connect runs once per SMTP connection";
  const auto denied = message(1001, "i3", 2);
  EXPECT_EQ(denied[0].kind, AnswerKind::Tempfail);
  EXPECT_EQ(denied[1].kind, AnswerKind::Tempfail);
  EXPECT_EQ(message(1001, "i4", 1)[0].kind, AnswerKind::Tempfail) << "and every later message";
}

TEST_F(PolicyHostTest, StagesAskedOneByOneAreCheckedOnceEach) {
  // smtpd_delay_reject = no, every list hooked: CONNECT, EHLO, MAIL, RCPT, DATA,
  // END-OF-MESSAGE, with instance empty until RCPT.
  open(rule("per-ip", "mail", 1));
  auto stage = [&](ProtocolState s, const std::string& instance) {
    return ask(request(s, 1000, instance, s >= ProtocolState::Rcpt ? "a@example.net" : "", 0));
  };
  EXPECT_EQ(stage(ProtocolState::Connect, "").kind, AnswerKind::Dunno);
  EXPECT_EQ(stage(ProtocolState::Ehlo, "").kind, AnswerKind::Dunno);
  EXPECT_EQ(stage(ProtocolState::Mail, "").kind, AnswerKind::Dunno);
  EXPECT_EQ(stage(ProtocolState::Rcpt, "i1").kind, AnswerKind::Dunno) << "the mail was checked at MAIL";
  EXPECT_EQ(stage(ProtocolState::Data, "i1").kind, AnswerKind::Dunno);
  EXPECT_EQ(stage(ProtocolState::EndOfMessage, "i1").kind, AnswerKind::Dunno);
  // The next message of the session: MAIL again, without an instance.
  EXPECT_EQ(stage(ProtocolState::Mail, "").kind, AnswerKind::Tempfail);
  EXPECT_EQ(stage(ProtocolState::Rcpt, "i2").kind, AnswerKind::Tempfail);
}

TEST_F(PolicyHostTest, ATagRulePrependsItsHeaderOncePerMessage) {
  open(rule("tag-rcpt", "rcpt", 1, "tag"));
  const auto answers = message(1000, "i1", 4);
  EXPECT_EQ(answers[0].kind, AnswerKind::Dunno);
  EXPECT_EQ(answers[1].kind, AnswerKind::Prepend);
  EXPECT_EQ(answers[1].text, "action=PREPEND X-Zetian-RateLimit: rule=tag-rcpt; limit=1/1h\n\n");
  EXPECT_EQ(answers[2].kind, AnswerKind::Dunno) << "one header per rule and message";
  EXPECT_EQ(answers[3].kind, AnswerKind::Dunno);
  EXPECT_EQ(message(1000, "i2", 1)[0].kind, AnswerKind::Prepend) << "a new message gets it again";
}

TEST_F(PolicyHostTest, AQuarantineRuleHoldsTheMessageOnceThenAWaitingHeaderFollows) {
  open(rule("hold-rcpt", "rcpt", 1, "quarantine") + rule("tag-rcpt", "rcpt", 1, "tag"));
  const auto answers = message(1000, "i1", 4);
  EXPECT_EQ(answers[0].kind, AnswerKind::Dunno);
  EXPECT_EQ(answers[1].kind, AnswerKind::Hold) << "both rules hit; one action per request, the hold first";
  EXPECT_EQ(answers[1].text, "action=HOLD zetian rate limit hold-rcpt exceeded\n\n");
  EXPECT_EQ(answers[2].kind, AnswerKind::Prepend) << "the header waited for the next request";
  EXPECT_EQ(answers[3].kind, AnswerKind::Dunno) << "held once, tagged once";
}

TEST_F(PolicyHostTest, AHeaderStillWaitingAtEndOfMessageIsDroppedAndCounted) {
  open(rule("hold", "mail", 1, "quarantine") + rule("tag", "mail", 1, "tag"));
  message(1000, "i1", 1);
  EXPECT_EQ(message(1000, "i2", 1)[0].kind, AnswerKind::Hold);
  const Answer eom = ask(request(ProtocolState::EndOfMessage, 1000, "i2", "", 1));
  EXPECT_EQ(eom.kind, AnswerKind::Dunno) << "PREPEND is refused at END-OF-MESSAGE";
  EXPECT_EQ(host_->counters().headers_dropped, 1u);
}

TEST_F(PolicyHostTest, DeferIfPermitSoftensATempfail) {
  HostOptions options;
  options.action.tempfail_as_defer_if_permit = true;
  open(rule("per-ip", "mail", 1), "", options);
  message(1000, "i1", 1);
  const Answer a = message(1000, "i2", 1)[0];
  EXPECT_EQ(a.kind, AnswerKind::DeferIfPermit);
  EXPECT_EQ(a.text.rfind("action=DEFER_IF_PERMIT ", 0), 0u) << a.text;
}

TEST_F(PolicyHostTest, AnAuthenticatedSessionIsExemptWhenConfigured) {
  open(rule("per-ip", "mail", 1), "exempt_authenticated = true");
  PolicyView v = request(ProtocolState::Rcpt, 1000, "i1", "a@example.net", 0);
  v.sasl_username = "alice";
  v.sasl_method = "PLAIN";
  for (const char* instance : {"i1", "i2", "i3"}) {
    v.instance = instance;
    EXPECT_EQ(ask(v).kind, AnswerKind::Dunno) << instance;
  }
  EXPECT_EQ(message(1001, "j1", 1)[0].kind, AnswerKind::Dunno);
  EXPECT_EQ(message(1001, "j2", 1)[0].kind, AnswerKind::Tempfail) << "without a login the limit holds";
}

TEST_F(PolicyHostTest, VrfyAndEtrnAreAnsweredWithoutASession) {
  open(rule("per-ip", "mail", 1));
  EXPECT_EQ(ask(request(ProtocolState::Vrfy, 1000, "")).kind, AnswerKind::Dunno);
  EXPECT_EQ(ask(request(ProtocolState::Etrn, 1000, "")).kind, AnswerKind::Dunno);
  EXPECT_EQ(host_->sessions(), 0u);
}

TEST_F(PolicyHostTest, ASessionEndsWhenItsPolicyConnectionMovesToAnotherClient) {
  open(rule("per-ip", "mail", 100));
  message(1000, "i1", 1);
  message(1001, "i2", 1);  // the same smtpd, its next client
  EXPECT_EQ(host_->sessions(), 1u);
  EXPECT_EQ(host_->counters().sessions_ended, 1u);
  // Another policy connection (another smtpd) keeps its own session.
  ask(request(ProtocolState::Rcpt, 2000, "k1", "a@example.net"), 2);
  EXPECT_EQ(host_->sessions(), 2u);
}

TEST_F(PolicyHostTest, SessionsUnusedForTheTimeoutExpireAndAFullTableDropsTheOldest) {
  HostOptions options;
  options.session_timeout = 10min;
  options.max_sessions = 2;
  open(rule("per-ip", "mail", 100), "", options);
  const auto t0 = Clock::now();
  ask(request(ProtocolState::Rcpt, 1000, "i1", "a@example.net"), 1, t0);
  ask(request(ProtocolState::Rcpt, 1001, "i2", "a@example.net"), 2, t0 + 5min);
  ask(request(ProtocolState::Rcpt, 1002, "i3", "a@example.net"), 3, t0 + 6min);
  EXPECT_EQ(host_->sessions(), 2u);
  EXPECT_EQ(host_->counters().sessions_evicted, 1u) << "the session of port 1000, used least recently";
  EXPECT_EQ(host_->expire(t0 + 14min), 0u);
  EXPECT_EQ(host_->expire(t0 + 15min), 1u);
  EXPECT_EQ(host_->expire(t0 + 16min), 1u);
  EXPECT_EQ(host_->sessions(), 0u);
  EXPECT_EQ(host_->counters().sessions_expired, 2u);
}

TEST_F(PolicyHostTest, WithoutAClientPortThePolicyConnectionIsTheSession) {
  open(rule("per-ip", "connect", 1));
  PolicyView v = request(ProtocolState::Rcpt, 0, "i1", "a@example.net");
  v.client_port.reset();
  EXPECT_EQ(ask(v, 7).kind, AnswerKind::Dunno);
  v.instance = "i2";
  EXPECT_EQ(ask(v, 7).kind, AnswerKind::Dunno) << "the same SMTP connection: connect checked once";
  v.instance = "i3";
  EXPECT_EQ(ask(v, 8).kind, AnswerKind::Tempfail) << "another policy connection is another SMTP connection";
}

}  // namespace
}  // namespace zetian::milter::policy
