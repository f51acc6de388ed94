// The engine's side of the health/admin HTTP server (cluster::AdminApi). Runs on
// the cluster thread; everything it reads is atomic or taken under the store's
// shard locks, one shard at a time.

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "cluster/clock.h"
#include "cluster/json.h"
#include "cluster/policy_admin.h"
#include "conf/names.h"
#include "plugin/engine.h"

namespace zetian::plugin {

namespace {

cluster::AdminReply json(int status, std::string body) {
  return {status, "application/json", std::move(body)};
}

std::string errorsDocument(const Errors& errors) {
  cluster::JsonWriter w;
  w.beginObject().field("ok", false).key("errors").beginArray();
  for (const auto& e : errors) w.value(e);
  w.endArray().endObject();
  return w.take();
}

void metric(std::string& out, const char* name, const char* type, const char* help, double value) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
  out += name;
  char buf[64];
  if (value == double(static_cast<long long>(value)))
    std::snprintf(buf, sizeof buf, " %lld\n", static_cast<long long>(value));
  else
    std::snprintf(buf, sizeof buf, " %.6f\n", value);
  out += buf;
}

}  // namespace

namespace {

// RFC 3339 UTC with milliseconds, "2026-11-27T05:20:01.123Z".
std::string utcTime(std::int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[96];  // generous: GCC cannot see that the fields are small
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(unix_ms % 1000));
  return buf;
}

}  // namespace

cluster::AdminReply Engine::health() {
  const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_at_);
  const auto snap = policy();
  const auto stats = store_->stats();
  std::vector<cluster::MemberInfo> members;
  std::string cluster_state = "healthy";
  std::size_t cluster_size = 1;
  if (node_) {
    members = node_->members();
    cluster_state = std::string(cluster::membership::clusterStateName(node_->state()));
    cluster_size = node_->size();
  } else {
    // Without a cluster a node's address is where its MTA reaches it: the milter
    // socket, or the policy host's when the milter listener is off.
    members.push_back(cluster::MemberInfo{
        config_.node.id, config_.milter.socket.empty() ? config_.policy_host.socket : config_.milter.socket,
        config_.cluster.region, ready_.load() ? "active" : "joining", true,
        static_cast<std::int64_t>(cluster::unixMillis()),
        cluster::NodeLoad{static_cast<std::uint32_t>(metrics_.sessions_active.load(std::memory_order_relaxed)),
                          messages_per_s_.load(std::memory_order_relaxed)},
        0, std::nullopt});  // no cluster: no keys owned to count
  }
  const bool draining = maintenance_.load();
  const std::string status = !ready_.load() ? "joining" : draining ? "maintenance" : members.front().status;
  std::optional<cluster::raft::RaftStatus> raft;
  if (cluster::raft::PolicyService* service = policyService()) raft = service->status();
  cluster::JsonWriter w;
  w.beginObject()
      .field("node_id", config_.node.id)
      .field("status", status)
      .field("version", zetian_version())
      .field("uptime_s", uptime.count())
      .field("maintenance", draining)
      .field("log_level", conf::logLevelName(logger_->level()));
  // Without [cluster] no term and no indexes: a field shown to operators is measured or
  // absent. `leader` stays in the document (the contract names it) as null.
  cluster::writeRaftHealth(w, raft);
  w.key("cluster")
      .beginObject()
      .field("enabled", config_.cluster.enabled)
      .field("state", cluster_state)
      .field("size", cluster_size)
      .endObject()
      .key("policy")
      .beginObject()
      .field("version", snap->version)
      .field("rules", snap->rules.size())
      .field("source", config_.source)
      .endObject()
      .key("limiter")
      .beginObject()
      .field("keys", stats.keys)
      .field("max_keys", store_->maxKeys())
      .field("evictions", stats.evictions)
      .endObject()
      .key("redis");
  // The connection of store = "redis" rules; null without a [redis] section.
  if (redis_) {
    const auto r = redis_->status();
    w.beginObject()
        .field("address", r.address)
        .field("state", std::string(cluster::redis::nameOf(r.state)))
        .field("role", r.role);
    if (r.last_error.empty()) {
      w.key("last_error").null();
    } else {
      w.field("last_error", r.last_error);
    }
    w.endObject();
  } else {
    w.null();
  }
  // The policy-delegation host's own figures; null when the host has none to give
  // (no policy host runs: [policy] socket is off, or zetian-milter is not the host).
  if (std::string host = hostReport(ZETIAN_REPORT_HEALTH); !host.empty()) {
    w.key("policy_host").raw(host);
  } else {
    w.key("policy_host").null();
  }
  w.key("members").beginArray();
  for (const auto& m : members) {
    w.beginObject()
        .field("id", m.id)
        .field("address", m.address)
        .field("region", m.region)
        .field("status", m.self ? status : m.status)
        .field("self", m.self)
        .field("last_seen", m.last_seen_unix_ms > 0 ? utcTime(m.last_seen_unix_ms) : std::string())
        .field("incarnation", m.incarnation);
    if (const auto role = cluster::raftRoleOf(raft, m.id)) {
      w.field("raft_role", *role);
    } else {
      w.key("raft_role").null();
    }
    if (m.keys_owned) {
      w.field("keys_owned", *m.keys_owned);
    } else {
      w.key("keys_owned").null();
    }
    w.key("load")
        .beginObject()
        .field("sessions", m.load.sessions)
        .field("messages_per_s", m.load.messages_per_s)
        .endObject()
        .endObject();
  }
  w.endArray().endObject();
  return json(200, w.take());
}

cluster::AdminReply Engine::maintenance(bool enabled) {
  const bool was = maintenance_.exchange(enabled);
  if (node_) node_->setMaintenance(enabled);
  if (was != enabled) {
    logger_->log(conf::LogLevel::Info, std::string("maintenance state=") + (enabled ? "on" : "off") +
                                           (enabled ? " effect=\"new SMTP sessions get 421 4.3.2; loopback exempt\"" : ""));
  }
  cluster::JsonWriter w;
  w.beginObject().field("ok", true).field("maintenance", enabled).field("changed", was != enabled).endObject();
  return json(200, w.take());
}

void Engine::setLogLevel(conf::LogLevel level, std::string_view source) {
  const conf::LogLevel previous = logger_->level();
  const std::string line = "log_level level=" + std::string(conf::logLevelName(level)) +
                           " previous=" + std::string(conf::logLevelName(previous)) + " source=" + std::string(source);
  // Written while the more verbose of the two is in force.
  if (level > previous) logger_->setLevel(level);
  logger_->log(conf::LogLevel::Info, line);
  logger_->setLevel(level);
}

cluster::AdminReply Engine::logLevel(const std::string& level) {
  const conf::LogLevel previous = logger_->level();
  if (!level.empty()) {
    // "warning" as syslog and most daemons spell it; the file's names otherwise.
    const std::string_view wanted = level == "warning" ? std::string_view("warn") : std::string_view(level);
    std::optional<conf::LogLevel> found;
    for (const auto& named : conf::logLevelNames()) {
      if (named.name == wanted) found = named.value;
    }
    if (!found) {
      return json(400, cluster::jsonError("unknown log level `" + level + "`: use error, warn (or warning), info or debug"));
    }
    if (*found != previous) setLogLevel(*found, "admin");
  }
  const conf::LogLevel now = logger_->level();
  cluster::JsonWriter w;
  w.beginObject()
      .field("ok", true)
      .field("level", conf::logLevelName(now))
      .field("previous", conf::logLevelName(previous))
      .field("changed", now != previous)
      .field("file_level", conf::logLevelName(logger_->fileLevel()))
      .field("heartbeats", logger_->traceSwitch(true))
      .field("sync", logger_->traceSwitch(false))
      .endObject();
  return json(200, w.take());
}

cluster::AdminReply Engine::live() { return json(200, R"({"live":true})"); }

cluster::AdminReply Engine::ready() {
  if (!ready_.load()) return json(503, R"({"ready":false,"reason":"starting"})");
  return json(200, R"({"ready":true})");
}

cluster::AdminReply Engine::metrics() {
  std::string out;
  out.reserve(8192);
  const auto m = [&](const char* name, const char* type, const char* help, double v) { metric(out, name, type, help, v); };
  const auto stats = store_->stats();
  out += "# HELP zetian_build_info Version of the running zetian-milter.\n# TYPE zetian_build_info gauge\n";
  out += std::string("zetian_build_info{version=\"") + zetian_version() + "\"} 1\n";
  m("zetian_uptime_seconds", "gauge", "Seconds since the engine started.",
    std::chrono::duration<double>(std::chrono::steady_clock::now() - started_at_).count());
  m("zetian_sessions_total", "counter", "SMTP sessions seen.", double(metrics_.sessions_total.load()));
  m("zetian_sessions_active", "gauge", "SMTP sessions open now.", double(metrics_.sessions_active.load()));
  m("zetian_maintenance", "gauge", "1 while this node is in maintenance (draining).", maintenance_.load() ? 1.0 : 0.0);
  m("zetian_maintenance_refusals_total", "counter", "SMTP sessions refused with 421 4.3.2 while in maintenance.",
    double(metrics_.maintenance_refusals_total.load()));
  m("zetian_messages_total", "counter", "Messages seen (MAIL FROM commands).", double(metrics_.messages_total.load()));
  m("zetian_exempt_total", "counter", "Checks skipped because the client address is exempt.",
    double(metrics_.exempt_address_total.load()));
  m("zetian_exempt_authenticated_total", "counter", "Checks skipped because the session is authenticated.",
    double(metrics_.exempt_authenticated_total.load()));
  m("zetian_internal_errors_total", "counter", "Internal failures answered with milter.default_action.",
    double(metrics_.internal_errors_total.load()));
  m("zetian_reloads_total", "counter", "Policy reloads that were applied.", double(metrics_.reloads_ok_total.load()));
  m("zetian_reload_failures_total", "counter", "Policy reloads refused because of errors.",
    double(metrics_.reloads_failed_total.load()));
  m("zetian_policy_rules", "gauge", "Rules in the running policy.", double(policy()->rules.size()));
  m("zetian_policy_version", "gauge",
    "Version of the running policy: the replicated version in a Raft cluster, else bumped by every reload.",
    double(policy()->version));
  m("zetian_policy_apply_failures_total", "counter",
    "Replicated policy versions this node could not use (it kept the policy in force).",
    double(metrics_.policy_apply_failures_total.load()));
  if (cluster::raft::PolicyService* service = policyService()) {
    const cluster::raft::RaftStatus raft = service->status();
    m("zetian_raft_term", "gauge", "This node's Raft term.", double(raft.term));
    m("zetian_raft_commit_index", "gauge", "The highest Raft log index this node knows committed.",
      double(raft.commit_index));
    m("zetian_raft_applied_index", "gauge", "The highest Raft log index applied on this node.",
      double(raft.applied_index));
    m("zetian_raft_is_leader", "gauge", "1 while this node is the Raft leader.", raft.role == "leader" ? 1.0 : 0.0);
    m("zetian_raft_leader_changes_total", "counter", "Raft leader changes this node saw since it started.",
      double(raft.leader_changes));
  }
  m("zetian_limiter_keys", "gauge", "Rate-limit keys held in memory.", double(stats.keys));
  m("zetian_limiter_max_keys", "gauge", "The configured bound on keys (ratelimit.max_keys).", double(store_->maxKeys()));
  m("zetian_limiter_evictions_total", "counter", "Keys dropped to stay within ratelimit.max_keys.",
    double(stats.evictions));
  m("zetian_limiter_expirations_total", "counter", "Idle keys dropped because their bucket was full again.",
    double(stats.expirations));
  // Absent without a health server (an engine not started): nothing was measured.
  if (health_) {
    const cluster::HealthServerStats h = health_->stats();
    m("zetian_health_connections_refused_total", "counter",
      "Health connections closed at accept: over the per-listener connection cap.", double(h.refused_connections));
    m("zetian_health_accept_errors_total", "counter",
      "Failed accept() calls on the health listeners (EMFILE, ENFILE, ...).", double(h.accept_errors));
    m("zetian_health_connections_shed_total", "counter",
      "Pending health connections closed unheard while accept() was failing, to keep the backlog moving.",
      double(h.shed_connections));
    m("zetian_health_requests_timed_out_total", "counter",
      "Health requests answered 408: not complete in time after their first byte.", double(h.timed_out_requests));
    m("zetian_health_connections_overflowed_total", "counter",
      "Health connections closed because replies they did not read passed the hard cap.",
      double(h.overflowed_connections));
  }
  if (node_) {
    const auto c = node_->counters();
    std::size_t by_status[6] = {};
    for (const auto& member : node_->members()) {
      if (member.self) continue;
      for (int i = 0; i < 6; ++i) {
        if (member.status == cluster::membership::statusName(static_cast<cluster::membership::PeerStatus>(i))) {
          ++by_status[i];
        }
      }
    }
    out += "# HELP zetian_cluster_members Peers in this node's view, by status (self not counted).\n"
           "# TYPE zetian_cluster_members gauge\n";
    for (int i = 0; i < 6; ++i) {
      out += "zetian_cluster_members{status=\"" +
             std::string(cluster::membership::statusName(static_cast<cluster::membership::PeerStatus>(i))) + "\"} " +
             std::to_string(by_status[i]) + "\n";
    }
    m("zetian_cluster_size", "gauge", "Members not left, this node included.", double(node_->size()));
    out += "# HELP zetian_cluster_state The cluster state as this node sees it (1 for the current one).\n"
           "# TYPE zetian_cluster_state gauge\n";
    for (auto st : {cluster::membership::ClusterState::forming, cluster::membership::ClusterState::healthy,
                    cluster::membership::ClusterState::degraded, cluster::membership::ClusterState::no_quorum}) {
      out += "zetian_cluster_state{state=\"" + std::string(cluster::membership::clusterStateName(st)) + "\"} " +
             (node_->state() == st ? "1" : "0") + "\n";
    }
    out += "# HELP zetian_cluster_events_total Cluster events (node_joined, node_left, node_failed, node_recovered, "
           "cluster_state_changed, rebalancing_started, rebalancing_completed, raft_cluster_started, "
           "raft_leader_changed, raft_membership_changed).\n"
           "# TYPE zetian_cluster_events_total counter\n";
    for (const char* name : {"node_joined", "node_left", "node_failed", "node_recovered", "cluster_state_changed",
                             "rebalancing_started", "rebalancing_completed", "raft_cluster_started",
                             "raft_leader_changed", "raft_membership_changed"}) {
      auto it = c.events.find(name);
      out += std::string("zetian_cluster_events_total{event=\"") + name + "\"} " +
             std::to_string(it == c.events.end() ? 0 : it->second) + "\n";
    }
    m("zetian_cluster_links_established_total", "counter", "Node links that passed the handshake.",
      double(c.links_established));
    // By kind and reason, every label always present, so that a rate() never starts late.
    auto labelled = [&out](const char* name, const char* help, const char* label,
                           const std::vector<std::string>& values, const std::map<std::string, std::uint64_t>& counts) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
      for (const auto& value : values) {
        auto it = counts.find(value);
        out += std::string(name) + "{" + label + "=\"" + value + "\"} " +
               std::to_string(it == counts.end() ? 0 : it->second) + "\n";
      }
    };
    std::vector<std::string> kinds;
    for (auto kind : cluster::kRefusalKinds) {
      if (kind != cluster::RefusalKind::admission) kinds.emplace_back(cluster::nameOf(kind));
    }
    labelled("zetian_cluster_links_refused_total",
             "Connections refused at the handshake, by kind (bad_mac: wrong secret or other cluster; tls; garbage; "
             "handshake_timeout; gave_up; duplicate_id).",
             "kind", kinds, c.links_refused_by_kind);
    labelled("zetian_cluster_links_rejected_total",
             "Connections closed without a handshake slot (per_source_limit, table_full, evicted: the oldest "
             "pending stranger made room), refused as a duplicate node id, or arriving while leaving.",
             "reason", {"per_source_limit", "table_full", "evicted", "duplicate_node_id", "leaving"},
             c.links_rejected_by_reason);
    m("zetian_cluster_links_closed_total", "counter", "Established node links that closed.", double(c.links_closed));
    m("zetian_cluster_accept_errors_total", "counter", "Failed accept() calls on the cluster listener (EMFILE, ...).",
      double(c.accept_errors));
    m("zetian_cluster_connections_shed_total", "counter",
      "Pending cluster connections closed unheard while accept() was failing, to keep the backlog moving.",
      double(c.connections_shed));
    m("zetian_cluster_sent_bytes_total", "counter", "Bytes written to node links.", double(c.bytes_sent));
    m("zetian_cluster_received_bytes_total", "counter", "Bytes read from node links.", double(c.bytes_received));
    if (const auto* limits = node_->limits()) {
      const auto l = limits->counters();
      m("zetian_limit_calls_sent_total", "counter", "Cluster-scope checks this node asked of key owners.",
        double(l.calls_sent));
      m("zetian_limit_frames_sent_total", "counter", "Frames carrying those checks (batched per owner per loop turn).",
        double(l.frames_sent));
      m("zetian_limit_calls_served_total", "counter", "Checks this node answered as key owner.",
        double(l.calls_served));
      m("zetian_limit_calls_held_total", "counter",
        "Checks for a key this node had just come to own, held until its previous owner's hand-off ended.",
        double(l.calls_held));
      m("zetian_limit_calls_forwarded_total", "counter",
        "Checks for keys this node no longer owns, passed on to their owner (the asker's view was behind).",
        double(l.calls_forwarded));
      m("zetian_limit_late_replies_total", "counter",
        "Owner answers that came after check_timeout (their charges were refunded).", double(l.late_replies));
      m("zetian_limit_refunds_sent_total", "counter", "Charges given back to owners (a later rule denied).",
        double(l.refunds_sent));
      m("zetian_limit_buckets_replicated_total", "counter", "Bucket states sent to replicas.",
        double(l.buckets_replicated));
      m("zetian_limit_buckets_handed_off_total", "counter", "Bucket states sent to a key's new owner.",
        double(l.buckets_handed_off));
      m("zetian_limit_buckets_received_total", "counter", "Bucket states merged from other nodes.",
        double(l.buckets_received));
      m("zetian_limit_keys_known", "gauge", "Cluster-scope keys this node holds state for (owned or replicated).",
        double(l.keys_known));
      m("zetian_limit_calls_pending", "gauge", "Checks waiting for an owner's answer.", double(limits->pending()));
      const auto leases = leases_.stats();
      m("zetian_leases", "gauge", "Fast-mode leases this node holds (keys owned elsewhere).", double(leases.leases));
      m("zetian_lease_tokens_held", "gauge", "Unused tokens in those leases.", double(leases.tokens_held));
      m("zetian_lease_tokens_consumed_total", "counter", "Checks decided here from a lease (no round trip).",
        double(leases.consumed));
      m("zetian_lease_tokens_granted_total", "counter", "Tokens owners granted to this node's leases.",
        double(leases.granted));
      m("zetian_lease_tokens_returned_total", "counter", "Unused lease tokens given back to their owners.",
        double(leases.returned));
      m("zetian_lease_tokens_dropped_total", "counter",
        "Lease tokens dropped with an owner that left the view (charged there, never used).", double(leases.dropped));
    }
  }
  if (redis_) {
    const auto r = redis_->status();
    const auto c = redis_->counters();
    m("zetian_redis_up", "gauge", "1 while the Redis connection is ready; 0 while store = \"redis\" rules follow fail_mode.",
      r.state == cluster::redis::LinkState::Ready ? 1 : 0);
    m("zetian_redis_calls_total", "counter", "SMTP stages whose store = \"redis\" rules went to Redis.", double(c.calls));
    m("zetian_redis_scripts_total", "counter", "Script runs sent to Redis (one per rule of a stage, refunds included).",
      double(c.items));
    m("zetian_redis_late_answers_total", "counter", "Redis answers after redis.timeout (their charges were given back).",
      double(c.late_answers));
    m("zetian_redis_connects_total", "counter", "Connections to Redis that became ready.", double(c.connects));
    m("zetian_redis_script_loads_total", "counter", "SCRIPT LOAD runs (each connection, and after NOSCRIPT).",
      double(c.script_loads));
    out += "# HELP zetian_redis_errors_total Redis errors by kind.\n# TYPE zetian_redis_errors_total counter\n";
    for (std::size_t k = 0; k < cluster::redis::kErrorKinds; ++k) {
      out += "zetian_redis_errors_total{kind=\"" + std::string(cluster::redis::nameOf(cluster::redis::ErrorKind(k))) +
             "\"} " + std::to_string(c.errors[k]) + "\n";
    }
    if (r.role == "cluster") {
      out += "# HELP zetian_redis_cluster_redirects_total Redis Cluster redirections followed, by kind.\n"
             "# TYPE zetian_redis_cluster_redirects_total counter\n"
             "zetian_redis_cluster_redirects_total{kind=\"moved\"} " + std::to_string(c.moved) + "\n"
             "zetian_redis_cluster_redirects_total{kind=\"ask\"} " + std::to_string(c.asked) + "\n";
      m("zetian_redis_cluster_slot_map_loads_total", "counter", "Redis Cluster slot maps loaded (CLUSTER SLOTS).",
        double(c.slot_map_loads));
    }
    metrics_.redis_latency.render(out, "zetian_redis_duration_seconds", "Round trip of one Redis script run.");
  }
  if (statsd_) {
    const auto& st = statsd_->stats();
    m("zetian_statsd_pushes_total", "counter", "Pushes to the StatsD agent ([metrics.statsd]).", double(st.pushes));
    m("zetian_statsd_datagrams_sent_total", "counter", "UDP datagrams sent to the StatsD agent.",
      double(st.datagrams_sent));
    m("zetian_statsd_send_errors_total", "counter",
      "StatsD datagrams lost because the send failed (agent down, buffer full).", double(st.send_errors));
    m("zetian_statsd_lines_dropped_total", "counter", "StatsD lines too long for one datagram, never sent.",
      double(st.lines_dropped));
  }
  metrics_.renderRules(out);
  metrics_.decision_latency.render(out, "zetian_decision_duration_seconds",
                                   "Time to evaluate one SMTP stage against the policy.");
  // The host's own metrics last (the policy host's zetian_policy_*), as it wrote them.
  out += hostReport(ZETIAN_REPORT_METRICS);
  return {200, "text/plain; version=0.0.4; charset=utf-8", std::move(out)};
}

cluster::AdminReply Engine::reload() {
  Errors errors;
  if (!reload(&errors)) return json(422, errorsDocument(errors));
  bool replicated = false;
  std::string note;
  {
    std::lock_guard lock(reload_mutex_);
    replicated = replicated_version_ != 0;
    note = reload_note_;
  }
  cluster::JsonWriter w;
  w.beginObject().field("ok", true).field("policy_version", policy()->version).field("rules", policy()->rules.size());
  // On a replicated node the file's policy tables were not applied: say so, and why
  // when they differ from the policy in force.
  if (replicated) {
    w.field("policy", "replicated");
    if (!note.empty()) w.field("message", note);
  }
  w.endObject();
  return json(200, w.take());
}

// POST /reload: reading and compiling a large file takes long (seconds for a very
// large one), and the loop thread must keep answering heartbeats and /live meanwhile.
// The reload runs on the reload worker; its answer comes back through the loop.
// Requests that arrive while one reload runs share the next one: each is answered by a
// reload that read the file after the request came, and a burst of requests costs two
// reloads, not one each.
void Engine::reloadAsync(std::function<void(cluster::AdminReply)> respond) {
  {
    std::lock_guard lock(reload_jobs_mutex_);
    if (!reload_worker_stopping_) {
      reload_waiters_.push_back(std::move(respond));
      startWorkerLocked();
      reload_jobs_cv_.notify_one();
      return;
    }
  }
  respond(json(503, cluster::jsonError("the engine is stopping")));
}

void Engine::startWorkerLocked() {
  if (!reload_worker_.joinable()) reload_worker_ = std::thread([this] { reloadWorker(); });
}

// Also the replicated policy's worker (replicated.cpp): its versions go first, so a
// reload that follows them compares the file with the policy then in force.
void Engine::reloadWorker() {
  std::unique_lock lock(reload_jobs_mutex_);
  for (;;) {
    reload_jobs_cv_.wait(lock, [this] {
      return reload_worker_stopping_ || !reload_waiters_.empty() || !replicated_pending_.empty() ||
             !worker_jobs_.empty();
    });
    // Stopping: versions not yet applied come again from state_dir at the next start.
    if (reload_worker_stopping_) replicated_pending_.clear();
    // Stopping, and every waiting request answered.
    if (reload_waiters_.empty() && worker_jobs_.empty() && replicated_pending_.empty()) return;
    std::vector<conf::PolicyDocument> documents = std::exchange(replicated_pending_, {});
    std::vector<std::function<void()>> jobs = std::exchange(worker_jobs_, {});
    std::vector<std::function<void(cluster::AdminReply)>> waiters = std::exchange(reload_waiters_, {});
    replicated_busy_ = !documents.empty();
    lock.unlock();
    if (!documents.empty()) {
      try {
        applyReplicated(std::move(documents));
      } catch (const std::exception& e) {
        metrics_.internal_errors_total.fetch_add(1, std::memory_order_relaxed);
        logger_->log(conf::LogLevel::Error, "internal_error where=policy_apply error=" + logValue(e.what()));
      }
      {
        std::lock_guard idle(reload_jobs_mutex_);
        replicated_busy_ = false;
      }
      replicated_idle_.notify_all();
    }
    for (auto& job : jobs) {
      try {
        job();
      } catch (const std::exception& e) {
        metrics_.internal_errors_total.fetch_add(1, std::memory_order_relaxed);
        logger_->log(conf::LogLevel::Error, "internal_error where=admin_job error=" + logValue(e.what()));
      }
    }
    if (waiters.empty()) {
      lock.lock();
      continue;
    }
    if (reload_gate_for_test_) reload_gate_for_test_();
    cluster::AdminReply reply;
    try {
      reply = reload();
    } catch (const std::exception& e) {
      reply = json(500, cluster::jsonError(std::string("internal error: ") + e.what()));
    }
    // Refused only when the loop is stopping: the health server, and the requests with
    // it, are then being torn down and nobody waits for the answers.
    for (auto& respond : waiters) {
      loop_.post([respond = std::move(respond), reply]() mutable { respond(std::move(reply)); });
    }
    lock.lock();
  }
}

namespace {

// One row of /limits: what a charge of 1 would leave, as the rule's bucket stands.
void writeLimitRow(cluster::JsonWriter& w, const CompiledRule& c, std::string_view value, const state::Outcome& o) {
  const double remaining = o.allowed ? o.remaining + 1 : o.remaining;
  w.beginObject()
      .field("rule", c.rule.name)
      .field("key", value)
      .field("remaining", static_cast<std::int64_t>(remaining))
      .field("retry_after_s", o.allowed ? 0.0 : double(o.retry_after_ns) / 1e9)
      .field("limit", c.rule.limit)
      .field("burst", c.rule.burst)
      .field("period", conf::formatDuration(c.rule.period))
      .field("algorithm", state::algorithmName(c.rule.algorithm))
      .field("store", conf::storeName(c.rule.store))
      .endObject();
}

}  // namespace

cluster::AdminReply Engine::limitsShow(const cluster::LimitsQuery& q) {
  const auto snap = policy();
  const CompiledRule* only = nullptr;
  if (!q.rule.empty()) {
    only = snap->find(q.rule);
    if (!only) return json(404, cluster::jsonError("no rule named '" + q.rule + "' in the running policy"));
  }
  const state::Nanos t = now();
  cluster::JsonWriter w;
  w.beginObject().key("limits").beginArray();
  const auto entry = [&](const CompiledRule& c, std::string_view value, const state::HeldBucket& held) {
    // A bucket another algorithm wrote means nothing to this rule (a policy change):
    // the rule would start it fresh, so it is not shown.
    if (held.algorithm != c.rule.algorithm) return false;
    writeLimitRow(w, c, value, state::peek(c.rule.algorithm, c.limit, held.state, t, 1));
    return true;
  };

  if (!q.key.empty()) {
    // One key: a direct lookup per rule, never a scan (Redis rules: limitsShowAsync).
    for (const auto& c : snap->rules) {
      if ((only && &c != only) || c.rule.store == conf::Store::Redis) continue;
      if (const auto held = store_->find(c.key_prefix + q.key)) entry(c, q.key, *held);
    }
    w.endArray().field("truncated", false).field("more", false).key("next").null().endObject();
    return json(200, w.take());
  }

  // A listing: one bounded page (the store caps the slots and keys it looks at), from
  // the cursor of the previous page.
  state::ListCursor from;
  if (!q.after.empty()) {
    const auto parsed = state::ListCursor::parse(q.after);
    if (!parsed) {
      return json(400, cluster::jsonError("after must be the `next` of a previous /limits page"));
    }
    from = *parsed;
  }
  const std::size_t limit = std::clamp<std::size_t>(q.limit, 1, cluster::LimitsQuery::kMaxLimit);
  const state::ListPage page = store_->list(only ? std::string_view(only->key_prefix) : std::string_view{}, from,
                                            state::ListLimits{limit});
  for (const auto& [store_key, held] : page.entries) {
    // The store key is the rule name, '\0', the key value (policy.h).
    const std::size_t nul = store_key.find('\0');
    if (nul == std::string::npos) continue;
    const CompiledRule* c = only ? only : snap->find(store_key.substr(0, nul));
    if (!c) continue;  // a rule removed by a reload; its buckets go at the next expiry
    entry(*c, std::string_view(store_key).substr(nul + 1), held);
  }
  w.endArray().field("truncated", page.next.has_value()).field("more", page.next.has_value()).key("next");
  if (page.next) {
    w.value(page.next->token());
  } else {
    w.null();
  }
  // The rules whose counts are in Redis are not in a listing (ask for one key).
  w.key("not_listed").beginArray();
  for (const auto& c : snap->rules) {
    if (c.rule.store == conf::Store::Redis && (!only || &c == only)) w.value(c.rule.name);
  }
  w.endArray();
  w.endObject();
  return json(200, w.take());
}

cluster::AdminReply Engine::limitsReset(const std::string& rule, const std::string& key) {
  const auto snap = policy();
  const CompiledRule* c = snap->find(rule);
  if (!c) return json(404, cluster::jsonError("no rule named '" + rule + "' in the running policy"));
  std::size_t erased = 0;
  if (key.empty() || key == "*") {
    erased = store_->erasePrefix(c->key_prefix);
  } else {
    erased = store_->erase(c->key_prefix + key) ? 1 : 0;
  }
  logger_->log(conf::LogLevel::Info, "limits_reset rule=" + logValue(rule) + " key=" + logValue(key.empty() ? "*" : key) +
                                         " erased=" + std::to_string(erased));
  cluster::JsonWriter w;
  w.beginObject().field("ok", true).field("reset", erased).endObject();
  return json(200, w.take());
}

void Engine::limitsShowAsync(const cluster::LimitsQuery& q, std::function<void(cluster::AdminReply)> respond) {
  const auto snap = policy();
  const CompiledRule* only = q.rule.empty() ? nullptr : snap->find(q.rule);
  std::vector<const CompiledRule*> in_redis;
  for (const auto& c : snap->rules) {
    if (c.rule.store == conf::Store::Redis && (!only || &c == only)) in_redis.push_back(&c);
  }
  if (in_redis.empty() || (!q.rule.empty() && !only) || q.key.empty()) {
    respond(limitsShow(q));
    return;
  }
  if (!redis_) {
    respond(json(503, cluster::jsonError("no Redis connection in this process")));
    return;
  }
  // The local rules now; the Redis ones as Redis answers (pipelined, in rule order).
  struct Gather {
    std::shared_ptr<const PolicySnapshot> snap;
    std::vector<const CompiledRule*> rules;
    std::vector<std::optional<state::Outcome>> outcomes;
    std::size_t left = 0;
    std::string error;
    std::vector<std::pair<const CompiledRule*, state::Outcome>> local;  // the local rules' rows
  };
  auto g = std::make_shared<Gather>();
  g->snap = snap;
  g->rules = in_redis;
  g->outcomes.resize(in_redis.size());
  g->left = in_redis.size();
  const state::Nanos t = now();
  for (const auto& c : snap->rules) {
    if ((only && &c != only) || c.rule.store == conf::Store::Redis) continue;
    const auto held = store_->find(c.key_prefix + q.key);
    if (held && held->algorithm == c.rule.algorithm) {
      g->local.emplace_back(&c, state::peek(c.rule.algorithm, c.limit, held->state, t, 1));
    }
  }
  const std::string key = q.key;
  for (std::size_t i = 0; i < in_redis.size(); ++i) {
    const CompiledRule& c = *in_redis[i];
    const std::string store_key = c.key_prefix + key;
    wire::LimitItem item;
    item.key = store_key;
    item.algorithm = static_cast<std::uint8_t>(c.rule.algorithm);
    item.limit = c.limit.limit;
    item.period_ns = c.limit.period_ns;
    item.burst = c.limit.burst;
    item.cost = 1;
    redis_->peek(item, [g, i, key, respond](std::optional<state::Outcome> outcome, std::string error) {
      if (!error.empty() && g->error.empty()) g->error = error;
      g->outcomes[i] = outcome;
      if (--g->left > 0) return;
      if (!g->error.empty()) {
        respond(json(503, cluster::jsonError("Redis did not answer for the rules with store = \"redis\": " + g->error)));
        return;
      }
      cluster::JsonWriter w;
      w.beginObject().key("limits").beginArray();
      for (const auto& [rule, outcome] : g->local) writeLimitRow(w, *rule, key, outcome);
      for (std::size_t k = 0; k < g->rules.size(); ++k) {
        if (g->outcomes[k]) writeLimitRow(w, *g->rules[k], key, *g->outcomes[k]);
      }
      w.endArray().field("truncated", false).field("more", false).key("next").null().endObject();
      respond(json(200, w.take()));
    });
  }
}

void Engine::limitsResetAsync(const std::string& rule, const std::string& key,
                              std::function<void(cluster::AdminReply)> respond) {
  const auto snap = policy();
  const CompiledRule* c = snap->find(rule);
  if (!c || c->rule.store != conf::Store::Redis) {
    respond(limitsReset(rule, key));
    return;
  }
  if (!redis_) {
    respond(json(503, cluster::jsonError("no Redis connection in this process")));
    return;
  }
  if (key.empty() || key == "*") {
    // Every key of the rule: a SCAN of Redis, on the cluster thread, answered once done.
    redis_->eraseAll(c->key_prefix, [this, rule, respond](long long erased, std::string error) {
      if (!error.empty()) {
        respond(json(503, cluster::jsonError("Redis did not reset every key of rule '" + rule + "' (" +
                                             std::to_string(erased) + " deleted before): " + error +
                                             "; try again once Redis answers")));
        return;
      }
      logger_->log(conf::LogLevel::Info, "limits_reset rule=" + logValue(rule) + " key=* erased=" +
                                             std::to_string(erased) + " store=redis");
      cluster::JsonWriter w;
      w.beginObject().field("ok", true).field("reset", static_cast<std::int64_t>(erased)).endObject();
      respond(json(200, w.take()));
    });
    return;
  }
  redis_->erase(c->key_prefix + key, [this, rule, key, respond](long long erased, std::string error) {
    if (!error.empty()) {
      respond(json(503, cluster::jsonError("Redis did not reset the key: " + error)));
      return;
    }
    logger_->log(conf::LogLevel::Info, "limits_reset rule=" + logValue(rule) + " key=" + logValue(key) +
                                           " erased=" + std::to_string(erased) + " store=redis");
    cluster::JsonWriter w;
    w.beginObject().field("ok", true).field("reset", static_cast<std::int64_t>(erased)).endObject();
    respond(json(200, w.take()));
  });
}

}  // namespace zetian::plugin
