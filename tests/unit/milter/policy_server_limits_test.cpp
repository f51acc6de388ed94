// policy::Server at the edges of its resources: out of file descriptors, a client
// that sends megabytes without a newline or never reads its answers, and input that
// ends inside or between requests. Shared fixture: policy_server_test_support.h.

#include <gtest/gtest.h>

#include "tests/unit/milter/policy_server_test_support.h"

namespace zetian::milter::policy {
namespace {

using namespace server_test;

// ---- out of descriptors -----------------------------------------------------------

// Takes every descriptor the process may still open (under a soft limit lowered to
// just above the highest in use, so there are few) but `spare`; gives them back and
// restores the limit on release() or destruction, also when an assertion ends a test.
class DescriptorExhaustion {
 public:
  explicit DescriptorExhaustion(int spare) {
    ok_ = ::getrlimit(RLIMIT_NOFILE, &saved_) == 0;
    base_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (!ok_ || base_ < 0) return;
    int highest = base_;
    const int scan = static_cast<int>(std::min<rlim_t>(saved_.rlim_cur, 65536));
    for (int fd = 0; fd < scan; ++fd)
      if (::fcntl(fd, F_GETFD) != -1) highest = fd;
    rlimit lowered = saved_;
    lowered.rlim_cur = static_cast<rlim_t>(highest) + 32;
    ok_ = ::setrlimit(RLIMIT_NOFILE, &lowered) == 0;
    for (int fd; ok_ && (fd = ::dup(base_)) >= 0;) taken_.push_back(fd);
    ok_ = ok_ && errno == EMFILE && static_cast<int>(taken_.size()) >= spare;
    for (int i = 0; ok_ && i < spare; ++i) {
      ::close(taken_.back());
      taken_.pop_back();
    }
  }
  ~DescriptorExhaustion() { release(); }
  bool ok() const { return ok_; }
  void release() {
    for (const int fd : taken_) ::close(fd);
    taken_.clear();
    if (base_ >= 0) ::close(base_);
    base_ = -1;
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }

 private:
  rlimit saved_{};
  int base_ = -1;
  bool ok_ = false;
  std::vector<int> taken_;
};

TEST_F(PolicyServerTest, OutOfDescriptorsTheListenerPausesInsteadOfSpinningThenServes) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  expectServed(9000);
  // The server closes its end of that connection on its own thread; were it to do so
  // after the descriptors are taken, it would free one and accept the waiting client.
  ASSERT_EQ(waitForMetric("zetian_policy_connections", 0), 0);
  const std::string errors = "zetian_policy_accept_errors_total";
  long long at_first = -1;
  long long at_fourth = -1;
  Clock::duration first_to_fourth{};
  bool waiting_connected = false;
  std::optional<Client> waiting;
  {
    DescriptorExhaustion exhaustion(1);
    ASSERT_TRUE(exhaustion.ok());
    waiting.emplace(connect());  // the last descriptor: the server cannot accept it
    waiting_connected = waiting->connected();
    if (waiting_connected) {
      waiting->send(rcpt(1000, "i1", "a@example.net", 0));
      const auto deadline = Clock::now() + kWait;
      while ((at_first = metric(errors)) < 1 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
      const auto first = Clock::now();
      while ((at_fourth = metric(errors)) < 4 && Clock::now() < deadline) std::this_thread::sleep_for(1ms);
      first_to_fourth = Clock::now() - first;
    }
    // Descriptors come back before any assertion: a failure message printed with none
    // left would trip the sanitizers' own need for descriptors, hiding the real cause.
  }
  ASSERT_TRUE(waiting_connected);
  ASSERT_GE(at_first, 1) << "the listener counted no accept error while out of descriptors";
  ASSERT_GE(at_fourth, 4);
  // Three 100 ms pauses between the first failure and the fourth; a listener retrying
  // at once would fail thousands of times in that while.
  EXPECT_GE(first_to_fourth, 250ms) << at_fourth << " accept errors";
  EXPECT_EQ(waiting->answer(), kDunno) << "the waiting connection is served once descriptors are back";
  EXPECT_TRUE(waitForLog("policy_accept_failed error=\"Too many open files\""));
  expectServed(9001);
}

// ---- bounded memory ---------------------------------------------------------------

// A Unix socket client whose own send buffer is small: on a Unix stream socket the
// bytes in flight are bounded by the sender's buffer, so what send() accepted is at
// most what the server read plus a few KiB.
int smallBufferUnixClient(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int small = 4096;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

struct StreamResult {
  std::size_t accepted = 0;  // bytes send() took
  bool closed = false;       // the server hung up (EPIPE, ECONNRESET)
  bool stalled = false;      // nothing more could be written for `stall`
};

// Writes `total` bytes from `chunk` repeated, until the server hangs up, stops reading
// for `stall`, or the deadline passes.
StreamResult stream(int fd, const std::string& chunk, std::size_t total, std::chrono::milliseconds stall) {
  StreamResult r;
  const auto deadline = Clock::now() + 60s;
  std::size_t offset = 0;
  while (r.accepted < total && Clock::now() < deadline) {
    const std::size_t want = std::min(chunk.size() - offset, total - r.accepted);
    const ssize_t n = ::send(fd, chunk.data() + offset, want, MSG_NOSIGNAL);
    if (n > 0) {
      r.accepted += static_cast<std::size_t>(n);
      offset = (offset + static_cast<std::size_t>(n)) % chunk.size();
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
      r.closed = true;
      return r;
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return r;
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, static_cast<int>(stall.count())) == 0) {
      r.stalled = true;
      return r;
    }
  }
  return r;
}

TEST_F(PolicyServerTest, TenMegabytesWithoutANewlineAreRefusedAfterTheFirstLineLimit) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ServerOptions options;
  options.socket = "unix:" + dir_ + "/policy.sock";
  ASSERT_NO_FATAL_FAILURE(startServer(options));
  const int fd = smallBufferUnixClient(dir_ + "/policy.sock");
  ASSERT_GE(fd, 0);
  Client c(fd);
  const StreamResult r = stream(fd, std::string(65536, 'a'), 10u << 20, kWait);
  EXPECT_TRUE(r.closed) << "accepted " << r.accepted << " bytes, stalled=" << r.stalled;
  // The server reads at most one 16 KiB piece past the 8 KiB line limit before closing;
  // with the few KiB in flight, anything near 64 KiB means it kept reading.
  EXPECT_LT(r.accepted, 64u * 1024) << "the server read on after the line limit";
  RecordProperty("bytes_accepted", static_cast<int>(r.accepted));
  std::cout << "[   INFO   ] 10 MB stream without LF: the server took " << r.accepted << " bytes before closing\n";
  EXPECT_EQ(waitForMetric("zetian_policy_malformed_total{reason=\"line_too_long\"}", 1), 1);
  expectServed();
}

TEST_F(PolicyServerTest, TenMegabytesWithoutANewlineOverTcpAreRefusedLongBeforeTheEnd) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  Client c = connect();
  ASSERT_TRUE(c.connected());
  // A fixed send buffer (no autotuning up to 4 MB): what send() took is then what the
  // server read, what waits in its receive window (128 KiB at first) and 32 KiB here.
  const int small = 16384;
  ::setsockopt(c.fd(), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  ::fcntl(c.fd(), F_SETFL, ::fcntl(c.fd(), F_GETFL) | O_NONBLOCK);
  const StreamResult r = stream(c.fd(), std::string(65536, 'a'), 10u << 20, kWait);
  EXPECT_TRUE(r.closed) << "accepted " << r.accepted << " bytes, stalled=" << r.stalled;
  EXPECT_LT(r.accepted, 1u << 20) << "the server read on after the line limit";
  std::cout << "[   INFO   ] 10 MB over TCP without LF: " << r.accepted << " bytes accepted before the reset\n";
  EXPECT_EQ(waitForMetric("zetian_policy_malformed_total{reason=\"line_too_long\"}", 1), 1);
}

TEST_F(PolicyServerTest, AClientThatPipelinesWithoutReadingAnswersIsNotReadFurther) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ServerOptions options;
  options.socket = "unix:" + dir_ + "/policy.sock";
  ASSERT_NO_FATAL_FAILURE(startServer(options));
  const int fd = smallBufferUnixClient(dir_ + "/policy.sock");
  ASSERT_GE(fd, 0);
  Client c(fd);
  const std::string request = vrfy(1000);
  // Whole requests, 10 MB of them, and never a read: once the answers fill the socket,
  // the server must stop reading (one request at a time), so the writes stall.
  const StreamResult r = stream(fd, request, request.size() * ((10u << 20) / request.size()), 2s);
  EXPECT_TRUE(r.stalled) << "accepted " << r.accepted << " bytes, closed=" << r.closed;
  EXPECT_LT(r.accepted, 2u << 20) << "the server kept reading requests it could not answer";
  std::cout << "[   INFO   ] pipelining without reading: " << r.accepted << " bytes accepted before the stall\n";
  for (int i = 0; i < 100; ++i) ASSERT_EQ(c.answer(), kDunno) << i;
  EXPECT_EQ(malformedTotal(), 0);
}

// ---- end of input -----------------------------------------------------------------

TEST_F(PolicyServerTest, EndOfInputInsideARequestIsATruncatedRequest) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  for (const std::string& partial : {std::string("request=smtpd_access_policy\nprotocol_state=RCPT\n"),
                                    std::string("request=smtpd_acc")}) {
    Client c = connect();
    ASSERT_TRUE(c.connected());
    c.send(partial);
    c.shutdownWrite();
    std::string got;
    EXPECT_TRUE(c.closedWithin(kWait, &got)) << partial;
    EXPECT_EQ(got, "");
  }
  EXPECT_EQ(waitForMetric("zetian_policy_malformed_total{reason=\"truncated_request\"}", 2), 2);
  EXPECT_EQ(malformedTotal(), 2);
  expectServed();
}

TEST_F(PolicyServerTest, EndOfInputBetweenRequestsClosesQuietlyAfterEveryAnswer) {
  ASSERT_NO_FATAL_FAILURE(openEngine(generousRule()));
  ASSERT_NO_FATAL_FAILURE(startServer());
  {
    Client c = connect();
    ASSERT_TRUE(c.connected());
    c.send(rcpt(1000, "i1", "a@example.net", 0));
    ASSERT_EQ(c.answer(), kDunno);
    c.shutdownWrite();
    std::string got;
    EXPECT_TRUE(c.closedWithin(kWait, &got));
    EXPECT_EQ(got, "");
  }
  {
    // Three requests and the end of input in one write: all three are answered first.
    Client c = connect();
    ASSERT_TRUE(c.connected());
    c.send(rcpt(1001, "j1", "a@example.net", 0) + rcpt(1001, "j1", "b@example.net", 1) + vrfy(1001));
    c.shutdownWrite();
    std::string got;
    EXPECT_TRUE(c.closedWithin(kWait, &got));
    EXPECT_EQ(got, std::string(kDunno) + kDunno + kDunno);
  }
  EXPECT_EQ(waitForMetric("zetian_policy_connections", 0), 0);
  EXPECT_EQ(malformedTotal(), 0) << "Postfix closing between requests is not malformed";
  EXPECT_EQ(log().find("policy_request_malformed"), std::string::npos) << log();
}

}  // namespace
}  // namespace zetian::milter::policy
