// zetianctl end to end: the real binary, run as a subprocess, against a real
// HealthServer on a temp-dir Unix socket with a scripted engine behind it, or against
// a ScriptedServer for the replies and failures a healthy server never produces.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "plugin/zetian.h"
#include "tests/unit/cluster/test_support.h"

#ifndef ZETIANCTL_PATH
#error "ZETIANCTL_PATH must name the zetianctl binary under test"
#endif

namespace zetian::cluster {
namespace {

using namespace std::chrono_literals;
using testing::FakeAdmin;
using testing::ProcessResult;
using testing::ServerHarness;
using testing::TempDir;
using testing::runProcess;

constexpr const char* kHealth =
    R"({"node_id":"mx1","status":"ok","version":"0.1.0","uptime_s":93784,"maintenance":false,)"
    R"("members":[{"id":"mx1","address":"10.0.0.1:7946","region":"eu","status":"alive",)"
    R"("last_seen":"2026-11-27T05:28:29.161Z","keys_owned":1234,)"
    R"("load":{"sessions":12,"messages_per_s":3.25}},)"
    R"({"id":"mx2","address":"10.0.0.2:7946","status":"suspect",)"
    R"("load":{"sessions":0,"messages_per_s":0}}]})";

constexpr const char* kLimits =
    R"({"limits":[{"rule":"per-client-ip","key":"192.0.2.1","remaining":3,"retry_after_s":0,)"
    R"("limit":100,"period":"1h"},{"rule":"per-sender","key":"user+tag@example.com",)"
    R"("remaining":0,"retry_after_s":12.5,"limit":10,"period":"1m"}]})";

// A listening Unix socket at `path` that nobody accepts on unless the test does.
int listenUnix(const std::string& path, int backlog) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, backlog) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Answers every connection on a Unix socket with the same bytes, sent as they are:
// replies with framing, faults or timing that HealthServer never produces. It keeps
// each connection open after answering while `hold_open`, so the client sees no end.
class ScriptedServer {
 public:
  ScriptedServer(const std::string& path, std::string reply, bool hold_open = false)
      : path_(path), reply_(std::move(reply)), hold_open_(hold_open),
        listener_(listenUnix(path, 8)) {
    if (listener_ < 0 || pipe2(stop_, O_CLOEXEC) != 0) throw std::runtime_error("ScriptedServer");
    thread_ = std::thread([this] { serve(); });
  }
  ~ScriptedServer() {
    const char byte = 0;
    (void)!write(stop_[1], &byte, 1);
    thread_.join();
    close(listener_);
    unlink(path_.c_str());
    close(stop_[0]);
    close(stop_[1]);
  }
  // The request heads received so far, in order.
  std::vector<std::string> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  // Waits for `fd` to be readable; false once the test stops the server.
  bool waitFor(int fd) {
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_[0], POLLIN, 0}};
    while (true) {
      if (poll(p, 2, -1) < 0) return false;
      if (p[1].revents != 0) return false;
      if (p[0].revents != 0) return true;
    }
  }
  void serve() {
    while (waitFor(listener_)) {
      const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos && waitFor(fd)) {
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        head.append(buf, static_cast<std::size_t>(n));
      }
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(head);
      }
      testing::sendAll(fd, reply_);
      if (hold_open_) {
        pollfd p{stop_[0], POLLIN, 0};
        (void)poll(&p, 1, -1);
      }
      close(fd);
    }
  }

  const std::string path_;
  const std::string reply_;
  const bool hold_open_;
  const int listener_;
  int stop_[2] = {-1, -1};
  std::mutex mutex_;
  std::vector<std::string> requests_;  // guarded by mutex_
  std::thread thread_;
};

ProcessResult ctlRaw(const std::vector<std::string>& args,
                     const std::map<std::string, std::string>& env = {}) {
  std::vector<std::string> argv = {ZETIANCTL_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return runProcess(argv, env);
}

class ZetianctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    api.set("health", {200, "application/json", kHealth});
    api.set("limitsShow", {200, "application/json", kLimits});
    api.set("reload", {200, "application/json", R"({"ok":true})"});
    api.set("limitsReset", {200, "application/json", R"({"ok":true})"});
    api.set("metrics", {200, "text/plain; version=0.0.4", "# TYPE zetian_sessions_total counter\n"
                                                         "zetian_sessions_total 7\n"});
    HealthServerOptions o;
    o.unix_path = socket_path;
    ASSERT_EQ(harness.start(o), "");
  }
  ProcessResult ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"-s", socket_path});
    return ctlRaw(args);
  }

  TempDir dir;
  std::string socket_path = dir.file("health.sock");
  FakeAdmin api;
  ServerHarness harness{api};
};

// ---- command line ------------------------------------------------------------------

TEST(ZetianctlCommandLine, PrintsTheEnginesVersion) {
  const ProcessResult r = ctlRaw({"--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, std::string("zetianctl ") + zetian_version() + "\n");
}

TEST(ZetianctlCommandLine, HelpListsTheCommands) {
  const ProcessResult r = ctlRaw({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("Usage: zetianctl [-s SOCKET] [--json] COMMAND", 0), 0u) << r.out;
  for (const char* word : {"status", "health", "members", "metrics", "reload", "limits show",
                           "limits reset RULE KEY", "[--limit N]", "(default 1000, at most 1000000)",
                           "ZETIAN_HEALTH_SOCKET",
                           "--timeout SECS   give up on the server after SECS seconds (default 5)",
                           "connecting gives up after 2 seconds, or SECS if shorter"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word;
  }
}

TEST(ZetianctlCommandLine, UsageErrorsExitWith2) {
  const std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate"},
      {"--frobnicate", "status"},
      {"-s"},
      {"status", "extra"},
      {"limits"},
      {"limits", "erase"},
      {"limits", "reset", "only-rule"},
      {"limits", "reset", "r", "k", "extra"},
      {"--rule", "r", "status"},
      {"limits", "reset", "r", "k", "--key", "k2"},
      {"--timeout", "soon", "status"},
      {"--timeout", "0", "status"},
      {"limits", "show", "--limit", "0"},
      {"limits", "show", "--limit", "1000001"},
      {"limits", "show", "--limit=-5"},
      {"limits", "show", "--limit", "ten"},
      {"limits", "show", "--limit"},
      {"--limit", "5", "status"},
      {"limits", "reset", "r", "k", "--limit", "5"},
  };
  for (const auto& args : cases) {
    const ProcessResult r = ctlRaw(args);
    std::string joined;
    for (const auto& a : args) joined += a + " ";
    EXPECT_EQ(r.exit_code, 2) << joined << "\n" << r.err;
    EXPECT_NE(r.err.find("Try `zetianctl --help`."), std::string::npos) << joined << "\n" << r.err;
    EXPECT_EQ(r.out, "") << joined;
  }
}

// ---- connecting ------------------------------------------------------------------

TEST(ZetianctlConnect, AMissingSocketAsksWhetherTheMilterRuns) {
  TempDir dir;
  const std::string path = dir.file("missing.sock");
  const ProcessResult r = ctlRaw({"-s", path, "status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: cannot connect to " + path +
                       ": No such file or directory — is zetian-milter running? (use -s to "
                       "choose another socket)\n");
  EXPECT_EQ(r.out, "");
}

TEST(ZetianctlConnect, DefaultsToTheRunDirectorySocket) {
  struct stat st {};
  if (stat("/run/zetian/health.sock", &st) == 0) GTEST_SKIP() << "a real health socket exists here";
  const ProcessResult r = ctlRaw({"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err,
            "zetianctl: cannot connect to /run/zetian/health.sock: No such file or directory — is "
            "zetian-milter running? (use -s to choose another socket)\n");
}

TEST(ZetianctlConnect, AStaleSocketFileIsRefusedWithTheSameHint) {
  TempDir dir;
  const std::string path = dir.file("stale.sock");
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  close(fd);
  const ProcessResult r = ctlRaw({"-s", path, "health"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("Connection refused — is zetian-milter running?"), std::string::npos) << r.err;
}

TEST(ZetianctlConnect, AServerThatNeverAnswersTimesOut) {
  TempDir dir;
  const std::string path = dir.file("mute.sock");
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 8), 0);  // listens, never accepts
  const auto before = std::chrono::steady_clock::now();
  const ProcessResult r = ctlRaw({"-s", path, "--timeout", "0.5", "status"});
  close(fd);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no answer from " + path + " within 0.5s"), std::string::npos) << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - before, 4s);
}

TEST(ZetianctlConnect, PermissionDeniedSaysToUseRootOrTheSocketGroup) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run the CLI as another user";
  if (access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "setpriv is not installed";
  TempDir dir;
  ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
  FakeAdmin api;
  ServerHarness harness(api);
  HealthServerOptions o;
  o.unix_path = dir.file("health.sock");
  o.unix_mode = 0660;
  ASSERT_EQ(harness.start(o), "");
  // A copy of the binary that `nobody` may run, wherever the build tree lives.
  const std::string binary = dir.file("zetianctl");
  std::filesystem::copy_file(ZETIANCTL_PATH, binary);
  ASSERT_EQ(chmod(binary.c_str(), 0755), 0);

  const ProcessResult r = runProcess({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534",
                                      "--clear-groups", binary, "-s", o.unix_path, "status"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("cannot connect to " + o.unix_path + ": Permission denied — run as root or "
                       "as a member of the socket's group (root)"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(api.calls().empty());
}

TEST(ZetianctlConnect, AFullBacklogGivesUpAfterTheConnectTimeout) {
  TempDir dir;
  const std::string path = dir.file("full.sock");
  const int listener = listenUnix(path, 0);
  ASSERT_GE(listener, 0);
  // Linux queues backlog + 1 connections; then a connect() waits for room.
  std::vector<int> queued;
  for (int i = 0; i < 8; ++i) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    const bool queued_one = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    const int err = errno;
    if (!queued_one) {
      close(fd);
      ASSERT_EQ(err, EAGAIN) << std::strerror(err);
      break;
    }
    queued.push_back(fd);
  }
  ASSERT_FALSE(queued.empty());
  const auto before = std::chrono::steady_clock::now();
  const ProcessResult r = ctlRaw({"-s", path, "--timeout", "0.5", "status"});
  const auto took = std::chrono::steady_clock::now() - before;
  for (const int fd : queued) close(fd);
  close(listener);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: cannot connect to " + path +
                       " within 0.5s — zetian-milter is not accepting connections (overloaded or "
                       "stuck?)\n");
  EXPECT_GE(took, 450ms) << "it waited for room in the backlog";
  EXPECT_LT(took, 4s);
}

TEST(ZetianctlConnect, AFileThatIsNotASocketIsNamedAsSuch) {
  TempDir dir;
  const std::string path = dir.file("zetian.toml");
  std::ofstream(path) << "[node]\n";
  const ProcessResult r = ctlRaw({"-s", path, "status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: cannot connect to " + path +
                       ": it is not a socket (use -s to choose the health socket)\n");
}

TEST(ZetianctlConnect, APathTooLongForASocketIsRefusedBeforeConnecting) {
  const std::string path = "/tmp/" + std::string(120, 'x');
  const ProcessResult r = ctlRaw({"-s", path, "status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: cannot connect to " + path + ": the path is too long for a Unix socket\n");
}

TEST(ZetianctlConnect, AProxyInTheEnvironmentIsIgnored) {
  FakeAdmin api;
  api.set("health", {200, "application/json", kHealth});
  TempDir dir;
  ServerHarness harness(api);
  HealthServerOptions o;
  o.unix_path = dir.file("health.sock");
  ASSERT_EQ(harness.start(o), "");
  const ProcessResult r = ctlRaw({"-s", o.unix_path, "status"},
                                 {{"http_proxy", "http://127.0.0.1:9"},
                                  {"HTTP_PROXY", "http://127.0.0.1:9"},
                                  {"ALL_PROXY", "http://127.0.0.1:9"}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"health"}));
}

TEST(ZetianctlConnect, TheEnvironmentChoosesTheSocket) {
  FakeAdmin api;
  api.set("health", {200, "application/json", kHealth});
  TempDir dir;
  ServerHarness harness(api);
  HealthServerOptions o;
  o.unix_path = dir.file("env.sock");
  ASSERT_EQ(harness.start(o), "");
  const ProcessResult r = ctlRaw({"status"}, {{"ZETIAN_HEALTH_SOCKET", o.unix_path}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("node:         mx1"), std::string::npos) << r.out;
}

// ---- replies a healthy server never sends ------------------------------------------

class ZetianctlScripted : public ::testing::Test {
 protected:
  ProcessResult ctl(const std::string& reply, std::vector<std::string> args,
                    bool hold_open = false) {
    ScriptedServer server(socket_path, reply, hold_open);
    args.insert(args.begin(), {"-s", socket_path});
    ProcessResult r = ctlRaw(args);
    requests = server.requests();
    return r;
  }

  TempDir dir;
  std::string socket_path = dir.file("scripted.sock");
  std::vector<std::string> requests;
};

TEST_F(ZetianctlScripted, SendsOneHttp11RequestWithoutABodyOrFormHeaders) {
  ProcessResult r = ctl("HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}", {"reload"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(requests.size(), 1u);
  const std::string& post = requests[0];
  EXPECT_EQ(post.rfind("POST /reload HTTP/1.1\r\n", 0), 0u) << post;
  EXPECT_NE(post.find("\r\nHost: localhost\r\n"), std::string::npos) << post;
  EXPECT_NE(post.find("\r\nUser-Agent: zetianctl\r\n"), std::string::npos) << post;
  EXPECT_NE(post.find("\r\nContent-Length: 0\r\n"), std::string::npos) << post;
  EXPECT_EQ(post.find("Content-Type"), std::string::npos) << post;
  EXPECT_EQ(post.find("Expect"), std::string::npos) << post;

  r = ctl("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"limits\":[]}",
          {"limits", "show", "--rule", "r 1", "--key", "a+b@c"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].rfind("GET /limits?rule=r%201&key=a%2Bb%40c HTTP/1.1\r\n", 0), 0u)
      << requests[0];
}

TEST_F(ZetianctlScripted, AChunkedReplyIsDecoded) {
  const ProcessResult r = ctl("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "d\r\n{\"node_id\":\"m\r\n"
                              "1f;ext=1\r\nx7\",\"status\":\"ok\",\"members\":[]}\r\n"
                              "0\r\n\r\n",
                              {"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("node:         mx7\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("members:      0\n"), std::string::npos) << r.out;
}

TEST_F(ZetianctlScripted, AServerThatHangsUpWithoutAnsweringIsReported) {
  const ProcessResult r = ctl("", {"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: bad reply from " + socket_path +
                       ": the server closed the connection without answering\n");
}

TEST_F(ZetianctlScripted, SomethingOtherThanHttpIsNamed) {
  const ProcessResult r = ctl("SSH-2.0-OpenSSH_9.2\r\n\r\n", {"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("zetianctl: bad reply from " + socket_path + ": not an HTTP reply (", 0), 0u)
      << r.err;
  EXPECT_NE(r.err.find("is this zetian-milter's health socket?"), std::string::npos) << r.err;
}

TEST_F(ZetianctlScripted, AReplyCutShortIsReported) {
  const ProcessResult r =
      ctl("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"status\":", {"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: bad reply from " + socket_path + ": the reply was cut short\n");
}

TEST_F(ZetianctlScripted, BrokenChunksAreReported) {
  const ProcessResult r =
      ctl("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
          {"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("zetianctl: bad reply from " + socket_path + ": ", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("chunk"), std::string::npos) << r.err;
}

TEST_F(ZetianctlScripted, AReplyThatNeverEndsTimesOut) {
  const auto before = std::chrono::steady_clock::now();
  const ProcessResult r = ctl("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"status\":",
                              {"--timeout", "0.5", "status"}, /*hold_open=*/true);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: the reply from " + socket_path +
                       " did not complete within 0.5s — zetian-milter may be overloaded or stuck\n");
  EXPECT_LT(std::chrono::steady_clock::now() - before, 4s);
}

TEST_F(ZetianctlScripted, AHugeReplyIsRefusedUnread) {
  const ProcessResult r =
      ctl("HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n{", {"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: bad reply from " + socket_path + ": larger than 64 MiB\n");
}

TEST_F(ZetianctlScripted, AReplyWithoutALengthIsCutAt64MiB) {
  const ProcessResult r =
      ctl("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + std::string((65u << 20), ' '),
          {"status"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: bad reply from " + socket_path + ": larger than 64 MiB\n");
}

TEST_F(ZetianctlScripted, DeeplyNestedJsonIsRefusedNotFollowed) {
  const std::string body(1'000'000, '[');
  const ProcessResult r = ctl("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                                  "\r\n\r\n" + body,
                              {"health"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: the reply to GET /health is not valid JSON (nested more than 64 "
                   "levels deep)\n");
}

TEST_F(ZetianctlScripted, PrettyJsonEscapesDelAndC1ControlsAndKeepsOtherUtf8) {
  const std::string body = "{\"node_id\":\"a\x7f" "b\xc2\x9b" "c\u00e9\"}";
  const ProcessResult r = ctl("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                                  "\r\n\r\n" + body,
                              {"health"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "{\n  \"node_id\": \"a\\u007fb\\u009bc\u00e9\"\n}\n");
}

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

// ---- the replicated policy ---------------------------------------------------------

constexpr const char* kPolicyText =
    "[ratelimit]\n"
    "exempt = []\n"
    "[[ratelimit.rule]]\n"
    "name = \"per-ip\"\n"
    "key = \"client_ip\"\n"
    "limit = 5\n"
    "period = \"1h\"\n";

std::string policyDocumentJson(const std::string& text, int version = 3) {
  std::string escaped;
  for (char c : text) {
    if (c == '\n') {
      escaped += "\\n";
    } else if (c == '"') {
      escaped += "\\\"";
    } else {
      escaped.push_back(c);
    }
  }
  return R"({"version":)" + std::to_string(version) + R"(,"proposer":"mx2","time_unix_ms":1764450000123,"text":")" +
         escaped + "\"}";
}

class ZetianctlPolicyTest : public ZetianctlTest {
 protected:
  std::string writeFile(const std::string& name, const std::string& text) {
    const std::string path = dir.file(name);
    std::ofstream(path) << text;
    return path;
  }
};

TEST_F(ZetianctlPolicyTest, PolicyGetPrintsTheTomlAndJsonTheDocument) {
  api.set("policyGet", {200, "application/json", policyDocumentJson(kPolicyText)});
  ProcessResult r = ctl({"policy", "get"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, kPolicyText);
  r = ctl({"policy", "get", "--json"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, policyDocumentJson(kPolicyText) + "\n");
}

TEST_F(ZetianctlPolicyTest, PolicyGetWithoutARaftClusterSaysSoAndFails) {
  api.set("policyGet", {503, "application/json", R"({"error":"this node is not in a Raft cluster yet"})"});
  const ProcessResult r = ctl({"policy", "get"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, "zetianctl: this node is not in a Raft cluster yet\n");
}

TEST_F(ZetianctlPolicyTest, ApplySendsTheFileAsIsAndSaysWhatWasCommitted) {
  const std::string text = std::string("# comments travel with the text\n") + kPolicyText;
  const std::string path = writeFile("policy.toml", text);
  api.set("policyPut", {200, "application/json", R"({"version":4,"index":17})"});
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "policy version 4 committed (index 17)\n");
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"policyPut(|" + text + ")"}));
}

TEST_F(ZetianctlPolicyTest, ApplyWithABaseVersionSendsIt) {
  const std::string path = writeFile("policy.toml", kPolicyText);
  api.set("policyPut", {200, "application/json", R"({"version":8,"index":40})"});
  const ProcessResult r = ctl({"policy", "apply", path, "--base-version", "7"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"policyPut(7|" + std::string(kPolicyText) + ")"}));
}

TEST_F(ZetianctlPolicyTest, ALargePolicyIsSentWhole) {
  // Past the server's ordinary 4 KiB body bound, and past curl's 1 KiB Expect threshold.
  std::string text = "[ratelimit]\nexempt = [\n";
  for (int i = 0; i < 5000; ++i) text += "  \"10." + std::to_string(i / 256) + "." + std::to_string(i % 256) + ".0/24\",\n";
  text += "]\n";
  const std::string path = writeFile("large.toml", text);
  api.set("policyPut", {200, "application/json", R"({"version":2,"index":9})"});
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"policyPut(|" + text + ")"}));
}

TEST_F(ZetianctlScripted, APolicyIsPutAsTomlWithoutWaitingFor100Continue) {
  TempDir files;
  const std::string path = files.file("policy.toml");
  std::ofstream(path) << "[ratelimit]\nexempt = [" << std::string(3000, ' ') << "]\n";
  const ProcessResult r = ctl("HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{\"version\":2,\"index\":9}",
                              {"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(requests.size(), 1u);
  const std::string& head = requests[0];
  EXPECT_EQ(head.rfind("PUT /policy HTTP/1.1\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("\r\nContent-Type: application/toml\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nContent-Length: 3024\r\n"), std::string::npos) << head;
  // The server answers no 100 Continue: curl must not ask for one (and wait a second).
  EXPECT_EQ(head.find("Expect"), std::string::npos) << head;
}

TEST_F(ZetianctlPolicyTest, AnInvalidFileIsRefusedWithItsPlacesAndNothingIsSent) {
  const std::string path = writeFile("bad.toml",
                                     "[ratelimit]\n[[ratelimit.rule]]\nname = \"x\"\nkey = \"client_ip\"\nlimt = 5\n"
                                     "period = \"1h\"\n");
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find(path + ":5:1: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("zetianctl: " + path + " has errors; nothing was sent\n"), std::string::npos) << r.err;
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(ZetianctlPolicyTest, ANodesWholeFileIsNotAPolicyAndSaysWhereToGetOne) {
  const std::string path = writeFile("zetian.toml", "[node]\nid = \"mx1\"\n" + std::string(kPolicyText));
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(path + ":1:2: `[node]` is a node-local table"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("`zetianctl policy get > policy.toml` gives one to edit"), std::string::npos) << r.err;
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(ZetianctlPolicyTest, NoQuorumSaysWhatChangesNeed) {
  const std::string path = writeFile("policy.toml", kPolicyText);
  api.set("policyPut", {503, "application/json", R"({"error":"no quorum: 1 of 3 voters reachable"})"});
  const ProcessResult r = ctl({"policy", "apply", path});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err,
            "zetianctl: the policy was not applied:\n"
            "zetianctl: no quorum: 1 of 3 voters reachable\n"
            "zetianctl: changes need a majority of voters; every node keeps enforcing the policy in force "
            "meanwhile\n");
}

TEST_F(ZetianctlPolicyTest, AConflictSaysToLookAgain) {
  const std::string path = writeFile("policy.toml", kPolicyText);
  api.set("policyPut", {409, "application/json", R"({"error":"version 7 proposed, 8 is current"})"});
  const ProcessResult r = ctl({"policy", "apply", path, "--base-version=6"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("another change landed first"), std::string::npos) << r.err;
}

TEST_F(ZetianctlPolicyTest, DiffExitsLikeDiff) {
  api.set("policyGet", {200, "application/json", policyDocumentJson(kPolicyText)});
  // The same policy, spelled otherwise: no difference.
  std::string same = "[ratelimit]\nexempt = [] # none\n[[ratelimit.rule]]\nperiod = \"60m\"\nlimit = 5\n"
                     "key = \"client_ip\"\nname = \"per-ip\"\n";
  ProcessResult r = ctl({"policy", "diff", writeFile("same.toml", same)});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("no change"), std::string::npos) << r.out;

  std::string other = kPolicyText;
  other.replace(other.find("limit = 5"), 9, "limit = 9");
  const std::string path = writeFile("other.toml", other);
  r = ctl({"policy", "diff", path});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.out.rfind("--- the cluster's policy, version 3\n+++ " + path + "\n", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("limit"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("9"), std::string::npos) << r.out;

  r = ctl({"policy", "diff", writeFile("broken.toml", "[ratelimit\n")});
  EXPECT_EQ(r.exit_code, 2);
  r = ctl({"policy", "diff", dir.file("missing.toml")});
  EXPECT_EQ(r.exit_code, 2);
  api.set("policyGet", {503, "application/json", R"({"error":"no leader"})"});
  r = ctl({"policy", "diff", path});
  EXPECT_EQ(r.exit_code, 2);
}

TEST_F(ZetianctlPolicyTest, DiffTakesTheNodesWholeFileToo) {
  api.set("policyGet", {200, "application/json", policyDocumentJson(kPolicyText)});
  const std::string node_file = "[node]\nid = \"mx1\"\n" + std::string(kPolicyText);
  const ProcessResult r = ctl({"policy", "diff", writeFile("zetian.toml", node_file)});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST_F(ZetianctlPolicyTest, HistoryIsATable) {
  api.set("policyHistory",
          {200, "application/json",
           R"([{"version":1,"proposer":"mx1","time_unix_ms":1764450000123,"index":3,"text_bytes":120},)"
           R"({"version":2,"proposer":"mx2","time_unix_ms":1764450060000,"index":11,"text_bytes":140}])"});
  ProcessResult r = ctl({"policy", "history"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "VERSION  PROPOSER  TIME (UTC)                INDEX  BYTES\n"
            "1        mx1       2025-11-29T21:00:00.123Z  3      120\n"
            "2        mx2       2025-11-29T21:01:00.000Z  11     140\n");
  r = ctl({"policy", "history", "--json"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("[{\"version\":1,", 0), 0u) << r.out;
  api.set("policyHistory", {200, "application/json", "[]"});
  r = ctl({"policy", "history"});
  EXPECT_EQ(r.out, "no policy version applied yet\n");
}

TEST_F(ZetianctlPolicyTest, ClusterRemoveAndTransferLeader) {
  api.set("clusterRemove", {200, "application/json", R"({"ok":true,"removed":"mx3","index":21})"});
  ProcessResult r = ctl({"cluster", "remove", "mx3"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "mx3 removed from the Raft cluster (index 21)\n");
  api.set("clusterTransferLeader", {200, "application/json", R"({"ok":true,"leader":"mx2"})"});
  r = ctl({"cluster", "transfer-leader", "mx2"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "leadership transferred: mx2 leads now\n");
  r = ctl({"cluster", "transfer-leader"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"clusterRemove(|mx3)", "clusterTransferLeader(|mx2)",
                                                   "clusterTransferLeader(|)"}));
  api.set("clusterRemove", {404, "application/json", R"({"error":"no Raft member named mx9"})"});
  r = ctl({"cluster", "remove", "mx9"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "zetianctl: the removal was refused:\nzetianctl: no Raft member named mx9\n");
}

TEST_F(ZetianctlPolicyTest, PolicyAndClusterUsageErrorsExitWith2) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"policy"}, {"policy", "set"}, {"policy", "apply"}, {"policy", "apply", "a", "b"}, {"policy", "get", "x"},
           {"policy", "diff"}, {"--json", "policy", "diff", "f"}, {"policy", "get", "--base-version", "3"},
           {"policy", "apply", "f", "--base-version", "0"}, {"policy", "apply", "f", "--base-version", "x"},
           {"cluster"}, {"cluster", "remove"}, {"cluster", "remove", "a", "b"}, {"cluster", "transfer-leader", "a", "b"},
           {"cluster", "join"}}) {
    const ProcessResult r = ctl(args);
    EXPECT_EQ(r.exit_code, 2) << args.size() << " " << r.err;
    EXPECT_NE(r.err.find("Try `zetianctl --help`."), std::string::npos) << r.err;
  }
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(ZetianctlPolicyTest, StatusAndMembersShowTheRaftFields) {
  api.set("health",
          {200, "application/json",
           R"({"node_id":"mx1","status":"ok","version":"0.1.0","uptime_s":4,"maintenance":false,)"
           R"("leader":"mx2","term":7,"commit_index":30,"applied_index":30,"policy_version":4,)"
           R"("raft":{"in_cluster":true,"waiting_for":"","role":"follower"},)"
           R"("members":[{"id":"mx1","address":"a1","region":"","status":"alive","raft_role":"voter"},)"
           R"({"id":"mx2","address":"a2","region":"","status":"alive","raft_role":"voter"},)"
           R"({"id":"mx4","address":"a4","region":"","status":"alive","raft_role":null}]})"});
  ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("members:      3\n"
                       "leader:       mx2\n"
                       "term:         7\n"
                       "raft role:    follower\n"
                       "policy:       version 4\n"),
            std::string::npos)
      << r.out;
  r = ctl({"members"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("LAST SEEN  RAFT\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("-          voter\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("mx4  a4       -       alive   -         -      -     -          -\n"), std::string::npos)
      << r.out;
}

TEST_F(ZetianctlPolicyTest, StatusOfANodeWaitingForARaftCluster) {
  api.set("health", {200, "application/json",
                     R"({"node_id":"mx1","status":"ok","leader":null,"term":0,"policy_version":null,)"
                     R"x("raft":{"in_cluster":false,"waiting_for":"3 members running Raft (2 met)"},"members":[]})x"});
  const ProcessResult r = ctl({"status"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("raft:         not in a Raft cluster yet (waiting for 3 members running Raft (2 met))\n"
                       "policy:       the node's own file (no replicated version yet)\n"),
            std::string::npos)
      << r.out;
}

TEST_F(ZetianctlPolicyTest, AReloadOnAReplicatedNodeSaysThePolicyStays) {
  api.set("reload", {200, "application/json",
                     R"({"ok":true,"policy_version":4,"rules":2,"policy":"replicated",)"
                     R"("message":"the policy is replicated: use `zetianctl policy apply FILE` to change it"})"});
  const ProcessResult r = ctl({"reload"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "node settings reloaded; the replicated policy stays in force: version 4, 2 rules\n"
            "the policy is replicated: use `zetianctl policy apply FILE` to change it\n");
}

}  // namespace
}  // namespace zetian::cluster
