// The replicated policy on the engine's side (docs/operations.md, "The replicated
// policy"): the Raft service's listener, the loading and publishing of each applied
// version on the reload worker, and the admin endpoints that read or change it.
//
// Threads: the service calls the listener on the cluster thread, which must not wait
// (publish() waits for the checks still on the old snapshot), so the listener only
// queues the document; the reload worker loads and publishes it, then tells the loop
// which versions it handled. PUT /policy is answered on the loop once the service says
// the version is committed AND the worker has put it in force here, so the operator's
// next check on this node already sees it.
//
// A version this node cannot use (a rule with store "redis" without [redis] here)
// keeps the policy in force: it is logged (policy_apply_failed) and counted, and the
// cluster goes on; the next version it can use replaces it.
#include <algorithm>
#include <utility>

#include "cluster/json.h"
#include "cluster/policy_admin.h"
#include "conf/policy.h"
#include "plugin/engine.h"

namespace zetian::plugin {

namespace {

// Versions this node could not use, remembered for the PUT /policy still waiting for
// them; a PUT waits at most kPolicyChangeDeadline, far fewer versions than this.
constexpr std::size_t kKeptFailures = 16;
constexpr std::size_t kErrorLinesShown = 3;

cluster::AdminReply json(int status, std::string body) { return {status, "application/json", std::move(body)}; }

// The first lines of a refusal, for one log line and one answer.
std::string firstErrors(const std::vector<conf::ConfigError>& errors) {
  std::string out;
  for (std::size_t i = 0; i < errors.size() && i < kErrorLinesShown; ++i) {
    if (i > 0) out += "; ";
    out += errors[i].format();
  }
  if (errors.size() > kErrorLinesShown) out += "; and " + std::to_string(errors.size() - kErrorLinesShown) + " more";
  return out;
}

std::string policyName(std::uint64_t version) { return "<policy version " + std::to_string(version) + ">"; }

}  // namespace

cluster::raft::PolicyService* Engine::policyService() {
  if (policy_service_for_test_ != nullptr) return policy_service_for_test_;
  return node_ ? node_->policy() : nullptr;
}

void Engine::watchReplicatedPolicy() {
  if (cluster::raft::PolicyService* service = policyService()) {
    service->setPolicyListener([this](const conf::PolicyDocument& document) { onReplicatedPolicy(document); });
  }
}

void Engine::onReplicatedPolicy(const conf::PolicyDocument& document) {
  std::lock_guard lock(reload_jobs_mutex_);
  // Stopping: the version is in state_dir and comes again at the next start.
  if (reload_worker_stopping_) return;
  replicated_pending_.push_back(document);
  startWorkerLocked();
  reload_jobs_cv_.notify_one();
}

std::uint64_t Engine::replicatedVersion() {
  std::lock_guard lock(reload_mutex_);
  return replicated_version_;
}

void Engine::applyReplicated(std::vector<conf::PolicyDocument> documents) {
  std::map<std::uint64_t, std::string> failures;
  std::uint64_t handled = 0;
  {
    std::lock_guard lock(reload_mutex_);
    // Loaded in order; only the newest one this node can use is published (the ones
    // before it would be replaced at once), exactly what one at a time would leave.
    const conf::PolicyDocument* newest = nullptr;
    std::optional<conf::Policy> newest_policy;
    for (const conf::PolicyDocument& document : documents) {
      handled = std::max(handled, document.version);
      // A version already in force (the one recovered from state_dir, delivered again).
      if (document.version <= replicated_version_) continue;
      conf::PolicyLoadResult loaded = conf::loadPolicy(document.text, policyName(document.version),
                                                       conf::PolicyLoadOptions{config_.redis.configured()});
      if (!loaded.ok()) {
        const std::string error = firstErrors(loaded.errors);
        failures.emplace(document.version, error);
        metrics_.policy_apply_failures_total.fetch_add(1, std::memory_order_relaxed);
        logger_->log(conf::LogLevel::Error,
                     "policy_apply_failed version=" + std::to_string(document.version) + " error=" + logValue(error) +
                         " kept=" + (replicated_version_ != 0 ? std::to_string(replicated_version_) : "file"));
        continue;
      }
      newest = &document;
      newest_policy = std::move(loaded.policy);
    }
    if (newest != nullptr) {
      const std::string canonical = conf::policyText(*newest_policy);
      if (!file_compared_) {
        file_compared_ = true;
        if (conf::policyText(file_policy_) != canonical) {
          logger_->log(conf::LogLevel::Warn,
                       "policy_file_differs version=" + std::to_string(newest->version) + " file=" +
                           logValue(config_.source) +
                           " hint=" + logValue("the cluster's policy is in force; `zetianctl policy diff " +
                                               config_.source + "` shows the difference"));
        }
      }
      // The store was sized at start: a new bound takes effect at a restart.
      if (newest_policy->max_keys != config_.policy.max_keys) {
        logger_->log(conf::LogLevel::Warn, "policy_max_keys_not_applied version=" + std::to_string(newest->version) +
                                               " max_keys=" + std::to_string(newest_policy->max_keys) +
                                               " in_use=" + std::to_string(config_.policy.max_keys) +
                                               " hint=\"ratelimit.max_keys takes effect at a restart\"");
        newest_policy->max_keys = config_.policy.max_keys;
      }
      conf::Policy previous = std::move(config_.policy);
      config_.policy = std::move(*newest_policy);
      publish(config_.policy, &previous, newest->version);
      replicated_version_ = newest->version;
      replicated_canonical_ = canonical;
      logger_->log(conf::LogLevel::Info, "policy_applied version=" + std::to_string(newest->version) +
                                             " proposer=" + logValue(newest->proposer) +
                                             " rules=" + std::to_string(config_.policy.rules.size()));
    }
  }
  // Refused only while the loop stops: the answers waiting are then 503 already.
  loop_.post([this, handled, failures = std::move(failures)]() mutable {
    replicatedHandled(handled, std::move(failures));
  });
}

void Engine::replicatedHandled(std::uint64_t version, std::map<std::uint64_t, std::string> failures) {
  replicated_handled_ = std::max(replicated_handled_, version);
  replicated_failures_.merge(failures);
  while (replicated_failures_.size() > kKeptFailures) replicated_failures_.erase(replicated_failures_.begin());
  answerPolicyWaiters();
}

void Engine::answerPolicyWaiters() {
  for (auto it = policy_waiters_.begin(); it != policy_waiters_.end();) {
    if (it->second.version > replicated_handled_) {
      ++it;
      continue;
    }
    PolicyWaiter waiter = std::move(it->second);
    it = policy_waiters_.erase(it);
    waiter.deadline.cancel();
    if (const auto failed = replicated_failures_.find(waiter.version); failed != replicated_failures_.end()) {
      waiter.respond(json(500, cluster::jsonError("policy version " + std::to_string(waiter.version) +
                                                  " is committed (index " + std::to_string(waiter.index) +
                                                  "), but this node cannot use it and keeps its policy in force: " +
                                                  failed->second)));
    } else {
      waiter.respond(cluster::policyCommitted(waiter.version, waiter.index));
    }
  }
}

std::string Engine::replicatedReloadNote(const conf::Policy& file_policy) {
  if (conf::policyText(file_policy) == replicated_canonical_) return {};
  return "the policy is replicated: use `zetianctl policy apply FILE` to change it (the policy tables of " +
         config_.source + " differ from the cluster's policy version " + std::to_string(replicated_version_) +
         ", which stays in force; `zetianctl policy diff " + config_.source + "` shows the difference)";
}

void Engine::policyGetAsync(std::function<void(cluster::AdminReply)> respond) {
  cluster::readPolicy(policyService(), std::move(respond));
}

cluster::AdminReply Engine::policyHistory() { return cluster::policyHistoryReply(policyService()); }

void Engine::clusterRemoveAsync(const std::string& node_id, std::function<void(cluster::AdminReply)> respond) {
  cluster::removeMember(policyService(), node_id, std::move(respond));
}

void Engine::clusterTransferLeaderAsync(const std::string& node_id,
                                        std::function<void(cluster::AdminReply)> respond) {
  cluster::transferLeader(policyService(), node_id, std::move(respond));
}

void Engine::policyPutAsync(std::string text, std::optional<std::uint64_t> base_version,
                            std::function<void(cluster::AdminReply)> respond) {
  if (auto refused = cluster::raftUnavailable(policyService())) {
    respond(std::move(*refused));
    return;
  }
  // The proposal, once the worker found the text to be a policy this node can use.
  auto propose = [this, base_version](std::string text, std::function<void(cluster::AdminReply)> respond) {
    cluster::raft::PolicyService* service = policyService();
    if (auto refused = cluster::raftUnavailable(service)) {
      respond(std::move(*refused));
      return;
    }
    service->proposePolicy(
        std::move(text), base_version, static_cast<std::uint64_t>(cluster::kPolicyChangeDeadline.count()),
        [this, respond = std::move(respond)](cluster::raft::PolicyResult result) mutable {
          if (result.status != 200) {
            respond(cluster::policyRefusal(result));
            return;
          }
          if (!result.document) {
            respond(json(500, cluster::jsonError("the Raft service committed the change without naming its version")));
            return;
          }
          const std::uint64_t serial = next_policy_waiter_++;
          PolicyWaiter& waiter = policy_waiters_[serial];
          waiter.version = result.document->version;
          waiter.index = result.index;
          waiter.respond = std::move(respond);
          // Bounded like the commit: a version that never comes into force here (the
          // listener never called) still gets an answer.
          waiter.deadline = loop_.after(cluster::kPolicyChangeDeadline, [this, serial] {
            const auto it = policy_waiters_.find(serial);
            if (it == policy_waiters_.end()) return;
            const std::uint64_t version = it->second.version;
            const std::uint64_t index = it->second.index;
            auto late = std::move(it->second.respond);
            policy_waiters_.erase(it);  // destroys this timer: safe from its own callback
            late(json(504, cluster::jsonError("policy version " + std::to_string(version) + " is committed (index " +
                                              std::to_string(index) + ") but not yet in force on this node after " +
                                              std::to_string(cluster::kPolicyChangeDeadline.count() / 1000) +
                                              " s; it comes into force once this node applies it")));
          });
          answerPolicyWaiters();
        });
  };
  const bool node_has_redis = config_.redis.configured();
  {
    std::lock_guard lock(reload_jobs_mutex_);
    if (!reload_worker_stopping_) {
      // A text of up to 1 MiB takes a while to check: on the worker, not the loop.
      worker_jobs_.push_back([this, node_has_redis, propose = std::move(propose), text = std::move(text),
                              respond = std::move(respond)]() mutable {
        auto refused = cluster::policyTextRefusal(text, "<PUT /policy>", node_has_redis);
        // Refused only while the loop stops; the health server then drops the request.
        loop_.post([propose = std::move(propose), text = std::move(text), respond = std::move(respond),
                    refused = std::move(refused)]() mutable {
          if (refused) {
            respond(std::move(*refused));
            return;
          }
          propose(std::move(text), std::move(respond));
        });
      });
      startWorkerLocked();
      reload_jobs_cv_.notify_one();
      return;
    }
  }
  respond(json(503, cluster::jsonError("the engine is stopping")));
}

}  // namespace zetian::plugin
