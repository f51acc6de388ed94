// The health server, tested through real sockets: a server on a temp-dir Unix socket
// (and a loopback TCP port it picks), a scripted engine behind AdminApi.
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

TEST_F(HealthServerTest, GetRoutesAnswerWithTheEnginesReply) {
  api.set("health", {200, "application/json", R"({"node_id":"mx1","status":"ok"})"});
  api.set("live", {200, "text/plain", "alive\n"});
  api.set("ready", {503, "application/json", R"({"ready":false})"});
  api.set("metrics", {200, "text/plain; version=0.0.4; charset=utf-8", "zetian_sessions_total 3\n"});
  startOrFail(options());

  RawReply r = overUnix("GET", "/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Type"), "application/json");
  EXPECT_EQ(r.body, R"({"node_id":"mx1","status":"ok"})");

  r = overUnix("GET", "/live");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "alive\n");

  r = overUnix("GET", "/ready");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, R"({"ready":false})");

  r = overUnix("GET", "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.body, "zetian_sessions_total 3\n");

  EXPECT_EQ(api.calls(), (std::vector<std::string>{"health", "live", "ready", "metrics"}));
}

TEST_F(HealthServerTest, HeadWorksWhereGetDoesAndSendsNoBody) {
  api.set("health", {200, "application/json", R"({"node_id":"mx1"})"});
  startOrFail(options());
  const RawReply r = overUnix("HEAD", "/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("Content-Length"), "17");
  EXPECT_EQ(r.body, "");
}

TEST_F(HealthServerTest, LimitsShowPassesDecodedFilters) {
  api.set("limitsShow", {200, "application/json", R"({"limits":[]})"});
  startOrFail(options());

  RawReply r = overUnix("GET", "/limits");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"limits":[]})");
  r = overUnix("GET", "/limits?rule=per-sender&key=user%2Btag%40example.com");
  EXPECT_EQ(r.status, 200);
  r = overUnix("GET", "/limits?key=a+b%20c");
  EXPECT_EQ(r.status, 200);
  r = overUnix("GET", "/limits?key=%3C%3E");  // the null sender
  EXPECT_EQ(r.status, 200);

  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsShow(|)",
                                                   "limitsShow(per-sender|user+tag@example.com)",
                                                   "limitsShow(|a+b c)", "limitsShow(|<>)"}));
}

TEST_F(HealthServerTest, LimitsListingTakesAPageSizeAndACursor) {
  api.set("limitsShow", {200, "application/json", R"({"limits":[]})"});
  api.set("limitsReset", {200, "application/json", R"({"ok":true})"});
  startOrFail(options());
  EXPECT_EQ(overUnix("GET", "/limits?limit=5&after=12-6162").status, 200);
  EXPECT_EQ(overUnix("GET", "/limits?rule=r&limit=1000").status, 200);
  EXPECT_EQ(overUnix("GET", "/limits?limit=100").status, 200);  // the default, not recorded
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsShow(||limit=5|after=12-6162)",
                                                   "limitsShow(r||limit=1000|after=)", "limitsShow(|)"}));
  api.clearCalls();
  for (const char* bad : {"/limits?limit=0", "/limits?limit=1001", "/limits?limit=abc", "/limits?limit=-1",
                          "/limits?limit=", "/limits?limit=99999999999"}) {
    const RawReply r = overUnix("GET", bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_NE(r.body.find("limit must be"), std::string::npos) << r.body;
  }
  // Paging is for the listing only.
  EXPECT_EQ(overUnix("POST", "/limits/reset?rule=r&limit=5").status, 400);
  EXPECT_EQ(overUnix("POST", "/limits/reset?rule=r&after=1").status, 400);
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(HealthServerTest, MalformedQueriesAre400WithAJsonError) {
  startOrFail(options());
  for (const char* target : {"/limits?key=%zz", "/limits?key=%4", "/limits?key=a%00b",
                             "/limits?rule=a&rule=b", "/limits?color=red"}) {
    const RawReply r = overUnix("GET", target);
    EXPECT_EQ(r.status, 400) << target;
    EXPECT_EQ(r.header("Content-Type"), "application/json") << target;
    EXPECT_EQ(r.body.rfind("{\"error\":\"", 0), 0u) << target << ": " << r.body;
  }
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(HealthServerTest, LimitsResetNeedsARule) {
  api.set("limitsReset", {200, "application/json", R"({"ok":true})"});
  startOrFail(options());

  RawReply r = overUnix("POST", "/limits/reset");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("rule is required"), std::string::npos) << r.body;
  r = overUnix("POST", "/limits/reset?key=192.0.2.1");
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(api.calls().empty());

  r = overUnix("POST", "/limits/reset?rule=per-ip&key=192.0.2.1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"ok":true})");
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"limitsReset(per-ip|192.0.2.1)"}));
}

TEST_F(HealthServerTest, MaintenanceTakesStateOnOrOff) {
  startOrFail(options());
  for (const char* bad : {"/maintenance", "/maintenance?state=yes", "/maintenance?state=on&x=1",
                          "/maintenance?mode=on"}) {
    const RawReply r = overUnix("POST", bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_NE(r.body.find("state=on"), std::string::npos) << r.body;
  }
  EXPECT_TRUE(api.calls().empty());
  EXPECT_EQ(overUnix("GET", "/maintenance?state=on").status, 405);
  EXPECT_EQ(overUnix("POST", "/maintenance?state=on").status, 200);
  EXPECT_EQ(overUnix("POST", "/maintenance?state=off").status, 200);
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"maintenance(on)", "maintenance(off)"}));
}

TEST_F(HealthServerTest, LogLevelShowsOnGetAndSetsOnPost) {
  startOrFail(options());
  for (const char* bad : {"/log/level", "/log/level?level=", "/log/level?level=debug&x=1", "/log/level?lvl=debug"}) {
    const RawReply r = overUnix("POST", bad);
    EXPECT_EQ(r.status, 400) << bad;
    EXPECT_NE(r.body.find("level="), std::string::npos) << r.body;
  }
  EXPECT_EQ(overUnix("GET", "/log/level?level=debug").status, 400);
  EXPECT_EQ(overUnix("PUT", "/log/level?level=debug").status, 405);
  EXPECT_TRUE(api.calls().empty());
  EXPECT_EQ(overUnix("GET", "/log/level").status, 200);
  EXPECT_EQ(overUnix("POST", "/log/level?level=debug").status, 200);
  EXPECT_EQ(api.calls(), (std::vector<std::string>{"logLevel()", "logLevel(debug)"}));
}

TEST_F(HealthServerTest, UnknownPathIs404WithAJsonError) {
  startOrFail(options());
  for (const char* target : {"/", "/nope", "/health/", "/HEALTH", "/limits/reset/x"}) {
    const RawReply r = overUnix("GET", target);
    EXPECT_EQ(r.status, 404) << target;
    EXPECT_EQ(r.header("Content-Type"), "application/json");
    EXPECT_NE(r.body.find("\"error\":\"no such endpoint"), std::string::npos) << r.body;
  }
}

TEST_F(HealthServerTest, WrongMethodIs405WithAllow) {
  startOrFail(options());
  RawReply r = overUnix("POST", "/health");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.header("Allow"), "GET, HEAD");
  EXPECT_NE(r.body.find("\"error\""), std::string::npos);

  r = overUnix("GET", "/reload");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.header("Allow"), "POST");

  for (const char* method : {"PUT", "DELETE", "PATCH", "OPTIONS"}) {
    r = overUnix(method, "/limits");
    EXPECT_EQ(r.status, 405) << method;
    EXPECT_EQ(r.header("Allow"), "GET, HEAD") << method;
  }
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(HealthServerTest, MutationsOverUnixNeedNoToken) {
  api.set("reload", {200, "application/json", R"({"ok":true})"});
  startOrFail(options("127.0.0.1:0", "s3cret-token"));
  const RawReply r = overUnix("POST", "/reload");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"ok":true})");
}

TEST_F(HealthServerTest, TcpServesReadsWithoutAToken) {
  api.set("metrics", {200, "text/plain", "m 1\n"});
  startOrFail(options("127.0.0.1:0", "s3cret-token"));
  ASSERT_NE(harness.tcpPort(), 0);
  const RawReply r = overTcp("GET", "/metrics");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "m 1\n");
}

TEST_F(HealthServerTest, TcpMutationsNeedTheRightBearerToken) {
  api.set("reload", {200, "application/json", R"({"ok":true})"});
  startOrFail(options("127.0.0.1:0", "s3cret-token"));

  RawReply r = overTcp("POST", "/reload");
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("\"error\""), std::string::npos);
  r = overTcp("POST", "/reload", "Authorization: Bearer wrong-token!\r\n");
  EXPECT_EQ(r.status, 403);
  r = overTcp("POST", "/reload", "Authorization: Bearer s3cret-toke\r\n");
  EXPECT_EQ(r.status, 403);
  r = overTcp("POST", "/reload", "Authorization: Bearer s3cret-token-and-more\r\n");
  EXPECT_EQ(r.status, 403);
  r = overTcp("POST", "/reload", "Authorization: Basic s3cret-token\r\n");
  EXPECT_EQ(r.status, 403);
  r = overTcp("POST", "/limits/reset?rule=r&key=k", "Authorization: Bearer nope\r\n");
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(api.calls().empty());

  r = overTcp("POST", "/reload", "Authorization: Bearer s3cret-token\r\n");
  EXPECT_EQ(r.status, 200);
  r = overTcp("POST", "/reload", "Authorization: bearer s3cret-token\r\n");  // scheme is case-blind
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(api.calls().size(), 2u);
}

TEST_F(HealthServerTest, TcpMutationsAreOffWithoutAnAdminToken) {
  startOrFail(options("127.0.0.1:0", ""));
  RawReply r = overTcp("POST", "/reload", "Authorization: Bearer \r\n");
  EXPECT_EQ(r.status, 403);
  EXPECT_NE(r.body.find("admin_token"), std::string::npos) << r.body;
  r = overTcp("POST", "/reload");
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(api.calls().empty());
}

TEST_F(HealthServerTest, RoutingErrorsComeBeforeTheTokenCheckOverTcp) {
  startOrFail(options("127.0.0.1:0", "t"));
  EXPECT_EQ(overTcp("POST", "/nope").status, 404);
  EXPECT_EQ(overTcp("POST", "/health").status, 405);
}

TEST_F(HealthServerTest, AnEngineExceptionBecomesA500) {
  api.throwOn("health");
  startOrFail(options());
  RawReply r = overUnix("GET", "/health");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("engine exploded"), std::string::npos) << r.body;
  r = overUnix("GET", "/live");  // and the server carries on
  EXPECT_EQ(r.status, 200);
}

TEST_F(HealthServerTest, AnOutOfRangeEngineStatusBecomesA500) {
  api.set("live", {42, "text/plain", "?"});
  startOrFail(options());
  EXPECT_EQ(overUnix("GET", "/live").status, 500);
}

TEST_F(HealthServerTest, GarbageAndHalfOpenConnectionsDoNotStopTheServer) {
  startOrFail(options());

  // A connection that sends half a request and then nothing.
  const int half_open = connectUnix(socket_path);
  ASSERT_GE(half_open, 0);
  testing::sendAll(half_open, "GET /hea");
  // One that connects and never speaks.
  const int silent = connectUnix(socket_path);
  ASSERT_GE(silent, 0);

  // Assorted garbage, each on its own connection, then hang up.
  std::mt19937 rng(12345);
  std::vector<std::string> garbage = {
      std::string("\0\0\0\0", 4),
      "\r\n\r\n\r\n",
      "GET\r\n\r\n",
      "GET / HTTP/9.9\r\n\r\n",
      "GET /health HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
      "GET /health HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
      "GET /health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "POST /reload HTTP/1.1\r\nContent-Length: 100000\r\n\r\nxxxx",
      "GET /limits?key=" + std::string(3000, '%') + " HTTP/1.1\r\n\r\n",
      "GET http://[::1 HTTP/1.1\r\n\r\n",
      "\xff\xfe GET /health HTTP/1.1\r\n\r\n",
  };
  for (int i = 0; i < 40; ++i) {
    std::string bytes(1 + rng() % 2000, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    garbage.push_back(bytes);
  }
  for (const std::string& bytes : garbage) {
    const int fd = connectUnix(socket_path);
    ASSERT_GE(fd, 0);
    testing::sendAll(fd, bytes);
    shutdown(fd, SHUT_WR);
    testing::readUntilClose(fd, 2s);
    close(fd);
  }

  // A normal request is still answered promptly, while the half-open ones hang on.
  const auto before = std::chrono::steady_clock::now();
  const RawReply r = overUnix("GET", "/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - before, 2s);
  close(half_open);
  close(silent);
  EXPECT_EQ(overUnix("GET", "/live").status, 200);
}

TEST_F(HealthServerTest, OversizedHeadersAreRefusedAndTheServerCarriesOn) {
  startOrFail(options());
  const int fd = connectUnix(socket_path);
  ASSERT_GE(fd, 0);
  testing::sendAll(fd, "GET /health HTTP/1.1\r\nX-Big: " + std::string(64 * 1024, 'a') + "\r\n\r\n");
  const std::string raw = testing::readUntilClose(fd, 5s);
  close(fd);
  const RawReply r = testing::parseRaw(raw);
  EXPECT_TRUE(raw.empty() || r.status == 400 || r.status == 413 || r.status == 431) << raw.substr(0, 100);
  EXPECT_TRUE(api.calls().empty());
  EXPECT_EQ(overUnix("GET", "/health").status, 200);
}

TEST_F(HealthServerTest, AnOversizedBodyIsRefusedBeforeTheEngineSeesIt) {
  startOrFail(options());
  const int fd = connectUnix(socket_path);
  ASSERT_GE(fd, 0);
  const std::string body(64 * 1024, 'x');
  const RawReply r = roundTrip(fd, "POST /reload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                   "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
  EXPECT_TRUE(r.status == 0 || r.status == 413) << r.status;
  EXPECT_TRUE(api.calls().empty());
  EXPECT_EQ(overUnix("GET", "/live").status, 200);
}

TEST_F(HealthServerTest, IdleConnectionsAreClosedAfterTheTimeout) {
  HealthServerOptions o = options();
  o.io_timeout = 300ms;
  startOrFail(o);
  const int fd = connectUnix(socket_path);
  ASSERT_GE(fd, 0);
  const auto before = std::chrono::steady_clock::now();
  bool closed = false;
  testing::readUntilClose(fd, 5s, &closed);
  close(fd);
  EXPECT_TRUE(closed);
  EXPECT_LT(std::chrono::steady_clock::now() - before, 3s);
}

TEST_F(HealthServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  startOrFail(options());
  const int fd = connectUnix(socket_path);
  ASSERT_GE(fd, 0);
  testing::sendAll(fd,
                   "GET /live HTTP/1.1\r\nHost: x\r\n\r\n"
                   "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string raw = testing::readUntilClose(fd, 5s);
  close(fd);
  EXPECT_NE(raw.find("{\"method\":\"live\"}"), std::string::npos) << raw;
  EXPECT_NE(raw.find("{\"method\":\"ready\"}"), std::string::npos) << raw;
}

TEST_F(HealthServerTest, SocketModeIsApplied) {
  HealthServerOptions o = options();
  o.unix_mode = 0640;
  startOrFail(o);
  struct stat st {};
  ASSERT_EQ(stat(socket_path.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

TEST_F(HealthServerTest, SocketModeIgnoresTheUmask) {
  const mode_t old = umask(0077);
  HealthServerOptions o = options();
  o.unix_mode = 0666;
  const std::string error = harness.start(o);
  umask(old);
  ASSERT_EQ(error, "");
  struct stat st {};
  ASSERT_EQ(stat(socket_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0666u);
}

TEST_F(HealthServerTest, ASecondServerOnALiveSocketRefusesToStart) {
  startOrFail(options());
  FakeAdmin other_api;
  {
    ServerHarness second(other_api);
    const std::string error = second.start(options());
    EXPECT_NE(error.find("another process is answering"), std::string::npos) << error;
    EXPECT_NE(error.find("zetian-milter"), std::string::npos) << error;
  }
  // The first server keeps its socket file and keeps answering.
  EXPECT_EQ(overUnix("GET", "/health").status, 200);
  EXPECT_TRUE(other_api.calls().empty());
}

TEST_F(HealthServerTest, AStaleSocketFileIsReplaced) {
  {
    // Bind and close without unlinking: what a crashed process leaves behind.
    const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    close(fd);
  }
  struct stat st {};
  ASSERT_EQ(stat(socket_path.c_str(), &st), 0);
  startOrFail(options());
  EXPECT_EQ(overUnix("GET", "/health").status, 200);
}

TEST_F(HealthServerTest, ARegularFileInTheWayIsNeverRemoved) {
  { std::ofstream(socket_path) << "precious"; }
  const std::string error = harness.start(options());
  EXPECT_NE(error.find("is not a socket"), std::string::npos) << error;
  std::ifstream in(socket_path);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(HealthServerTest, TheSocketFileIsRemovedOnDestruction) {
  startOrFail(options());
  struct stat st {};
  ASSERT_EQ(stat(socket_path.c_str(), &st), 0);
  harness.destroyServer();
  EXPECT_NE(stat(socket_path.c_str(), &st), 0);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(HealthServerTest, ASocketFileReplacedByAnotherProcessIsLeftAlone) {
  startOrFail(options());
  // Someone else removes our socket and binds their own at the same path.
  ASSERT_EQ(unlink(socket_path.c_str()), 0);
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  harness.destroyServer();
  struct stat st {};
  EXPECT_EQ(stat(socket_path.c_str(), &st), 0) << "removed a socket file that was not ours";
  close(fd);
}

TEST_F(HealthServerTest, AMissingDirectorySaysToCreateIt) {
  HealthServerOptions o = options();
  o.unix_path = dir.file("no/such/dir/health.sock");
  const std::string error = harness.start(o);
  EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;
  EXPECT_NE(error.find("create the directory " + dir.file("no/such/dir")), std::string::npos) << error;
}

TEST_F(HealthServerTest, PermissionDeniedSaysToCheckTheDirectoryAndUser) {
  // Root ignores directory permissions, so the server is started as `nobody` in a
  // separate process when the suite runs as root.
  const std::string locked = dir.file("locked");
  ASSERT_EQ(mkdir(locked.c_str(), 0755), 0);
  ASSERT_EQ(chmod(locked.c_str(), geteuid() == 0 ? 0755 : 0555), 0);
  const std::string path = locked + "/health.sock";
  std::string error;
  if (geteuid() == 0) {
    if (access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "setpriv is not installed";
    ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);
    const std::string probe = dir.file("start_probe");
    std::filesystem::copy_file(START_PROBE_PATH, probe);
    ASSERT_EQ(chmod(probe.c_str(), 0755), 0);
    const testing::ProcessResult r = testing::runProcess(
        {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", probe, path});
    EXPECT_EQ(r.exit_code, 1) << r.err;
    error = r.err;
  } else {
    error = harness.start([&] {
      HealthServerOptions o = options();
      o.unix_path = path;
      return o;
    }());
  }
  EXPECT_NE(error.find("cannot bind " + path + ": Permission denied"), std::string::npos) << error;
  EXPECT_NE(error.find("may write to " + locked), std::string::npos) << error;
  EXPECT_NE(error.find("uid "), std::string::npos) << error;
}

TEST_F(HealthServerTest, ATooLongSocketPathIsRefused) {
  HealthServerOptions o = options();
  o.unix_path = "/tmp/" + std::string(200, 'x');
  const std::string error = harness.start(o);
  EXPECT_NE(error.find("too long"), std::string::npos) << error;
}

TEST_F(HealthServerTest, AHostNameForTcpIsRefusedAndLeavesNoSocketFile) {
  const std::string error = harness.start(options("localhost:9187"));
  EXPECT_NE(error.find("not a numeric IP address"), std::string::npos) << error;
  struct stat st {};
  EXPECT_NE(stat(socket_path.c_str(), &st), 0) << "a failed start left its socket file";
}

TEST_F(HealthServerTest, ATcpPortInUseSaysAnotherMilterMayBeRunning) {
  startOrFail(options("127.0.0.1:0"));
  const std::uint16_t port = harness.tcpPort();
  TempDir other_dir;
  FakeAdmin other_api;
  ServerHarness second(other_api);
  HealthServerOptions o;
  o.unix_path = other_dir.file("health.sock");
  o.tcp_listen = "127.0.0.1:" + std::to_string(port);
  const std::string error = second.start(o);
  EXPECT_NE(error.find("Address already in use"), std::string::npos) << error;
  EXPECT_NE(error.find("another zetian-milter"), std::string::npos) << error;
}

TEST_F(HealthServerTest, ListensOnIpv6Loopback) {
  startOrFail(options("[::1]:0"));
  const std::uint16_t port = harness.tcpPort();
  ASSERT_NE(port, 0);
  const int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in6 addr{};
  addr.sin6_family = AF_INET6;
  addr.sin6_port = htons(port);
  addr.sin6_addr = in6addr_loopback;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    GTEST_SKIP() << "no IPv6 loopback here";
  }
  EXPECT_EQ(roundTrip(fd, simpleRequest("GET", "/live")).status, 200);
}

TEST_F(HealthServerTest, StartTwiceIsRefused) {
  startOrFail(options());
  EXPECT_NE(harness.startAgain().find("already started"), std::string::npos);
  EXPECT_EQ(overUnix("GET", "/live").status, 200);
}

TEST_F(HealthServerTest, ManyClientsAtOnceAllGetAnswers) {
  startOrFail(options());
  constexpr int kClients = 16;
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&] {
      for (int k = 0; k < 10; ++k) {
        if (roundTrip(connectUnix(socket_path), simpleRequest("GET", "/health")).status == 200) ++ok;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), kClients * 10);
}

}  // namespace
}  // namespace zetian::cluster
