// Cluster-scope checks across real engines in one process: three (sometimes four)
// Engines, each with [cluster] enabled on its own 127.0.0.1 port, seeded with each
// other and a fast failure detector; a bare ClusterNode with its own store plays an
// owner the test can kill without a goodbye or block on its loop. No MTA: the
// integration tests (tests/integration/test_cluster_limits.py) bring Postfix.
//
// Timing: every wait polls with a deadline; the deadlines are generous (a loaded
// 2-core machine, TSan) except where the duration itself is the subject.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <condition_variable>
#include <fstream>
#include <future>
#include <latch>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "cluster/limits/service.h"
#include "cluster/node.h"
#include "cluster/placement/hrw.h"
#include "plugin/engine.h"
#include "plugin/zetian_internal.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::plugin {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kSecret = "unit-test-secret-0123456789abcdef";

// A port nobody listens on now. The kernel hands out ephemeral ports in turn, so the
// one just released is not handed out again before the engine binds it.
std::uint16_t freePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error("socket failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error("bind failed");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string endpoint(std::uint16_t port) { return "127.0.0.1:" + std::to_string(port); }

bool waitFor(const std::function<bool()>& done, std::chrono::milliseconds deadline) {
  const auto until = Clock::now() + deadline;
  while (Clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(10ms);  // polling interval, not synchronisation
  }
  return done();
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

std::size_t countOf(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string storeKey(const std::string& rule, const std::string& value) { return rule + std::string(1, '\0') + value; }

// One [[ratelimit.rule]] at the mail stage, one per hour.
std::string rule(const std::string& name, const std::string& key, int limit, const std::string& extra = "") {
  return "[[ratelimit.rule]]\nname = \"" + name + "\"\nkey = \"" + key + "\"\nstage = \"mail\"\nlimit = " +
         std::to_string(limit) + "\nperiod = \"1h\"\n" + extra;
}

std::string policy(const std::string& rules, const std::string& fail_mode = "local") {
  return "[ratelimit]\nexempt = []\nfail_mode = \"" + fail_mode + "\"\n" + rules;
}

using Settings = std::map<std::string, std::string>;  // [cluster] key -> TOML value

// The [cluster] settings of every node; a test overrides some.
Settings clusterDefaults() {
  return {
      {"heartbeat_interval", "\"100ms\""},
      {"failure_threshold", "3"},
      {"success_threshold", "1"},
      {"failure_detection_timeout", "\"1s\""},
      {"join_timeout", "\"1s\""},
      {"check_timeout", "\"2s\""},
  };
}

// An owner the test controls: a ClusterNode with a bucket store on a loop of its own.
// kill() closes its links without a goodbye (the others still list it until their
// failure detector fails it); block() stalls its loop until release().
struct BareOwner {
  std::string id;
  std::uint16_t port = 0;
  std::string state_dir;
  Settings settings;
  std::vector<std::string> seeds;
  cluster::Loop loop;
  state::BucketStore store{100000};
  std::unique_ptr<cluster::ClusterNode> node;  // created and destroyed on the loop thread
  std::uint64_t capabilities = cluster::wire::kOwnCapabilities;
  std::promise<void> gate;
  bool blocked = false;

  static std::chrono::milliseconds millis(const std::string& toml) {
    // "100ms" / "1s" / "10s": the forms this test writes.
    std::string v = toml.substr(1, toml.size() - 2);
    if (v.ends_with("ms")) return std::chrono::milliseconds(std::stoll(v));
    return std::chrono::milliseconds(std::stoll(v) * 1000);
  }

  void start() {
    loop.start();
    cluster::NodeOptions o;
    o.node_id = id;
    o.state_dir = state_dir;
    o.bind = endpoint(port);
    o.secret = kSecret;
    o.seeds = seeds;
    o.detector.heartbeat_interval = millis(settings.at("heartbeat_interval"));
    o.detector.failure_threshold = std::stoi(settings.at("failure_threshold"));
    o.detector.success_threshold = std::stoi(settings.at("success_threshold"));
    o.detector.failure_detection_timeout = millis(settings.at("failure_detection_timeout"));
    o.join_timeout = millis(settings.at("join_timeout"));
    o.store = &store;
    o.now = [] { return Engine::now(); };
    o.capabilities = capabilities;
    auto started = loop.call(
        [&] {
          node = std::make_unique<cluster::ClusterNode>(loop, o, cluster::LogSink{},
                                                        [] { return cluster::NodeLoad{}; });
          std::string error;
          if (!node->start(&error)) {
            node.reset();
            return error.empty() ? std::string("start failed") : error;
          }
          return std::string();
        },
        10s);
    ASSERT_TRUE(started.has_value());
    ASSERT_EQ(*started, "");
  }

  // Gone at once, as a crash: the sockets close, no goodbye is sent.
  void kill() {
    ASSERT_TRUE(loop.call(
        [&] {
          node.reset();
          return true;
        },
        10s));
  }

  void block() {
    auto released = gate.get_future().share();
    blocked = true;
    ASSERT_TRUE(loop.post([released] { released.wait(); }));
  }
  void release() {
    if (blocked) gate.set_value();
    blocked = false;
  }

  std::uint64_t callsServed() {
    auto n = loop.call([&] { return node && node->limits() ? node->limits()->counters().calls_served : 0; }, 10s);
    return n.value_or(0);
  }

  ~BareOwner() {
    release();
    std::promise<void> left;
    if (loop.post([&] {
          if (!node) {
            left.set_value();
            return;
          }
          node->leave([&] {
            node.reset();
            left.set_value();
          });
        })) {
      left.get_future().wait();
    }
    loop.stop();
  }
};

class ClusterCheckTest : public ::testing::Test {
 protected:
  struct Member {
    std::string id;
    std::uint16_t port = 0;
    std::string config;
    std::string log;
    std::string health;
    std::unique_ptr<Engine> engine;
  };

  void TearDown() override {
    if (owner_) owner_->release();
    // Engines first: their shutdown says goodbye to the bare owner while it still runs.
    for (auto& m : members_) m->engine.reset();
    owner_.reset();
  }

  std::string configFor(const Member& m, const std::vector<std::string>& seeds, const std::string& rules) {
    std::string seed_list;
    for (const auto& s : seeds) seed_list += (seed_list.empty() ? "\"" : ", \"") + s + "\"";
    std::string text = "[node]\nid = \"" + m.id + "\"\nstate_dir = \"" + dir_.file(m.id) + "\"\n" +
                       "[log]\nlevel = \"info\"\ntarget = \"file\"\nfile = \"" + m.log + "\"\n" +
                       "[health]\nsocket = \"" + m.health + "\"\n" +
                       "[cluster]\nenabled = true\nbind = \"" + endpoint(m.port) + "\"\nseeds = [" + seed_list +
                       "]\nshared_secret = \"" + kSecret + "\"\n";
    for (const auto& [key, value] : settings_) text += key + " = " + value + "\n";
    return text + rules;
  }

  // A member's files and port, not started.
  Member& addMember(const std::string& id) {
    auto m = std::make_unique<Member>();
    m->id = id;
    m->port = freePort();
    m->config = dir_.file(id + ".toml");
    m->log = dir_.file(id + ".log");
    m->health = dir_.file(id + ".sock");
    std::filesystem::create_directories(dir_.file(id));
    members_.push_back(std::move(m));
    return *members_.back();
  }

  std::vector<std::string> seedsFor(const Member& m) {
    std::vector<std::string> seeds;
    for (const auto& other : members_) {
      if (other.get() != &m) seeds.push_back(endpoint(other->port));
    }
    return seeds;
  }

  // Another process may take the free port before the engine binds it (ctest -j): then
  // the engine starts again on another one (the others learn it from its own dial).
  std::unique_ptr<Engine> startEngine(Member& m, const std::string& rules) {
    Errors errors;
    for (int attempt = 0; attempt < 3; ++attempt, m.port = freePort()) {
      std::ofstream(m.config) << configFor(m, seedsFor(m), rules);
      errors.clear();
      auto engine = Engine::open(m.config, {}, &errors);
      if (!engine) break;
      if (engine->start(&errors)) return engine;
    }
    ADD_FAILURE() << m.id << " did not start: " << (errors.empty() ? "" : errors.front());
    return nullptr;
  }

  // Three engines n1..n3, seeded with each other; with `bare_owner` a fourth member "d"
  // (BareOwner). Returns when every engine's view lists every member.
  void startCluster(const std::string& rules, bool bare_owner = false,
                    std::uint64_t owner_capabilities = cluster::wire::kOwnCapabilities) {
    for (const char* id : {"n1", "n2", "n3"}) addMember(id);
    if (bare_owner) {
      owner_ = std::make_unique<BareOwner>();
      owner_->id = "d";
      owner_->port = freePort();
      owner_->state_dir = dir_.file("d");
      std::filesystem::create_directories(owner_->state_dir);
      owner_->settings = settings_;
      owner_->capabilities = owner_capabilities;
      for (const auto& m : members_) owner_->seeds.push_back(endpoint(m->port));
    }
    for (auto& m : members_) {
      m->engine = startEngine(*m, rules);
      ASSERT_TRUE(m->engine);
    }
    if (owner_) {
      ASSERT_NO_FATAL_FAILURE(owner_->start());
    }
    ASSERT_TRUE(waitViews(members_.size() + (owner_ ? 1 : 0)));
  }

  // Every running engine's placement view lists `n` members, the same ones.
  bool waitViews(std::size_t n, std::chrono::milliseconds deadline = 20s) {
    return waitFor(
        [&] {
          std::optional<std::vector<std::string>> seen;
          for (const auto& m : members_) {
            if (!m->engine) continue;
            auto view = m->engine->view();
            if (!view || view->members.size() != n || !view->quorum) return false;
            if (seen && *seen != view->members) return false;
            seen = view->members;
          }
          return true;
        },
        deadline);
  }

  Engine& engine(std::size_t i) { return *members_.at(i)->engine; }

  // The member that owns `key` (a store key) in n1's view.
  std::string ownerOf(const std::string& key) {
    auto view = engine(0).view();
    return *cluster::placement::ownerOf(key, view->members);
  }

  // A client address in 192.0.2.0/24 .. whose key under `rule_name` `owner` owns.
  std::string ipOwnedBy(const std::string& rule_name, const std::string& owner, int skip = 0) {
    for (int a = 0; a < 256; ++a) {
      for (int b = 1; b < 255; ++b) {
        const std::string ip = "10." + std::to_string(a) + ".0." + std::to_string(b);
        if (ownerOf(storeKey(rule_name, ip)) == owner && skip-- == 0) return ip;
      }
    }
    ADD_FAILURE() << "no address owned by " << owner;
    return "";
  }

  // One SMTP session from `client_ip`: MAIL FROM `sender`; returns the verdict's action.
  static int mail(Engine& e, const std::string& client_ip, const std::string& sender, zetian_verdict* v = nullptr) {
    zetian_verdict local;
    auto s = e.openSession(client_ip.c_str(), nullptr);
    const int action = e.check(*s, conf::Stage::Mail, sender.c_str(), v ? v : &local);
    e.closeSession(std::move(s));
    return action;
  }

  // zetian_fallbacks_total{rule,reason} as GET /metrics on the health socket shows it.
  double fallbacks(const Member& m, const std::string& rule_name, const std::string& reason) {
    const auto reply = cluster::testing::roundTrip(cluster::testing::connectUnix(m.health),
                                                   cluster::testing::simpleRequest("GET", "/metrics"));
    const std::string series = "zetian_fallbacks_total{rule=\"" + rule_name + "\",reason=\"" + reason + "\"} ";
    const auto at = reply.body.find(series);
    if (at == std::string::npos) {
      ADD_FAILURE() << "no " << series << " in:\n" << reply.body;
      return -1;
    }
    return std::stod(reply.body.substr(at + series.size()));
  }

  // GET /health on the member's socket lists `n` members, every one active.
  static bool allActive(const Member& m, std::size_t n) {
    const auto reply = cluster::testing::roundTrip(cluster::testing::connectUnix(m.health),
                                                   cluster::testing::simpleRequest("GET", "/health"));
    const auto doc = nlohmann::json::parse(reply.body, nullptr, false);
    if (doc.is_discarded() || !doc.contains("members") || doc["members"].size() != n) return false;
    for (const auto& member : doc["members"]) {
      if (member.value("status", "") != "active") return false;
    }
    return true;
  }

  // The bucket for `key` in `store` is full again (not held, or held with the whole
  // limit left): what charge(1) would leave is limit - 1.
  static bool full(const state::BucketStore& store, const Engine& e, const std::string& rule_name,
                   const std::string& key) {
    for (const auto& c : e.policy()->rules) {
      if (c.rule.name != rule_name) continue;
      auto outcome = store.peek(key, c.rule.algorithm, c.limit, Engine::now(), 1);
      return !outcome || (outcome->allowed && outcome->remaining + 1 >= double(c.rule.limit));
    }
    ADD_FAILURE() << "no rule " << rule_name;
    return false;
  }

  cluster::testing::TempDir dir_;
  Settings settings_ = clusterDefaults();
  std::vector<std::unique_ptr<Member>> members_;
  std::unique_ptr<BareOwner> owner_;
};

// ---- 1. exact: a limit of 10 admits 10 across the cluster ---------------------------

TEST_F(ClusterCheckTest, ExactLimitAdmitsTenOfThirtyOneByOneRoundRobin) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 10))));
  int allowed = 0;
  for (int i = 0; i < 30; ++i) {
    const int action = mail(engine(i % 3), "192.0.2.1", "<a@example.org>");
    ASSERT_TRUE(action == ZETIAN_CONTINUE || action == ZETIAN_TEMPFAIL) << action;
    if (action == ZETIAN_CONTINUE) ++allowed;
  }
  EXPECT_EQ(allowed, 10);
  // Decided by the owner: no check fell back.
  for (const auto& m : members_) EXPECT_EQ(fallbacks(*m, "per-ip", "timeout"), 0) << m->id;
  for (const auto& m : members_) EXPECT_EQ(fallbacks(*m, "per-ip", "unreachable"), 0) << m->id;
}

// 30 sessions at once, each on its own thread, spread over the three engines.
int burst(std::vector<Engine*> engines, int sessions, const std::function<std::string(int)>& ip,
          const std::function<std::string(int)>& sender) {
  std::atomic<int> allowed{0}, other{0};
  std::latch go(sessions);
  std::vector<std::thread> threads;
  for (int i = 0; i < sessions; ++i) {
    threads.emplace_back([&, i] {
      Engine& e = *engines[std::size_t(i) % engines.size()];
      auto s = e.openSession(ip(i).c_str(), nullptr);
      zetian_verdict v;
      go.arrive_and_wait();
      const int action = e.check(*s, conf::Stage::Mail, sender(i).c_str(), &v);
      if (action == ZETIAN_CONTINUE) {
        ++allowed;
      } else if (action != ZETIAN_TEMPFAIL) {
        ++other;
      }
      e.closeSession(std::move(s));
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(other.load(), 0);
  return allowed.load();
}

TEST_F(ClusterCheckTest, ExactLimitAdmitsTenOfThirtyArrivingAtOnce) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 10))));
  const int allowed = burst({&engine(0), &engine(1), &engine(2)}, 30, [](int) { return "192.0.2.1"; },
                            [](int) { return "<a@example.org>"; });
  EXPECT_EQ(allowed, 10);
}

// ---- 2. a per-sender rule holds across client addresses ------------------------------

TEST_F(ClusterCheckTest, PerSenderLimitHoldsAcrossClientAddresses) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-sender", "sender", 10))));
  int allowed = 0;
  for (int i = 0; i < 30; ++i) {
    const std::string ip = "198.51.100." + std::to_string(i + 1);
    if (mail(engine(i % 3), ip, "<bulk@example.org>") == ZETIAN_CONTINUE) ++allowed;
  }
  EXPECT_EQ(allowed, 10);
  // At once, another sender, each session from its own address.
  const int at_once = burst({&engine(0), &engine(1), &engine(2)}, 30,
                            [](int i) { return "203.0.113." + std::to_string(i + 1); },
                            [](int) { return "<other@example.org>"; });
  EXPECT_EQ(at_once, 10);
}

// ---- 3. scope = "node" stays local --------------------------------------------------

TEST_F(ClusterCheckTest, NodeScopeCountsOnEachNode) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 10, "scope = \"node\"\n"))));
  int allowed = 0;
  for (int i = 0; i < 30; ++i) {
    if (mail(engine(i % 3), "192.0.2.1", "<a@example.org>") == ZETIAN_CONTINUE) ++allowed;
  }
  EXPECT_EQ(allowed, 30);
  EXPECT_EQ(mail(engine(0), "192.0.2.1", "<a@example.org>"), ZETIAN_TEMPFAIL);
}

// ---- [affinity] method = "source_ip" ---------------------------------------------------

// Client-keyed rules are owned by the owner of "ip:<client>"; a sender rule stays with
// the owner of its own key.
TEST_F(ClusterCheckTest, SourceIpAffinityPutsClientKeysOnTheClientsOwner) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 10) + rule("per-sender", "sender", 10)) +
                                       "[affinity]\nmethod = \"source_ip\"\n"));
  // A client whose "ip:" placement is n2 while its per-ip key alone would go elsewhere.
  std::string ip;
  for (int skip = 0; ip.empty() && skip < 1000; ++skip) {
    const std::string candidate = ipOwnedBy("per-ip", "n3", skip);
    if (ownerOf("ip:" + candidate) == "n2") ip = candidate;
  }
  ASSERT_FALSE(ip.empty());
  const std::string sender = "affine@example.org";
  const std::string sender_owner = ownerOf(storeKey("per-sender", sender));
  ASSERT_EQ(mail(engine(0), ip, "<" + sender + ">"), ZETIAN_CONTINUE);
  std::map<std::string, Engine*> by_id;
  for (const auto& m : members_) by_id[m->id] = m->engine.get();
  for (const auto& [id, e] : by_id) {
    EXPECT_EQ(full(e->store(), *e, "per-ip", storeKey("per-ip", ip)), id != "n2") << id;
    EXPECT_EQ(full(e->store(), *e, "per-sender", storeKey("per-sender", sender)), id != sender_owner) << id;
  }
}

// ---- 4. charge-then-refund across owners ----------------------------------------------

TEST_F(ClusterCheckTest, ADenialOnOneOwnerGivesBackTheChargeMadeOnAnother) {
  ASSERT_NO_FATAL_FAILURE(
      startCluster(policy(rule("first", "client_ip", 100) + rule("second", "sender", 1))));
  // first's key on an owner other than the checking engine (n1), second's on another.
  const std::string ip = ipOwnedBy("first", "n2");
  std::string sender;
  for (int i = 0; sender.empty(); ++i) {
    const std::string candidate = "s" + std::to_string(i) + "@example.org";
    if (ownerOf(storeKey("second", candidate)) != "n2") sender = candidate;
  }
  // Spend second's single token from another client (whose first key is elsewhere).
  const std::string spender = ipOwnedBy("first", "n3");
  ASSERT_EQ(mail(engine(0), spender, "<" + sender + ">"), ZETIAN_CONTINUE);

  zetian_verdict v;
  ASSERT_EQ(mail(engine(0), ip, "<" + sender + ">", &v), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.rule, "second");
  EXPECT_STREQ(v.rcode, "451");
  // n2 charged first's key, and is given it back (asynchronously).
  const std::string key = storeKey("first", ip);
  EXPECT_TRUE(waitFor([&] { return full(engine(1).store(), engine(1), "first", key); }, 10s));
  // Every other client of first's still finds its own charge there: the refund is the
  // key's, not a reset of the store.
  EXPECT_FALSE(full(engine(2).store(), engine(2), "first", storeKey("first", spender)));
}

// ---- 5. fail_mode when the owner is down ----------------------------------------------

// A cluster of n1..n3 and the bare owner "d", which is killed without a goodbye; the
// others keep listing it (failure_detection_timeout 10 s) while the test checks.
// A member whose link closes leaves every view at once (its keys go to their first
// replica), so the owner that cannot answer here is one that announced no limiter
// capability: it stays a member and owns keys, and checks for them fall back.
class FailModeTest : public ClusterCheckTest {
 protected:
  // Returns a client address whose per-ip key d owns; d announces no limiter.
  std::string startWithOwnerWithoutLimiter(const std::string& fail_mode, int limit) {
    settings_["failure_detection_timeout"] = "\"10s\"";
    settings_["check_timeout"] = "\"2s\"";
    startCluster(policy(rule("per-ip", "client_ip", limit), fail_mode), true, 0);
    if (HasFatalFailure()) return "";
    return ipOwnedBy("per-ip", "d");
  }

  bool stillListed(const std::string& id) {
    auto view = engine(0).view();
    return std::find(view->members.begin(), view->members.end(), id) != view->members.end();
  }
};

TEST_F(FailModeTest, LocalDecidesWithThisNodesBucketAtOnceAndLogsOneEpisode) {
  const std::string ip = startWithOwnerWithoutLimiter("local", 3);
  ASSERT_FALSE(ip.empty());
  const auto timeout = 2000ms;
  std::vector<int> actions;
  auto slowest = Clock::duration::zero();
  for (int i = 0; i < 8; ++i) {
    const auto began = Clock::now();
    actions.push_back(mail(engine(0), ip, "<a@example.org>"));
    slowest = std::max(slowest, Clock::now() - began);
  }
  ASSERT_TRUE(stillListed("d")) << "d left the view during the test: nothing was tested";
  // The local bucket: 3 allowed, then denied; nobody waited for the owner.
  EXPECT_EQ(std::count(actions.begin(), actions.end(), ZETIAN_CONTINUE), 3);
  EXPECT_EQ(std::count(actions.begin(), actions.end(), ZETIAN_TEMPFAIL), 5);
  EXPECT_LT(slowest, timeout / 2);
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "unsupported"), 8);
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "timeout"), 0);
  const std::string log = readFile(members_[0]->log);
  EXPECT_EQ(countOf(log, "cluster_limits_fallback"), 1u) << log;
  EXPECT_NE(log.find("cluster_limits_fallback owner=d reason=unsupported fail_mode=local"), std::string::npos)
      << log;
  EXPECT_EQ(countOf(log, "cluster_limits_recovered"), 0u) << log;

  // d comes back upgraded (same id, same port, a fresh store, the limiter announced):
  // the episode is over once it has left the view, and d answers again afterwards.
  const auto port = owner_->port;
  owner_->kill();
  owner_.reset();
  owner_ = std::make_unique<BareOwner>();
  owner_->id = "d";
  owner_->port = port;
  owner_->state_dir = dir_.file("d");
  owner_->settings = settings_;
  for (const auto& m : members_) owner_->seeds.push_back(endpoint(m->port));
  ASSERT_NO_FATAL_FAILURE(owner_->start());
  ASSERT_TRUE(waitViews(4));
  ASSERT_TRUE(waitFor([&] { return countOf(readFile(members_[0]->log), "cluster_limits_recovered") > 0; }, 20s))
      << readFile(members_[0]->log);
  mail(engine(0), ip, "<a@example.org>");
  const std::string after = readFile(members_[0]->log);
  EXPECT_EQ(countOf(after, "cluster_limits_recovered owner=d"), 1u) << after;
  EXPECT_EQ(countOf(after, "cluster_limits_fallback"), 1u) << after;
  EXPECT_GE(owner_->callsServed(), 1u);
}

// The owner never comes back: once it leaves the view, its keys move to another member,
// and the episode ends then (cause=owner_left_view), not with an answer from d, which
// will never come.
TEST_F(FailModeTest, AnEpisodeEndsWhenTheViewMovesTheKeyToAnOwnerThatAnswers) {
  settings_["failure_detection_timeout"] = "\"1s\"";
  settings_["check_timeout"] = "\"2s\"";
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 100), "local"), true, 0));
  // d owns the key now; among n1..n3 it goes to a member other than n1 (the checker).
  const std::vector<std::string> survivors{"n1", "n2", "n3"};
  std::string ip;
  for (int skip = 0; ip.empty() && skip < 1000; ++skip) {
    const std::string candidate = ipOwnedBy("per-ip", "d", skip);
    if (*cluster::placement::ownerOf(storeKey("per-ip", candidate), survivors) != "n1") ip = candidate;
  }
  ASSERT_FALSE(ip.empty());
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_CONTINUE);
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_CONTINUE);
  ASSERT_TRUE(stillListed("d"));
  ASSERT_EQ(countOf(readFile(members_[0]->log), "cluster_limits_fallback owner=d"), 1u);

  owner_->kill();
  ASSERT_TRUE(waitViews(3));
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_CONTINUE);
  const std::string log = readFile(members_[0]->log);
  EXPECT_EQ(countOf(log, "cluster_limits_recovered"), 1u) << log;
  EXPECT_EQ(countOf(log, "cluster_limits_fallback"), 1u) << log;
  EXPECT_NE(log.find("cause=owner_left_view"), std::string::npos) << log;
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "unsupported"), 2);
}

// A member that announced no limiter capability (an older version) owns keys all the
// same; checks for them follow fail_mode at once, and nothing is sent to it.
TEST_F(FailModeTest, AnOwnerWithoutTheLimiterCapabilityFallsBackAtOnce) {
  settings_["check_timeout"] = "\"2s\"";
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 2), "local"), true, 0));
  const std::string ip = ipOwnedBy("per-ip", "d");
  std::vector<int> actions;
  const auto began = Clock::now();
  for (int i = 0; i < 4; ++i) actions.push_back(mail(engine(i % 3), ip, "<a@example.org>"));
  EXPECT_LT(Clock::now() - began, 1000ms);
  // Each node's own bucket: n1 twice, n2 and n3 once, all within the limit of 2.
  EXPECT_EQ(std::count(actions.begin(), actions.end(), ZETIAN_CONTINUE), 4);
  for (const auto& m : members_) EXPECT_GE(fallbacks(*m, "per-ip", "unsupported"), 1) << m->id;
  EXPECT_EQ(owner_->callsServed(), 0u);
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_TEMPFAIL);  // n1's third: its limit is 2
}

TEST_F(FailModeTest, OpenDoesNotEnforceTheLocalBucketsDenial) {
  const std::string ip = startWithOwnerWithoutLimiter("open", 2);
  ASSERT_FALSE(ip.empty());
  for (int i = 0; i < 5; ++i) EXPECT_EQ(mail(engine(0), ip, "<a@example.org>"), ZETIAN_CONTINUE) << i;
  ASSERT_TRUE(stillListed("d"));
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "unsupported"), 5);
  // Counted locally all the same: this node's bucket for the key is spent.
  EXPECT_FALSE(full(engine(0).store(), engine(0), "per-ip", storeKey("per-ip", ip)));
}

TEST_F(FailModeTest, ClosedTempfailsTheStageWith451) {
  const std::string ip = startWithOwnerWithoutLimiter("closed", 5);
  ASSERT_FALSE(ip.empty());
  zetian_verdict v;
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>", &v), ZETIAN_TEMPFAIL);
  ASSERT_TRUE(stillListed("d"));
  EXPECT_STREQ(v.rcode, "451");
  EXPECT_STREQ(v.xcode, "4.7.1");
  EXPECT_STREQ(v.rule, "per-ip");
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "unsupported"), 1);
  // Nothing was charged here: a refused stage costs nothing.
  EXPECT_TRUE(full(engine(0).store(), engine(0), "per-ip", storeKey("per-ip", ip)));
}

// ---- 6. an owner that does not answer in time -----------------------------------------

TEST_F(ClusterCheckTest, AnOwnerThatDoesNotAnswerTimesOutAndItsLateChargeIsRefunded) {
  settings_["failure_detection_timeout"] = "\"10s\"";
  settings_["check_timeout"] = "\"50ms\"";
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 5)), true));
  const std::string ip = ipOwnedBy("per-ip", "d");
  const std::string key = storeKey("per-ip", ip);
  ASSERT_NO_FATAL_FAILURE(owner_->block());

  const auto began = Clock::now();
  zetian_verdict v;
  EXPECT_EQ(mail(engine(0), ip, "<a@example.org>", &v), ZETIAN_CONTINUE);
  const auto took = Clock::now() - began;
  EXPECT_GE(took, 45ms);
  EXPECT_LT(took, 1000ms);  // about check_timeout; generous for a loaded machine
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "timeout"), 1);
  // Decided with n1's own bucket (fail_mode local).
  EXPECT_FALSE(full(engine(0).store(), engine(0), "per-ip", key));

  // d answers late: it charged, and n1 gives the charge back.
  owner_->release();
  ASSERT_TRUE(waitFor([&] { return owner_->callsServed() >= 1; }, 10s));
  EXPECT_TRUE(waitFor([&] { return full(owner_->store, engine(0), "per-ip", key); }, 10s));
}

// ---- 7. the asynchronous check ----------------------------------------------------------

struct AsyncProbe {
  std::mutex mutex;
  std::condition_variable cv;
  int calls = 0;
  std::thread::id thread;
  zetian_verdict verdict;

  std::function<void()> callback(const zetian_verdict* v) {
    return [this, v] {
      std::lock_guard lock(mutex);
      ++calls;
      thread = std::this_thread::get_id();
      verdict = *v;
      cv.notify_all();
    };
  }
  bool waitCalled(std::chrono::milliseconds deadline) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, deadline, [&] { return calls > 0; });
  }
  int count() {
    std::lock_guard lock(mutex);
    return calls;
  }
};

TEST_F(ClusterCheckTest, CheckAsyncCallsBackInlineWhenLocalAndOnceFromTheClusterThreadWhenRemote) {
  // Short enough to wait past, so that a second callback at the call's deadline shows.
  settings_["check_timeout"] = "\"500ms\"";
  const auto check_timeout = 500ms;
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 1))));
  Engine& e = engine(0);
  {
    // n1 owns the key: decided here, before checkAsync returns.
    auto s = e.openSession(ipOwnedBy("per-ip", "n1").c_str(), nullptr);
    zetian_verdict v;
    AsyncProbe probe;
    e.checkAsync(*s, conf::Stage::Mail, "<a@example.org>", &v, probe.callback(&v));
    EXPECT_EQ(probe.count(), 1);
    EXPECT_EQ(probe.thread, std::this_thread::get_id());
    EXPECT_EQ(v.action, ZETIAN_CONTINUE);
    e.closeSession(std::move(s));
  }
  const std::string remote = ipOwnedBy("per-ip", "n2");
  for (const int expected : {ZETIAN_CONTINUE, ZETIAN_TEMPFAIL}) {
    auto s = e.openSession(remote.c_str(), nullptr);
    zetian_verdict v;
    AsyncProbe probe;
    const auto began = Clock::now();
    e.checkAsync(*s, conf::Stage::Mail, "<a@example.org>", &v, probe.callback(&v));
    ASSERT_TRUE(probe.waitCalled(10s));
    EXPECT_NE(probe.thread, std::this_thread::get_id());
    EXPECT_EQ(probe.verdict.action, expected);
    EXPECT_EQ(v.action, expected);
    if (expected == ZETIAN_TEMPFAIL) {
      EXPECT_STREQ(v.rule, "per-ip");
    }
    // Once: not again at the call's deadline. Past it, a GET /metrics (served on the
    // cluster thread, after any timer due before it) lets a second callback show.
    ASSERT_TRUE(waitFor([&] { return Clock::now() > began + check_timeout + 50ms; }, 10s));
    EXPECT_EQ(fallbacks(*members_[0], "per-ip", "timeout"), 0);
    EXPECT_EQ(probe.count(), 1);
    e.closeSession(std::move(s));
  }
  EXPECT_EQ(fallbacks(*members_[0], "per-ip", "timeout"), 0);
}

// A node that has just started, with a member to join it has not reached yet, has no
// view: its checks wait for one (at most check_timeout) instead of deciding alone by
// fail_mode with a bucket that knows nothing of the cluster's count.
TEST_F(ClusterCheckTest, ANodeStillFormingHoldsItsChecksUntilItsFirstView) {
  settings_["join_timeout"] = "\"20s\"";
  settings_["check_timeout"] = "\"5s\"";
  owner_ = std::make_unique<BareOwner>();
  owner_->id = "d";
  owner_->port = freePort();
  owner_->state_dir = dir_.file("d");
  std::filesystem::create_directories(owner_->state_dir);
  owner_->settings = settings_;
  ASSERT_NO_FATAL_FAILURE(owner_->start());
  owner_->block();  // d accepts the connection but answers nothing: n4 stays forming
  Member& m = addMember("n4");
  std::ofstream(m.config) << configFor(m, {endpoint(owner_->port)}, policy(rule("per-ip", "client_ip", 5)));
  Errors errors;
  m.engine = Engine::open(m.config, {}, &errors);
  ASSERT_TRUE(m.engine) << (errors.empty() ? "" : errors.front());
  ASSERT_TRUE(m.engine->start(&errors)) << (errors.empty() ? "" : errors.front());
  Engine& e = *m.engine;
  ASSERT_TRUE(waitFor([&] { return e.view() != nullptr; }, 10s));
  ASSERT_TRUE(e.view()->forming);
  // A client address whose key d will own once the two see each other.
  std::string ip;
  for (int b = 1; b < 255 && ip.empty(); ++b) {
    const std::string candidate = "10.9.0." + std::to_string(b);
    const std::vector<std::string> both{"d", "n4"};
    if (*cluster::placement::ownerOf(storeKey("per-ip", candidate), both) == "d") ip = candidate;
  }
  ASSERT_FALSE(ip.empty());

  auto async_session = e.openSession(ip.c_str(), nullptr);
  zetian_verdict async_verdict;
  AsyncProbe probe;
  e.checkAsync(*async_session, conf::Stage::Mail, "<a@example.org>", &async_verdict, probe.callback(&async_verdict));
  EXPECT_EQ(probe.count(), 0);  // neither decided alone nor failed: it waits
  std::atomic<int> sync_action{-1};
  std::thread sync_check([&] { sync_action = mail(e, ip, "<b@example.org>"); });

  owner_->release();
  ASSERT_TRUE(probe.waitCalled(10s));
  sync_check.join();
  EXPECT_EQ(probe.verdict.action, ZETIAN_CONTINUE);
  EXPECT_EQ(sync_action.load(), ZETIAN_CONTINUE);
  EXPECT_FALSE(e.view()->forming);
  // Both were decided by d, the key's owner, and neither fell back.
  EXPECT_EQ(owner_->callsServed(), 2u);
  EXPECT_EQ(fallbacks(m, "per-ip", "no_quorum"), 0);
  e.closeSession(std::move(async_session));
}

TEST_F(ClusterCheckTest, CheckAsyncOutstandingAtShutdownStillCallsBackOnce) {
  settings_["failure_detection_timeout"] = "\"10s\"";
  settings_["check_timeout"] = "\"5s\"";
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 5)), true));
  const std::string ip = ipOwnedBy("per-ip", "d");
  ASSERT_NO_FATAL_FAILURE(owner_->block());
  Engine& e = engine(0);
  auto s = e.openSession(ip.c_str(), nullptr);
  zetian_verdict v;
  AsyncProbe probe;
  e.checkAsync(*s, conf::Stage::Mail, "<a@example.org>", &v, probe.callback(&v));
  EXPECT_EQ(probe.count(), 0) << "decided before the blocked owner could answer";
  e.shutdown();
  ASSERT_TRUE(probe.waitCalled(10s));
  // Decided by fail_mode local, as the engine closed.
  EXPECT_EQ(v.action, ZETIAN_CONTINUE);
  EXPECT_EQ(probe.count(), 1);
  e.closeSession(std::move(s));
  owner_->release();
  members_[0]->engine.reset();
  EXPECT_EQ(probe.count(), 1);
}

// The C ABI's asynchronous form, on an engine opened through zetian.h that joins the
// cluster as a fifth member ("c"), beside n1..n3 and the bare owner d.
struct AbiProbe {
  std::mutex mutex;
  std::condition_variable cv;
  int calls = 0;
  int action = -1;
  std::thread::id thread;
  zetian_verdict verdict = ZETIAN_VERDICT_INIT;

  static void onChecked(void* ctx, const zetian_verdict* v, int action) {
    auto* self = static_cast<AbiProbe*>(ctx);
    std::lock_guard lock(self->mutex);
    ++self->calls;
    self->action = action;
    self->thread = std::this_thread::get_id();
    self->verdict = *v;
    self->cv.notify_all();
  }
  bool waitCalled(std::chrono::milliseconds deadline) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, deadline, [&] { return calls > 0; });
  }
  int count() {
    std::lock_guard lock(mutex);
    return calls;
  }
};

TEST_F(ClusterCheckTest, CAbiCheckAsyncIsInlineWhenLocalLaterWhenRemoteAndOnceAtClose) {
  settings_["failure_detection_timeout"] = "\"10s\"";
  settings_["check_timeout"] = "\"5s\"";
  const std::string rules = policy(rule("per-ip", "client_ip", 1));
  ASSERT_NO_FATAL_FAILURE(startCluster(rules, true));
  Member& c = addMember("c");
  std::ofstream(c.config) << configFor(c, seedsFor(c), rules);
  zetian_engine* handle = zetian_engine_open(c.config.c_str(), nullptr, 0, nullptr, nullptr);
  ASSERT_NE(handle, nullptr);
  struct Closer {
    zetian_engine* handle;
    ~Closer() { zetian_engine_close(handle); }
  } closer{handle};
  ASSERT_EQ(zetian_engine_start(handle, nullptr, nullptr), 0);
  ASSERT_TRUE(waitViews(5));
  ASSERT_TRUE(waitFor([&] { return allActive(c, 5); }, 20s));

  {
    zetian_session* s = zetian_session_open(handle, ipOwnedBy("per-ip", "c").c_str(), nullptr);
    AbiProbe probe;
    EXPECT_EQ(zetian_session_check_async(s, ZETIAN_STAGE_MAIL, "<a@example.org>", &AbiProbe::onChecked, &probe), 1);
    EXPECT_EQ(probe.count(), 1);  // before it returned
    EXPECT_EQ(probe.thread, std::this_thread::get_id());
    EXPECT_EQ(probe.action, ZETIAN_CONTINUE);
    zetian_session_close(s);
  }
  const std::string remote = ipOwnedBy("per-ip", "n2");
  for (const int expected : {ZETIAN_CONTINUE, ZETIAN_TEMPFAIL}) {
    zetian_session* s = zetian_session_open(handle, remote.c_str(), nullptr);
    AbiProbe probe;
    EXPECT_EQ(zetian_session_check_async(s, ZETIAN_STAGE_MAIL, "<a@example.org>", &AbiProbe::onChecked, &probe), 0);
    ASSERT_TRUE(probe.waitCalled(10s));
    EXPECT_NE(probe.thread, std::this_thread::get_id());
    EXPECT_EQ(probe.action, expected);
    EXPECT_EQ(probe.verdict.action, expected);
    zetian_session_close(s);
    EXPECT_EQ(probe.count(), 1);
  }

  // Outstanding at close: the owner is stalled, the call would wait 5 s; the close
  // (which waits a moment for the open session, then stops the engine) answers it.
  ASSERT_NO_FATAL_FAILURE(owner_->block());
  zetian_session* s = zetian_session_open(handle, ipOwnedBy("per-ip", "d").c_str(), nullptr);
  AbiProbe probe;
  EXPECT_EQ(zetian_session_check_async(s, ZETIAN_STAGE_MAIL, "<a@example.org>", &AbiProbe::onChecked, &probe), 0);
  EXPECT_EQ(probe.count(), 0);
  closeEngine(handle, 100ms);
  ASSERT_TRUE(probe.waitCalled(10s));
  EXPECT_NE(probe.thread, std::this_thread::get_id());
  EXPECT_EQ(probe.action, ZETIAN_CONTINUE);  // fail_mode local, as the engine closed
  zetian_session_close(s);
  EXPECT_EQ(probe.count(), 1);
}

// ---- 8. checks while membership changes (the TSan build's subject) --------------------

TEST_F(ClusterCheckTest, EveryCheckReturnsWhileAFourthEngineJoinsAndLeavesRepeatedly) {
  settings_["check_timeout"] = "\"200ms\"";
  const std::string rules =
      policy(rule("per-ip", "client_ip", 1000000) + rule("per-sender", "sender", 1000000, "action = \"tag\"\n"));
  ASSERT_NO_FATAL_FAILURE(startCluster(rules));
  std::vector<Engine*> engines{&engine(0), &engine(1), &engine(2)};
  Member& extra = addMember("n4");

  constexpr int kThreads = 8;
  std::atomic<bool> stop{false};
  std::atomic<int> not_continue{0};
  std::atomic<std::int64_t> slowest_ms{0};
  std::vector<int> checks(kThreads, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; !stop.load(); ++k) {
        Engine& e = *engines[std::size_t(t + k) % engines.size()];
        const std::string ip = "10." + std::to_string(t) + "." + std::to_string(k / 250 % 250) + "." +
                               std::to_string(k % 250 + 1);
        const auto began = Clock::now();
        if (mail(e, ip, "<s" + std::to_string(k % 7) + "@example.org>") != ZETIAN_CONTINUE) ++not_continue;
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - began).count();
        std::int64_t seen = slowest_ms.load();
        while (ms > seen && !slowest_ms.compare_exchange_weak(seen, ms)) {
        }
        ++checks[std::size_t(t)];
      }
    });
  }
  int cycles = 0;
  const auto until = Clock::now() + 2s;
  while (cycles < 2 || Clock::now() < until) {
    extra.engine = startEngine(extra, rules);
    if (!extra.engine) break;
    EXPECT_TRUE(waitViews(4)) << "cycle " << cycles;
    extra.engine.reset();  // leaves: a goodbye to every member
    EXPECT_TRUE(waitViews(3)) << "cycle " << cycles;
    ++cycles;
    if (HasFailure()) break;
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_GE(cycles, 2);
  EXPECT_EQ(not_continue.load(), 0);
  for (int t = 0; t < kThreads; ++t) EXPECT_GT(checks[std::size_t(t)], 0) << t;
  // Each check returned, within check_timeout and its slack (generous for TSan).
  EXPECT_LT(slowest_ms.load(), 3000);
}

// ---- batching: calls to one owner in one loop turn share a frame ---------------------

// The bare member d asks n2 directly through its LimitService: twenty calls made in one
// closure travel in one LimitRequest, are answered one by one, and n2's store holds
// exactly what they charged.
TEST_F(ClusterCheckTest, CallsToOneOwnerInOneLoopTurnTravelInOneFrame) {
  ASSERT_NO_FATAL_FAILURE(startCluster(policy(rule("per-ip", "client_ip", 15)), true));
  // A key n2 owns: a node passes on the calls for keys it does not own.
  const std::string key = storeKey("per-ip", ipOwnedBy("per-ip", "n2"));
  const auto snapshot = engine(1).policy();
  const auto* c = &snapshot->rules.at(0);
  cluster::limits::ItemSpec spec;
  spec.key = key;
  spec.algorithm = c->rule.algorithm;
  spec.limit = c->limit;
  spec.blocking = true;
  std::mutex mutex;
  std::vector<cluster::limits::CallResult> results;
  auto before = cluster::testing::runOnLoop(owner_->loop, [&] { return owner_->node->limits()->counters(); });
  cluster::testing::runOnLoop(owner_->loop, [&] {
    for (int i = 0; i < 20; ++i) {
      owner_->node->limits()->call("n2", {cluster::limits::toWire(spec)}, Clock::now() + 10s,
                                   [&](cluster::limits::CallResult r) {
                                     std::lock_guard lock(mutex);
                                     results.push_back(std::move(r));
                                   });
    }
    return true;
  });
  ASSERT_TRUE(waitFor(
      [&] {
        std::lock_guard lock(mutex);
        return results.size() == 20;
      },
      10s));
  auto after = cluster::testing::runOnLoop(owner_->loop, [&] { return owner_->node->limits()->counters(); });
  EXPECT_EQ(after.calls_sent - before.calls_sent, 20u);
  EXPECT_EQ(after.frames_sent - before.frames_sent, 1u);
  int charged = 0, denied = 0;
  for (const auto& r : results) {
    ASSERT_FALSE(r.failed) << cluster::limits::nameOf(*r.failed);
    ASSERT_EQ(r.outcomes.size(), 1u);
    if (r.outcomes[0].result == wire::ItemResult::Charged) ++charged;
    if (r.outcomes[0].result == wire::ItemResult::Denied) ++denied;
  }
  EXPECT_EQ(charged, 15);
  EXPECT_EQ(denied, 5);
  auto left = engine(1).store().peek(key, c->rule.algorithm, c->limit, Engine::now(), 1);
  ASSERT_TRUE(left);
  EXPECT_FALSE(left->allowed);
}

// ---- LimitService: a frame that fills up while the owner's link refuses it ---------

// More calls to one owner in one loop turn than a frame carries: queue() sends the full
// frame at once; when the link refuses it (its send queue is over the hard limit: a
// stalled owner), onPeerDown() fails the owner's calls and drops its outgoing entry,
// which queue() still holds a reference to. Every call must still be answered once,
// with Unreachable, and nothing freed may be touched (the ASan build checks the latter;
// as of 69f5072 it fails there: queue() writes `out.items` through the reference into
// the entry onPeerDown() erased; valgrind shows the same invalid access in Release).
TEST(LimitServiceQueue, AFullFrameTheLinkRefusesFailsEveryCallOnceAndTouchesNothingFreed) {
  struct RefusingPeers : cluster::limits::PeerDirectory {
    std::optional<std::uint64_t> peerCapabilities(const std::string&) const override { return wire::kCapLimiter; }
    bool sendToPeer(const std::string&, const wire::Message&) override {
      ++sends;
      return false;
    }
    int sends = 0;
  } peers;
  cluster::Loop loop;
  loop.start();
  state::BucketStore store(1000);
  std::unique_ptr<cluster::limits::LimitService> service;
  std::atomic<int> answered{0}, unreachable{0};
  constexpr std::size_t kCalls = wire::kMaxLimitCalls + 1;
  cluster::testing::runOnLoop(loop, [&] {
    service = std::make_unique<cluster::limits::LimitService>(loop, peers, store, [] { return Engine::now(); });
    cluster::limits::ItemSpec spec;
    spec.key = std::string_view("r\0k", 3);
    spec.limit = state::Limit{};
    for (std::size_t i = 0; i < kCalls; ++i) {
      service->call("d", {cluster::limits::toWire(spec)}, Clock::now() + 10s, [&](cluster::limits::CallResult r) {
        ++answered;
        if (r.failed == cluster::limits::FallbackReason::Unreachable) ++unreachable;
      });
    }
    return true;
  });
  EXPECT_TRUE(waitFor([&] { return answered.load() >= int(kCalls); }, 10s));
  EXPECT_EQ(cluster::testing::runOnLoop(loop, [&] { return service->pending(); }), 0u);
  cluster::testing::runOnLoop(loop, [&] {
    service.reset();
    return true;
  });
  loop.stop();
  EXPECT_EQ(answered.load(), int(kCalls));
  EXPECT_EQ(unreachable.load(), int(kCalls));
  EXPECT_GE(peers.sends, 1);
}

}  // namespace
}  // namespace zetian::plugin
