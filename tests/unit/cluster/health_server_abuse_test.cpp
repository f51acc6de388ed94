// The health server under abuse: pipelining clients that never read, connection and
// request limits, slow requests, running out of descriptors. Each test bounds what
// it measures (bytes buffered, connections held, accept errors) and polls with a deadline.
#include "cluster/health_server.h"

#include <dirent.h>
#include <event2/event.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <filesystem>
#include <mutex>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "cluster/accept_guard.h"
#include "tests/unit/cluster/health_server_fixture.h"

namespace zetian::cluster {
namespace {

using namespace std::chrono_literals;

// Polls `done` until it holds or `timeout` passes; returns its last answer.
template <typename Fn>
bool eventually(Fn done, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

void makeNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

TEST_F(HealthServerTest, APipeliningClientThatNeverReadsIsHeldToBoundedMemory) {
  HealthServerOptions o = options();
  o.output_watermark = 64 * 1024;
  startOrFail(o);
  const int flood = connectUnix(socket_path);
  ASSERT_GE(flood, 0);
  makeNonBlocking(flood);
  const std::string request = "GET /live HTTP/1.1\r\nHost: x\r\n\r\n";
  std::string batch;
  for (int i = 0; i < 100; ++i) batch += request;
  // Write until the server stops taking requests (its reading is paused, the kernel
  // buffers are full) or 100,000 requests are out.
  std::size_t sent = 0;
  while (sent < 100'000 * request.size()) {
    const ssize_t n = send(flood, batch.data(), batch.size(), MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      if (static_cast<std::size_t>(n) < batch.size()) batch = batch.substr(n) + batch.substr(0, n);
      continue;
    }
    ASSERT_TRUE(errno == EAGAIN || errno == EWOULDBLOCK) << std::strerror(errno);
    pollfd p{flood, POLLOUT, 0};
    if (poll(&p, 1, 500) == 0) break;  // not writable for 0.5 s: the server stopped reading
  }
  EXPECT_GT(sent / request.size(), 2000u) << "the client should have got thousands of requests out";

  // What the server holds for it: at most the watermark, one reply and one request.
  const std::size_t bound = o.output_watermark + o.max_header_bytes + o.max_body_bytes + 4096;
  HealthServerStats stats = harness.stats();
  EXPECT_EQ(stats.connections, 1u);
  EXPECT_LE(stats.buffered_bytes, bound);

  // Others are still served meanwhile, and the flood's buffers have not grown.
  EXPECT_EQ(overUnix("GET", "/live").status, 200);
  stats = harness.stats();
  EXPECT_LE(stats.buffered_bytes, bound);

  // Once it leaves, the connection and its buffers are gone.
  close(flood);
  EXPECT_TRUE(eventually([&] {
    const HealthServerStats s = harness.stats();
    return s.connections == 0 && s.buffered_bytes == 0;
  }));
}

TEST_F(HealthServerTest, AConnectionOverTheCapIsClosedAtOnceAndTheOthersAreServed) {
  HealthServerOptions o = options();
  o.max_connections = 4;
  auto lines = std::make_shared<std::pair<std::mutex, std::vector<std::string>>>();
  o.log = [lines](conf::LogLevel, std::string_view line) {
    std::lock_guard lock(lines->first);
    lines->second.emplace_back(line);
  };
  startOrFail(o);
  std::vector<int> held;
  for (int i = 0; i < 4; ++i) {
    held.push_back(connectUnix(socket_path));
    ASSERT_GE(held.back(), 0);
  }
  ASSERT_TRUE(eventually([&] { return harness.stats().connections == 4; }));

  const int extra = connectUnix(socket_path);
  ASSERT_GE(extra, 0);
  bool closed = false;
  const auto before = std::chrono::steady_clock::now();
  const std::string got = testing::readUntilClose(extra, 5s, &closed);
  close(extra);
  EXPECT_TRUE(closed);
  EXPECT_EQ(got, "");
  EXPECT_LT(std::chrono::steady_clock::now() - before, 3s);
  EXPECT_EQ(harness.stats().refused_connections, 1u);
  {
    std::lock_guard lock(lines->first);
    ASSERT_EQ(lines->second.size(), 1u);
    EXPECT_NE(lines->second[0].find("health_connection_refused listener=health_unix"), std::string::npos);
    EXPECT_NE(lines->second[0].find("max_connections=4"), std::string::npos) << lines->second[0];
  }

  // A connection that was already there is answered.
  const RawReply r = roundTrip(held[0], simpleRequest("GET", "/live"));
  EXPECT_EQ(r.status, 200);
  for (std::size_t i = 1; i < held.size(); ++i) close(held[i]);
  // With room again, a new connection is served.
  EXPECT_TRUE(eventually([&] { return harness.stats().connections == 0; }));
  EXPECT_EQ(overUnix("GET", "/live").status, 200);
}

TEST_F(HealthServerTest, ARequestTricklingInIsCutOffAtTheRequestTimeout) {
  HealthServerOptions o = options();
  o.io_timeout = 3s;          // each byte arrives well within this, even on a loaded machine
  o.request_timeout = 800ms;  // but the whole request never does
  startOrFail(o);
  const int fd = connectUnix(socket_path);
  ASSERT_GE(fd, 0);
  const std::string request = simpleRequest("GET", "/live");
  const auto before = std::chrono::steady_clock::now();
  std::string raw;
  bool closed = false;
  for (std::size_t i = 0; i < request.size() && !closed; ++i) {
    testing::sendAll(fd, request.substr(i, 1));
    raw += testing::readUntilClose(fd, 100ms, &closed);
  }
  if (!closed) raw += testing::readUntilClose(fd, 5s, &closed);
  close(fd);
  EXPECT_TRUE(closed);
  EXPECT_EQ(testing::parseRaw(raw).status, 408) << raw;
  EXPECT_LT(std::chrono::steady_clock::now() - before, 4s);
  EXPECT_EQ(harness.stats().timed_out_requests, 1u);
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(HealthServerTest, PipelinedRequestsAreAnsweredInOrder) {
  startOrFail(options());
  const int fd = connectUnix(socket_path);
  ASSERT_GE(fd, 0);
  testing::sendAll(fd,
                   "GET /live HTTP/1.1\r\n\r\nHEAD /health HTTP/1.1\r\n\r\n"
                   "POST /nope HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                   "GET /ready HTTP/1.0\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n");
  const std::string raw = testing::readUntilClose(fd, 5s);
  close(fd);
  // The HTTP/1.0 request ends the connection; /metrics after it is never read.
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"live", "health", "ready"}));
  const std::size_t live = raw.find("{\"method\":\"live\"}");
  const std::size_t nope = raw.find("404 Not Found");
  const std::size_t ready = raw.find("{\"method\":\"ready\"}");
  EXPECT_NE(live, std::string::npos) << raw;
  EXPECT_NE(ready, std::string::npos) << raw;
  EXPECT_LT(live, nope);
  EXPECT_LT(nope, ready);
  EXPECT_EQ(raw.find("{\"method\":\"health\"}"), std::string::npos) << "HEAD sent a body";
}

TEST_F(HealthServerTest, OversizedHeadersGet431) {
  startOrFail(options());
  const int fd = connectUnix(socket_path);
  ASSERT_GE(fd, 0);
  const RawReply r = roundTrip(fd, "GET /health HTTP/1.1\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n");
  EXPECT_EQ(r.status, 431);
  EXPECT_TRUE(api.calls().empty());
}

TEST(ThrottledLog, LetsOneLineThroughPerPeriodAndCountsWhatItHeldBack) {
  ThrottledLog log(std::chrono::seconds(10));
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  std::uint64_t held = 99;
  EXPECT_TRUE(log.admit(t0, &held));
  EXPECT_EQ(held, 0u);
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(log.admit(t0 + std::chrono::milliseconds(i), &held));
  EXPECT_FALSE(log.admit(t0 + std::chrono::milliseconds(9999), &held));
  EXPECT_TRUE(log.admit(t0 + std::chrono::seconds(10), &held));
  EXPECT_EQ(held, 1001u);
  EXPECT_TRUE(log.admit(t0 + std::chrono::seconds(25), &held));
  EXPECT_EQ(held, 0u);
}

// ---- descriptor exhaustion, in a child process with a low RLIMIT_NOFILE ----------

struct ChildStats {
  std::uint64_t accept_errors = 0;
  std::uint64_t shed = 0;
  std::uint64_t cpu_us = 0;
  std::uint64_t log_lines = 0;
};

// The server side, run in a forked child on its own event loop (the child has only
// this thread). Commands on `commands`: 's' reports a ChildStats line on `reports`,
// 'q' stops. Returns the exit code.
int runStarvedServer(const std::string& path, int commands, int reports, int spare_fds) {
  event_base* base = event_base_new();
  if (base == nullptr) return 10;
  testing::FakeAdmin api;
  std::uint64_t log_lines = 0;
  HealthServerOptions o;
  o.unix_path = path;
  o.io_timeout = 60s;
  o.request_timeout = 60s;
  o.max_connections = 1000;  // the descriptors run out first
  o.log = [&log_lines](conf::LogLevel, std::string_view) { ++log_lines; };
  int code = 0;
  {
    HealthServer server(base, api, o);
    std::string error;
    if (!server.start(&error)) return 11;
    // The limit sits just above the lowest `spare_fds` free numbers: the server can
    // open that many more descriptors (the runner may leave holes and high fds open).
    std::set<int> open_fds;
    if (DIR* d = opendir("/proc/self/fd")) {
      const int own = dirfd(d);
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] != '.' && std::atoi(e->d_name) != own) open_fds.insert(std::atoi(e->d_name));
      }
      closedir(d);
    }
    int limit = 0;
    for (int free_found = 0; free_found < spare_fds; ++limit) {
      if (open_fds.count(limit) == 0) ++free_found;
    }
    const rlimit low{static_cast<rlim_t>(limit), static_cast<rlim_t>(limit)};
    if (setrlimit(RLIMIT_NOFILE, &low) != 0) return 12;
    struct Control {
      event_base* base;
      HealthServer* server;
      int reports;
      std::uint64_t* log_lines;
    } control{base, &server, reports, &log_lines};
    event* ev = event_new(
        base, commands, EV_READ | EV_PERSIST,
        [](int fd, short, void* arg) {
          auto* c = static_cast<Control*>(arg);
          char command = 'q';
          if (read(fd, &command, 1) != 1 || command == 'q') {
            event_base_loopbreak(c->base);
            return;
          }
          rusage usage{};
          getrusage(RUSAGE_SELF, &usage);
          const std::uint64_t cpu_us =
              static_cast<std::uint64_t>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1'000'000 +
              static_cast<std::uint64_t>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
          const HealthServerStats s = c->server->stats();
          const std::string line = std::to_string(s.accept_errors) + " " + std::to_string(s.shed_connections) +
                                   " " + std::to_string(cpu_us) + " " + std::to_string(*c->log_lines) + "\n";
          if (write(c->reports, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
            event_base_loopbreak(c->base);
          }
        },
        &control);
    event_add(ev, nullptr);
    if (write(reports, "ready\n", 6) != 6) code = 13;
    if (code == 0) event_base_dispatch(base);
    event_free(ev);
  }
  event_base_free(base);
  return code;
}

std::string readLine(int fd, std::chrono::milliseconds timeout) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (line.empty() || line.back() != '\n') {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) return {};
    char c = 0;
    if (read(fd, &c, 1) != 1) return {};
    line.push_back(c);
  }
  return line;
}

TEST(HealthServerDescriptors, OutOfDescriptorsTheListenerBacksOffAndRecovers) {
  // A child that died makes a write to its command pipe fail with EPIPE (and the test
  // fail with a message) instead of killing the test binary.
  signal(SIGPIPE, SIG_IGN);
  TempDir dir;
  const std::string path = dir.file("health.sock");
  int commands[2];
  int reports[2];
  ASSERT_EQ(pipe2(commands, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(reports, O_CLOEXEC), 0);
  constexpr int kServerSockets = 6;
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(commands[1]);
    close(reports[0]);
    _exit(runStarvedServer(path, commands[0], reports[1], kServerSockets));
  }
  close(commands[0]);
  close(reports[1]);
  const auto ask = [&] {
    ChildStats s;
    if (write(commands[1], "s", 1) != 1) return s;
    const std::string line = readLine(reports[0], 10s);
    std::sscanf(line.c_str(), "%lu %lu %lu %lu", &s.accept_errors, &s.shed, &s.cpu_us, &s.log_lines);
    return s;
  };
  const auto finish = [&] {
    (void)!write(commands[1], "q", 1);
    int status = 0;
    const bool exited = eventually([&] { return waitpid(child, &status, WNOHANG) == child; });
    if (!exited) {
      kill(child, SIGKILL);  // our own child, by pid
      waitpid(child, &status, 0);
    }
    close(commands[1]);
    close(reports[0]);
    return exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  if (readLine(reports[0], 10s) != "ready\n") {
    ADD_FAILURE() << "the child server did not start";
    finish();
    return;
  }

  // More clients than the server has descriptors for: they queue in the backlog.
  std::vector<int> clients;
  for (int i = 0; i < 3 * kServerSockets; ++i) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      clients.push_back(fd);
    } else {
      close(fd);
    }
  }
  EXPECT_EQ(clients.size(), std::size_t{3 * kServerSockets});
  ChildStats first;
  EXPECT_TRUE(eventually([&] {
    first = ask();
    return first.accept_errors >= 1;
  })) << "accept() never failed: the descriptor limit did not bite";

  // Out of descriptors, the loop must not spin: over one second, a spinning loop
  // burns the whole second and fails accept() hundreds of thousands of times; with a
  // 100 ms back-off it fails about ten times and sleeps in between.
  const auto window_start = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(1s);  // a measurement window, not a synchronisation
  const ChildStats second = ask();
  const double window_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
  EXPECT_LT(second.cpu_us - first.cpu_us, 100'000u) << "over " << window_s << " s";
  EXPECT_LE(second.accept_errors - first.accept_errors, 5 + static_cast<std::uint64_t>(window_s * 15));
  EXPECT_LE(second.log_lines, 1u) << "the accept-failure line is throttled";

  // The backlog keeps moving: queued clients are shed (closed unheard).
  EXPECT_TRUE(eventually([&] { return ask().shed >= 1; }));

  // Once descriptors are free again, the server answers.
  for (const int fd : clients) close(fd);
  int status = 0;
  EXPECT_TRUE(eventually([&] {
    status = roundTrip(connectUnix(path), simpleRequest("GET", "/live")).status;
    return status == 200;
  }, 15s)) << "last status " << status;
  EXPECT_EQ(finish(), 0);
}

}  // namespace
}  // namespace zetian::cluster
