// policy::Server over real sockets, in front of a real engine (libzetian): answers,
// pipelining, every malformed input the policy host's issue names, timeouts, the
// connection cap, bounded memory, EOF, stop() and many concurrent connections. Most
// tests use node-scope rules, decided inline; PolicyServerAsyncTest runs cluster-scope
// rules on a node still forming, so verdicts come back later from the engine's cluster
// thread through the server's mailbox. Figures are read as the health socket reads
// them, through Server::report; one test reads them through the health socket itself.
// Three asynchronous tests guard Host::finish against re-entry (policy_server_async_test.cpp).
//
// Waits are polls with a deadline (a socket closing, a figure reaching a value), never
// sleeps to synchronise; the deadlines are generous because the suite also runs under
// TSan and ASan on two loaded cores. Timing assertions are lower bounds (a server cannot
// be faster than its timeouts), which load cannot break, or upper bounds that are many
// times the expected figure (stop()).
//
// The shared fixture is policy_server_test_support.h; the descriptor, memory and
// end-of-input tests are in policy_server_limits_test.cpp, the asynchronous ones in
// policy_server_async_test.cpp.

#include <gtest/gtest.h>

#include "tests/unit/milter/policy_server_test_support.h"

namespace zetian::milter::policy {
namespace {

using namespace server_test;

// ---- answers ----------------------------------------------------------------------

TEST_F(PolicyServerTest, RcptRequestsAreAnsweredDunnoThen451PastTheLimit) {
  ASSERT_NO_FATAL_FAILURE(openEngine(rule("per-ip", "rcpt", 3)));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  for (int i = 0; i < 3; ++i) {
    c.send(rcpt(1000, "i1", "r" + std::to_string(i) + "@example.net", i));
    EXPECT_EQ(c.answer(), kDunno) << i;
  }
  c.send(rcpt(1000, "i1", "r3@example.net", 3));
  const std::string denied = c.answer();
  EXPECT_EQ(denied.rfind("action=451 4.7.1 ", 0), 0u) << denied;
  EXPECT_EQ(denied.find('\n'), denied.size() - 2) << "one attribute, then the empty line: " << denied;
  EXPECT_EQ(metric("zetian_policy_requests_total{state=\"RCPT\",action=\"dunno\"}"), 3);
  EXPECT_EQ(metric("zetian_policy_requests_total{state=\"RCPT\",action=\"tempfail\"}"), 1);
  EXPECT_EQ(metric("zetian_policy_connections"), 1);
  EXPECT_EQ(metric("zetian_policy_connections_total"), 1);
  EXPECT_EQ(metric("zetian_policy_sessions"), 1);
  EXPECT_EQ(malformedTotal(), 0);
}

TEST_F(PolicyServerTest, PipelinedRequestsAreAnsweredInTheOrderTheyCame) {
  // One connection per client IP and hour: SMTP connection 1001 of the same client is
  // denied at connect, and that denial answers every RCPT of it whatever the order the
  // server took them in; VRFY is always DUNNO. So only the answers' order can differ.
  ASSERT_NO_FATAL_FAILURE(openEngine(rule("conns", "connect", 1)));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0));
  ASSERT_EQ(c.answer(), kDunno);

  c.send(rcpt(1001, "i2", "a@example.net", 0) + vrfy(1001) + rcpt(1001, "i2", "b@example.net", 1) + vrfy(1001) +
         vrfy(1001) + rcpt(1001, "i2", "c@example.net", 2));
  const std::vector<bool> denied = {true, false, true, false, false, true};
  for (std::size_t i = 0; i < denied.size(); ++i) {
    const std::string a = c.answer();
    if (denied[i]) {
      EXPECT_EQ(a.rfind("action=451 4.7.1 ", 0), 0u) << "answer " << i << ": " << a;
    } else {
      EXPECT_EQ(a, kDunno) << "answer " << i;
    }
  }
  EXPECT_EQ(metric("zetian_policy_requests_total{state=\"VRFY\",action=\"dunno\"}"), 3);
  EXPECT_EQ(metric("zetian_policy_requests_total{state=\"RCPT\",action=\"tempfail\"}"), 3);
}

TEST_F(PolicyServerTest, RequestsWrittenOneByteAtATimeAreAnswered) {
  ASSERT_NO_FATAL_FAILURE(openEngine(rule("per-ip", "rcpt", 1)));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  const int one = 1;
  ::setsockopt(c.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // one segment per byte
  const std::string two = rcpt(1000, "i1", "a@example.net", 0) + rcpt(1000, "i1", "b@example.net", 1);
  for (const char byte : two) c.send(std::string(1, byte));
  EXPECT_EQ(c.answer(), kDunno);
  EXPECT_EQ(c.answer().rfind("action=451 4.7.1 ", 0), 0u) << "the second request, over the limit";
  EXPECT_EQ(malformedTotal(), 0);
}

TEST_F(PolicyServerTest, AUnixSocketServesRequestsAndIsNotOpenedTwice) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ServerOptions options;
  options.socket = "unix:" + dir_ + "/policy.sock";
  ASSERT_NO_FATAL_FAILURE(startServer(options));
  EXPECT_TRUE(server_->createdUnixSocket());
  EXPECT_EQ(server_->boundPort(), 0);
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0));
  EXPECT_EQ(c.answer(), kDunno);

  ServerOptions again;
  again.socket = options.socket;
  std::string error;
  EXPECT_EQ(Server::open(engine_, again, &error), nullptr);
  EXPECT_NE(error.find("cannot listen on " + options.socket), std::string::npos) << error;

  // The first server is unharmed.
  c.send(rcpt(1000, "i1", "b@example.net", 1));
  EXPECT_EQ(c.answer(), kDunno);
}

TEST_F(PolicyServerTest, ABusyPortOrABadSocketSpecIsAnErrorNotAServer) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  std::string error;
  ServerOptions same;
  same.socket = "inet:" + std::to_string(server_->boundPort()) + "@127.0.0.1";
  EXPECT_EQ(Server::open(engine_, same, &error), nullptr);
  EXPECT_NE(error.find("cannot listen on"), std::string::npos) << error;
  ServerOptions bad;
  bad.socket = "tcp:10031";
  error.clear();
  EXPECT_EQ(Server::open(engine_, bad, &error), nullptr);
  EXPECT_NE(error.find("expected inet:PORT@HOST"), std::string::npos) << error;
  expectServed();
}

TEST_F(PolicyServerTest, Inet6AndHostlessAndLocalSocketsServeToo) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  for (const std::string& spec :
       std::vector<std::string>{"inet6:0@[::1]", "inet6:0@::1", "inet:0", "local:" + dir_ + "/local.sock"}) {
    SCOPED_TRACE(spec);
    ServerOptions options;
    options.socket = spec;
    std::string error;
    std::unique_ptr<Server> server = Server::open(engine_, options, &error);
    ASSERT_NE(server, nullptr) << error;
    server->start();
    int fd = -1;
    if (spec.rfind("inet6:", 0) == 0) {
      ASSERT_GT(server->boundPort(), 0);
      fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in6 addr{};
      addr.sin6_family = AF_INET6;
      addr.sin6_port = htons(static_cast<std::uint16_t>(server->boundPort()));
      addr.sin6_addr = in6addr_loopback;
      ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << std::strerror(errno);
    } else if (spec.rfind("inet:", 0) == 0) {
      ASSERT_GT(server->boundPort(), 0);
      fd = ts::connectTcp(static_cast<std::uint16_t>(server->boundPort()));  // every address: loopback too
    } else {
      EXPECT_TRUE(server->createdUnixSocket());
      fd = ts::connectUnix(dir_ + "/local.sock");
    }
    Client c(fd);
    ASSERT_TRUE(c.connected());
    c.send(rcpt(1000, "i1", "a@example.net", 0));
    EXPECT_EQ(c.answer(), kDunno);
  }
}

TEST_F(PolicyServerTest, ADestroyedServerThatNeverStartedLeavesNothingBehind) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ServerOptions options;
  options.socket = "inet:0@127.0.0.1";
  std::string error;
  std::unique_ptr<Server> server = Server::open(engine_, options, &error);
  ASSERT_NE(server, nullptr) << error;
  const int port = server->boundPort();
  server->stop();  // never started: nothing to stop
  server.reset();
  EXPECT_EQ(ts::connectTcp(static_cast<std::uint16_t>(port)), -1) << "the listening socket was closed";
}

// ---- malformed input --------------------------------------------------------------

struct MalformedCase {
  const char* name;
  std::string bytes;
  const char* reason;  // zetian_policy_malformed_total's label
};

std::string manyAttributes(int count) {
  std::string out = "request=smtpd_access_policy\n";
  for (int i = 1; i < count; ++i) out += "attribute" + std::to_string(i) + "=value\n";
  return out + "\n";
}

std::string binaryJunk() {
  std::mt19937 random(20261201);
  std::string out;
  for (int i = 0; i < 4096; ++i) out.push_back(static_cast<char>(random() & 0xff));
  return out;
}

const MalformedCase kMalformedCases[] = {
    {"LineOver8KiB", "request=smtpd_access_policy\nsender=" + std::string(9000, 'a') + "\n\n", "line_too_long"},
    {"LineOver8KiBWithoutAnyLf", std::string(9000, 'a'), "line_too_long"},
    {"AThousandAttributes", manyAttributes(1000), "too_many_attributes"},
    {"NulByte", std::string("request=smtpd_access_policy\nsender=a") + '\0' + "b@example.org\n\n", "nul_byte"},
    {"ControlByte", "request=smtpd_access_policy\nhelo_name=a\x01" "b\n\n", "control_byte"},
    {"CrLfLineEnds", "request=smtpd_access_policy\r\nprotocol_state=RCPT\r\n\r\n", "control_byte"},
    {"NotAnAccessPolicyRequest", "request=junk\nprotocol_state=RCPT\n\n", "not_a_policy_request"},
    {"NoRequestAttribute", "protocol_state=RCPT\nclient_address=192.0.2.7\n\n", "not_a_policy_request"},
    {"ANumberThatIsNotANumber", "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient_count=many\n\n",
     "not_a_policy_request"},
    {"ARequestOver64KiB", "request=smtpd_access_policy\n" + [] {
       std::string lines;
       for (int i = 0; i < 80; ++i) lines += "attribute" + std::to_string(i) + "=" + std::string(1000, 'v') + "\n";
       return lines;
     }() + "\n",
     "request_too_large"},
    {"ALineWithoutEquals", "request=smtpd_access_policy\nhello\n\n", "missing_equals"},
    {"AnEmptyRequest", "\n", "empty_request"},
};

class PolicyServerMalformedTest : public PolicyServerTest, public ::testing::WithParamInterface<MalformedCase> {};

TEST_P(PolicyServerMalformedTest, ClosesTheConnectionCountsAndLogsItAndServesTheNext) {
  const MalformedCase& m = GetParam();
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  const std::string label = std::string("zetian_policy_malformed_total{reason=\"") + m.reason + "\"}";
  ASSERT_EQ(metric(label), 0);
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(m.bytes);  // the client keeps its side open: the server must close on its own
  std::string got;
  EXPECT_TRUE(c.closedWithin(kWait, &got)) << "the connection was not closed";
  EXPECT_EQ(got, "") << "no answer to a malformed request (SMTPD_POLICY_README)";
  EXPECT_EQ(waitForMetric(label, 1), 1);
  EXPECT_EQ(malformedTotal(), 1) << "counted once, under its own reason";
  EXPECT_EQ(waitForMetric("zetian_policy_connections", 0), 0);
  EXPECT_TRUE(waitForLog(std::string("policy_request_malformed peer=127.0.0.1:")));
  EXPECT_NE(log().find(std::string("reason=") + m.reason), std::string::npos) << log();
  expectServed();
}

TEST_P(PolicyServerMalformedTest, AfterAGoodRequestTheGoodOneIsAnsweredThenTheConnectionClosed) {
  const MalformedCase& m = GetParam();
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0) + m.bytes);
  std::string got;
  EXPECT_TRUE(c.closedWithin(kWait, &got));
  EXPECT_EQ(got, kDunno) << "the request before the malformed one is answered, and nothing after it";
  EXPECT_EQ(waitForMetric(std::string("zetian_policy_malformed_total{reason=\"") + m.reason + "\"}", 1), 1);
}

INSTANTIATE_TEST_SUITE_P(Inputs, PolicyServerMalformedTest, ::testing::ValuesIn(kMalformedCases),
                         [](const ::testing::TestParamInfo<MalformedCase>& info) {
                           return std::string(info.param.name);
                         });

TEST_F(PolicyServerTest, MalformedRequestsAreLoggedAtMostOncePerKindEveryTenSeconds) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  for (int i = 0; i < 5; ++i) {
    Client c = connect();
    ASSERT_TRUE(c.connected());
    c.send(i == 4 ? "request=junk\n\n" : "\n");
    EXPECT_TRUE(c.closedWithin());
  }
  EXPECT_EQ(waitForMetric("zetian_policy_malformed_total{reason=\"empty_request\"}", 4), 4);
  ASSERT_TRUE(waitForLog("reason=not_a_policy_request"));
  const std::string text = log();
  std::size_t lines = 0;
  const std::string needle = "reason=empty_request";
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++lines;
  EXPECT_EQ(lines, 1u) << "a flood of one kind is one line, and another kind has its own:\n" << text;
}

TEST_F(PolicyServerTest, BinaryJunkIsClosedAsMalformed) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(binaryJunk());
  std::string got;
  EXPECT_TRUE(c.closedWithin(kWait, &got));
  EXPECT_EQ(got, "");
  const auto deadline = Clock::now() + kWait;
  while (malformedTotal() != 1 && Clock::now() < deadline) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(malformedTotal(), 1);
  expectServed();
}

TEST_F(PolicyServerTest, LinesAndAttributesAtTheLimitsAreAccepted) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  // A line of exactly 8192 bytes without its LF, then 128 attributes in all.
  const std::string line = "ccert_subject=" + std::string(8192 - 14, 's') + "\n";
  std::string request = rcpt(1000, "i1", "a@example.net", 0);
  request.insert(request.size() - 1, line);
  int attributes = 0;
  for (const char ch : request) attributes += ch == '\n';
  --attributes;  // the empty line
  for (int i = attributes; i < 128; ++i) request.insert(request.size() - 1, "extra" + std::to_string(i) + "=x\n");
  c.send(request);
  EXPECT_EQ(c.answer(), kDunno);
  EXPECT_EQ(malformedTotal(), 0);
}

TEST_F(PolicyServerTest, Utf8AddressesAreAcceptedAsTheyAre) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "jos\xc3\xa9@ex\xc3\xa4mple.net", 0));
  EXPECT_EQ(c.answer(), kDunno);
  EXPECT_EQ(malformedTotal(), 0);
}

TEST_F(PolicyServerTest, RejectAndTagAnswersAreSentAndCountedUnderTheirAction) {
  ASSERT_NO_FATAL_FAILURE(openEngine(rule("no-more", "rcpt", 1, "reject", "rcpt") + rule("tag-ip", "rcpt", 1, "tag")));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0));
  EXPECT_EQ(c.answer(), kDunno);
  c.send(rcpt(1000, "i1", "b@example.net", 1));  // the client's second recipient: tagged
  EXPECT_EQ(c.answer(), "action=PREPEND X-Zetian-RateLimit: rule=tag-ip; limit=1/1h\n\n");
  c.send(rcpt(1000, "i2", "a@example.net", 0));  // a's second message: rejected
  const std::string rejected = c.answer();
  EXPECT_EQ(rejected.rfind("action=550 5.7.1 ", 0), 0u) << rejected;
  EXPECT_EQ(metric("zetian_policy_requests_total{state=\"RCPT\",action=\"dunno\"}"), 1);
  EXPECT_EQ(metric("zetian_policy_requests_total{state=\"RCPT\",action=\"prepend\"}"), 1);
  EXPECT_EQ(metric("zetian_policy_requests_total{state=\"RCPT\",action=\"reject\"}"), 1);
}

// ---- timeouts ---------------------------------------------------------------------

TEST_F(PolicyServerTest, ARequestThatNeverEndsIsClosedAfterRequestTimeout) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ServerOptions options;
  options.request_timeout = 1s;
  ASSERT_NO_FATAL_FAILURE(startServer(options));
  Client c = connect();
  ASSERT_TRUE(c.connected());
  const auto sent = Clock::now();
  c.send("request=smtpd_access_policy\nprotocol_state=RCPT\n");
  EXPECT_TRUE(c.closedWithin(kWait));
  EXPECT_GE(Clock::now() - sent, 1s) << "closed before request_timeout";
  EXPECT_EQ(waitForMetric("zetian_policy_connections_timed_out_total{kind=\"request\"}", 1), 1);
  EXPECT_EQ(metric("zetian_policy_connections_timed_out_total{kind=\"idle\"}"), 0);
  EXPECT_TRUE(waitForLog("policy_request_timeout peer=127.0.0.1:"));
  expectServed();
}

TEST_F(PolicyServerTest, AClientTricklingOneByteAtATimeIsStillBoundByRequestTimeout) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ServerOptions options;
  options.request_timeout = 1s;
  options.idle_timeout = 1h;
  ASSERT_NO_FATAL_FAILURE(startServer(options));
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send("request=smtpd_access_policy\nsender=");
  // A byte every 50 ms (the pace of a slow client, not a synchronisation): each read is
  // activity, but the request itself must still end within request_timeout.
  const auto deadline = Clock::now() + kWait;
  bool closed = false;
  while (!closed && Clock::now() < deadline) {
    if (::send(c.fd(), "x", 1, MSG_NOSIGNAL) != 1) {
      closed = c.closedWithin(kWait);  // the server hung up first
      break;
    }
    pollfd p{c.fd(), POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) closed = c.closedWithin(1ms);
  }
  EXPECT_TRUE(closed) << "a client trickling bytes kept its request open for " << kWait.count() << " s";
  EXPECT_EQ(waitForMetric("zetian_policy_connections_timed_out_total{kind=\"request\"}", 1), 1);
}

TEST_F(PolicyServerTest, AnIdleConnectionIsClosedAfterIdleTimeoutAndNotCountedAsMalformed) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ServerOptions options;
  options.idle_timeout = 1s;
  ASSERT_NO_FATAL_FAILURE(startServer(options));
  Client silent = connect();
  Client used = connect();
  ASSERT_TRUE(silent.connected() && used.connected());
  const auto asked = Clock::now();  // the server's last activity on `used` comes after
  used.send(rcpt(1000, "i1", "a@example.net", 0));
  ASSERT_EQ(used.answer(), kDunno);
  EXPECT_TRUE(used.closedWithin(kWait));
  EXPECT_GE(Clock::now() - asked, 1s) << "closed before idle_timeout";
  EXPECT_TRUE(silent.closedWithin(kWait));
  EXPECT_EQ(waitForMetric("zetian_policy_connections_timed_out_total{kind=\"idle\"}", 2), 2);
  EXPECT_EQ(metric("zetian_policy_connections_timed_out_total{kind=\"request\"}"), 0);
  EXPECT_EQ(malformedTotal(), 0);
  expectServed();
}

TEST_F(PolicyServerTest, AConnectionInUseIsNotClosedAsIdle) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ServerOptions options;
  options.idle_timeout = 3s;
  ASSERT_NO_FATAL_FAILURE(startServer(options));
  Client c = connect();
  ASSERT_TRUE(c.connected());
  // Requests 100 ms apart (a client's pace) for longer than idle_timeout.
  const auto until = Clock::now() + 4s;
  int i = 0;
  while (Clock::now() < until) {
    c.send(rcpt(1000, "i1", "r" + std::to_string(i) + "@example.net", static_cast<std::uint64_t>(i)));
    ASSERT_EQ(c.answer(), kDunno) << "request " << i;
    ++i;
    pollfd p{c.fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 100), 0) << "the server sent or closed between requests";
  }
  EXPECT_EQ(metric("zetian_policy_connections_timed_out_total{kind=\"idle\"}"), 0);
}

// ---- the connection cap -----------------------------------------------------------

TEST_F(PolicyServerTest, PastMaxConnectionsANewConnectionIsClosedAtOnceUntilOneCloses) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ServerOptions options;
  options.max_connections = 3;
  ASSERT_NO_FATAL_FAILURE(startServer(options));
  std::vector<Client> served;
  for (int i = 0; i < 3; ++i) {
    served.push_back(connect());
    ASSERT_TRUE(served.back().connected());
    served.back().send(rcpt(1000 + i, "i" + std::to_string(i), "a@example.net", 0));
    ASSERT_EQ(served.back().answer(), kDunno) << i;
  }
  Client fourth = connect();
  ASSERT_TRUE(fourth.connected()) << "the kernel accepts it; the server closes it";
  fourth.send(rcpt(1003, "i3", "a@example.net", 0));
  std::string got;
  EXPECT_TRUE(fourth.closedWithin(kWait, &got));
  EXPECT_EQ(got, "") << "a refused connection is not served";
  EXPECT_EQ(waitForMetric("zetian_policy_connections_refused_total", 1), 1);
  EXPECT_EQ(metric("zetian_policy_connections"), 3);
  EXPECT_TRUE(waitForLog("policy_connection_refused reason=max_connections max=3"));

  served.front().close();
  ASSERT_EQ(waitForMetric("zetian_policy_connections", 2), 2);
  expectServed();
  EXPECT_EQ(metric("zetian_policy_connections_refused_total"), 1);
  EXPECT_EQ(metric("zetian_policy_connections_total"), 4);
  for (Client& c : served) {
    if (!c.connected()) continue;
    c.send(rcpt(2000, "j", "b@example.net", 0));
    EXPECT_EQ(c.answer(), kDunno) << "the connections under the cap are still served";
  }
}

// ---- stop -------------------------------------------------------------------------

TEST_F(PolicyServerTest, StopWithConnectionsOpenReturnsPromptlyAndClosesThem) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  std::vector<Client> clients;
  for (int i = 0; i < 3; ++i) {  // served, then idle
    clients.push_back(connect());
    clients.back().send(rcpt(1000 + i, "i" + std::to_string(i), "a@example.net", 0));
    ASSERT_EQ(clients.back().answer(), kDunno);
  }
  clients.push_back(connect());  // in the middle of a request
  clients.back().send("request=smtpd_access_policy\nprotocol_state=RCPT\n");
  clients.push_back(connect());  // never said anything
  ASSERT_EQ(waitForMetric("zetian_policy_connections", 5), 5);
  const auto before = Clock::now();
  server_->stop();
  const auto took = Clock::now() - before;
  EXPECT_LT(took, 5s) << "with no check in flight stop() has nothing to wait for";
  std::cout << "[   INFO   ] stop() with 5 connections open took "
            << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms\n";
  for (std::size_t i = 0; i < clients.size(); ++i) EXPECT_TRUE(clients[i].closedWithin(kWait)) << i;
  EXPECT_EQ(metric("zetian_policy_connections"), 0);
  server_->stop();  // idempotent
  EXPECT_EQ(malformedTotal(), 0) << "closing at stop is not the clients' fault";
}

// ---- many connections -------------------------------------------------------------

TEST_F(PolicyServerTest, TwoHundredConnectionsOfTwentyRequestsEachGetFourThousandAnswers) {
  constexpr int kConnections = 200;
  constexpr int kRequests = 20;
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  struct Conn {
    std::unique_ptr<Client> client;
    int sent = 0;
    int answered = 0;
    std::string in;
  };
  auto requestOf = [](int conn, int n) {
    const std::string client = "10.0." + std::to_string(conn / 250) + "." + std::to_string(conn % 250 + 1);
    return rcpt(static_cast<std::uint32_t>(40000 + conn), "c" + std::to_string(conn) + "m" + std::to_string(n),
                "r" + std::to_string(n) + "@example.net", 0, client);
  };
  std::vector<Conn> conns(kConnections);
  for (int i = 0; i < kConnections; ++i) {
    conns[i].client = std::make_unique<Client>(connect());
    ASSERT_TRUE(conns[i].client->connected()) << i;
  }
  const auto started = Clock::now();
  for (int i = 0; i < kConnections; ++i) {  // every connection has a request in flight
    conns[i].client->send(requestOf(i, 0));
    conns[i].sent = 1;
  }
  int answers = 0, wrong = 0;
  const auto deadline = Clock::now() + 120s;
  while (answers < kConnections * kRequests && Clock::now() < deadline) {
    std::vector<pollfd> fds;
    std::vector<int> index;
    for (int i = 0; i < kConnections; ++i) {
      if (conns[i].answered == kRequests) continue;
      fds.push_back({conns[i].client->fd(), POLLIN, 0});
      index.push_back(i);
    }
    if (::poll(fds.data(), fds.size(), remainingMs(deadline)) <= 0) break;
    for (std::size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      Conn& c = conns[index[k]];
      char buf[4096];
      const ssize_t n = ::recv(fds[k].fd, buf, sizeof buf, 0);
      ASSERT_GT(n, 0) << "connection " << index[k] << " closed after " << c.answered << " answers";
      c.in.append(buf, static_cast<std::size_t>(n));
      for (auto end = c.in.find("\n\n"); end != std::string::npos; end = c.in.find("\n\n")) {
        wrong += c.in.substr(0, end + 2) != kDunno;
        c.in.erase(0, end + 2);
        ++c.answered;
        ++answers;
        if (c.sent < kRequests) c.client->send(requestOf(index[k], c.sent++));
      }
    }
  }
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started);
  EXPECT_EQ(answers, kConnections * kRequests);
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(metric("zetian_policy_requests_total{state=\"RCPT\",action=\"dunno\"}"), kConnections * kRequests);
  EXPECT_EQ(metric("zetian_policy_connections"), kConnections);
  EXPECT_EQ(malformedTotal(), 0);
  std::cout << "[   INFO   ] " << answers << " answers over " << kConnections << " connections in " << took.count()
            << " ms (" << (took.count() > 0 ? answers * 1000LL / took.count() : 0) << " requests/s)\n";
}

// ---- figures through the engine's health socket -----------------------------------

TEST_F(PolicyServerTest, TheEngineHealthSocketShowsTheServersFigures) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule(), /*start=*/true));
  ASSERT_NO_FATAL_FAILURE(startServer());
  ASSERT_EQ(zetian_engine_set_reporter(engine_, &Server::report, server_.get()), 0);
  reporter_set_ = true;
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0));
  ASSERT_EQ(c.answer(), kDunno);
  Client junk = connect();
  junk.send("request=junk\n\n");
  ASSERT_TRUE(junk.closedWithin());
  ASSERT_EQ(waitForMetric("zetian_policy_malformed_total{reason=\"not_a_policy_request\"}", 1), 1);
  // The gauge drops after the malformed count rises (close() comes after the log line).
  ASSERT_EQ(waitForMetric("zetian_policy_connections", 1), 1);

  const auto metrics = ts::roundTrip(ts::connectUnix(health_socket_), ts::simpleRequest("GET", "/metrics"));
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("\nzetian_policy_requests_total{state=\"RCPT\",action=\"dunno\"} 1\n"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("\nzetian_policy_connections 1\n"), std::string::npos);
  EXPECT_NE(metrics.body.find("\nzetian_policy_connections_total 2\n"), std::string::npos);

  const auto health = ts::roundTrip(ts::connectUnix(health_socket_), ts::simpleRequest("GET", "/health"));
  ASSERT_EQ(health.status, 200) << health.head;
  const nlohmann::json doc = nlohmann::json::parse(health.body);
  const nlohmann::json& host = doc.at("policy_host");
  EXPECT_EQ(host.at("socket"), socket_);
  EXPECT_EQ(host.at("connections"), 1);
  EXPECT_EQ(host.at("max_connections"), 1000);
  EXPECT_EQ(host.at("sessions"), 1);
  EXPECT_EQ(host.at("requests_total"), 1);
  EXPECT_EQ(host.at("malformed_total"), 1);
}

}  // namespace
}  // namespace zetian::milter::policy
