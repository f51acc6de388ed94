// MulticastDiscovery over real sockets, several nodes on one event_base in this process.
//
// Where the multicast flows: loopback. Linux delivers IPv4 multicast sent with
// IP_MULTICAST_IF 127.0.0.1 to memberships joined on 127.0.0.1 even though `lo` lacks
// the MULTICAST flag, and with TTL 1 nothing leaves the host; each test uses its own
// port, so tests running in parallel do not hear each other. Where a probe shows that
// this host does not deliver it (or ZETIAN_TEST_MULTICAST_NETNS=1 asks for it), every
// scenario runs in a forked child inside a new network namespace of its own
// (unshare(CLONE_NEWNET), inside a new user namespace when unprivileged; then `lo` up),
// and sends what it saw back through a pipe for the test to check; without the right to
// create one the test is skipped, saying why. The host's own interfaces are never changed.
#include "cluster/discovery/multicast.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "cluster/discovery/beacon.h"

namespace zetian::cluster::discovery {
namespace {

using namespace std::chrono_literals;

const std::string kSecret = "correct horse battery staple, 32+";
const std::string kGroupAddress = "239.255.42.42";
constexpr auto kDeadline = 10s;

// ---- What a scenario saw, and how it travels through the pipe -------------------------

struct NodeReport {
  std::string start_error;  // "" when start() succeeded
  std::uint64_t ignored = 0;
  std::vector<std::pair<std::string, std::string>> peers;  // every on_peer call, in order
  std::vector<std::string> logs;                           // "LEVEL line"

  std::size_t callsFrom(const std::string& node_id) const {
    return static_cast<std::size_t>(std::count_if(
        peers.begin(), peers.end(), [&](const auto& peer) { return peer.first == node_id; }));
  }
  std::size_t logsContaining(const std::string& text) const {
    return static_cast<std::size_t>(std::count_if(logs.begin(), logs.end(), [&](const auto& line) {
      return line.find(text) != std::string::npos;
    }));
  }
};

struct Report {
  bool in_time = false;  // the scenario's condition held before the deadline
  std::map<std::string, NodeReport> nodes;
};

// One fact a line; node ids, addresses and log lines hold no newline.
std::string serialize(const Report& report) {
  std::ostringstream out;
  out << "in_time " << report.in_time << '\n';
  for (const auto& [name, node] : report.nodes) {
    out << "node " << name << '\n' << "ignored " << node.ignored << '\n';
    if (!node.start_error.empty()) out << "start_error " << node.start_error << '\n';
    for (const auto& [id, address] : node.peers) out << "peer " << id << ' ' << address << '\n';
    for (const auto& line : node.logs) out << "log " << line << '\n';
  }
  return out.str();
}

Report deserialize(const std::string& text) {
  Report report;
  NodeReport* node = nullptr;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const std::size_t space = line.find(' ');
    const std::string key = line.substr(0, space);
    const std::string value = space == std::string::npos ? "" : line.substr(space + 1);
    if (key == "in_time") {
      report.in_time = value == "1";
    } else if (key == "node") {
      node = &report.nodes[value];
    } else if (node == nullptr) {
      continue;
    } else if (key == "ignored") {
      node->ignored = std::stoull(value);
    } else if (key == "start_error") {
      node->start_error = value;
    } else if (key == "peer") {
      const std::size_t split = value.find(' ');
      node->peers.emplace_back(value.substr(0, split), value.substr(split + 1));
    } else if (key == "log") {
      node->logs.push_back(value);
    }
  }
  return report;
}

// ---- Nodes on one event_base, run by this thread --------------------------------------

class Lan {
 public:
  explicit Lan(std::uint16_t port) : port_(port), base_(event_base_new()) {
    if (base_ == nullptr) throw std::runtime_error("event_base_new failed");
  }
  ~Lan() {
    for (auto& [name, node] : nodes_) node.discovery.reset();
    event_base_free(base_);
  }
  Lan(const Lan&) = delete;
  Lan& operator=(const Lan&) = delete;

  std::string group() const { return kGroupAddress + ":" + std::to_string(port_); }
  std::uint16_t port() const { return port_; }

  MulticastOptions options(const std::string& node_id, const std::string& advertise) const {
    MulticastOptions options;
    options.group = group();
    options.interface_address = "127.0.0.1";
    options.interval = 100ms;
    options.cluster_id = "test";
    options.node_id = node_id;
    options.advertise = advertise;
    options.secret = kSecret;
    return options;
  }

  // Creates and starts the node `name`; its calls and log lines go to its report.
  MulticastDiscovery& add(const std::string& name, MulticastOptions options) {
    Node& node = nodes_[name];
    NodeReport* seen = &node.seen;
    node.discovery = std::make_unique<MulticastDiscovery>(
        base_, std::move(options), [seen](conf::LogLevel level, std::string_view line) {
          seen->logs.push_back(std::string(conf::logLevelName(level)) + " " + std::string(line));
        });
    node.discovery->on_peer = [seen](const std::string& id, const std::string& address) {
      seen->peers.emplace_back(id, address);
    };
    std::string error;
    if (!node.discovery->start(&error)) node.seen.start_error = error.empty() ? "?" : error;
    return *node.discovery;
  }

  MulticastDiscovery& node(const std::string& name) { return *nodes_.at(name).discovery; }
  const NodeReport& seen(const std::string& name) const { return nodes_.at(name).seen; }
  std::uint64_t ignored(const std::string& name) const {
    const Node& node = nodes_.at(name);
    return node.discovery ? node.discovery->ignored() : node.seen.ignored;
  }

  // Destroys the node now (safe from inside its own on_peer), keeping its report.
  void destroy(const std::string& name) {
    Node& node = nodes_.at(name);
    if (!node.discovery) return;
    node.seen.ignored = node.discovery->ignored();
    node.discovery.reset();
  }

  // Runs the loop in short slices until done() holds; false at the deadline.
  bool runUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      const timeval slice{0, 20000};
      event_base_loopexit(base_, &slice);
      event_base_dispatch(base_);
    }
    return true;
  }

  // Handles whatever is already waiting in the sockets, without waiting for more. A
  // looped-back datagram is queued to every member socket inside the sender's sendto(),
  // so once one node got it, this is enough for all of them to have got it.
  void drain() {
    for (int i = 0; i < 4; ++i) event_base_loop(base_, EVLOOP_NONBLOCK);
  }

  Report report(bool in_time) const {
    Report report;
    report.in_time = in_time;
    for (const auto& [name, node] : nodes_) {
      NodeReport seen = node.seen;
      seen.ignored = ignored(name);
      report.nodes[name] = std::move(seen);
    }
    return report;
  }

 private:
  struct Node {
    std::unique_ptr<MulticastDiscovery> discovery;
    NodeReport seen;
  };
  const std::uint16_t port_;
  event_base* const base_;
  std::map<std::string, Node> nodes_;
};

// Sends `datagram` to the group as any program on this host could.
void sendToGroup(std::uint16_t port, const std::string& datagram) {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  in_addr loopback{};
  inet_pton(AF_INET, "127.0.0.1", &loopback);
  setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &loopback, sizeof loopback);
  sockaddr_in group{};
  group.sin_family = AF_INET;
  group.sin_port = htons(port);
  inet_pton(AF_INET, kGroupAddress.c_str(), &group.sin_addr);
  const auto sent = sendto(fd, datagram.data(), datagram.size(), 0,
                           reinterpret_cast<const sockaddr*>(&group), sizeof group);
  const int err = errno;
  close(fd);
  if (sent < 0)
    throw std::runtime_error(std::string("sendto the group failed: ") + std::strerror(err));
}

// A UDP port nobody uses right now, chosen by the kernel.
std::uint16_t freePort() {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  socklen_t length = sizeof address;
  const bool found =
      fd >= 0 && bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  if (fd >= 0) close(fd);
  if (!found) throw std::runtime_error("cannot pick a free UDP port");
  return ntohs(address.sin_port);
}

// ---- Where multicast can flow ---------------------------------------------------------

// True when a datagram sent to a group on 127.0.0.1 comes back to a member there.
bool loopbackDeliversMulticast() {
  const std::uint16_t port = freePort();
  const int receiver = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (receiver < 0) return false;
  sockaddr_in group{};
  group.sin_family = AF_INET;
  group.sin_port = htons(port);
  inet_pton(AF_INET, kGroupAddress.c_str(), &group.sin_addr);
  ip_mreqn membership{};
  membership.imr_multiaddr = group.sin_addr;
  inet_pton(AF_INET, "127.0.0.1", &membership.imr_address);
  bool delivered = false;
  if (bind(receiver, reinterpret_cast<const sockaddr*>(&group), sizeof group) == 0 &&
      setsockopt(receiver, IPPROTO_IP, IP_ADD_MEMBERSHIP, &membership, sizeof membership) == 0) {
    try {
      sendToGroup(port, "probe");
      pollfd ready{receiver, POLLIN, 0};
      char buffer[16];
      delivered = poll(&ready, 1, 2000) == 1 && recv(receiver, buffer, sizeof buffer, 0) == 5;
    } catch (const std::exception&) {
      delivered = false;
    }
  }
  close(receiver);
  return delivered;
}

// Why the scenarios run in a namespace of their own; "" when they run here.
const std::string& namespaceReason() {
  static const std::string reason = [] {
    const char* forced = std::getenv("ZETIAN_TEST_MULTICAST_NETNS");
    if (forced != nullptr && std::string(forced) == "1")
      return std::string("ZETIAN_TEST_MULTICAST_NETNS=1");
    if (!loopbackDeliversMulticast())
      return std::string("this host's loopback does not deliver multicast");
    return std::string();
  }();
  return reason;
}

// A new network namespace for this (single-threaded, just forked) process: directly
// with CAP_SYS_ADMIN, else inside a new user namespace where unprivileged users may.
std::string enterPrivateNetwork() {
  if (unshare(CLONE_NEWNET) == 0) return "";
  const int err = errno;
  if (unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0) return "";
  return std::string("cannot create a network namespace (unshare(CLONE_NEWNET): ") +
         std::strerror(err) + "; with CLONE_NEWUSER: " + std::strerror(errno) +
         "): run as root or with CAP_SYS_ADMIN, or allow unprivileged user namespaces";
}

// In the child, in its new namespace: `lo` starts down there.
std::string bringLoopbackUp() {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::string("socket: ") + std::strerror(errno);
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  std::string error;
  if (ioctl(fd, SIOCGIFFLAGS, &request) != 0) {
    error = std::string("SIOCGIFFLAGS lo: ") + std::strerror(errno);
  } else {
    request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP | IFF_MULTICAST);
    if (ioctl(fd, SIOCSIFFLAGS, &request) != 0) {
      error = std::string("SIOCSIFFLAGS lo: ") + std::strerror(errno);
    }
  }
  close(fd);
  return error;
}

void writeAll(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

struct Outcome {
  Report report;
  std::string skipped;  // why the scenario could not run here
  std::string failed;   // the scenario itself broke (exception, crash)
};

// Runs `scenario(port)` here, or in a child in a private network namespace (always with
// own_network: for scenarios that need a network unlike the host's).
Outcome runScenario(const std::function<Report(std::uint16_t port)>& scenario,
                    bool own_network = false) {
  if (!own_network && namespaceReason().empty()) {
    try {
      return {scenario(freePort()), {}, {}};
    } catch (const std::exception& e) {
      return {{}, {}, e.what()};
    }
  }
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return {{}, {}, "pipe failed"};
  const pid_t pid = fork();
  if (pid < 0) return {{}, {}, "fork failed"};
  if (pid == 0) {
    close(fds[0]);
    std::string message;
    if (const std::string error = enterPrivateNetwork(); !error.empty()) {
      message = "skip " +
                (own_network ? "this test needs a network of its own" : namespaceReason()) +
                ", and " + error;
    } else if (const std::string error = bringLoopbackUp(); !error.empty()) {
      message = "skip cannot bring up lo in the test's network namespace: " + error;
    } else if (!loopbackDeliversMulticast()) {
      message = "skip even a private network namespace does not deliver multicast on lo";
    } else {
      try {
        message = "report\n" + serialize(scenario(freePort()));
      } catch (const std::exception& e) {
        message = std::string("fail ") + e.what();
      }
    }
    writeAll(fds[1], message);
    _exit(0);  // no atexit handlers, no gtest teardown: those belong to the parent
  }
  close(fds[1]);
  std::string received;
  char buffer[4096];
  const auto deadline = std::chrono::steady_clock::now() + 3 * kDeadline;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd ready{fds[0], POLLIN, 0};
    if (left.count() <= 0 || poll(&ready, 1, static_cast<int>(left.count())) == 0) {
      kill(pid, SIGKILL);
      break;
    }
    const ssize_t n = read(fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    received.append(buffer, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (received.rfind("skip ", 0) == 0) return {{}, received.substr(5), {}};
  if (received.rfind("report\n", 0) == 0) return {deserialize(received.substr(7)), {}, {}};
  if (received.rfind("fail ", 0) == 0) return {{}, {}, received.substr(5)};
  return {{}, {}, "the scenario's child process died (status " + std::to_string(status) + ")"};
}

// Runs the scenario (variadic: a lambda's braces do not protect its commas from the
// preprocessor) and binds its report to `report`, or skips or fails the test.
#define RUN_SCENARIO(report, ...)                                  \
  const Outcome outcome_ = runScenario(__VA_ARGS__);               \
  if (!outcome_.skipped.empty()) GTEST_SKIP() << outcome_.skipped; \
  ASSERT_EQ(outcome_.failed, "");                                  \
  const Report& report = outcome_.report

// ---- The behaviour --------------------------------------------------------------------

TEST(MulticastDiscovery, ANullEventBaseIsRefused) {
  EXPECT_THROW(MulticastDiscovery(nullptr, MulticastOptions{}, nullptr), std::invalid_argument);
}

TEST(MulticastDiscovery, TwoNodesWithTheSameSecretLearnEachOther) {
  RUN_SCENARIO(report, [](std::uint16_t port) {
    Lan lan(port);
    lan.add("a", lan.options("mx1", "127.0.0.1:7001"));
    lan.add("b", lan.options("mx2", "127.0.0.1:7002"));
    const bool in_time = lan.runUntil(
        [&] { return lan.seen("a").callsFrom("mx2") > 0 && lan.seen("b").callsFrom("mx1") > 0; });
    return lan.report(in_time);
  });
  const NodeReport& a = report.nodes.at("a");
  const NodeReport& b = report.nodes.at("b");
  ASSERT_EQ(a.start_error, "");
  ASSERT_EQ(b.start_error, "");
  EXPECT_TRUE(report.in_time) << "the nodes did not learn each other within the deadline";
  ASSERT_FALSE(a.peers.empty());
  ASSERT_FALSE(b.peers.empty());
  EXPECT_EQ(a.peers.front(), std::make_pair(std::string("mx2"), std::string("127.0.0.1:7002")));
  EXPECT_EQ(b.peers.front(), std::make_pair(std::string("mx1"), std::string("127.0.0.1:7001")));
  EXPECT_EQ(a.ignored, 0u);
  EXPECT_EQ(b.ignored, 0u);
}

TEST(MulticastDiscovery, EveryBeaconOfAnotherNodeIsReportedAndOurOwnAreNot) {
  RUN_SCENARIO(report, [](std::uint16_t port) {
    Lan lan(port);
    lan.add("a", lan.options("mx1", "127.0.0.1:7001"));
    lan.add("b", lan.options("mx2", "127.0.0.1:7002"));
    const bool in_time = lan.runUntil([&] { return lan.seen("b").callsFrom("mx1") >= 3; });
    lan.drain();  // a has had every one of its own beacons that b had
    return lan.report(in_time);
  });
  const NodeReport& a = report.nodes.at("a");
  EXPECT_TRUE(report.in_time) << "b did not hear three beacons of a within the deadline";
  EXPECT_GE(report.nodes.at("b").callsFrom("mx1"), 3u);
  EXPECT_EQ(a.callsFrom("mx1"), 0u);
  EXPECT_EQ(a.ignored, 0u) << "a node's own looped-back beacons are not refusals";
  for (const auto& [id, address] : a.peers) EXPECT_EQ(id, "mx2");
}

TEST(MulticastDiscovery, ANodeWithAnotherSecretIsNotLearnedAndItsBeaconsAreCounted) {
  RUN_SCENARIO(report, [](std::uint16_t port) {
    Lan lan(port);
    lan.add("a", lan.options("mx1", "127.0.0.1:7001"));
    lan.add("b", lan.options("mx2", "127.0.0.1:7002"));
    MulticastOptions stranger = lan.options("mx3", "127.0.0.1:7003");
    stranger.secret = "not the cluster's secret at all!";
    lan.add("stranger", stranger);
    const bool in_time = lan.runUntil([&] {
      return lan.seen("a").callsFrom("mx2") > 0 && lan.seen("b").callsFrom("mx1") > 0 &&
             lan.ignored("a") >= 3 && lan.ignored("b") >= 3 && lan.ignored("stranger") >= 3;
    });
    lan.drain();
    return lan.report(in_time);
  });
  const NodeReport& a = report.nodes.at("a");
  const NodeReport& b = report.nodes.at("b");
  const NodeReport& stranger = report.nodes.at("stranger");
  EXPECT_TRUE(report.in_time);
  EXPECT_EQ(a.callsFrom("mx3"), 0u);
  EXPECT_EQ(b.callsFrom("mx3"), 0u);
  EXPECT_TRUE(stranger.peers.empty()) << "the stranger learned " << stranger.peers.front().first;
  EXPECT_GE(a.ignored, 3u);
  EXPECT_GE(stranger.ignored, 3u);
  // Refusals are logged at debug, once per source per minute: the stranger's beacons all
  // come from 127.0.0.1, so one line each, however many beacons.
  EXPECT_EQ(a.logsContaining("multicast_beacon_ignored"), 1u);
  EXPECT_EQ(a.logsContaining("reason=\"bad MAC\""), 1u);
  EXPECT_EQ(a.logsContaining("debug multicast_beacon_ignored"), 1u);
  for (const auto& line : a.logs) EXPECT_EQ(line.find(kSecret), std::string::npos) << line;
}

TEST(MulticastDiscovery, GarbageOnTheGroupIsIgnoredCountedAndLoggedOncePerSource) {
  RUN_SCENARIO(report, [](std::uint16_t port) {
    Lan lan(port);
    lan.add("a", lan.options("mx1", "127.0.0.1:7001"));
    Beacon stale;
    stale.cluster_id = "test";
    stale.node_id = "mx9";
    stale.address = "127.0.0.1:7009";
    stale.sent_at_ms = 1;  // 1970
    const std::vector<std::string> garbage = {
        "",
        "hello",
        std::string(200, '\xff'),
        "ZTB1" + std::string(100, 'x'),
        std::string(4000, 'Z'),
        encodeBeacon(stale, kSecret),
    };
    for (const auto& datagram : garbage) sendToGroup(port, datagram);
    const bool in_time = lan.runUntil([&] { return lan.ignored("a") >= garbage.size(); });
    lan.drain();
    return lan.report(in_time);
  });
  const NodeReport& a = report.nodes.at("a");
  EXPECT_TRUE(report.in_time) << "not every garbage datagram was counted within the deadline";
  EXPECT_EQ(a.ignored, 6u);
  EXPECT_TRUE(a.peers.empty());
  EXPECT_EQ(a.logsContaining("multicast_beacon_ignored"), 1u);
}

TEST(MulticastDiscovery, ANodeClaimingOurNodeIdIsRefusedWithAWarning) {
  RUN_SCENARIO(report, [](std::uint16_t port) {
    Lan lan(port);
    lan.add("a", lan.options("mx1", "127.0.0.1:7001"));
    lan.add("twin", lan.options("mx1", "127.0.0.1:7099"));
    const bool in_time =
        lan.runUntil([&] { return lan.ignored("a") >= 2 && lan.ignored("twin") >= 2; });
    return lan.report(in_time);
  });
  const NodeReport& a = report.nodes.at("a");
  EXPECT_TRUE(report.in_time);
  EXPECT_TRUE(a.peers.empty());
  EXPECT_EQ(a.logsContaining("warn multicast_beacon_ignored"), 1u);
  EXPECT_EQ(a.logsContaining("127.0.0.1:7099"), 1u);
}

TEST(MulticastDiscovery, SendNowSendsABeaconWithoutWaitingForTheInterval) {
  RUN_SCENARIO(report, [](std::uint16_t port) {
    Lan lan(port);
    MulticastOptions slow_a = lan.options("mx1", "127.0.0.1:7001");
    slow_a.interval = 1h;
    MulticastOptions slow_b = lan.options("mx2", "127.0.0.1:7002");
    slow_b.interval = 1h;
    lan.add("a", slow_a);  // its first beacon goes out before b listens
    lan.add("b", slow_b);  // b's first beacon teaches a about b
    bool in_time = lan.runUntil([&] { return lan.seen("a").callsFrom("mx2") > 0; });
    lan.drain();
    if (lan.seen("b").callsFrom("mx1") != 0) throw std::runtime_error("b heard a before sendNow");
    lan.node("a").sendNow();
    in_time = lan.runUntil([&] { return lan.seen("b").callsFrom("mx1") > 0; }) && in_time;
    return lan.report(in_time);
  });
  EXPECT_TRUE(report.in_time);
  EXPECT_EQ(report.nodes.at("b").callsFrom("mx1"), 1u);
}

TEST(MulticastDiscovery, ANodeMayBeDestroyedFromItsOwnCallback) {
  RUN_SCENARIO(report, [](std::uint16_t port) {
    Lan lan(port);
    lan.add("a", lan.options("mx1", "127.0.0.1:7001"));
    lan.add("b", lan.options("mx2", "127.0.0.1:7002"));  // its first beacon waits for a
    bool destroyed = false;
    lan.node("a").on_peer = [&](const std::string&, const std::string&) {
      lan.destroy("a");
      destroyed = true;
    };
    // Queued behind b's beacon in a's socket: the destroyed node must not read them.
    for (int i = 0; i < 3; ++i) sendToGroup(port, "queued behind the beacon");
    const bool in_time = lan.runUntil([&] { return destroyed && lan.ignored("b") >= 3; });
    lan.drain();
    return lan.report(in_time);
  });
  EXPECT_TRUE(report.in_time);
  EXPECT_EQ(report.nodes.at("a").ignored, 0u) << "a read on after it was destroyed";
  EXPECT_EQ(report.nodes.at("b").ignored, 3u);
}

TEST(MulticastDiscovery, StartRefusesGroupsItCannotUseAndSaysWhy) {
  event_base* base = event_base_new();
  ASSERT_NE(base, nullptr);
  const auto startError = [&](const std::string& group, const std::string& interface_address) {
    MulticastOptions options;
    options.group = group;
    options.interface_address = interface_address;
    options.node_id = "mx1";
    options.advertise = "127.0.0.1:7001";
    options.secret = kSecret;
    MulticastDiscovery discovery(base, options, nullptr);
    std::string error;
    EXPECT_FALSE(discovery.start(&error)) << group;
    return error;
  };
  EXPECT_NE(startError("[ff02::1]:7946", "").find("only IPv4"), std::string::npos);
  EXPECT_NE(startError("ff02::1:7946", "").find("only IPv4"), std::string::npos);
  EXPECT_NE(startError("10.0.0.1:7946", "").find("not a multicast address"), std::string::npos);
  EXPECT_NE(startError("239.255.1.1", "").find("needs a port"), std::string::npos);
  EXPECT_NE(startError("", "").find("empty"), std::string::npos);
  EXPECT_NE(startError("239.255.1.1:0", "").find("port"), std::string::npos);
  EXPECT_NE(startError("mcast.example:7946", "").find("not a numeric IPv4"), std::string::npos);
  EXPECT_NE(startError("239.255.1.1:7946", "eth0").find("not a numeric IPv4"), std::string::npos);
  // TEST-NET-3: no interface of this host has it.
  const std::string no_interface =
      startError(kGroupAddress + ":" + std::to_string(freePort()), "203.0.113.77");
  EXPECT_NE(no_interface.find("no interface has the address 203.0.113.77"), std::string::npos)
      << no_interface;
  EXPECT_NE(no_interface.find(kGroupAddress), std::string::npos) << no_interface;
  event_base_free(base);
}

// The usual failure on a host without a default route: the kernel has no interface
// for the group. Only `lo` is up in the test's own network, and it has no such route.
TEST(MulticastDiscovery, WithoutAMulticastRouteStartSaysHowToAddOne) {
  const Outcome outcome = runScenario(
      [](std::uint16_t port) {
        Lan lan(port);
        MulticastOptions options = lan.options("mx1", "127.0.0.1:7001");
        options.interface_address.clear();
        lan.add("a", options);
        return lan.report(true);
      },
      /*own_network=*/true);
  if (!outcome.skipped.empty()) GTEST_SKIP() << outcome.skipped;
  ASSERT_EQ(outcome.failed, "");
  const std::string& error = outcome.report.nodes.at("a").start_error;
  EXPECT_NE(error.find("no route for multicast"), std::string::npos) << error;
  EXPECT_NE(error.find("ip route add 224.0.0.0/4"), std::string::npos) << error;
  EXPECT_NE(error.find(kGroupAddress), std::string::npos) << error;
}

TEST(MulticastDiscovery, StartRefusesOptionsThatCannotMakeABeacon) {
  event_base* base = event_base_new();
  ASSERT_NE(base, nullptr);
  const auto startError = [&](const std::function<void(MulticastOptions&)>& change) {
    MulticastOptions options;
    options.group = "239.255.1.1:7946";
    options.node_id = "mx1";
    options.advertise = "127.0.0.1:7001";
    options.secret = kSecret;
    change(options);
    MulticastDiscovery discovery(base, options, nullptr);
    std::string error;
    EXPECT_FALSE(discovery.start(&error));
    EXPECT_NE(error.find("239.255.1.1:7946"), std::string::npos) << error;
    return error;
  };
  EXPECT_NE(startError([](auto& o) { o.secret.clear(); }).find("secret"), std::string::npos);
  EXPECT_NE(startError([](auto& o) { o.interval = 0ms; }).find("interval"), std::string::npos);
  EXPECT_NE(startError([](auto& o) { o.node_id.clear(); }).find("node id"), std::string::npos);
  EXPECT_NE(startError([](auto& o) { o.advertise = std::string(256, 'a'); }).find("255 bytes"),
            std::string::npos);
  event_base_free(base);
}

TEST(MulticastDiscovery, StartWorksOnlyOnce) {
  RUN_SCENARIO(report, [](std::uint16_t port) {
    Lan lan(port);
    MulticastDiscovery& a = lan.add("a", lan.options("mx1", "127.0.0.1:7001"));
    std::string error;
    if (a.start(&error)) throw std::runtime_error("a second start() succeeded");
    if (error.find("already started") == std::string::npos) throw std::runtime_error(error);
    return lan.report(true);
  });
  EXPECT_EQ(report.nodes.at("a").start_error, "");
}

}  // namespace
}  // namespace zetian::cluster::discovery
