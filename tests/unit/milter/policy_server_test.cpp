// policy::Server over real sockets, in front of a real engine (libzetian): answers,
// pipelining, every malformed input the policy host's issue names, timeouts, the
// connection cap, bounded memory, EOF, stop() and many concurrent connections. Most
// tests use node-scope rules, decided inline; PolicyServerAsyncTest runs cluster-scope
// rules on a node still forming, so verdicts come back later from the engine's cluster
// thread through the server's mailbox. Figures are read as the health socket reads
// them, through Server::report; one test reads them through the health socket itself.
// Three asynchronous tests guard Host::finish against re-entry (see "Re-entry" below).
//
// Waits are polls with a deadline (a socket closing, a figure reaching a value), never
// sleeps to synchronise; the deadlines are generous because the suite also runs under
// TSan and ASan on two loaded cores. Timing assertions are lower bounds (a server cannot
// be faster than its timeouts), which load cannot break, or upper bounds that are many
// times the expected figure (stop()).
#include "milter/policy_server.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "plugin/zetian.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::milter::policy {
namespace {

using namespace std::chrono_literals;
namespace ts = zetian::cluster::testing;
using Clock = std::chrono::steady_clock;

constexpr auto kWait = 15s;  // the most any one step may take, under TSan on a loaded machine
constexpr const char* kDunno = "action=DUNNO\n\n";

void appendTo(void* sink, const char* text, std::size_t length) {
  static_cast<std::string*>(sink)->append(text, length);
}

int remainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// A request as Postfix 3.7 sends it at RCPT, for SMTP connection `port` of `client`.
std::string rcpt(std::uint32_t port, const std::string& instance, const std::string& recipient, std::uint64_t count,
                 const std::string& client = "192.0.2.7") {
  return "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=" + client +
         "\nclient_name=unknown\nclient_port=" + std::to_string(port) +
         "\nreverse_client_name=unknown\nserver_address=192.0.2.1\nserver_port=25\nhelo_name=client.example\n"
         "sender=a@example.org\nrecipient=" +
         recipient + "\nrecipient_count=" + std::to_string(count) + "\nqueue_id=\ninstance=" + instance +
         "\nsize=0\netrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\n"
         "ccert_issuer=\nccert_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n"
         "policy_context=\n\n";
}

// VRFY is outside any message: always DUNNO, whatever the limits.
std::string vrfy(std::uint32_t port, const std::string& client = "192.0.2.7") {
  return "request=smtpd_access_policy\nprotocol_state=VRFY\nprotocol_name=ESMTP\nclient_address=" + client +
         "\nclient_port=" + std::to_string(port) +
         "\nserver_address=192.0.2.1\nserver_port=25\nrecipient=x@example.net\n\n";
}

// One policy connection from the test's side.
class Client {
 public:
  explicit Client(int fd) : fd_(fd) {}
  Client(Client&& other) noexcept : fd_(std::exchange(other.fd_, -1)), buffer_(std::move(other.buffer_)) {}
  Client& operator=(Client&&) = delete;
  Client(const Client&) = delete;
  ~Client() { close(); }

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void send(const std::string& bytes) { ts::sendAll(fd_, bytes); }
  void shutdownWrite() { ::shutdown(fd_, SHUT_WR); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // The next answer, its empty line included; "" when the server closed the connection
  // or nothing complete came within `timeout`.
  std::string answer(std::chrono::milliseconds timeout = kWait) {
    const auto deadline = Clock::now() + timeout;
    while (true) {
      const auto end = buffer_.find("\n\n");
      if (end != std::string::npos) {
        std::string out = buffer_.substr(0, end + 2);
        buffer_.erase(0, end + 2);
        return out;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, remainingMs(deadline)) <= 0) return "";
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return "";
      buffer_.append(buf, static_cast<std::size_t>(n));
    }
  }

  // Whether the server closed the connection (end of file or a reset) within `timeout`.
  // Whatever it sent before that, and what was left unread of earlier answers, goes to
  // *got.
  bool closedWithin(std::chrono::milliseconds timeout = kWait, std::string* got = nullptr) {
    bool closed = false;
    std::string rest = ts::readUntilClose(fd_, timeout, &closed);
    if (got) *got = buffer_ + rest;
    buffer_.clear();
    return closed;
  }

 private:
  int fd_ = -1;
  std::string buffer_;  // read past the last answer
};

class PolicyServerTest : public ::testing::Test {
 protected:
  // `rules`: [[ratelimit.rule]] tables. `start`: start the engine (its health socket).
  void openEngine(const std::string& rules, bool start = false) {
    std::ofstream(path_) << "[log]\nlevel = \"warn\"\ntarget = \"file\"\nfile = \"" << dir_ << "/zetian.log\"\n"
                         << "[health]\nsocket = \"" << health_socket_ << "\"\n"
                         << "[ratelimit]\nexempt = []\n"
                         << rules;
    std::string errors;
    engine_ = zetian_engine_open(
        path_.c_str(), nullptr, 0,
        [](void* ctx, const char* message) { *static_cast<std::string*>(ctx) += std::string(message) + "\n"; },
        &errors);
    ASSERT_NE(engine_, nullptr) << errors;
    if (start) {
      ASSERT_EQ(zetian_engine_start(engine_, nullptr, nullptr), 0);
    }
  }

  // Opens and starts a server on an ephemeral loopback port unless options.socket says
  // otherwise.
  void startServer(ServerOptions options = {}) {
    if (options.socket.empty()) options.socket = "inet:0@127.0.0.1";
    socket_ = options.socket;
    std::string error;
    server_ = Server::open(engine_, std::move(options), &error);
    ASSERT_NE(server_, nullptr) << error;
    server_->start();
  }

  void TearDown() override {
    if (reporter_set_) zetian_engine_set_reporter(engine_, nullptr, nullptr);
    server_.reset();
    if (engine_) zetian_engine_close(engine_);
  }

  static std::string rule(const std::string& name, const std::string& stage, long limit,
                          const std::string& action = "tempfail", const std::string& key = "client_ip") {
    return "[[ratelimit.rule]]\nname = \"" + name + "\"\nkey = \"" + key + "\"\nstage = \"" + stage +
           "\"\nlimit = " + std::to_string(limit) + "\nburst = " + std::to_string(limit) +
           "\nperiod = \"1h\"\nscope = \"node\"\naction = \"" + action + "\"\n";
  }
  // A node rule that never denies in these tests.
  static std::string generousRule() { return rule("generous", "rcpt", 100000000); }

  Client connect() {
    if (socket_.rfind("unix:", 0) == 0) return Client(ts::connectUnix(socket_.substr(5)));
    return Client(ts::connectTcp(static_cast<std::uint16_t>(server_->boundPort())));
  }

  std::string report(int what) const {
    std::string out;
    Server::report(server_.get(), what, &appendTo, &out);
    return out;
  }

  // The value of the sample `name` (labels included, as written), or -1 when absent.
  // Plain string scanning, no streams: it also runs with every descriptor taken, where
  // the sanitizers' checks of polymorphic objects (a pipe) fail.
  long long metric(const std::string& name) const {
    const std::string text = "\n" + report(ZETIAN_REPORT_METRICS);
    const auto at = text.find("\n" + name + " ");
    if (at == std::string::npos) return -1;
    return std::strtoll(text.c_str() + at + name.size() + 2, nullptr, 10);
  }

  // Polls until the sample reaches `value`; the last value read otherwise.
  long long waitForMetric(const std::string& name, long long value, std::chrono::milliseconds timeout = kWait) const {
    const auto deadline = Clock::now() + timeout;
    long long now = metric(name);
    while (now != value && Clock::now() < deadline) {
      std::this_thread::sleep_for(2ms);  // polling interval, not synchronisation
      now = metric(name);
    }
    return now;
  }

  long long malformedTotal() const {
    long long total = 0;
    const std::string text = "\n" + report(ZETIAN_REPORT_METRICS);
    const std::string prefix = "\nzetian_policy_malformed_total{";
    for (auto at = text.find(prefix); at != std::string::npos; at = text.find(prefix, at + 1))
      total += std::strtoll(text.c_str() + text.find(' ', at), nullptr, 10);
    return total;
  }

  std::string log() const {
    std::ifstream in(dir_ + "/zetian.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  // Polls the log file until it contains `text`.
  bool waitForLog(const std::string& text) const {
    const auto deadline = Clock::now() + kWait;
    while (log().find(text) == std::string::npos) {
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(5ms);  // polling interval
    }
    return true;
  }

  // A fresh connection still gets its answer.
  void expectServed(std::uint32_t port = 9000) {
    Client c = connect();
    ASSERT_TRUE(c.connected());
    c.send(rcpt(port, "fresh", "fresh@example.net", 0, "198.51.100.200"));
    EXPECT_EQ(c.answer(), kDunno) << "a fresh connection is served";
  }

  ts::TempDir temp_;
  const std::string dir_ = temp_.path();
  const std::string path_ = dir_ + "/zetian.toml";
  const std::string health_socket_ = dir_ + "/health.sock";
  zetian_engine* engine_ = nullptr;
  std::unique_ptr<Server> server_;
  std::string socket_;
  bool reporter_set_ = false;
};

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
