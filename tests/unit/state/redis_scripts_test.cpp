// The Redis Lua scripts against state/limit.h, on a real redis-server started here.
//
// The main test runs thousands of seeded random sequences (charges, refunds and peeks;
// time steps of zero, of exact emission intervals, large gaps and a few steps back; now
// and then a changed limit or algorithm under a held bucket) through a script with an
// explicit `now` and through state::charge / state::refund, and requires the same
// allowed, remaining and retry_after_ns at every step. The other tests cover what the
// client relies on: NOSCRIPT after SCRIPT FLUSH, the TTL, another algorithm's key,
// domain errors, and concurrent bursts from several connections.
//
// Without redis-server the Redis tests skip, except under CI=true where they fail.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "state/limit.h"
#include "state/redis_scripts.h"

extern char** environ;

namespace zetian::state {
namespace {

using Clock = std::chrono::steady_clock;
constexpr Nanos kMs = 1'000'000;
constexpr std::array<Algorithm, 4> kAlgorithms{Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow,
                                               Algorithm::FixedWindow};

bool underCi() {
  const char* ci = std::getenv("CI");
  return ci && std::string_view(ci) == "true";
}

std::string findRedisServer() {
  const char* path = std::getenv("PATH");
  std::istringstream in(path ? path : "");
  for (std::string dir; std::getline(in, dir, ':');) {
    if (dir.empty()) continue;
    const std::string candidate = dir + "/redis-server";
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;
struct ContextFree {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextFree>;

Context connectTo(int port) {
  const timeval timeout{5, 0};
  return Context(redisConnectWithTimeout("127.0.0.1", port, timeout));
}

Reply command(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  return Reply(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data())));
}

void append(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  redisAppendCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data());
}

Reply nextReply(redisContext* c) {
  void* r = nullptr;
  if (redisGetReply(c, &r) != REDIS_OK) return nullptr;
  return Reply(static_cast<redisReply*>(r));
}

// One redis-server for the whole file, on a free port, in its own temporary folder.
class RedisServer {
 public:
  bool start(std::string* why) {
    const std::string binary = findRedisServer();
    if (binary.empty()) {
      *why = "redis-server is not installed";
      return false;
    }
    char pattern[] = "/tmp/zetian-redis-test-XXXXXX";
    if (!mkdtemp(pattern)) {
      *why = "mkdtemp failed";
      return false;
    }
    dir_ = pattern;
    // A port picked by the kernel can be taken again before redis binds it: retry.
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = freePort();
      if (port_ > 0 && launch(binary) && waitForPing(std::chrono::seconds(10))) return true;
      stop();
    }
    *why = "redis-server did not answer PING (log in " + dir_ + "/redis.log)";
    return false;
  }

  void stop() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      int status = 0;
      waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

  ~RedisServer() {
    stop();
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  int port() const { return port_; }

 private:
  static int freePort() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
      port = ntohs(addr.sin_port);
    close(fd);
    return port;
  }

  bool launch(const std::string& binary) {
    const std::string port = std::to_string(port_);
    std::vector<std::string> args{binary,         "--port", port,    "--bind", "127.0.0.1",   "--save", "",
                                  "--appendonly", "no",     "--dir", dir_,     "--daemonize", "no"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string log = dir_ + "/redis.log";
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) pid_ = -1;
    return rc == 0;
  }

  // Polls PING until it answers, the server exits (port taken) or the deadline passes.
  bool waitForPing(std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    while (Clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      if (Context c = connectTo(port_); c && !c->err) {
        Reply r = command(c.get(), {"PING"});
        if (r && r->type == REDIS_REPLY_STATUS && std::string_view(r->str, r->len) == "PONG") return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return false;
  }

  std::string dir_;
  int port_ = -1;
  pid_t pid_ = -1;
};

class RedisScriptsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new RedisServer;
    if (!server_->start(&start_error_)) {
      delete server_;
      server_ = nullptr;
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    if (!server_) {
      if (underCi()) FAIL() << "CI=true: a missing Redis is a failure: " << start_error_;
      GTEST_SKIP() << start_error_;
    }
    redis_ = connectTo(server_->port());
    ASSERT_TRUE(redis_ && !redis_->err) << "cannot connect to the test redis-server";
    loadScripts();
  }

  void loadScripts() {
    for (Algorithm a : kAlgorithms) {
      Reply r = command(redis_.get(), {"SCRIPT", "LOAD", std::string(redisScript(a).source)});
      ASSERT_TRUE(r && r->type == REDIS_REPLY_STRING)
          << algorithmName(a) << ": " << (r ? std::string(r->str, r->len) : "");
      sha_[static_cast<std::size_t>(a)] = std::string(r->str, r->len);
    }
  }

  std::vector<std::string> call(Algorithm a, const std::string& key, ScriptOp op, const Limit& limit,
                                std::uint64_t cost, std::optional<std::int64_t> now_ms) {
    std::string error;
    auto args = redisScriptArgs(op, a, limit, cost, now_ms, &error);
    EXPECT_TRUE(args) << error;
    std::vector<std::string> full{"EVALSHA", sha_[static_cast<std::size_t>(a)], "1", key};
    if (args) full.insert(full.end(), args->begin(), args->end());
    return full;
  }

  // Runs one charge or peek and returns its Outcome (fails the test on an error reply).
  Outcome run(Algorithm a, const std::string& key, ScriptOp op, const Limit& limit, std::uint64_t cost,
              std::optional<std::int64_t> now_ms = std::nullopt) {
    Reply r = command(redis_.get(), call(a, key, op, limit, cost, now_ms));
    return toOutcome(r.get());
  }

  static Outcome toOutcome(const redisReply* r) {
    EXPECT_TRUE(r && r->type == REDIS_REPLY_ARRAY) << (r && r->type == REDIS_REPLY_ERROR ? r->str : "not an array");
    if (!r || r->type != REDIS_REPLY_ARRAY) return {};
    std::vector<long long> integers;
    for (std::size_t i = 0; i < r->elements; ++i) integers.push_back(r->element[i]->integer);
    auto o = outcomeFromReply(integers);
    EXPECT_TRUE(o) << "malformed reply";
    return o.value_or(Outcome{});
  }

  std::string field(const std::string& key, const char* name) {
    Reply r = command(redis_.get(), {"HGET", key, name});
    return r && r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : std::string();
  }
  long long integer(const std::vector<std::string>& args) {
    Reply r = command(redis_.get(), args);
    return r && r->type == REDIS_REPLY_INTEGER ? r->integer : -99;
  }

  // A `now` far enough ahead of Redis's clock that no key written by a test expires
  // by the real clock meanwhile (PEXPIREAT is on Redis's time scale).
  static std::int64_t futureMs() {
    const auto wall =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch());
    return wall.count() + std::int64_t{10} * 365 * 86'400'000;
  }

  static RedisServer* server_;
  static std::string start_error_;
  Context redis_;
  std::array<std::string, 4> sha_;
};

RedisServer* RedisScriptsTest::server_ = nullptr;
std::string RedisScriptsTest::start_error_;

// A key with the NUL byte that store keys carry, unique per test and sequence.
std::string bucketKey(std::string_view test, std::uint64_t n) {
  std::string key = "zt:";
  key += test;
  key.push_back('\0');
  key += std::to_string(n);
  return key;
}

// ---- random sequences ---------------------------------------------------------------

enum class StepKind { Charge, Refund, Peek };
struct Step {
  StepKind kind;
  std::int64_t now_ms;
  std::uint64_t cost;
  Limit limit;     // now and then a policy update changes it under the held bucket
  Algorithm algo;  // and now and then the rule's algorithm
};
struct Scenario {
  std::vector<Step> steps;
};

std::uint64_t uniform(std::mt19937_64& rng, std::uint64_t lo, std::uint64_t hi) {
  return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
}
template <class T>
T pick(std::mt19937_64& rng, std::initializer_list<T> choices) {
  return *(choices.begin() + uniform(rng, 0, choices.size() - 1));
}

Limit randomLimit(std::mt19937_64& rng, Algorithm algo) {
  const bool uses_burst = algo == Algorithm::TokenBucket || algo == Algorithm::Gcra;
  for (;;) {
    Limit l;
    switch (uniform(rng, 0, 4)) {
      case 0: l.limit = pick<std::uint64_t>(rng, {1, 2, 3, 7, 10}); break;
      case 1: l.limit = uniform(rng, 1, 20); break;
      case 2: l.limit = uniform(rng, 1, 60); break;
      case 3: l.limit = pick<std::uint64_t>(rng, {100, 1000, 997}); break;
      default: l.limit = pick<std::uint64_t>(rng, {1'000'000, 999'999'937, 1'000'000'000, kScriptMaxCount}); break;
    }
    std::int64_t period_ms = 1;
    switch (uniform(rng, 0, 4)) {
      case 0: period_ms = pick<std::int64_t>(rng, {1, 2, 3, 7, 10, 60, 100, 997}); break;
      case 1: period_ms = pick<std::int64_t>(rng, {1'000, 60'000, 3'600'000, 86'400'000}); break;
      case 2:
        period_ms = static_cast<std::int64_t>(std::min<std::uint64_t>(l.limit, 100'000) * uniform(rng, 1, 100));
        break;
      case 3: period_ms = static_cast<std::int64_t>(uniform(rng, 1, 1'000'000)); break;
      default: period_ms = pick<std::int64_t>(rng, {604'800'000, 31'536'000'000, kScriptMaxPeriodMs}); break;
    }
    l.period_ns = period_ms * kMs;
    const std::uint64_t burst_top = std::min<std::uint64_t>(2 * l.limit + 2, kScriptMaxCount);
    l.burst = uses_burst ? (uniform(rng, 0, 3) == 0 ? burst_top : uniform(rng, 0, burst_top)) : uniform(rng, 0, 100);
    if (!redisDomainError(algo, l)) return l;
  }
}

Scenario randomScenario(std::mt19937_64& rng, Algorithm algo, std::int64_t base_ms, int steps) {
  Scenario s;
  const bool uses_burst = algo == Algorithm::TokenBucket || algo == Algorithm::Gcra;
  Limit limit;
  std::uint64_t capacity = 0;
  std::int64_t p = 0, interval = 0;
  auto change = [&] {
    limit = randomLimit(rng, algo);
    capacity = uses_burst ? limit.burst : limit.limit;
    p = limit.period_ns / kMs;
    interval = std::max<std::int64_t>(1, p / static_cast<std::int64_t>(limit.limit));
  };
  change();
  // Keep every `now` inside the domain however the gaps add up.
  const std::int64_t top = kScriptMaxNowMs - 1;
  std::int64_t now = base_ms + static_cast<std::int64_t>(uniform(rng, 0, 1'000'000'000));
  auto forward = [&](std::int64_t d) { now = d > top - now ? now : now + d; };
  for (int i = 0; i < steps; ++i) {
    if (uniform(rng, 0, 39) == 0) change();
    switch (uniform(rng, 0, 21)) {
      case 0:
      case 1:
      case 2:
      case 3:
      case 4: break;  // the same millisecond
      case 5:
      case 6:
      case 7: forward(static_cast<std::int64_t>(uniform(rng, 0, interval))); break;
      case 8:
      case 9: forward(interval); break;  // exactly one emission interval (when whole)
      case 10:
      case 11:
      case 12:
      case 13: forward(static_cast<std::int64_t>(uniform(rng, 0, p))); break;
      case 14: forward(p); break;
      case 15:
      case 16: forward(static_cast<std::int64_t>(uniform(rng, 0, std::min<std::int64_t>(3 * p, top)))); break;
      case 17: forward(static_cast<std::int64_t>(uniform(rng, 0, 1'000'000'000'000))); break;  // a large gap
      case 18:
        now -= static_cast<std::int64_t>(uniform(rng, 0, std::min<std::int64_t>(p, 100'000'000)));
        break;  // back
      default: forward(static_cast<std::int64_t>(uniform(rng, 0, std::min<std::int64_t>(10 * p, top)))); break;
    }
    std::uint64_t cost = 1;
    switch (uniform(rng, 0, 19)) {
      case 0: cost = 0; break;
      case 1: cost = capacity + uniform(rng, 1, 3); break;  // can never fit
      case 2:
      case 3:
      case 4:
      case 5:
      case 6:
      case 7: cost = uniform(rng, 0, capacity); break;
      case 8: cost = pick<std::uint64_t>(rng, {kScriptMaxCost, kScriptMaxCost - 1, capacity * 2 + 1}); break;
      default: break;
    }
    StepKind kind = StepKind::Charge;
    const auto k = uniform(rng, 0, 9);
    if (k == 0 || k == 1) kind = StepKind::Refund;
    if (k == 2) kind = StepKind::Peek;
    if (kind != StepKind::Refund) cost = std::min<std::uint64_t>(cost, capacity + 3);
    Algorithm step_algo = algo;
    if (uniform(rng, 0, 29) == 0) {
      const Algorithm other = kAlgorithms[uniform(rng, 0, kAlgorithms.size() - 1)];
      if (!redisDomainError(other, limit)) step_algo = other;
    }
    s.steps.push_back({kind, now, cost, limit, step_algo});
  }
  return s;
}

// What the key holds after a call, as state/ sees it: the script deletes the key when
// its write leaves a bucket that is already fresh-equivalent (idleAt <= now).
void forgetIfIdle(Algorithm algo, const Limit& limit, BucketState& s, Nanos now) {
  if (s.initialised && idleAt(algo, limit, s) <= now) s = BucketState{};
}

std::string describe(Algorithm algo, const Scenario& s, std::size_t i, const Outcome& got, const Outcome& want,
                     std::uint64_t seed, int n) {
  std::ostringstream out;
  const Step& step = s.steps[i];
  out << algorithmName(algo) << " seed=" << seed << " sequence=" << n << " step=" << i
      << " step_algorithm=" << algorithmName(step.algo) << " limit=" << step.limit.limit
      << " period_ms=" << step.limit.period_ns / kMs << " burst=" << step.limit.burst << " now_ms=" << step.now_ms
      << " cost=" << step.cost << " kind=" << static_cast<int>(step.kind) << "\n  script: allowed=" << got.allowed
      << " remaining=" << got.remaining << " retry_ns=" << got.retry_after_ns << "\n  state/: allowed=" << want.allowed
      << " remaining=" << want.remaining << " retry_ns=" << want.retry_after_ns;
  return out.str();
}

class RedisScriptsEquivalence : public RedisScriptsTest {
 protected:
  void compare(Algorithm algo, std::uint64_t seed) {
    constexpr int kSequences = 1500;
    constexpr int kSteps = 40;
    std::mt19937_64 rng(seed);
    const std::int64_t base = futureMs();
    std::uint64_t allowed = 0, denied = 0, refunds = 0;
    for (int n = 0; n < kSequences; ++n) {
      const Scenario s = randomScenario(rng, algo, base, kSteps);
      const std::string key = bucketKey(algorithmName(algo), seed * 1'000'000 + static_cast<std::uint64_t>(n));
      // The inputs do not depend on the answers: pipeline the whole sequence.
      for (const Step& step : s.steps) {
        const ScriptOp op = step.kind == StepKind::Charge   ? ScriptOp::Charge
                            : step.kind == StepKind::Refund ? ScriptOp::Refund
                                                            : ScriptOp::Peek;
        append(redis_.get(), call(step.algo, key, op, step.limit, step.cost, step.now_ms));
      }
      // What the key holds: a bucket of `held` (if state.initialised), as the local
      // store keeps it: another algorithm's charge replaces it, its refund is ignored.
      BucketState state;
      Algorithm held = algo;
      for (std::size_t i = 0; i < s.steps.size(); ++i) {
        const Step& step = s.steps[i];
        const Nanos now = step.now_ms * kMs;
        Reply r = nextReply(redis_.get());
        ASSERT_TRUE(r) << "connection lost";
        if (step.kind == StepKind::Refund) {
          ASSERT_EQ(r->type, REDIS_REPLY_INTEGER) << (r->type == REDIS_REPLY_ERROR ? r->str : "");
          const bool mine = state.initialised && held == step.algo;
          EXPECT_EQ(r->integer, mine ? 1 : 0) << describe(algo, s, i, {}, {}, seed, n);
          if (mine && step.cost > 0) {
            refund(held, step.limit, state, now, step.cost);
            forgetIfIdle(held, step.limit, state, now);
          }
          ++refunds;
          continue;
        }
        const Outcome got = toOutcome(r.get());
        const Algorithm a = step.algo;
        const bool can_fit =
            step.cost <= ((a == Algorithm::TokenBucket || a == Algorithm::Gcra) ? step.limit.burst : step.limit.limit);
        BucketState seen = state.initialised && held == a ? state : BucketState{};
        const Outcome want = step.kind == StepKind::Peek ? peek(a, step.limit, seen, now, step.cost)
                                                         : charge(a, step.limit, seen, now, step.cost);
        if (step.kind == StepKind::Charge) {
          if (can_fit) {
            state = seen;
            held = a;
            forgetIfIdle(a, step.limit, state, now);
          } else if (held != a) {
            state = BucketState{};  // the other algorithm's bucket is dropped
          }
        }
        ASSERT_TRUE(got.allowed == want.allowed && got.remaining == want.remaining &&
                    got.retry_after_ns == want.retry_after_ns)
            << describe(algo, s, i, got, want, seed, n);
        (got.allowed ? allowed : denied)++;
      }
    }
    // Both answers must be common, or the comparison proves little.
    EXPECT_GT(allowed, kSequences * kSteps / 10);
    EXPECT_GT(denied, kSequences * kSteps / 10);
    EXPECT_GT(refunds, kSequences * kSteps / 10);
  }
};

TEST_F(RedisScriptsEquivalence, TokenBucketScriptAnswersAsStateOnRandomSequences) {
  compare(Algorithm::TokenBucket, 11);
}
TEST_F(RedisScriptsEquivalence, GcraScriptAnswersAsStateOnRandomSequences) { compare(Algorithm::Gcra, 12); }
TEST_F(RedisScriptsEquivalence, SlidingWindowScriptAnswersAsStateOnRandomSequences) {
  compare(Algorithm::SlidingWindow, 13);
}
TEST_F(RedisScriptsEquivalence, FixedWindowScriptAnswersAsStateOnRandomSequences) {
  compare(Algorithm::FixedWindow, 14);
}

// ---- what the client relies on --------------------------------------------------------

TEST_F(RedisScriptsTest, EvalshaAfterScriptFlushAnswersNoscriptUntilReloaded) {
  const Limit limit{10, 3'600'000 * kMs, 10};  // no refill during the test
  const std::string key = bucketKey("noscript", 0);
  ASSERT_TRUE(run(Algorithm::Gcra, key, ScriptOp::Charge, limit, 1).allowed);
  ASSERT_TRUE(command(redis_.get(), {"SCRIPT", "FLUSH"}));
  Reply r = command(redis_.get(), call(Algorithm::Gcra, key, ScriptOp::Charge, limit, 1, std::nullopt));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->type, REDIS_REPLY_ERROR);
  EXPECT_EQ(std::string_view(r->str, r->len).substr(0, 8), "NOSCRIPT");
  loadScripts();
  const Outcome after = run(Algorithm::Gcra, key, ScriptOp::Charge, limit, 1);
  EXPECT_TRUE(after.allowed);
  EXPECT_EQ(after.remaining, 8);  // the bucket survived the flush: only the scripts went
}

TEST_F(RedisScriptsTest, EachAlgorithmHasAStableNameAndALoadedScript) {
  for (Algorithm a : kAlgorithms) {
    EXPECT_EQ(redisScript(a).name, "zetian_" + std::string(algorithmName(a)) + "_v1");
    Reply r = command(redis_.get(), {"SCRIPT", "EXISTS", sha_[static_cast<std::size_t>(a)]});
    ASSERT_TRUE(r && r->type == REDIS_REPLY_ARRAY && r->elements == 1);
    EXPECT_EQ(r->element[0]->integer, 1);
  }
}

// The expiry time idleAt() gives, in whole ms rounded up, for the state the key holds.
std::int64_t expectedExpiryMs(Algorithm algo, const Limit& limit, const BucketState& s) {
  const Nanos idle = idleAt(algo, limit, s);
  return idle / kMs + (idle % kMs > 0 ? 1 : 0);
}

TEST_F(RedisScriptsTest, EveryWrittenKeyExpiresWhenIdleAtSaysOnRedisClock) {
  // Redis's own clock (no explicit now): read back the stamp the script used and
  // rebuild the state, then the key's PEXPIRETIME must be idleAt rounded up to the ms.
  const Limit limit{7, 60'000 * kMs, 5};
  for (Algorithm a : kAlgorithms) {
    const std::string key = bucketKey("ttl", static_cast<std::uint64_t>(a));
    ASSERT_TRUE(run(a, key, ScriptOp::Charge, limit, 2).allowed);
    BucketState s;
    s.initialised = true;
    s.stamp = std::stoll(field(key, "t")) * kMs;
    switch (a) {
      case Algorithm::TokenBucket: s.count = std::stoull(field(key, "d")); break;
      case Algorithm::Gcra:
        s.stamp += std::stoll(field(key, "n"));
        s.count = std::stoull(field(key, "f"));
        break;
      case Algorithm::SlidingWindow:
        s.level = std::stod(field(key, "p"));
        s.count = std::stoull(field(key, "c"));
        break;
      case Algorithm::FixedWindow: s.count = std::stoull(field(key, "c")); break;
    }
    const long long expires = integer({"PEXPIRETIME", key});
    EXPECT_EQ(expires, expectedExpiryMs(a, limit, s)) << algorithmName(a);
    const long long ttl = integer({"PTTL", key});
    EXPECT_GT(ttl, 0) << algorithmName(a);
    EXPECT_LE(ttl, 2 * 60'000) << algorithmName(a);  // windows: up to two periods
  }
}

TEST_F(RedisScriptsTest, ExpiryMatchesIdleAtForEachAlgorithmWithExplicitNow) {
  const std::int64_t now = futureMs();
  const Limit limit{3, 1000 * kMs, 3};  // T = 333.33 ms: a GCRA stamp off the ms grid
  for (Algorithm a : kAlgorithms) {
    const std::string key = bucketKey("ttl-explicit", static_cast<std::uint64_t>(a));
    BucketState s;
    for (std::int64_t t : {now + 17, now + 17, now + 400}) {
      const Outcome want = charge(a, limit, s, t * kMs, 1);
      const Outcome got = run(a, key, ScriptOp::Charge, limit, 1, t);
      EXPECT_EQ(got.allowed, want.allowed);
      EXPECT_EQ(integer({"PEXPIRETIME", key}), expectedExpiryMs(a, limit, s)) << algorithmName(a) << " at " << t;
    }
  }
}

TEST_F(RedisScriptsTest, AWriteThatLeavesAFreshBucketDeletesTheKey) {
  const std::int64_t now = futureMs();
  const Limit limit{5, 1000 * kMs, 5};
  for (Algorithm a : kAlgorithms) {
    const std::string key = bucketKey("fresh", static_cast<std::uint64_t>(a));
    ASSERT_TRUE(run(a, key, ScriptOp::Charge, limit, 2, now).allowed);
    EXPECT_EQ(integer({"EXISTS", key}), 1);
    Reply r = command(redis_.get(), call(a, key, ScriptOp::Refund, limit, 2, now));
    ASSERT_TRUE(r && r->type == REDIS_REPLY_INTEGER);
    EXPECT_EQ(r->integer, 1);
    EXPECT_EQ(integer({"EXISTS", key}), 0) << algorithmName(a);
    // A charge that cannot fit writes nothing either.
    EXPECT_FALSE(run(a, key, ScriptOp::Charge, limit, 6, now).allowed);
    EXPECT_EQ(integer({"EXISTS", key}), 0) << algorithmName(a);
  }
}

TEST_F(RedisScriptsTest, AKeyOfAnotherAlgorithmIsReplacedByAChargeAndLeftAloneByARefund) {
  const std::int64_t now = futureMs();
  const Limit limit{4, 60'000 * kMs, 4};
  const std::string key = bucketKey("foreign", 0);
  // Drain a token bucket.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(run(Algorithm::TokenBucket, key, ScriptOp::Charge, limit, 1, now).allowed);
  EXPECT_FALSE(run(Algorithm::TokenBucket, key, ScriptOp::Charge, limit, 1, now).allowed);
  // A refund or a peek under another algorithm changes nothing; the peek sees a fresh bucket.
  Reply r = command(redis_.get(), call(Algorithm::Gcra, key, ScriptOp::Refund, limit, 4, now));
  ASSERT_TRUE(r && r->type == REDIS_REPLY_INTEGER);
  EXPECT_EQ(r->integer, 0);
  const Outcome peeked = run(Algorithm::FixedWindow, key, ScriptOp::Peek, limit, 1, now);
  EXPECT_TRUE(peeked.allowed);
  EXPECT_EQ(peeked.remaining, 3);
  EXPECT_EQ(field(key, "a"), "token_bucket");
  EXPECT_EQ(field(key, "d"), "4");
  // A charge under another algorithm starts from a fresh bucket and takes the key over.
  const Outcome o = run(Algorithm::FixedWindow, key, ScriptOp::Charge, limit, 1, now);
  EXPECT_TRUE(o.allowed);
  EXPECT_EQ(o.remaining, 3);
  EXPECT_EQ(field(key, "a"), "fixed_window");
  EXPECT_EQ(field(key, "d"), "");  // the old algorithm's fields are gone
  EXPECT_EQ(field(key, "c"), "1");
  // Even a charge that can never fit drops the other algorithm's bucket, as the local store does.
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(run(Algorithm::TokenBucket, key, ScriptOp::Charge, limit, 1, now).allowed);
  EXPECT_FALSE(run(Algorithm::Gcra, key, ScriptOp::Charge, limit, 5, now).allowed);
  EXPECT_EQ(integer({"EXISTS", key}), 0);
}

TEST_F(RedisScriptsTest, ScriptsRefuseArgumentsOutsideTheDomainWithAClearError) {
  const std::string key = bucketKey("domain", 0);
  const std::string sha = sha_[static_cast<std::size_t>(Algorithm::TokenBucket)];
  const std::vector<std::vector<std::string>> bad{
      {"charge", "0", "1000", "1", "1"},                     // limit 0
      {"charge", "4294967297", "1000", "1", "1"},            // limit above 2^32
      {"charge", "10", "0", "1", "1"},                       // period 0
      {"charge", "10", "1000", "1", "1.5"},                  // not an integer
      {"charge", "10", "1000", "1", "-1"},                   // negative
      {"charge", "10", "1000", "1", "1e3"},                  // not decimal digits
      {"charge", "10", "1000", "1", "1", "99999999999999"},  // now beyond 2^42 ms
      {"charge", "1", "1099511627776", "2", "1"},            // a bucket that takes 2^41 ms to fill
      {"spend", "10", "1000", "1", "1"},                     // unknown op
      {"charge", "10", "1000"},                              // too few
  };
  for (const auto& args : bad) {
    std::vector<std::string> full{"EVALSHA", sha, "1", key};
    full.insert(full.end(), args.begin(), args.end());
    Reply r = command(redis_.get(), full);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->type, REDIS_REPLY_ERROR) << args[1] << " " << args[2];
    EXPECT_EQ(std::string_view(r->str, r->len).substr(0, 11), "ERR zetian:") << r->str;
  }
  EXPECT_EQ(integer({"EXISTS", key}), 0);
}

TEST_F(RedisScriptsTest, ConcurrentBurstsFromSeveralConnectionsNeverAdmitMoreThanTheLimit) {
  constexpr int kConnections = 4;
  constexpr int kPerConnection = 40;
  // Windows are aligned to multiples of the period on the Unix epoch: 2^40 ms puts
  // the next boundary in 2039, and the buckets refill one token per 2^40 / 25 ms.
  const Limit limit{25, kScriptMaxPeriodMs * kMs, 25};
  for (Algorithm a : kAlgorithms) {
    const std::string key = bucketKey("burst", static_cast<std::uint64_t>(a));
    const std::vector<std::string> args = call(a, key, ScriptOp::Charge, limit, 1, std::nullopt);
    std::atomic<int> admitted{0}, errors{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < kConnections; ++t) {
      threads.emplace_back([&] {
        Context c = connectTo(server_->port());
        if (!c || c->err) {
          errors++;
          return;
        }
        while (!go.load()) std::this_thread::yield();
        for (int i = 0; i < kPerConnection; ++i) append(c.get(), args);
        for (int i = 0; i < kPerConnection; ++i) {
          Reply r = nextReply(c.get());
          if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
            errors++;
            continue;
          }
          if (r->element[0]->integer == 1) admitted++;
        }
      });
    }
    go = true;
    for (auto& t : threads) t.join();
    EXPECT_EQ(errors.load(), 0);
    EXPECT_EQ(admitted.load(), 25) << algorithmName(a);
  }
}

// ---- the pure helpers -----------------------------------------------------------------

TEST(RedisScriptsArgs, BuildsArgvInMillisecondsAndRefusesOutsideTheDomain) {
  std::string error;
  auto args = redisScriptArgs(ScriptOp::Refund, Algorithm::Gcra, Limit{10, 60 * kNanosPerSecond, 20}, 3, 1234, &error);
  ASSERT_TRUE(args) << error;
  EXPECT_EQ(*args, (std::vector<std::string>{"refund", "10", "60000", "20", "3", "1234"}));
  args = redisScriptArgs(ScriptOp::Charge, Algorithm::FixedWindow, Limit{10, kMs, 0}, 1, std::nullopt, &error);
  ASSERT_TRUE(args) << error;
  EXPECT_EQ(args->size(), 5u);

  EXPECT_FALSE(redisScriptArgs(ScriptOp::Charge, Algorithm::Gcra, Limit{10, kMs + 1, 10}, 1, std::nullopt, &error));
  EXPECT_NE(error.find("whole number of milliseconds"), std::string::npos) << error;
  EXPECT_FALSE(redisScriptArgs(ScriptOp::Charge, Algorithm::Gcra, Limit{0, kMs, 10}, 1, std::nullopt, &error));
  EXPECT_FALSE(
      redisScriptArgs(ScriptOp::Charge, Algorithm::Gcra, Limit{kScriptMaxCount + 1, kMs, 10}, 1, std::nullopt, &error));
  EXPECT_FALSE(
      redisScriptArgs(ScriptOp::Charge, Algorithm::Gcra, Limit{10, kMs, 10}, kScriptMaxCost + 1, std::nullopt, &error));
  EXPECT_FALSE(redisScriptArgs(ScriptOp::Charge, Algorithm::Gcra, Limit{10, kMs, 10}, 1, kScriptMaxNowMs + 1, &error));
  EXPECT_FALSE(redisScriptArgs(ScriptOp::Charge, Algorithm::Gcra, Limit{10, kMs, 10}, 1, -1, &error));
}

TEST(RedisScriptsArgs, DomainCoversTheConfigurationRangeAndNamesTheFillTimeBound) {
  // The configuration's extremes: limit and burst up to 1e9, whole-ms periods.
  EXPECT_FALSE(redisDomainError(Algorithm::TokenBucket, Limit{1'000'000'000, 86'400'000 * kMs, 1'000'000'000}));
  EXPECT_FALSE(
      redisDomainError(Algorithm::SlidingWindow, Limit{1'000'000'000, kScriptMaxPeriodMs * kMs, 1'000'000'000}));
  // burst * period / limit: exactly 2^40 ms is inside, one more ms is not.
  EXPECT_FALSE(redisDomainError(Algorithm::Gcra, Limit{2, kScriptMaxPeriodMs * kMs, 2}));
  const auto why = redisDomainError(Algorithm::Gcra, Limit{1, kScriptMaxPeriodMs * kMs, 2});
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("fill"), std::string::npos);
  // The windows ignore burst, so the fill bound does not apply to them.
  EXPECT_FALSE(redisDomainError(Algorithm::FixedWindow, Limit{1, kScriptMaxPeriodMs * kMs, 2}));
}

TEST(RedisScriptsReply, TurnsFourIntegersIntoAnOutcome) {
  const std::vector<long long> denied{0, 3, 1500, -250'000};
  const auto o = outcomeFromReply(denied);
  ASSERT_TRUE(o);
  EXPECT_FALSE(o->allowed);
  EXPECT_EQ(o->remaining, 3);
  EXPECT_EQ(o->retry_after_ns, 1500 * kMs - 250'000);
  const std::vector<long long> allowed{1, 7, 0, 0};
  EXPECT_TRUE(outcomeFromReply(allowed)->allowed);
  const std::vector<long long> huge{0, 0, 1LL << 52, 0};
  EXPECT_EQ(outcomeFromReply(huge)->retry_after_ns, std::numeric_limits<Nanos>::max());
  for (const std::vector<long long>& bad : std::vector<std::vector<long long>>{
           {1, 2, 3}, {2, 0, 0, 0}, {0, -1, 0, 0}, {0, 0, 0, 1'000'001}, {0, 0, 0, -1'000'001}}) {
    EXPECT_FALSE(outcomeFromReply(bad));
  }
}

}  // namespace
}  // namespace zetian::state
