// The resolver against a real DNS server: a dnsmasq on a loopback port it is told,
// serving only the records each test needs, plus a "server" that never answers (a
// UDP socket nobody reads). The event_base runs on the test thread in short slices
// until the answer is in or a deadline passes; one test uses the real cluster Loop.
#include "cluster/discovery/resolver.h"

#include <ares.h>
#include <arpa/nameser.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <pwd.h>

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <ostream>
#include <tuple>

#include "cluster/loop.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::cluster::discovery {

// For GoogleTest's messages; found by ADL, so it lives in Endpoint's namespace.
void PrintTo(const Endpoint& endpoint, std::ostream* out) { *out << formatEndpoint(endpoint); }

namespace {

using namespace std::chrono_literals;
using Endpoints = std::vector<Endpoint>;

// Success if `text` contains every one of `parts`; the failure shows the text.
::testing::AssertionResult mentions(const std::string& text,
                                    std::initializer_list<std::string> parts) {
  for (const std::string& part : parts) {
    if (text.find(part) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "\"" << text << "\" does not mention \"" << part << "\"";
    }
  }
  return ::testing::AssertionSuccess();
}

Endpoints sorted(Endpoints endpoints) {
  std::sort(endpoints.begin(), endpoints.end(), [](const Endpoint& a, const Endpoint& b) {
    return std::tie(a.host, a.port) < std::tie(b.host, b.port);
  });
  return endpoints;
}

// ---- running the event_base ------------------------------------------------------

// Runs `base` in 20 ms slices until done() or `limit` passes; false on the deadline.
bool runUntil(event_base* base, const std::function<bool()>& done,
              std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    timeval slice{0, 20000};
    event_base_loopexit(base, &slice);
    event_base_dispatch(base);
  }
  return true;
}

void runFor(event_base* base, std::chrono::milliseconds how_long) {
  runUntil(
      base, [] { return false; }, how_long);
}

// One lookup's answer, filled in by the callback from answerInto().
struct Answer {
  int calls = 0;
  std::vector<Endpoint> endpoints;
  std::string error;
};

Resolver::Callback answerInto(Answer* answer) {
  return [answer](std::vector<Endpoint> endpoints, std::string error) {
    ++answer->calls;
    answer->endpoints = std::move(endpoints);
    answer->error = std::move(error);
  };
}

// ---- sockets -----------------------------------------------------------------------

// A UDP socket on 127.0.0.1 that is never read: a DNS server that never answers.
class SilentServer {
 public:
  SilentServer() {
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof addr;
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
      throw std::runtime_error("cannot bind a UDP socket on 127.0.0.1");
    }
    port_ = ntohs(addr.sin_port);
  }
  ~SilentServer() { close(fd_); }
  SilentServer(const SilentServer&) = delete;
  SilentServer& operator=(const SilentServer&) = delete;

  std::uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // True if a query reached it (and consumes it).
  bool receivedSomething() const {
    char buf[512];
    return recv(fd_, buf, sizeof buf, MSG_DONTWAIT) >= 0;
  }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

// A UDP port on 127.0.0.1 that was free a moment ago.
std::uint16_t pickFreeUdpPort() { return SilentServer().port(); }

// Sends one query for `name` to 127.0.0.1:port and waits up to `wait` for any reply.
bool answersQuery(std::uint16_t port, const std::string& name, std::chrono::milliseconds wait) {
  unsigned char* query = nullptr;
  int length = 0;
  if (ares_create_query(name.c_str(), ns_c_in, ns_t_a, 0x2b2b, 1, &query, &length, 0) !=
      ARES_SUCCESS) {
    return false;
  }
  const std::vector<unsigned char> packet(query, query + length);
  ares_free_string(query);

  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool answered = false;
  if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, packet.data(), packet.size(), 0) == static_cast<ssize_t>(packet.size())) {
    pollfd p{fd, POLLIN, 0};
    char reply[512];
    // A refused datagram (nothing listening yet) shows up as a failed recv.
    answered =
        poll(&p, 1, static_cast<int>(wait.count())) == 1 && recv(fd, reply, sizeof reply, 0) > 0;
  }
  if (fd >= 0) close(fd);
  return answered;
}

// ---- dnsmasq -----------------------------------------------------------------------

std::optional<std::string> findDnsmasq() {
  for (const char* path :
       {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq", "/sbin/dnsmasq", "/usr/local/sbin/dnsmasq"}) {
    if (access(path, X_OK) == 0) return std::string(path);
  }
  return std::nullopt;
}

// --user/--group for dnsmasq: as root it would otherwise switch to nobody/dip (which
// may not exist); as anyone else it must be told to stay who it is.
std::vector<std::string> stayAsCurrentUser() {
  std::vector<std::string> args;
  char buf[4096];
  passwd user{};
  passwd* found_user = nullptr;
  if (getpwuid_r(geteuid(), &user, buf, sizeof buf, &found_user) == 0 && found_user != nullptr) {
    args.push_back(std::string("--user=") + found_user->pw_name);
  }
  group grp{};
  group* found_group = nullptr;
  if (getgrgid_r(getegid(), &grp, buf, sizeof buf, &found_group) == 0 && found_group != nullptr) {
    args.push_back(std::string("--group=") + found_group->gr_name);
  }
  return args;
}

// A dnsmasq serving only `records` (dnsmasq options) on 127.0.0.1, answering
// NXDOMAIN for every other name (--local=/#/: nothing is forwarded anywhere).
//
// --keep-in-foreground without --no-daemon: in debug mode (--no-daemon) dnsmasq
// serves TCP in its main process, and while c-ares keeps its TCP connection open for
// further queries, no UDP query gets an answer.
class Dnsmasq {
 public:
  explicit Dnsmasq(std::string binary) : binary_(std::move(binary)) {}
  ~Dnsmasq() { stop(); }
  Dnsmasq(const Dnsmasq&) = delete;
  Dnsmasq& operator=(const Dnsmasq&) = delete;

  // "" once it answers queries, else why not (with its log).
  std::string start(const std::vector<std::string>& records) {
    std::string why;
    // The port is free when picked but may be taken before dnsmasq binds it: retry.
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = pickFreeUdpPort();
      std::vector<std::string> args = {binary_,
                                       "--keep-in-foreground",
                                       "--conf-file=/dev/null",
                                       "--no-resolv",
                                       "--no-hosts",
                                       "--local=/#/",
                                       "--pid-file=",
                                       "--log-facility=-",
                                       "--bind-interfaces",
                                       "--listen-address=127.0.0.1",
                                       "--port=" + std::to_string(port_)};
      for (const auto& arg : stayAsCurrentUser()) args.push_back(arg);
      for (const auto& record : records) args.push_back(record);
      commandLine_.clear();
      for (const auto& arg : args) commandLine_ += (commandLine_.empty() ? "" : " ") + arg;
      if (!spawn(args, &why)) return why;
      if (waitUntilAnswering(&why)) return "";
    }
    return why;
  }

  // SIGTERM, so that it also ends the children it forked for TCP queries; SIGKILL if
  // it has not exited within 5 s. Reaped either way.
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);  // our own child, by pid
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() >= deadline) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      poll(nullptr, 0, 10);
    }
    pid_ = -1;
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  const std::string& commandLine() const { return commandLine_; }

 private:
  bool spawn(const std::vector<std::string>& args, std::string* why) {
    std::vector<std::string> copy = args;
    std::vector<char*> argv;
    for (auto& arg : copy) argv.push_back(arg.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      pid_ = -1;
      *why = "cannot start " + binary_ + ": " + std::strerror(rc);
      return false;
    }
    return true;
  }

  bool waitUntilAnswering(std::string* why) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (answersQuery(port_, "ready.zetian.test", 100ms)) return true;
      poll(nullptr, 0, 10);  // refused at once while it starts: pace the retries
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        *why = "dnsmasq exited at start: " + log();
        return false;
      }
    }
    *why = "dnsmasq did not answer within 10 s: " + log();
    stop();
    return false;
  }

  std::string log() const {
    std::ifstream in(log_path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  const std::string binary_;
  testing::TempDir dir_;
  const std::string log_path_ = dir_.file("dnsmasq.log");
  pid_t pid_ = -1;
  std::uint16_t port_ = 0;
  std::string commandLine_;
};

// The zone every dnsmasq test serves.
const std::vector<std::string> kRecords = {
    "--host-record=mx2.zetian.test,192.0.2.10,2001:db8::10",
    "--host-record=plain.zetian.test,192.0.2.30",
    "--host-record=node-a.zetian.test,192.0.2.1",
    "--host-record=node-b.zetian.test,192.0.2.2",
    // Written in the wrong order on purpose: priority 10 must come before 20.
    "--srv-host=_zetian._tcp.zetian.test,node-b.zetian.test,7002,20,50",
    "--srv-host=_zetian._tcp.zetian.test,node-a.zetian.test,7001,10,50",
    // Equal priority: the heavier weight comes first.
    "--srv-host=_weighted._tcp.zetian.test,node-a.zetian.test,7011,10,5",
    "--srv-host=_weighted._tcp.zetian.test,node-b.zetian.test,7012,10,90",
    // One target that does not exist.
    "--srv-host=_partial._tcp.zetian.test,ghost.zetian.test,7021,10,50",
    "--srv-host=_partial._tcp.zetian.test,node-a.zetian.test,7022,20,50",
    "--srv-host=_dead._tcp.zetian.test,ghost.zetian.test,7031,10,50",
    // No target: the "." record, "service not offered here".
    "--srv-host=_off._tcp.zetian.test",
};

// Enough SRV records that the answer exceeds 512 bytes: c-ares gets a truncated UDP
// answer and asks again over TCP, which needs write readiness while connecting.
std::vector<std::string> withManySrvRecords(std::vector<std::string> records, int count) {
  for (int i = 0; i < count; ++i) {
    records.push_back("--srv-host=_many._tcp.zetian.test,node-" + std::string(i % 2 ? "a" : "b") +
                      ".zetian.test," + std::to_string(8000 + i) + ",10,50");
  }
  return records;
}
constexpr int kManySrvRecords = 40;

// ---- fixtures ----------------------------------------------------------------------

class ResolverTest : public ::testing::Test {
 protected:
  void SetUp() override { base_ = event_base_new(); }
  void TearDown() override {
    resolver_.reset();
    event_base_free(base_);
  }

  void createResolver(const std::string& servers) {
    std::string error;
    resolver_ = Resolver::create(base_, servers, &error);
    ASSERT_NE(resolver_, nullptr) << error;
    ASSERT_EQ(error, "");
  }

  bool waitFor(const Answer& answer, std::chrono::milliseconds limit = 10s) {
    return runUntil(
        base_, [&] { return answer.calls > 0; }, limit);
  }

  event_base* base_ = nullptr;
  std::unique_ptr<Resolver> resolver_;
};

class ResolverWithDnsmasqTest : public ResolverTest {
 protected:
  void SetUp() override {
    ResolverTest::SetUp();
    const auto binary = findDnsmasq();
    if (!binary) GTEST_SKIP() << "dnsmasq is not installed (apt-get install dnsmasq-base)";
    dnsmasq_ = std::make_unique<Dnsmasq>(*binary);
    const std::string why = dnsmasq_->start(withManySrvRecords(kRecords, kManySrvRecords));
    ASSERT_EQ(why, "") << dnsmasq_->commandLine();
    createResolver(dnsmasq_->address());
  }
  void TearDown() override {
    resolver_.reset();
    if (dnsmasq_) dnsmasq_->stop();
    ResolverTest::TearDown();
  }

  std::unique_ptr<Dnsmasq> dnsmasq_;
};

// ---- formatEndpoint ----------------------------------------------------------------

TEST(FormatEndpoint, WritesIpv4PlainAndIpv6InBrackets) {
  EXPECT_EQ(formatEndpoint({"192.0.2.1", 7946}), "192.0.2.1:7946");
  EXPECT_EQ(formatEndpoint({"::1", 7946}), "[::1]:7946");
}

// ---- create ------------------------------------------------------------------------

TEST_F(ResolverTest, CreateRefusesServerListsThatAreNotNumericAddressesWithPorts) {
  for (const std::string servers : {"dns.example.net:53", "127.0.0.1:0", "127.0.0.1:99999",
                                    "::1:53", "127.0.0.1:53,", "127.0.0.1:53,,[::1]:53"}) {
    std::string error;
    EXPECT_EQ(Resolver::create(base_, servers, &error), nullptr) << servers;
    EXPECT_TRUE(mentions(error, {"DNS servers `" + servers + "`"})) << servers;
  }
}

TEST_F(ResolverTest, CreateAcceptsTheSystemConfigurationAndServerLists) {
  for (const std::string servers :
       {"", "127.0.0.1", "127.0.0.1:5353", "[::1]:5353", "127.0.0.1:5353, 127.0.0.2:53"}) {
    std::string error;
    EXPECT_NE(Resolver::create(base_, servers, &error), nullptr) << servers << ": " << error;
  }
}

// ---- answers without DNS -----------------------------------------------------------

TEST_F(ResolverTest, NumericHostsPassThroughWithoutDnsAndAnswerAfterTheCallReturns) {
  SilentServer silent;  // any DNS query would go here and never be answered
  createResolver(silent.address());

  bool inside_call = false;
  int calls_inside = 0;
  std::vector<Answer> answers(3);
  const auto record = [&](Answer* answer) {
    return [&, answer](std::vector<Endpoint> endpoints, std::string error) {
      if (inside_call) ++calls_inside;
      answerInto(answer)(std::move(endpoints), std::move(error));
    };
  };
  inside_call = true;
  resolver_->resolveHost("192.0.2.7", 7946, record(&answers[0]));
  resolver_->resolveHost("2001:DB8:0:0::7", 7947, record(&answers[1]));
  resolver_->resolveService("192.0.2.8", 7948, record(&answers[2]));
  inside_call = false;
  EXPECT_EQ(answers[0].calls + answers[1].calls + answers[2].calls, 0)
      << "answered before the loop ran";

  ASSERT_TRUE(runUntil(
      base_, [&] { return answers[0].calls && answers[1].calls && answers[2].calls; }, 1s));
  EXPECT_EQ(calls_inside, 0);
  EXPECT_EQ(answers[0].error, "");
  EXPECT_EQ(answers[0].endpoints, (Endpoints{Endpoint{"192.0.2.7", 7946}}));
  EXPECT_EQ(answers[1].error, "");
  EXPECT_EQ(answers[1].endpoints, (Endpoints{Endpoint{"2001:db8::7", 7947}}));  // canonical
  EXPECT_EQ(answers[2].error, "");
  EXPECT_EQ(answers[2].endpoints, (Endpoints{Endpoint{"192.0.2.8", 7948}}));
  EXPECT_FALSE(silent.receivedSomething()) << "a numeric host was sent to DNS";
  runFor(base_, 100ms);
  for (const Answer& answer : answers) EXPECT_EQ(answer.calls, 1);
}

TEST_F(ResolverTest, HostsFileAnswerAlsoArrivesOnlyAfterTheCallReturns) {
  SilentServer silent;
  createResolver(silent.address());
  Answer answer;
  // c-ares answers "localhost" from /etc/hosts (or RFC 6761) inside ares_getaddrinfo.
  resolver_->resolveHost("localhost", 25, answerInto(&answer));
  EXPECT_EQ(answer.calls, 0);
  ASSERT_TRUE(waitFor(answer, 1s));
  EXPECT_EQ(answer.error, "");
  ASSERT_FALSE(answer.endpoints.empty());
  for (const Endpoint& endpoint : answer.endpoints) {
    EXPECT_TRUE(endpoint.host == "::1" || endpoint.host.rfind("127.", 0) == 0)
        << formatEndpoint(endpoint);
    EXPECT_EQ(endpoint.port, 25);
  }
}

TEST_F(ResolverTest, EmptyNamesAreAnErrorDeliveredLater) {
  createResolver("");
  Answer host;
  Answer service;
  resolver_->resolveHost("", 7946, answerInto(&host));
  resolver_->resolveService("", 7946, answerInto(&service));
  EXPECT_EQ(host.calls + service.calls, 0);
  ASSERT_TRUE(runUntil(
      base_, [&] { return host.calls && service.calls; }, 1s));
  EXPECT_TRUE(mentions(host.error, {"empty"}));
  EXPECT_TRUE(mentions(service.error, {"empty"}));
  EXPECT_TRUE(host.endpoints.empty());
}

// ---- lifetime ----------------------------------------------------------------------

TEST_F(ResolverTest, DestroyingWithQueriesInFlightCallsNothing) {
  SilentServer silent;
  createResolver(silent.address());
  Answer host;
  Answer service;
  Answer numeric;
  resolver_->resolveHost("mx2.zetian.test", 7946, answerInto(&host));
  resolver_->resolveService("_zetian._tcp.zetian.test", 7946, answerInto(&service));
  resolver_->resolveHost("192.0.2.1", 7946, answerInto(&numeric));  // answered, not delivered
  runFor(base_, 50ms);                                              // the queries are sent
  EXPECT_TRUE(silent.receivedSomething());
  ASSERT_EQ(host.calls + service.calls, 0);
  numeric = Answer{};

  resolver_->resolveHost("192.0.2.2", 7946, answerInto(&numeric));
  resolver_.reset();
  runFor(base_, 300ms);
  EXPECT_EQ(host.calls, 0);
  EXPECT_EQ(service.calls, 0);
  EXPECT_EQ(numeric.calls, 0);
}

TEST_F(ResolverTest, CallbackMayDestroyTheResolverAndLaterAnswersAreDropped) {
  createResolver("");
  Answer second;
  int first_calls = 0;
  resolver_->resolveHost("192.0.2.1", 7946, [&](std::vector<Endpoint>, std::string) {
    ++first_calls;
    resolver_.reset();
  });
  resolver_->resolveHost("192.0.2.2", 7946, answerInto(&second));
  ASSERT_TRUE(runUntil(
      base_, [&] { return first_calls > 0; }, 1s));
  runFor(base_, 100ms);
  EXPECT_EQ(first_calls, 1);
  EXPECT_EQ(second.calls, 0);
  EXPECT_EQ(resolver_, nullptr);
}

// ---- a server that never answers ---------------------------------------------------

TEST_F(ResolverTest, SilentServerGivesAnErrorWithinTheTimeout) {
  SilentServer silent;
  createResolver(silent.address());
  Answer host;
  Answer service;
  const auto started = std::chrono::steady_clock::now();
  resolver_->resolveHost("mx2.zetian.test", 7946, answerInto(&host));
  resolver_->resolveService("_zetian._tcp.zetian.test", 7946, answerInto(&service));
  // 2 tries: 2 s, then 4 s. Generous, for slow machines and sanitizers.
  ASSERT_TRUE(runUntil(
      base_, [&] { return host.calls && service.calls; }, 30s));
  const auto elapsed = std::chrono::steady_clock::now() - started;
  EXPECT_LT(elapsed, 20s);
  EXPECT_GE(elapsed, 1500ms) << "gave up before the first try timed out";

  EXPECT_TRUE(host.endpoints.empty());
  EXPECT_TRUE(mentions(host.error, {"`mx2.zetian.test`", "no answer"}));
  EXPECT_TRUE(service.endpoints.empty());
  EXPECT_TRUE(mentions(service.error, {"`_zetian._tcp.zetian.test`", "SRV", "no answer"}));
}

// ---- against dnsmasq ---------------------------------------------------------------

TEST_F(ResolverWithDnsmasqTest, HostRecordGivesBothItsAAndAaaaAddresses) {
  Answer answer;
  resolver_->resolveHost("mx2.zetian.test", 7946, answerInto(&answer));
  ASSERT_TRUE(waitFor(answer));
  EXPECT_EQ(answer.error, "");
  EXPECT_EQ(sorted(answer.endpoints),
            sorted({Endpoint{"192.0.2.10", 7946}, Endpoint{"2001:db8::10", 7946}}));
}

TEST_F(ResolverWithDnsmasqTest, SrvTargetsComeInPriorityOrderWithTheirOwnPorts) {
  Answer answer;
  resolver_->resolveService("_zetian._tcp.zetian.test", 7946, answerInto(&answer));
  ASSERT_TRUE(waitFor(answer));
  EXPECT_EQ(answer.error, "");
  EXPECT_EQ(answer.endpoints,
            (Endpoints{Endpoint{"192.0.2.1", 7001}, Endpoint{"192.0.2.2", 7002}}));
}

TEST_F(ResolverWithDnsmasqTest, EqualPrioritySrvTargetsComeHeavierWeightFirst) {
  Answer answer;
  resolver_->resolveService("_weighted._tcp.zetian.test", 7946, answerInto(&answer));
  ASSERT_TRUE(waitFor(answer));
  EXPECT_EQ(answer.error, "");
  EXPECT_EQ(answer.endpoints,
            (Endpoints{Endpoint{"192.0.2.2", 7012}, Endpoint{"192.0.2.1", 7011}}));
}

TEST_F(ResolverWithDnsmasqTest, NameWithoutSrvRecordsFallsBackToItsAddressWithTheFallbackPort) {
  Answer answer;
  resolver_->resolveService("plain.zetian.test", 7946, answerInto(&answer));
  ASSERT_TRUE(waitFor(answer));
  EXPECT_EQ(answer.error, "");
  EXPECT_EQ(answer.endpoints, (Endpoints{Endpoint{"192.0.2.30", 7946}}));
}

TEST_F(ResolverWithDnsmasqTest, NxdomainErrorNamesTheNameAndWhatWasTried) {
  Answer host;
  Answer service;
  resolver_->resolveHost("nope.zetian.test", 7946, answerInto(&host));
  resolver_->resolveService("_nope._tcp.zetian.test", 7946, answerInto(&service));
  ASSERT_TRUE(runUntil(
      base_, [&] { return host.calls && service.calls; }, 10s));
  EXPECT_TRUE(host.endpoints.empty());
  EXPECT_TRUE(mentions(host.error, {"`nope.zetian.test`", "NXDOMAIN"}));
  EXPECT_TRUE(service.endpoints.empty());
  EXPECT_TRUE(
      mentions(service.error, {"`_nope._tcp.zetian.test`", "SRV", "A/AAAA", "7946", "NXDOMAIN"}));
}

TEST_F(ResolverWithDnsmasqTest, SrvTargetThatDoesNotResolveIsLeftOutWhenAnotherDoes) {
  Answer answer;
  resolver_->resolveService("_partial._tcp.zetian.test", 7946, answerInto(&answer));
  ASSERT_TRUE(waitFor(answer));
  EXPECT_EQ(answer.error, "");
  EXPECT_EQ(answer.endpoints, (Endpoints{Endpoint{"192.0.2.1", 7022}}));
}

TEST_F(ResolverWithDnsmasqTest, SrvWhoseTargetsAllFailIsAnErrorNamingTheTargets) {
  Answer answer;
  resolver_->resolveService("_dead._tcp.zetian.test", 7946, answerInto(&answer));
  ASSERT_TRUE(waitFor(answer));
  EXPECT_TRUE(answer.endpoints.empty());
  EXPECT_TRUE(
      mentions(answer.error, {"`_dead._tcp.zetian.test`", "`ghost.zetian.test`", "NXDOMAIN"}));
}

TEST_F(ResolverWithDnsmasqTest, SrvWithTargetDotSaysTheServiceIsNotOffered) {
  Answer answer;
  resolver_->resolveService("_off._tcp.zetian.test", 7946, answerInto(&answer));
  ASSERT_TRUE(waitFor(answer));
  EXPECT_TRUE(answer.endpoints.empty());
  EXPECT_TRUE(mentions(answer.error, {"`_off._tcp.zetian.test`", "not offered"}));
}

TEST_F(ResolverWithDnsmasqTest, TruncatedSrvAnswerIsFetchedAgainOverTcp) {
  Answer answer;
  resolver_->resolveService("_many._tcp.zetian.test", 7946, answerInto(&answer));
  ASSERT_TRUE(waitFor(answer));
  EXPECT_EQ(answer.error, "");
  EXPECT_EQ(answer.endpoints.size(), static_cast<std::size_t>(kManySrvRecords));
}

TEST_F(ResolverWithDnsmasqTest, CallbackMayStartTheNextLookup) {
  Answer second;
  int first_calls = 0;
  resolver_->resolveHost("192.0.2.1", 7946, [&](std::vector<Endpoint>, std::string) {
    ++first_calls;
    resolver_->resolveService("_zetian._tcp.zetian.test", 7946, answerInto(&second));
  });
  ASSERT_TRUE(waitFor(second));
  EXPECT_EQ(first_calls, 1);
  EXPECT_EQ(second.error, "");
  EXPECT_EQ(second.endpoints.size(), 2u);
}

TEST_F(ResolverWithDnsmasqTest, ManyLookupsAtOnceEachGetTheirOwnAnswer) {
  std::vector<Answer> hosts(20);
  std::vector<Answer> services(20);
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    resolver_->resolveHost(i % 2 ? "mx2.zetian.test" : "nope.zetian.test",
                           static_cast<std::uint16_t>(1000 + i), answerInto(&hosts[i]));
    resolver_->resolveService(i % 2 ? "_zetian._tcp.zetian.test" : "plain.zetian.test",
                              static_cast<std::uint16_t>(2000 + i), answerInto(&services[i]));
  }
  ASSERT_TRUE(runUntil(
      base_,
      [&] {
        for (std::size_t i = 0; i < hosts.size(); ++i) {
          if (hosts[i].calls == 0 || services[i].calls == 0) return false;
        }
        return true;
      },
      10s));
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    EXPECT_EQ(hosts[i].calls, 1);
    EXPECT_EQ(services[i].calls, 1);
    const auto host_port = static_cast<std::uint16_t>(1000 + i);
    const auto service_port = static_cast<std::uint16_t>(2000 + i);
    if (i % 2) {
      EXPECT_EQ(sorted(hosts[i].endpoints),
                sorted({Endpoint{"192.0.2.10", host_port}, Endpoint{"2001:db8::10", host_port}}))
          << i;
      EXPECT_EQ(services[i].endpoints,
                (Endpoints{Endpoint{"192.0.2.1", 7001}, Endpoint{"192.0.2.2", 7002}}))
          << i;
    } else {
      EXPECT_TRUE(mentions(hosts[i].error, {"NXDOMAIN"})) << i;
      EXPECT_EQ(services[i].endpoints, (Endpoints{Endpoint{"192.0.2.30", service_port}})) << i;
    }
  }
}

TEST_F(ResolverWithDnsmasqTest, DestroyingWithAnAnswerOnTheWayCallsNothing) {
  Answer host;
  Answer service;
  resolver_->resolveHost("mx2.zetian.test", 7946, answerInto(&host));
  resolver_->resolveService("_zetian._tcp.zetian.test", 7946, answerInto(&service));
  resolver_.reset();  // the queries are sent; their answers come to closed sockets
  runFor(base_, 300ms);
  EXPECT_EQ(host.calls, 0);
  EXPECT_EQ(service.calls, 0);
}

// The way the cluster uses it: created, used and destroyed on the Loop's thread.
TEST_F(ResolverWithDnsmasqTest, WorksOnTheClusterLoopThread) {
  Loop loop;
  loop.start();
  std::unique_ptr<Resolver> resolver;
  const std::string error = testing::runOnLoop(loop, [&] {
    std::string why;
    resolver = Resolver::create(loop.base(), dnsmasq_->address(), &why);
    return why;
  });
  ASSERT_NE(resolver, nullptr) << error;

  std::promise<std::pair<std::vector<Endpoint>, bool>> answered;
  testing::runOnLoop(loop, [&] {
    resolver->resolveService("_zetian._tcp.zetian.test", 7946,
                             [&](std::vector<Endpoint> endpoints, std::string) {
                               answered.set_value({std::move(endpoints), loop.isThisThread()});
                             });
    return 0;
  });
  auto future = answered.get_future();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  const auto [endpoints, on_loop_thread] = future.get();
  EXPECT_TRUE(on_loop_thread);
  EXPECT_EQ(endpoints, (Endpoints{Endpoint{"192.0.2.1", 7001}, Endpoint{"192.0.2.2", 7002}}));

  testing::runOnLoop(loop, [&] {
    resolver.reset();
    return 0;
  });
  loop.stop();
}

}  // namespace
}  // namespace zetian::cluster::discovery
