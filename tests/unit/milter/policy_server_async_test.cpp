// policy::Server with verdicts that come later: cluster-scope rules on a node still
// forming, so the engine answers from its cluster thread through the server's
// mailbox. Covers ordering behind a waiting check, end of input, timeouts, stop and
// Host::finish's re-entry while a check is in flight. Shared fixture:
// policy_server_test_support.h.

#include <gtest/gtest.h>

#include "tests/unit/milter/policy_server_test_support.h"

namespace zetian::milter::policy {
namespace {

using namespace server_test;

// ---- asynchronous checks ----------------------------------------------------------

// A port that accepts TCP connections (the kernel's backlog) and never answers.
class SilentListener {
 public:
  SilentListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      throw std::runtime_error("cannot open the silent listener");
    port_ = ntohs(a.sin_port);
  }
  ~SilentListener() { ::close(fd_); }
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

std::uint16_t freePort() {
  SilentListener probe;  // bound, then released: the kernel hands ports out in turn
  return probe.port();
}

// Cluster-scope checks on a node still forming: its only seed never answers, so each
// check waits for the first view (at most cluster.check_timeout), then ratelimit.fail_mode
// ("local": this node's bucket, under the limit) decides it, and the verdict comes back
// from the engine's cluster thread through the server's mailbox.
class PolicyServerAsyncTest : public PolicyServerTest {
 protected:
  void openClusterEngine(const std::string& check_timeout, const std::string& fail_mode = "local") {
    std::filesystem::create_directories(dir_ + "/n1");
    std::ofstream(path_) << "[node]\nid = \"n1\"\nstate_dir = \"" << dir_ << "/n1\"\n"
                         << "[log]\nlevel = \"warn\"\ntarget = \"file\"\nfile = \"" << dir_ << "/zetian.log\"\n"
                         << "[health]\nsocket = \"" << health_socket_ << "\"\n"
                         << "[cluster]\nenabled = true\nbind = \"127.0.0.1:" << freePort() << "\"\n"
                         << "seeds = [\"127.0.0.1:" << seed_.port() << "\"]\n"
                         << "shared_secret = \"unit-test-secret-0123456789abcdef\"\n"
                         << "join_timeout = \"120s\"\ncheck_timeout = \"" << check_timeout << "\"\n"
                         << "[ratelimit]\nexempt = []\nfail_mode = \"" << fail_mode << "\"\n"
                         << "[[ratelimit.rule]]\nname = \"cluster-rcpt\"\nkey = \"client_ip\"\nstage = \"rcpt\"\n"
                         << "limit = 1000000\nperiod = \"1h\"\nscope = \"cluster\"\naction = \"tempfail\"\n";
    std::string errors;
    auto collect = [](void* ctx, const char* message) {
      *static_cast<std::string*>(ctx) += std::string(message) + "\n";
    };
    engine_ = zetian_engine_open(path_.c_str(), nullptr, 0, collect, &errors);
    ASSERT_NE(engine_, nullptr) << errors;
    ASSERT_EQ(zetian_engine_start(engine_, collect, &errors), 0) << errors;
  }

  SilentListener seed_;
};

TEST_F(PolicyServerAsyncTest, ACheckWaitingForTheClusterHoldsNoOtherConnection) {
  ASSERT_NO_FATAL_FAILURE(openClusterEngine("1500ms"));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client waiting = connect();
  Client other = connect();
  ASSERT_TRUE(waiting.connected() && other.connected());
  const auto asked = Clock::now();
  waiting.send(rcpt(1000, "i1", "a@example.net", 0));
  ASSERT_EQ(waitForMetric("zetian_policy_connections", 2), 2);
  for (int i = 0; i < 3; ++i) {
    other.send(vrfy(2000));
    EXPECT_EQ(other.answer(), kDunno) << i;
  }
  pollfd p{waiting.fd(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "the cluster check was answered before the other connection's requests";
  EXPECT_EQ(metric("zetian_policy_checks_in_flight"), 1);
  EXPECT_EQ(waiting.answer(), kDunno);
  std::cout << "[   INFO   ] the cluster check was answered after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - asked).count() << " ms\n";
  EXPECT_EQ(metric("zetian_policy_checks_in_flight"), 0);
}

TEST_F(PolicyServerAsyncTest, RequestsPipelinedBehindAWaitingCheckAreAnsweredInOrder) {
  // fail_mode "closed": a check that runs out of time tempfails, so the RCPT answers
  // (late, from the cluster thread) differ from the VRFY ones (inline).
  ASSERT_NO_FATAL_FAILURE(openClusterEngine("300ms", "closed"));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0) + vrfy(1000) + rcpt(1000, "i1", "b@example.net", 1) + vrfy(1000));
  for (const bool late : {true, false, true, false}) {
    const std::string a = c.answer();
    if (late) {
      EXPECT_EQ(a.rfind("action=451 4.7.1 ", 0), 0u) << a;
    } else {
      EXPECT_EQ(a, kDunno);
    }
  }
  EXPECT_EQ(metric("zetian_policy_requests_total{state=\"RCPT\",action=\"tempfail\"}"), 2);
}

TEST_F(PolicyServerAsyncTest, EndOfInputWhileACheckWaitsStillGetsTheAnswer) {
  ASSERT_NO_FATAL_FAILURE(openClusterEngine("300ms"));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0));
  c.shutdownWrite();
  std::string got;
  EXPECT_TRUE(c.closedWithin(kWait, &got));
  EXPECT_EQ(got, kDunno);
  EXPECT_EQ(malformedTotal(), 0);
}

TEST_F(PolicyServerAsyncTest, RequestTimeoutDoesNotCutACheckThatIsWaiting) {
  ASSERT_NO_FATAL_FAILURE(openClusterEngine("2500ms"));
  ServerOptions options;
  options.request_timeout = 1s;
  ASSERT_NO_FATAL_FAILURE(startServer(options));
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0));
  EXPECT_EQ(c.answer(), kDunno) << "the request was complete: only the engine's deadline bounds its check";
  c.send(vrfy(1000));
  EXPECT_EQ(c.answer(), kDunno) << "and the connection stays open";
  EXPECT_EQ(metric("zetian_policy_connections_timed_out_total{kind=\"request\"}"), 0);
}

TEST_F(PolicyServerAsyncTest, AClientThatLeavesWhileItsCheckWaitsIsClosedWhenTheVerdictComes) {
  // Long enough for the in-flight gauge (published at each tick, at most 1 s apart) to show the check.
  ASSERT_NO_FATAL_FAILURE(openClusterEngine("1500ms"));
  ASSERT_NO_FATAL_FAILURE(startServer());
  {
    Client gone = connect();
    ASSERT_TRUE(gone.connected());
    gone.send(rcpt(1000, "i1", "a@example.net", 0));
    ASSERT_EQ(waitForMetric("zetian_policy_checks_in_flight", 1), 1);
  }
  EXPECT_EQ(waitForMetric("zetian_policy_requests_total{state=\"RCPT\",action=\"dunno\"}", 1), 1);
  EXPECT_EQ(waitForMetric("zetian_policy_checks_in_flight", 0), 0);
  EXPECT_EQ(waitForMetric("zetian_policy_connections", 0), 0);
  Client next = connect();
  ASSERT_TRUE(next.connected());
  next.send(vrfy(2000));
  EXPECT_EQ(next.answer(), kDunno);
}

TEST_F(PolicyServerAsyncTest, StopWaitsForACheckInFlightButClosesItsConnectionAtOnce) {
  ASSERT_NO_FATAL_FAILURE(openClusterEngine("1500ms"));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0));
  ASSERT_EQ(waitForMetric("zetian_policy_checks_in_flight", 1), 1);  // published at the next tick
  std::thread stopper([this] { server_->stop(); });
  std::string got;
  EXPECT_TRUE(c.closedWithin(kWait, &got)) << "stop() closes every connection first";
  EXPECT_EQ(got, "");
  const auto closed = Clock::now();
  stopper.join();
  EXPECT_LT(Clock::now() - closed, 8s) << "stop() waits for the check (1.5 s at most), not for its 10 s bound";
  EXPECT_EQ(metric("zetian_policy_connections"), 0);
}

// Re-entry through a pipelined request. A verdict that comes back from the engine's
// cluster thread is answered through answered() -> flush() -> process(), which hands
// the connection's next pipelined request to Host::handle() at once, while
// Host::finish() is still on the stack. finish() must settle the session before it
// answers (policy_host.cpp), or:
// 1. a next request for another SMTP connection ends ("its smtpd moved on") and frees
//    the session finish() is still using (a heap-use-after-free under ASan);
// 2. a next request for the same SMTP connection starts its own check while another
//    connection's request queued on the session starts too: two checks in flight on one
//    engine session, against "a session runs one request at a time".
// Inline (node-scope) verdicts do not re-enter: process() is still on the stack. Postfix
// never pipelines, but any client of the policy socket may.

// 1., on one connection.
TEST_F(PolicyServerAsyncTest, APipelinedRequestForAnotherSmtpConnectionAfterAWaitingCheckIsServed) {
  ASSERT_NO_FATAL_FAILURE(openClusterEngine("300ms"));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  c.send(rcpt(1000, "i1", "a@example.net", 0) + rcpt(1001, "j1", "b@example.net", 0));
  EXPECT_EQ(c.answer(), kDunno);
  EXPECT_EQ(c.answer(), kDunno);
  EXPECT_EQ(waitForMetric("zetian_policy_sessions_closed_total{reason=\"ended\"}", 1), 1);
}

// 2.: failed in every build (two checks in flight at once).
TEST_F(PolicyServerAsyncTest, TwoConnectionsAskingAboutOneSmtpSessionAreCheckedOneAtATime) {
  constexpr auto kCheck = 2000ms;  // each cluster check waits this long for the first view
  ASSERT_NO_FATAL_FAILURE(openClusterEngine("2000ms"));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client a = connect();
  Client b = connect();
  ASSERT_TRUE(a.connected() && b.connected());
  // Connection a: two requests at once for SMTP connection 1000; the first waits.
  a.send(rcpt(1000, "i1", "a@example.net", 0) + rcpt(1000, "i1", "c@example.net", 2));
  ASSERT_EQ(waitForMetric("zetian_policy_checks_in_flight", 1), 1);
  // Connection b: the same SMTP connection, so it waits behind a's first request.
  b.send(rcpt(1000, "i1", "b@example.net", 1));
  ASSERT_EQ(a.answer(), kDunno);
  const auto first = Clock::now();
  long long most_in_flight = 0;
  std::string a_second, b_first;
  const auto deadline = first + kWait;
  while ((a_second.empty() || b_first.empty()) && Clock::now() < deadline) {
    most_in_flight = std::max(most_in_flight, metric("zetian_policy_checks_in_flight"));
    pollfd fds[2] = {{a.fd(), POLLIN, 0}, {b.fd(), POLLIN, 0}};
    if (::poll(fds, 2, 5) <= 0) continue;
    if (fds[0].revents && a_second.empty()) a_second = a.answer();
    if (fds[1].revents && b_first.empty()) b_first = b.answer();
  }
  const auto last = Clock::now();
  EXPECT_EQ(a_second, kDunno);
  EXPECT_EQ(b_first, kDunno);
  EXPECT_LE(most_in_flight, 1) << "two checks were in flight on one session";
  // One after the other: the second of the two ends a whole check after the first.
  EXPECT_GE(last - first, kCheck * 9 / 5)
      << "the two requests were checked at the same time: "
      << std::chrono::duration_cast<std::chrono::milliseconds>(last - first).count() << " ms";
}

// 2. then 1. (Re-entry above): connection a's third request is for another SMTP
// connection; when the verdict of its second comes back, the shared session must not be
// ended while b's check on it is still to run. Every request gets DUNNO in turn.
TEST_F(PolicyServerAsyncTest, ASessionIsNotClosedWhileACheckOnItIsInFlight) {
  ASSERT_NO_FATAL_FAILURE(openClusterEngine("1000ms"));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client a = connect();
  Client b = connect();
  Client probe = connect();
  ASSERT_TRUE(a.connected() && b.connected() && probe.connected());
  a.send(rcpt(1000, "i1", "a@example.net", 0) + rcpt(1000, "i1", "c@example.net", 2) +
         rcpt(1001, "j1", "d@example.net", 0));
  // a's bytes were written first: once the loop has answered the probe, it has read them
  // (epoll reports ready sockets in the order they became ready), so a's first request
  // is with the Host before b's arrives.
  probe.send(vrfy(3000));
  ASSERT_EQ(probe.answer(), kDunno);
  const auto sent = Clock::now();
  b.send(rcpt(1000, "i1", "b@example.net", 1));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(a.answer(), kDunno) << "a's answer " << i;
  EXPECT_EQ(b.answer(), kDunno);
  // Four checks, one after the other (b's and a's second share a session; a's are in
  // turn), each waiting 1 s: at least 4 s, less only if two ran at once.
  EXPECT_GE(Clock::now() - sent, 3500ms) << "two checks on one session ran at the same time";
  probe.send(vrfy(3000));
  EXPECT_EQ(probe.answer(), kDunno) << "the server is still serving";
  EXPECT_EQ(waitForMetric("zetian_policy_checks_in_flight", 0), 0);
}

}  // namespace
}  // namespace zetian::milter::policy
