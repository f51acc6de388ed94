#include "plugin/engine.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <future>

#include "conf/env.h"
#include "conf/text.h"
#include "cluster/incarnation.h"
#include "cluster/json.h"
#include "cluster/redis/limiter.h"
#include "plugin/accounts.h"
#include "plugin/check_support.h"
#include "plugin/reload_settings.h"

namespace zetian::plugin {

namespace {

constexpr auto kHousekeepingInterval = std::chrono::seconds(1);
// Binding the listeners takes milliseconds; this only bounds a cluster thread that
// never gets to run.
constexpr auto kStartTimeout = std::chrono::milliseconds(30'000);
// Idle-bucket expiry runs in bounded steps: each visits this many hash slots, about
// 0.1-0.5 ms of the loop thread whatever max_keys is (docs/BENCHMARKS.md). At one step
// per kExpiryInterval a pass over the 1,048,576 slots of the default max_keys takes
// 256 steps, about 26 s.
constexpr std::size_t kExpirySlotsPerStep = 4096;
constexpr auto kExpiryInterval = std::chrono::milliseconds(100);
// Fast-mode leases this node holds at most (each a key owned elsewhere); beyond, the
// least recently used is returned to its owner.
constexpr std::size_t kMaxLeases = 100'000;

std::string optionOctal(const std::optional<unsigned>& v) {
  if (!v) return "";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", *v);
  return buf;
}

// Snapshot ids are unique across every engine in the process, so a thread's cached
// snapshot can never be mistaken for another engine's.
std::atomic<std::uint64_t> g_next_snapshot_id{0};

// Which snapshot each checking thread is using right now (0: none), so publish() can
// wait for the checks still on the snapshot it replaced (a hazard pointer per thread).
// Without that wait a check that took the old snapshot just before the swap could
// charge, after the sweep, a bucket under the old rule's meaning, which the new rule
// would then read.
struct CheckSlot;
struct CheckSlots {
  std::mutex mutex;  // guards list; held by publish() while it waits
  std::vector<CheckSlot*> list;
};
CheckSlots& checkSlots() {
  static auto* slots = new CheckSlots;  // never freed: threads may outlive static destruction
  return *slots;
}
struct CheckSlot {
  std::atomic<std::uint64_t> pinned{0};
  CheckSlot() {
    std::lock_guard lock(checkSlots().mutex);
    checkSlots().list.push_back(this);
  }
  ~CheckSlot() {
    std::lock_guard lock(checkSlots().mutex);
    auto& list = checkSlots().list;
    list.erase(std::find(list.begin(), list.end(), this));
  }
};
thread_local CheckSlot t_check_slot;
// This thread's reference to the snapshot it checks with (see pinPolicy()).
thread_local std::shared_ptr<const PolicySnapshot> t_cached_policy;

void waitForChecksOn(std::uint64_t snapshot_id) {
  std::lock_guard lock(checkSlots().mutex);
  for (CheckSlot* slot : checkSlots().list) {
    // A check holds its snapshot for microseconds, or, when it waits for a key's
    // owner on another node, up to cluster.check_timeout.
    while (slot->pinned.load(std::memory_order_seq_cst) == snapshot_id) std::this_thread::yield();
  }
}

}  // namespace

std::shared_ptr<const PolicySnapshot> Engine::pinnedPolicy() { return t_cached_policy; }

const PolicySnapshot* Engine::pinPolicy() const {
  // Taking the shared_ptr costs a lock and two reference-count updates that every
  // thread fights over: instead each thread keeps its own reference, and swaps it only
  // when a reload has published a newer snapshot. The pin is a store to this thread's
  // own slot, then a check that the snapshot is still current (publish() stores the
  // new id before it looks at the slots, so one of the two sees the other).
  std::shared_ptr<const PolicySnapshot>& cached = t_cached_policy;
  CheckSlot& slot = t_check_slot;
  for (;;) {
    const std::uint64_t id = policy_id_.load(std::memory_order_acquire);
    if (!cached || cached->id != id) cached = policy();
    slot.pinned.store(cached->id, std::memory_order_seq_cst);
    if (policy_id_.load(std::memory_order_seq_cst) == cached->id) return cached.get();
    slot.pinned.store(0, std::memory_order_release);
  }
}

void Engine::unpinPolicy() { t_check_slot.pinned.store(0, std::memory_order_release); }

namespace {

// Test hooks, read once from the environment: a node whose clocks are offset from the
// others' (ZETIAN_TEST_CLOCK_OFFSET_MS, cluster/incarnation.h: the same milliseconds
// shift the limiter's clock here and the incarnation's clock there) and a node that
// announces fewer capabilities, as an older version would (ZETIAN_TEST_CAPABILITIES,
// the wire::kCap* bits as a decimal number). Start-up logs a warning when either is
// set. Malformed values are ignored here (the cluster start refuses a bad offset).
std::optional<long long> testHook(const char* name) {
  const char* text = std::getenv(name);
  if (!text || !*text) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  if (errno != 0 || *end != '\0') return std::nullopt;
  return value;
}

state::Nanos clockOffset() {
  static const state::Nanos offset = [] {
    std::string error;
    const auto ms = cluster::testClockOffsetMs(std::getenv(cluster::kTestClockOffsetVariable), &error);
    // Bounded to a century either way, far from overflowing the clock.
    constexpr std::int64_t kMax = std::int64_t{100} * 365 * 24 * 3600 * 1000;
    return ms ? std::clamp<std::int64_t>(*ms, -kMax, kMax) * 1'000'000 : state::Nanos{0};
  }();
  return offset;
}

}  // namespace

state::Nanos Engine::now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
             .count() +
         clockOffset();
}

std::unique_ptr<Engine> Engine::open(std::optional<std::string> config_path, std::vector<conf::Override> overrides,
                                     Errors* errors) {
  const conf::LoadOptions options{overrides, lookupSystemAccount};
  conf::LoadResult loaded = config_path ? conf::loadFile(*config_path, options) : conf::loadEmbeddedDefault(options);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) errors->push_back(e.format());
    return nullptr;
  }
  std::unique_ptr<Engine> engine(new Engine(std::move(*loaded.config), std::move(config_path), std::move(overrides)));
  std::string error;
  if (!engine->logger_->open(&error)) {
    errors->push_back(error);
    return nullptr;
  }
  for (const auto& w : loaded.warnings) {
    engine->logger_->log(conf::LogLevel::Warn, "config_warning warning=" + logValue(w.format()));
  }
  // Names only: an override may carry a secret (ZETIAN_CLUSTER_SHARED_SECRET).
  std::string from_environment, from_set;
  for (const auto& o : engine->overrides_) {
    if (conf::isEnvName(o.key)) {
      if (!conf::isNonConfigEnvName(o.key)) from_environment += (from_environment.empty() ? "" : ",") + o.key;
    } else {
      from_set += (from_set.empty() ? "" : ",") + o.key;
    }
  }
  if (!from_environment.empty() || !from_set.empty()) {
    engine->logger_->log(conf::LogLevel::Info, "config_overrides environment=" + logValue(from_environment) +
                                                   " set=" + logValue(from_set));
  }
  return engine;
}

Engine::Engine(conf::Config config, std::optional<std::string> path, std::vector<conf::Override> overrides)
    : config_(std::move(config)),
      config_path_(std::move(path)),
      overrides_(std::move(overrides)),
      default_action_(config_.milter.default_action),
      check_timeout_(std::chrono::duration_cast<std::chrono::milliseconds>(config_.cluster.check_timeout)),
      redis_timeout_(std::chrono::duration_cast<std::chrono::milliseconds>(config_.redis.timeout)),
      leases_(kMaxLeases),
      sync_interval_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(config_.cluster.sync_interval).count()) {
  logger_ = std::make_unique<Logger>(config_.log, "zetian-milter");
  store_ = std::make_unique<state::BucketStore>(config_.policy.max_keys);
  publish(config_.policy, nullptr);
  file_policy_ = config_.policy;

  const auto& m = config_.milter;
  const auto& p = config_.policy_host;
  options_ = {
      {"milter.socket", m.socket},
      {"milter.timeout_s", std::to_string(std::chrono::duration_cast<std::chrono::seconds>(m.timeout).count())},
      {"milter.user", m.user},
      {"milter.group", m.group},
      {"milter.umask", optionOctal(m.umask)},
      {"milter.pid_file", m.pid_file},
      {"node.id", config_.node.id},
      {"node.state_dir", config_.node.state_dir},
      {"config.source", config_.source},
      {"health.socket", config_.health.socket},
      {"policy.socket", p.socket},
      {"policy.max_connections", std::to_string(p.max_connections)},
      {"policy.idle_timeout_ms", std::to_string(p.idle_timeout.count())},
      {"policy.request_timeout_ms", std::to_string(p.request_timeout.count())},
      {"policy.session_timeout_ms", std::to_string(p.session_timeout.count())},
      {"policy.max_sessions", std::to_string(p.max_sessions)},
      {"policy.tempfail_action", std::string(conf::policyTempfailActionName(p.tempfail_action))},
  };
}

Engine::~Engine() { shutdown(); }

void Engine::shutdown() {
  if (shut_down_.exchange(true)) return;
  // The worker first: a POST /reload it is running posts its answer to the loop,
  // which must still be there to send it.
  {
    std::lock_guard lock(reload_jobs_mutex_);
    reload_worker_stopping_ = true;
  }
  reload_jobs_cv_.notify_all();
  if (reload_worker_.joinable()) reload_worker_.join();
  if (loop_.base()) {
    // The health server and the timer belong to the loop thread: tear them down there.
    // Leave the cluster first (a goodbye to every peer, flushed within a moment), so
    // the others show this node as left, not failed.
    std::promise<void> done;
    if (loop_.post([this, &done] {
          auto teardown = [this, &done] {
            // A last push first, while everything it reports on is still there: the
            // counts since the previous push are not lost at a restart.
            if (statsd_) statsd_->push();
            statsd_.reset();
            // Before the node: PUT /policy answers still waiting for a version to be in force.
            for (auto& [serial, waiter] : std::exchange(policy_waiters_, {})) {
              waiter.deadline.cancel();
              waiter.respond(cluster::AdminReply{503, "application/json", cluster::jsonError("shutting down")});
            }
            lease_timer_.cancel();
            runFormingWaiters();  // checks waiting for the view: decided now, called back once
            redis_.reset();       // calls still waiting answer Closed
            node_.reset();
            housekeeping_.cancel();
            expiry_.cancel();
            health_.reset();
            done.set_value();
          };
          if (node_) {
            node_->leave(teardown);
          } else {
            teardown();
          }
        })) {
      done.get_future().wait();
    }
  }
  loop_.stop();
}

const char* Engine::option(const std::string& key) const {
  // Reloads apply it live; string literals keep every pointer handed out valid.
  if (key == "milter.default_action") return defaultAction() == conf::DefaultAction::Accept ? "accept" : "tempfail";
  auto it = options_.find(key);
  return it == options_.end() ? nullptr : it->second.c_str();
}

bool Engine::start(Errors* errors) {
  loop_.start();
  cluster::HealthServerOptions options;
  options.unix_path = config_.health.socket;
  options.unix_mode = config_.health.socket_mode;
  options.tcp_listen = config_.health.listen;
  options.admin_token = config_.health.admin_token;
  options.log = [this](conf::LogLevel level, std::string_view line) {
    if (logger_->enabled(level)) logger_->log(level, line);
  };
  // Through call(), not post() and a promise: an exception on the loop thread comes
  // back here (and out through the C ABI) instead of leaving this thread waiting.
  std::optional<std::string> started = loop_.call([this, options]() -> std::string {
    health_ = std::make_unique<cluster::HealthServer>(loop_.base(), *this, options);
    std::string error;
    if (!health_->start(&error)) {
      health_.reset();
      return error.empty() ? "the health server did not start" : error;
    }
    startHousekeeping();
    if (std::string statsd_error; !applyStatsd(config_.metrics.statsd, true, &statsd_error)) return statsd_error;
    if (config_.redis.configured()) {
      std::string error;
      redis_ = cluster::redis::backendFrom(
          loop_, config_.redis,
          [this](conf::LogLevel level, std::string_view line) {
            if (logger_->enabled(level)) logger_->log(level, line);
          },
          [this](std::int64_t nanos) { metrics_.redis_latency.observe(nanos); }, &error);
      if (!redis_) return error;
      redis_->start();
    }
    if (config_.cluster.enabled) {
      auto sink = [this](conf::LogLevel level, std::string_view line) {
        if (logger_->enabled(level)) logger_->log(level, line);
      };
      auto load = [this] {
        return cluster::NodeLoad{
            static_cast<std::uint32_t>(metrics_.sessions_active.load(std::memory_order_relaxed)),
            messages_per_s_.load(std::memory_order_relaxed)};
      };
      cluster::NodeOptions node_options = cluster::nodeOptionsFrom(config_);
      node_options.store = store_.get();
      node_options.changes = &changes_;
      node_options.now = [] { return Engine::now(); };
      node_options.trace = [this](cluster::TraceKind kind) {
        return logger_->traceWanted(kind == cluster::TraceKind::heartbeats);
      };
      if (const auto caps = testHook("ZETIAN_TEST_CAPABILITIES")) {
        node_options.capabilities = static_cast<std::uint64_t>(*caps);
        logger_->log(conf::LogLevel::Warn, "test_hook ZETIAN_TEST_CAPABILITIES=" + std::to_string(*caps));
      }
      if (clockOffset() != 0) {
        logger_->log(conf::LogLevel::Warn, std::string("test_hook ") + cluster::kTestClockOffsetVariable + "=" +
                                               std::to_string(clockOffset() / 1'000'000) + " clock=limiter");
      }
      node_ = std::make_unique<cluster::ClusterNode>(loop_, std::move(node_options), sink, load);
      watchReplicatedPolicy();
      node_->setViewListener([this](std::shared_ptr<const cluster::placement::View> view) { setView(std::move(view)); });
      node_->setSettlingListener([this](std::shared_ptr<const std::vector<std::string>> peers) {
        std::lock_guard lock(view_mutex_);
        unsettled_ = std::move(peers);
      });
      lease_timer_ = loop_.every(std::max(std::chrono::milliseconds(10),
                                          std::chrono::duration_cast<std::chrono::milliseconds>(
                                              config_.cluster.sync_interval) / 4),
                                 [this] { leaseRound(); });
      std::string error;
      if (!node_->start(&error)) {
        node_.reset();
        return error;
      }
    } else {
      watchReplicatedPolicy();  // a test's service (setPolicyServiceForTest)
    }
    return "";
  }, kStartTimeout);
  if (!started) {
    errors->push_back("the cluster thread did not start within " +
                      std::to_string(std::chrono::duration_cast<std::chrono::seconds>(kStartTimeout).count()) + " s");
    return false;
  }
  std::string error = *started;
  if (!error.empty()) {
    errors->push_back(error);
    return false;
  }
  {
    // The policy recovered from state_dir (handed to the listener as the node started)
    // is in force before the first mail, not a moment after it.
    std::unique_lock lock(reload_jobs_mutex_);
    replicated_idle_.wait_for(lock, kStartTimeout,
                              [this] { return replicated_pending_.empty() && !replicated_busy_; });
  }
  ready_.store(true);
  logger_->log(conf::LogLevel::Info,
               "started node=" + logValue(config_.node.id) + " config=" + logValue(config_.source) +
                   " milter=" + logValue(config_.milter.socket) + " health=" + logValue(config_.health.socket) +
                   " rules=" + std::to_string(policy()->rules.size()) + " version=" + zetian_version());
  return true;
}

bool Engine::applyStatsd(const std::optional<conf::StatsdSection>& settings, bool at_start, std::string* error) {
  loop_.checkThisThread();
  if (!settings) {
    if (statsd_) logger_->log(conf::LogLevel::Info, "statsd stopped");
    statsd_.reset();
    return true;
  }
  const bool created = !statsd_;
  if (created) {
    statsd_ = std::make_unique<cluster::statsd::Exporter>(
        loop_, [this] { return metrics().body; },
        [this](conf::LogLevel level, std::string_view line) {
          if (logger_->enabled(level)) logger_->log(level, line);
        });
  } else if (statsd_->settings() == *settings) {
    return true;
  }
  // At start every counter is still at zero: the first push sends all of it. Started
  // by a reload, the counts from before are not news to the agent.
  if (!statsd_->configure(*settings, at_start, error)) {
    if (created) statsd_.reset();
    return false;
  }
  logger_->log(conf::LogLevel::Info, std::string(created ? "statsd started" : "statsd changed") +
                                         " address=" + settings->address.host + ":" +
                                         std::to_string(settings->address.port) + " prefix=" +
                                         logValue(settings->prefix) + " interval=" +
                                         conf::formatDuration(settings->interval) + " tags=" +
                                         (settings->tags == conf::StatsdTags::None ? "none" : "dogstatsd"));
  return true;
}

void Engine::startHousekeeping() {
  housekeeping_ = loop_.every(kHousekeepingInterval, [this] { onHousekeeping(this); });
  expiry_ = loop_.every(kExpiryInterval, [this] { store_->expireIdleStep(now(), kExpirySlotsPerStep); });
}

void Engine::onHousekeeping(Engine* self) {
  // Messages per second, smoothed over roughly the last ten seconds.
  std::uint64_t messages = self->metrics_.messages_total.load(std::memory_order_relaxed);
  double rate = double(messages - self->last_messages_) /
                std::chrono::duration<double>(kHousekeepingInterval).count();
  self->last_messages_ = messages;
  double old = self->messages_per_s_.load(std::memory_order_relaxed);
  self->messages_per_s_.store(old + 0.1 * (rate - old), std::memory_order_relaxed);
}

void Engine::publish(const conf::Policy& policy, const conf::Policy* previous, std::uint64_t version) {
  // A replicated version is the cluster's number, the same on every node; local reloads
  // count on from it.
  policy_version_ = version != 0 ? version : policy_version_ + 1;
  auto snap = compilePolicy(policy, metrics_, policy_version_, g_next_snapshot_id.fetch_add(1) + 1);
  const std::uint64_t id = snap->id;
  std::uint64_t replaced = 0;
  {
    std::lock_guard lock(policy_mutex_);
    if (policy_) replaced = policy_->id;
    policy_ = std::move(snap);
  }
  policy_id_.store(id, std::memory_order_seq_cst);
  if (!previous) return;
  // Swap first, then sweep, and only once no check is left on the old snapshot: a
  // check still using it would re-create a swept bucket under the old rule.
  waitForChecksOn(replaced);
  // A rule whose algorithm, period or key changed would read old state with the wrong
  // meaning: start it afresh. A new limit or burst keeps the counts.
  for (const auto& old_rule : previous->rules) {
    auto it = std::find_if(policy.rules.begin(), policy.rules.end(),
                           [&](const conf::Rule& r) { return r.name == old_rule.name; });
    bool gone = it == policy.rules.end();
    if (gone || it->algorithm != old_rule.algorithm || it->period != old_rule.period || it->key != old_rule.key ||
        it->prefix_v4 != old_rule.prefix_v4 || it->prefix_v6 != old_rule.prefix_v6) {
      std::string prefix = old_rule.name;
      prefix.push_back('\0');
      store_->erasePrefix(prefix);
    }
  }
}

bool Engine::reload(Errors* errors) {
  std::lock_guard lock(reload_mutex_);
  // The same checks as --check-config and start-up, so a file is valid or not everywhere.
  const conf::LoadOptions options{overrides_, lookupSystemAccount};
  conf::LoadResult loaded =
      config_path_ ? conf::loadFile(*config_path_, options) : conf::loadEmbeddedDefault(options);
  if (!loaded.ok()) {
    for (const auto& e : loaded.errors) errors->push_back(e.format());
    metrics_.reloads_failed_total.fetch_add(1, std::memory_order_relaxed);
    logger_->log(conf::LogLevel::Error, "reload refused config=" + logValue(config_.source) + " errors=" +
                                            std::to_string(errors->size()) + " first=" + logValue(errors->front()) +
                                            " policy=kept");
    return false;
  }
  for (const auto& w : loaded.warnings) {
    logger_->log(conf::LogLevel::Warn, "config_warning warning=" + logValue(w.format()));
  }
  const conf::Config& next = *loaded.config;
  // On a node where the replicated policy is in force, the file's policy tables are
  // not applied (they only seed a new cluster), so they cannot make a reload fail.
  const bool replicated = replicated_version_ != 0;
  // [redis] takes effect at a restart: a reload cannot give a rule a Redis this process
  // has no connection to (its checks would all fall back). Refused whole, as any error.
  if (!config_.redis.configured() && !replicated) {
    for (const auto& r : next.policy.rules) {
      if (r.store != conf::Store::Redis) continue;
      errors->push_back("rule " + cluster::backquoted(r.name) +
                        ": store = \"redis\" needs the [redis] section, which takes effect at a restart; this "
                        "process started without one: restart zetian-milter to use Redis");
      metrics_.reloads_failed_total.fetch_add(1, std::memory_order_relaxed);
      logger_->log(conf::LogLevel::Error, "reload refused config=" + logValue(config_.source) +
                                              " errors=1 first=" + logValue(errors->front()) + " policy=kept");
      return false;
    }
  }
  const std::vector<std::string_view> restart = settingsNeedingRestart(config_, next);
  if (!restart.empty()) {
    logger_->log(conf::LogLevel::Warn,
                 "reload: these settings need a restart and were not applied: " + conf::joinNames(restart));
  }
  // The node settings a reload applies live (see reload_settings.cpp). A level set with
  // `zetianctl log level` lasts until here: the file is what a reload stands for.
  if (logger_->level() != next.log.level) {
    setLogLevel(next.log.level, "reload");
  }
  logger_->setFileLevel(next.log.level);
  logger_->setTrace(next.log.heartbeats, next.log.sync);
  default_action_.store(next.milter.default_action, std::memory_order_relaxed);
  // The exporter is the loop thread's: switched there, after this answer if need be.
  // Asked on every reload, not only when the file changed: a switch that failed (no
  // socket for the new address) left the exporter as it was, and the same file
  // reloaded must try again rather than take that failure for done. applyStatsd does
  // nothing when the exporter already runs with these settings.
  if (loop_.base()) {
    config_.metrics.statsd = next.metrics.statsd;
    loop_.post([this, settings = next.metrics.statsd] {
      std::string error;
      if (!applyStatsd(settings, false, &error)) {
        const std::string kept =
            statsd_ ? statsd_->settings().address.host + ":" + std::to_string(statsd_->settings().address.port) : "none";
        logger_->log(conf::LogLevel::Error, "statsd not changed error=" + logValue(error) + " pushing_to=" + kept +
                                                " action=\"fix [metrics.statsd] and reload; the same file is tried again\"");
      }
    });
  }
  file_policy_ = next.policy;
  if (replicated) {
    reload_note_ = replicatedReloadNote(next.policy);
    metrics_.reloads_ok_total.fetch_add(1, std::memory_order_relaxed);
    logger_->log(conf::LogLevel::Info, "reload ok config=" + logValue(config_.source) +
                                           " policy=replicated policy_version=" + std::to_string(replicated_version_) +
                                           " file_policy=" + (reload_note_.empty() ? "same" : "differs"));
    if (!reload_note_.empty()) {
      logger_->log(conf::LogLevel::Warn, "reload_policy_not_applied version=" + std::to_string(replicated_version_) +
                                             " hint=" + logValue(reload_note_));
    }
    return true;
  }
  reload_note_.clear();
  conf::Policy previous = config_.policy;
  config_.policy = next.policy;
  config_.policy.max_keys = previous.max_keys;
  publish(config_.policy, &previous);
  metrics_.reloads_ok_total.fetch_add(1, std::memory_order_relaxed);
  logger_->log(conf::LogLevel::Info, "reload ok config=" + logValue(config_.source) +
                                         " rules=" + std::to_string(config_.policy.rules.size()) +
                                         " policy_version=" + std::to_string(policy_version_));
  return true;
}

std::unique_ptr<Session> Engine::openSession(const char* client_addr, const char* client_name) {
  auto s = std::make_unique<Session>();
  s->id = next_session_id_.fetch_add(1, std::memory_order_relaxed);
  if (client_addr && *client_addr) setClientAddress(s->facts, client_addr);
  metrics_.sessions_total.fetch_add(1, std::memory_order_relaxed);
  metrics_.sessions_active.fetch_add(1, std::memory_order_relaxed);
  if (logger_->enabled(conf::LogLevel::Debug)) {
    logger_->log(conf::LogLevel::Debug, "connect session=" + std::to_string(s->id) +
                                            " client=" + logValue(client_addr ? client_addr : "") +
                                            " name=" + logValue(client_name ? client_name : ""));
  }
  return s;
}

void Engine::closeSession(std::unique_ptr<Session> session) {
  if (session) metrics_.sessions_active.fetch_sub(1, std::memory_order_relaxed);
}

void Engine::resetMessage(Session& s) {
  s.facts.sender.reset();
  s.marks.clear();
}

void fillDefaultAction(zetian_verdict* verdict, conf::DefaultAction action, const char* text) {
  fillContinue(verdict);
  if (action == conf::DefaultAction::Tempfail) {
    verdict->action = ZETIAN_TEMPFAIL;
    copyTruncated(verdict->rcode, sizeof verdict->rcode, "451");
    copyTruncated(verdict->xcode, sizeof verdict->xcode, "4.3.0");
    copyTruncated(verdict->text, sizeof verdict->text, text);
  }
}

void Engine::internalFailure(const char* where, const char* what, zetian_verdict* verdict) {
  metrics_.internal_errors_total.fetch_add(1, std::memory_order_relaxed);
  logger_->log(conf::LogLevel::Error, std::string("internal_error where=") + where + " error=" + logValue(what) +
                                          " action=" + option("milter.default_action"));
  fillDefaultAction(verdict, defaultAction(), "Temporary failure in the rate limiter, try again later");
}

void Engine::eom(Session& s, zetian_header_fn add_header, zetian_quarantine_fn quarantine, void* ctx) {
  bool quarantined = false;
  std::vector<std::string_view> tagged;  // one header per rule, however many recipients hit it
  for (const auto& mark : s.marks) {
    if (mark.action == conf::Action::Tag && add_header) {
      if (std::find(tagged.begin(), tagged.end(), mark.rule) != tagged.end()) continue;
      tagged.push_back(mark.rule);
      add_header(ctx, "X-Zetian-RateLimit", mark.header_value.c_str());
    } else if (mark.action == conf::Action::Quarantine && quarantine && !quarantined) {
      std::string reason = "zetian rate limit " + mark.rule + " exceeded";
      quarantine(ctx, reason.c_str());
      quarantined = true;
    }
  }
  s.marks.clear();
}

}  // namespace zetian::plugin
