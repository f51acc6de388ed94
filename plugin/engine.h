// The engine: configuration, policy snapshots, the limiter store, the cluster thread
// and the health server, behind the C ABI in zetian.h.
//
// Threads: check()/eom() run on libmilter's threads, many at once. They read the
// current policy snapshot (one reference per call) and charge the sharded store;
// they never touch libevent. The cluster thread (loop_) runs the health server and
// the periodic housekeeping (idle-key expiry, load figures). reload() may run on any
// thread but the loop's (POST /reload hands it to the reload worker thread, so a slow
// parse never stalls heartbeats); it builds a new snapshot and publishes it
// atomically, then waits for the checks still on the old snapshot before it sweeps
// the buckets of changed rules.
//
// The replicated policy (replicated.cpp, docs/operations.md "The replicated policy"):
// on a node in a Raft cluster the policy in force is the one Raft applied. The Raft
// service calls onReplicatedPolicy() on the cluster thread with each applied version;
// the reload worker loads it with this node's settings and publishes it as a reload
// would. From then on a reload re-reads the node-local keys only, never the file's
// policy tables.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cluster/admin_api.h"
#include "cluster/health_server.h"
#include "cluster/loop.h"
#include "cluster/node.h"
#include "cluster/raft/policy_service.h"
#include "cluster/limits/lease.h"
#include "cluster/placement/view.h"
#include "cluster/redis/backend.h"
#include "cluster/statsd/exporter.h"
#include "conf/config.h"
#include "conf/load.h"
#include "plugin/keys.h"
#include "plugin/logger.h"
#include "plugin/metrics.h"
#include "plugin/policy.h"
#include "plugin/zetian.h"
#include "state/bucket_store.h"

namespace zetian::plugin {

namespace wire = cluster::wire;

using Errors = std::vector<std::string>;

// What a tag or quarantine rule left on the current message.
struct Mark {
  conf::Action action;
  std::string rule;
  std::string header_value;  // for tag: "rule=NAME; limit=N/PERIOD"
};

// The verdict of milter.default_action: continue, or for tempfail 451 4.3.0 with `text`.
void fillDefaultAction(zetian_verdict* verdict, conf::DefaultAction action, const char* text);

struct Session {
  std::uint64_t id = 0;
  SessionFacts facts;
  std::vector<Mark> marks;
  bool helo_passed = false;  // helo-stage rules charge once per session, not per EHLO
};

class Engine final : public cluster::AdminApi {
 public:
  // Parse and validate; nullptr with every error in *errors when the config is bad.
  // `config_path` nullopt: the embedded default.
  static std::unique_ptr<Engine> open(std::optional<std::string> config_path,
                                      std::vector<conf::Override> overrides, Errors* errors);
  ~Engine() override;

  bool start(Errors* errors);
  bool reload(Errors* errors);
  // Stop the reload worker, leave the cluster, close the health server and stop the
  // cluster thread. Idempotent; the destructor calls it. Checks keep answering from
  // the node's own state afterwards (zetian_engine_close() relies on it when it must
  // keep the engine for sessions that outlive the close).
  void shutdown();

  const conf::Config& config() const { return config_; }
  const char* option(const std::string& key) const;
  // The host's reporter (zetian_engine_set_reporter, host_report.cpp). Swapped and
  // called under reporter_mutex_: once setReporter returns, the previous reporter is
  // not running and never will be. False, and nothing changed, when called from inside
  // a reporter (waiting for itself would never end).
  bool setReporter(zetian_report_fn report, void* ctx);
  // The reporter's text for `what` (ZETIAN_REPORT_*): "" without a reporter, when it
  // appended nothing, or when its answer was unusable (logged once). HEALTH's text is
  // one JSON object, METRICS' ends with a newline. On the cluster thread.
  std::string hostReport(int what);
  // In maintenance every connection is asked for its connect reply (the drain's 421).
  unsigned needs() const {
    return policy()->needs | (maintenance_.load(std::memory_order_relaxed) ? unsigned{ZETIAN_NEED_CONNECT_REPLY} : 0u);
  }
  bool inMaintenance() const { return maintenance_.load(std::memory_order_relaxed); }
  Logger& logger() { return *logger_; }
  Metrics& counters() { return metrics_; }
  state::BucketStore& store() { return *store_; }
  std::shared_ptr<const PolicySnapshot> policy() const {
    std::lock_guard lock(policy_mutex_);
    return policy_;
  }

  std::unique_ptr<Session> openSession(const char* client_addr, const char* client_name);
  void closeSession(std::unique_ptr<Session> session);
  // Decides a stage: locally, or asking the owners of cluster-scope keys and waiting at
  // most cluster.check_timeout (check.cpp).
  int check(Session& session, conf::Stage stage, const char* arg, zetian_verdict* verdict);
  // The same decision without waiting: `done` runs exactly once, after *verdict is
  // filled, inline when every rule was decided here, else on the cluster thread (also
  // on timeout and at shutdown). The session and verdict must live until then, and the
  // session must not be used meanwhile.
  void checkAsync(Session& session, conf::Stage stage, const char* arg, zetian_verdict* verdict,
                  std::function<void()> done);

  // The placement view the cluster thread published last (none before the cluster starts).
  std::shared_ptr<const cluster::placement::View> view() const;

  struct CheckJob;
  void eom(Session& session, zetian_header_fn add_header, zetian_quarantine_fn quarantine, void* ctx);
  void resetMessage(Session& session);

  // milter.default_action as in force now (a reload applies it live).
  conf::DefaultAction defaultAction() const { return default_action_.load(std::memory_order_relaxed); }
  // The verdict when the engine itself fails: milter.default_action.
  void internalFailure(const char* where, const char* what, zetian_verdict* verdict);

  // cluster::AdminApi, on the cluster thread.
  cluster::AdminReply health() override;
  cluster::AdminReply live() override;
  cluster::AdminReply ready() override;
  cluster::AdminReply metrics() override;
  cluster::AdminReply reload() override;
  void reloadAsync(std::function<void(cluster::AdminReply)> respond) override;
  cluster::AdminReply limitsShow(const cluster::LimitsQuery& query) override;
  cluster::AdminReply limitsReset(const std::string& rule, const std::string& key) override;
  // The same, asking Redis for the rules with store = "redis" (admin.cpp).
  void limitsShowAsync(const cluster::LimitsQuery& query, std::function<void(cluster::AdminReply)> respond) override;
  void limitsResetAsync(const std::string& rule, const std::string& key,
                        std::function<void(cluster::AdminReply)> respond) override;
  cluster::AdminReply maintenance(bool enabled) override;
  cluster::AdminReply logLevel(const std::string& level) override;
  // The replicated policy (replicated.cpp): 503 without a Raft cluster.
  void policyGetAsync(std::function<void(cluster::AdminReply)> respond) override;
  // Checked with this node's settings on the reload worker (a large text must not stall
  // the loop), proposed, and answered once the version is in force here.
  void policyPutAsync(std::string text, std::optional<std::uint64_t> base_version,
                      std::function<void(cluster::AdminReply)> respond) override;
  cluster::AdminReply policyHistory() override;
  void clusterRemoveAsync(const std::string& node_id, std::function<void(cluster::AdminReply)> respond) override;
  void clusterTransferLeaderAsync(const std::string& node_id,
                                  std::function<void(cluster::AdminReply)> respond) override;

  // The Raft service's policy listener: a version applied by the replicated state, in
  // order. Queues it for the reload worker and returns; any thread.
  void onReplicatedPolicy(const conf::PolicyDocument& document);
  // The replicated version in force on this node; 0 while the file's policy is.
  std::uint64_t replicatedVersion();

  // Monotonic nanoseconds, the limiter's clock.
  static state::Nanos now();

  // Tests: called on the reload worker before it reads the file, to hold a POST
  // /reload in progress while the test looks at the loop.
  void setReloadGateForTest(std::function<void()> gate) { reload_gate_for_test_ = std::move(gate); }
  std::size_t reloadsWaitingForTest() {
    std::lock_guard lock(reload_jobs_mutex_);
    return reload_waiters_.size();
  }
  // Tests: the Raft service to use instead of the cluster's; set before start().
  void setPolicyServiceForTest(cluster::raft::PolicyService* service) { policy_service_for_test_ = service; }

 private:
  // The current snapshot, pinned for one check: publish() waits until no check still
  // uses the snapshot it replaced. The pointer stays valid until unpinPolicy().
  const PolicySnapshot* pinPolicy() const;
  // A reference to the snapshot this thread pinned last, alive past the unpin (a check
  // whose calls may be answered after it returned). Costs a shared reference count:
  // only for checks that go to other nodes.
  static std::shared_ptr<const PolicySnapshot> pinnedPolicy();
  static void unpinPolicy();
  void reloadWorker();
  // Starts the reload worker if it is not running; reload_jobs_mutex_ held.
  void startWorkerLocked();
  Engine(conf::Config config, std::optional<std::string> path, std::vector<conf::Override> overrides);
  // `version` 0: the next local version (a reload); else the replicated version.
  void publish(const conf::Policy& policy, const conf::Policy* previous, std::uint64_t version = 0);
  // The replicated policy (replicated.cpp).
  // The cluster's Raft service, nullptr without one. Loop thread only (node_ lives there).
  cluster::raft::PolicyService* policyService();
  // At start, on the loop thread, before the node starts: the service's listener.
  void watchReplicatedPolicy();
  // On the reload worker: load the documents in order, publish the newest this node can
  // use, and tell the loop which versions were handled.
  void applyReplicated(std::vector<conf::PolicyDocument> documents);
  // On the loop thread: versions up to `version` were handled (`failures`: those this
  // node could not use, with why); answers the PUT /policy waiting for them.
  void replicatedHandled(std::uint64_t version, std::map<std::uint64_t, std::string> failures);
  void answerPolicyWaiters();
  // What a reload on a replicated node says about the file's policy tables; "" when
  // they match the policy in force. reload_mutex_ held.
  std::string replicatedReloadNote(const conf::Policy& file_policy);
  // Sets the log level and says so in one line (`source`: admin, reload), written at
  // whichever of the two levels is the more verbose, so it shows either way.
  void setLogLevel(conf::LogLevel level, std::string_view source);
  void startHousekeeping();
  static void onHousekeeping(Engine* self);
  void logDecision(const Session& s, conf::Stage stage, const CompiledRule& rule, std::string_view key,
                   const wire::LimitOutcome& outcome, Verdict verdict);
  // The steps of a check (check.cpp).
  bool prepareCheck(CheckJob& job, Session& s, conf::Stage stage, const char* arg);
  // This node is forming and the stage has cluster-scope rules: the check waits.
  bool waitsForView(conf::Stage stage) const;
  void runFormingWaiters();  // on the loop thread
  void checkAsyncNow(Session& s, conf::Stage stage, const char* arg, zetian_verdict* verdict,
                     std::function<void()> done, state::Nanos started);
  void evaluateLocally(CheckJob& job, std::size_t group);
  void fallBack(CheckJob& job, std::size_t group, cluster::limits::FallbackReason reason);
  void sendCalls(const std::shared_ptr<CheckJob>& job, std::function<void()> all_answered);
  void finishCheck(CheckJob& job);
  void refundCharged(CheckJob& job);
  bool maintenanceRefusal(const Session& s, conf::Stage stage, zetian_verdict* verdict);
  void setView(std::shared_ptr<const cluster::placement::View> view);
  void noteFallback(const std::string& owner, cluster::limits::FallbackReason reason, conf::FailMode mode,
                    const CompiledRule& rule);
  void noteAnswered(const std::string& owner);

  // Node part as opened: what a reload compares against to name the settings needing a
  // restart (the two applied live are held by logger_ and default_action_). Policy
  // part as of the last good load.
  conf::Config config_;
  const std::optional<std::string> config_path_;
  const std::vector<conf::Override> overrides_;
  std::unique_ptr<Logger> logger_;
  Metrics metrics_;
  std::unique_ptr<state::BucketStore> store_;
  // The current snapshot. Readers on the hot path go through pinPolicy(), which
  // takes the mutex only when policy_id_ says a newer snapshot was published.
  // (A mutex rather than std::atomic<std::shared_ptr>: libstdc++ 12 implements that
  // with an internal lock TSan cannot see, and the hot path avoids both anyway.)
  mutable std::mutex policy_mutex_;  // guards policy_
  // Guards reporter_ and reporter_ctx_, and is held during every call of reporter_.
  std::mutex reporter_mutex_;
  zetian_report_fn reporter_ = nullptr;
  void* reporter_ctx_ = nullptr;
  std::atomic<bool> reporter_complained_{false};  // one log line per engine for a bad report
  std::shared_ptr<const PolicySnapshot> policy_;
  std::atomic<std::uint64_t> policy_id_{0};  // policy_->id, published after policy_
  std::mutex reload_mutex_;  // one reload at a time; guards config_.policy and policy_version_
  std::uint64_t policy_version_ = 0;
  // The replicated policy, guarded by reload_mutex_: the policy tables of the node's
  // file as last read (start or reload), the replicated version in force (0: the
  // file's policy is), whether the file was compared with the cluster's policy yet
  // (once, at the first replicated version applied), and what the last reload said.
  conf::Policy file_policy_;
  std::uint64_t replicated_version_ = 0;
  bool file_compared_ = false;
  std::string reload_note_;
  std::string replicated_canonical_;  // policyText of the replicated version in force
  // milter.default_action, applied live by reloads; read by internalFailure().
  std::atomic<conf::DefaultAction> default_action_;

  // POST /reload runs here, off the loop thread. Started on the first POST /reload.
  std::mutex reload_jobs_mutex_;  // guards reload_waiters_, reload_worker_ and reload_worker_stopping_
  std::condition_variable reload_jobs_cv_;
  // POST /reload requests waiting for the next reload (reloadAsync): one reload answers all.
  std::vector<std::function<void(cluster::AdminReply)>> reload_waiters_;
  std::thread reload_worker_;
  bool reload_worker_stopping_ = false;
  // Also guarded by reload_jobs_mutex_: replicated versions waiting for the worker, and
  // other work for it (PUT /policy's check).
  std::vector<conf::PolicyDocument> replicated_pending_;
  std::vector<std::function<void()>> worker_jobs_;
  // The worker is applying versions; start() waits until it is not and none is pending,
  // so a policy recovered from state_dir is in force before the first mail.
  bool replicated_busy_ = false;
  std::condition_variable replicated_idle_;
  // Loop thread only: the newest replicated version the worker handled, the recent
  // ones it could not use (version -> why; the newest kKeptFailures), and the PUT
  // /policy answers waiting for theirs to be in force here.
  std::uint64_t replicated_handled_ = 0;
  std::map<std::uint64_t, std::string> replicated_failures_;
  struct PolicyWaiter {
    std::uint64_t version = 0;
    std::uint64_t index = 0;
    std::function<void(cluster::AdminReply)> respond;
    cluster::Timer deadline;
  };
  std::map<std::uint64_t, PolicyWaiter> policy_waiters_;  // by a serial number
  std::uint64_t next_policy_waiter_ = 1;
  cluster::raft::PolicyService* policy_service_for_test_ = nullptr;
  std::function<void()> reload_gate_for_test_;  // set before the first POST /reload
  std::atomic<bool> shut_down_{false};
  std::map<std::string, std::string> options_;

  std::atomic<std::uint64_t> next_session_id_{1};
  const std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
  std::atomic<bool> ready_{false};
  // Drain: new SMTP sessions from non-loopback clients get 421 4.3.2 at connect, and
  // the cluster shows this node as `maintenance`. Set over the health socket only.
  std::atomic<bool> maintenance_{false};

  // Cluster-scope rules: the placement view (published by the cluster thread) and how
  // long a check waits for an owner.
  mutable std::mutex view_mutex_;  // guards view_
  std::shared_ptr<const cluster::placement::View> view_;
  std::atomic<bool> view_forming_{false};  // view_ && view_->forming, for a check's first look
  // The peers whose hand-off this node awaits (cluster/limits/service.h, "Settling");
  // null or empty: none. Guarded by view_mutex_.
  std::shared_ptr<const std::vector<std::string>> unsettled_;
  // While this node is forming (placement::View::forming), checks with cluster rules
  // wait for the view, at most check_timeout: synchronous ones on view_formed_,
  // asynchronous ones as closures the loop thread runs (forming_waiters_, loop only).
  std::condition_variable view_formed_;
  std::vector<std::function<void()>> forming_waiters_;
  cluster::Timer forming_timer_;
  const std::chrono::milliseconds check_timeout_;
  // [redis] timeout: the deadline of a stage's Redis rules. A check waits for the later
  // of the two (plus slack).
  const std::chrono::milliseconds redis_timeout_;
  cluster::limits::ChangeLog changes_;  // cluster-scope keys charged here as owner
  // Fast mode: this node's leases of keys owned elsewhere, topped up and returned by
  // the cluster thread every sync_interval / 4 (leaseRound).
  cluster::limits::LeaseTable leases_;
  const state::Nanos sync_interval_ns_;
  cluster::Timer lease_timer_;  // armed and cancelled on the loop thread
  void leaseRound();
  // Fallback episodes by owner ("" for no quorum), for one log line per episode.
  struct Episode {
    cluster::limits::FallbackReason reason{};
    std::uint64_t fallbacks = 0;
    std::chrono::steady_clock::time_point since;
  };
  std::mutex episodes_mutex_;  // guards episodes_
  std::map<std::string, Episode> episodes_;
  std::atomic<std::size_t> episodes_open_{0};

  cluster::Loop loop_;
  // Owned by the loop thread: created and destroyed there.
  std::unique_ptr<cluster::HealthServer> health_;
  std::unique_ptr<cluster::ClusterNode> node_;  // [cluster] enabled only
  std::unique_ptr<cluster::redis::Backend> redis_;  // [redis] configured only; loop thread
  std::unique_ptr<cluster::statsd::Exporter> statsd_;  // [metrics.statsd] only; loop thread
  // On the loop thread: start, switch or stop the StatsD push as `settings` say.
  bool applyStatsd(const std::optional<conf::StatsdSection>& settings, bool at_start, std::string* error);
  cluster::Timer housekeeping_;  // armed and cancelled on the loop thread
  cluster::Timer expiry_;        // likewise: one bounded expiry step per turn
  std::uint64_t last_messages_ = 0;
  std::atomic<double> messages_per_s_{0};
};

}  // namespace zetian::plugin
