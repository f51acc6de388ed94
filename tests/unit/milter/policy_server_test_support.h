// What the policy server tests share: a request as Postfix sends it, a client
// connection, and the fixture that opens a real engine and starts a Server in front of
// it. The tests are in policy_server_test.cpp (answers, malformed input, timeouts,
// the connection cap, stop, many connections, figures), policy_server_limits_test.cpp
// (descriptors, memory, end of input) and policy_server_async_test.cpp (verdicts that
// come later from the cluster thread); the opening note of policy_server_test.cpp says
// how they wait.
#pragma once

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

namespace zetian::milter::policy::server_test {

using namespace std::chrono_literals;
namespace ts = zetian::cluster::testing;
using Clock = std::chrono::steady_clock;

inline constexpr auto kWait = 15s;  // the most any one step may take, under TSan on a loaded machine
inline constexpr const char* kDunno = "action=DUNNO\n\n";

inline void appendTo(void* sink, const char* text, std::size_t length) {
  static_cast<std::string*>(sink)->append(text, length);
}

inline int remainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

// A request as Postfix 3.7 sends it at RCPT, for SMTP connection `port` of `client`.
inline std::string rcpt(std::uint32_t port, const std::string& instance, const std::string& recipient, std::uint64_t count,
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
inline std::string vrfy(std::uint32_t port, const std::string& client = "192.0.2.7") {
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


}  // namespace zetian::milter::policy::server_test
