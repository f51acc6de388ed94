// The StatsD exporter on a real loop, sending to UDP sockets standing in for agents:
// what arrives, in datagrams of what size, across a change of settings, and what a
// down agent costs. Every Exporter call runs on the loop thread (Loop::call).
#include "cluster/statsd/exporter.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace zetian::cluster::statsd {
namespace {

using namespace std::chrono_literals;

// A bound UDP socket; recv() waits at most `timeout` for one datagram.
class Agent {
 public:
  Agent() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    socklen_t length = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length);
    port_ = ntohs(addr.sin_port);
  }
  ~Agent() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  std::uint16_t port() const { return port_; }
  std::optional<std::string> recv(std::chrono::milliseconds timeout = 5s) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0) return std::nullopt;
    return std::string(buf, static_cast<std::size_t>(n));
  }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

conf::StatsdSection settingsFor(std::uint16_t port, std::chrono::milliseconds interval = 10min) {
  conf::StatsdSection s;
  s.address = conf::HostPort{"127.0.0.1", port};
  s.interval = interval;
  return s;
}

class StatsdExporterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loop_.start();
    ASSERT_TRUE(loop_.call(
        [this] {
          exporter_ = std::make_unique<Exporter>(
              loop_, [this] { return text(); },
              [this](conf::LogLevel, std::string_view line) {
                std::lock_guard lock(mutex_);
                logs_.emplace_back(line);
              });
          return true;
        },
        5s));
  }
  void TearDown() override {
    loop_.call([this] { exporter_.reset(); return true; }, 5s);
    loop_.stop();
  }

  void setText(std::string text) {
    std::lock_guard lock(mutex_);
    text_ = std::move(text);
  }
  std::string text() {
    std::lock_guard lock(mutex_);
    return text_;
  }
  std::vector<std::string> logs() {
    std::lock_guard lock(mutex_);
    return logs_;
  }
  bool configure(const conf::StatsdSection& s, bool from_zero = true) {
    return *loop_.call([&] { std::string error; return exporter_->configure(s, from_zero, &error); }, 5s);
  }
  void push() { loop_.call([this] { exporter_->push(); return true; }, 5s); }
  ExporterStats stats() { return *loop_.call([this] { return exporter_->stats(); }, 5s); }

  Loop loop_;
  std::unique_ptr<Exporter> exporter_;  // loop thread only
  std::mutex mutex_;                    // guards text_ and logs_
  std::string text_ = "# TYPE zetian_c counter\nzetian_c{r=\"x\"} 5\n# TYPE zetian_g gauge\nzetian_g 2\n";
  std::vector<std::string> logs_;
};

TEST_F(StatsdExporterTest, APushSendsTheLinesToTheAgent) {
  Agent agent;
  ASSERT_TRUE(configure(settingsFor(agent.port())));
  push();
  EXPECT_EQ(agent.recv(), "zetian.c:5|c|#r:x\nzetian.g:2|g");
  const ExporterStats s = stats();
  EXPECT_EQ(s.pushes, 1u);
  EXPECT_EQ(s.datagrams_sent, 1u);
  EXPECT_EQ(s.bytes_sent, std::string("zetian.c:5|c|#r:x\nzetian.g:2|g").size());
  EXPECT_EQ(s.send_errors, 0u);
}

TEST_F(StatsdExporterTest, TheTimerPushesEveryInterval) {
  Agent agent;
  ASSERT_TRUE(configure(settingsFor(agent.port(), 20ms)));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(agent.recv().has_value()) << "push " << i;
}

TEST_F(StatsdExporterTest, ManyLinesArePackedIntoDatagramsThatFitTheMtu) {
  std::string text = "# TYPE zetian_g gauge\n";
  for (int i = 0; i < 300; ++i) text += "zetian_g{rule=\"rule_number_" + std::to_string(i) + "\"} " + std::to_string(i) + "\n";
  setText(text);
  Agent agent;
  ASSERT_TRUE(configure(settingsFor(agent.port())));
  push();
  const std::uint64_t datagrams = stats().datagrams_sent;
  EXPECT_GT(datagrams, 1u);
  std::size_t lines = 0;
  for (std::uint64_t i = 0; i < datagrams; ++i) {
    const auto d = agent.recv();
    ASSERT_TRUE(d.has_value());
    EXPECT_LE(d->size(), kMaxDatagramBytes);
    lines += 1 + static_cast<std::size_t>(std::count(d->begin(), d->end(), '\n'));
  }
  EXPECT_EQ(lines, 300u);
}

TEST_F(StatsdExporterTest, NewSettingsKeepTheCountersAndMoveToTheNewAddress) {
  Agent first, second;
  ASSERT_TRUE(configure(settingsFor(first.port())));
  push();
  ASSERT_EQ(first.recv(), "zetian.c:5|c|#r:x\nzetian.g:2|g");
  conf::StatsdSection next = settingsFor(second.port());
  next.prefix = "mx";
  next.tags = conf::StatsdTags::None;
  ASSERT_TRUE(configure(next, false));
  setText("# TYPE zetian_c counter\nzetian_c{r=\"x\"} 7\n");
  push();
  EXPECT_EQ(second.recv(), "mx.c.x:2|c");  // the change since the push to the first agent
  EXPECT_FALSE(first.recv(100ms).has_value());
}

TEST_F(StatsdExporterTest, StartedLateTheFirstPushSendsOnlyWhatIsNew) {
  Agent agent;
  setText("# TYPE zetian_c counter\nzetian_c 100\n");
  ASSERT_TRUE(configure(settingsFor(agent.port()), false));
  setText("# TYPE zetian_c counter\nzetian_c 104\n");
  push();
  EXPECT_EQ(agent.recv(), "zetian.c:4|c");
}

TEST_F(StatsdExporterTest, ADownAgentCostsCountedErrorsAndOneLogLineAMinute) {
  Agent agent;
  ASSERT_TRUE(configure(settingsFor(agent.port())));
  agent.close();  // the port answers "unreachable": the next send fails with ECONNREFUSED
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (stats().send_errors < 3 && std::chrono::steady_clock::now() < deadline) push();
  EXPECT_GE(stats().send_errors, 3u);
  const auto lines = logs();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("statsd_send_failed"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("Connection refused"), std::string::npos) << lines[0];
}

}  // namespace
}  // namespace zetian::cluster::statsd
