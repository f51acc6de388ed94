// zetianctl end to end: the real binary, run as a subprocess, against a real
// HealthServer on a temp-dir Unix socket with a scripted engine behind it, or against
// a ScriptedServer for the replies and failures a healthy server never produces.
// This file: the command line, connecting, and replies a healthy server never sends.
// Shared fixtures: zetianctl_test_support.h.

#include <gtest/gtest.h>

#include "tests/unit/milter/zetianctl_test_support.h"

namespace zetian::cluster {
namespace {

using namespace ctl_test;

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

}  // namespace
}  // namespace zetian::cluster
