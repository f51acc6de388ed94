// The health server, tested through real sockets: a server on a temp-dir Unix socket
// (and a loopback TCP port it picks), a scripted engine behind AdminApi.
#include "cluster/health_server.h"

#include <dirent.h>
#include <event2/event.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <filesystem>
#include <mutex>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include "cluster/accept_guard.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::cluster {
namespace {

using namespace std::chrono_literals;
using testing::FakeAdmin;
using testing::RawReply;
using testing::ServerHarness;
using testing::TempDir;
using testing::connectTcp;
using testing::connectUnix;
using testing::roundTrip;
using testing::simpleRequest;

class HealthServerTest : public ::testing::Test {
 protected:
  HealthServerOptions options(const std::string& tcp = "", const std::string& token = "") {
    HealthServerOptions o;
    o.unix_path = socket_path;
    o.tcp_listen = tcp;
    o.admin_token = token;
    return o;
  }
  void startOrFail(HealthServerOptions o) {
    const std::string error = harness.start(std::move(o));
    ASSERT_EQ(error, "");
  }
  RawReply overUnix(const std::string& method, const std::string& target,
                    const std::string& headers = "") {
    return roundTrip(connectUnix(socket_path), simpleRequest(method, target, headers));
  }
  RawReply overTcp(const std::string& method, const std::string& target,
                   const std::string& headers = "") {
    return roundTrip(connectTcp(harness.tcpPort()), simpleRequest(method, target, headers));
  }

  TempDir dir;
  std::string socket_path = dir.file("health.sock");
  FakeAdmin api;
  ServerHarness harness{api};
};

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
  o.io_timeout = 400ms;       // each byte arrives well within this
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
