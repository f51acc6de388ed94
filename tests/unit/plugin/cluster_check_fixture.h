// The fixture of the cluster-scope check tests (cluster_check_test.cpp,
// cluster_check_async_test.cpp): three (sometimes four) engines on loopback, a bare
// owner node, and the helpers that send checks through them.
#pragma once

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

inline bool waitFor(const std::function<bool()>& done, std::chrono::milliseconds deadline) {
  const auto until = Clock::now() + deadline;
  while (Clock::now() < until) {
    if (done()) return true;
    std::this_thread::sleep_for(10ms);  // polling interval, not synchronisation
  }
  return done();
}

inline std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

inline std::size_t countOf(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

std::string storeKey(const std::string& rule, const std::string& value) { return rule + std::string(1, '\0') + value; }

// One [[ratelimit.rule]] at the mail stage, one per hour.
inline std::string rule(const std::string& name, const std::string& key, int limit, const std::string& extra = "") {
  return "[[ratelimit.rule]]\nname = \"" + name + "\"\nkey = \"" + key + "\"\nstage = \"mail\"\nlimit = " +
         std::to_string(limit) + "\nperiod = \"1h\"\n" + extra;
}

inline std::string policy(const std::string& rules, const std::string& fail_mode = "local") {
  return "[ratelimit]\nexempt = []\nfail_mode = \"" + fail_mode + "\"\n" + rules;
}

using Settings = std::map<std::string, std::string>;  // [cluster] key -> TOML value

// The [cluster] settings of every node; a test overrides some.
inline Settings clusterDefaults() {
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

  // An engine opened and started through the C ABI, as a host does; closed with it.
  struct AbiEngine {
    zetian_engine* handle = nullptr;
    ~AbiEngine() {
      if (handle) zetian_engine_close(handle);
    }
  };

  // Member "c" as an AbiEngine, after startCluster(rules, true): returns once all five
  // members (n1, n2, n3, the bare owner d and c) see each other active.
  void startAbiMember(const std::string& rules, AbiEngine* abi) {
    Member& c = addMember("c");
    std::ofstream(c.config) << configFor(c, seedsFor(c), rules);
    abi->handle = zetian_engine_open(c.config.c_str(), nullptr, 0, nullptr, nullptr);
    ASSERT_NE(abi->handle, nullptr);
    ASSERT_EQ(zetian_engine_start(abi->handle, nullptr, nullptr), 0);
    ASSERT_TRUE(waitViews(5));
    ASSERT_TRUE(waitFor([&] { return allActive(c, 5); }, 20s));
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

}  // namespace
}  // namespace zetian::plugin
