// The engine's side of the health/admin HTTP server (cluster::AdminApi). Runs on
// the cluster thread; everything it reads is atomic or taken under the store's
// shard locks, one shard at a time.

#include "cluster/json.h"
#include "plugin/engine.h"

namespace zetian::plugin {

namespace {

constexpr std::size_t kMaxLimitsListed = 1000;

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

cluster::AdminReply Engine::health() {
  const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_at_);
  const auto snap = policy();
  const auto stats = store_->stats();
  const char* status = ready_.load() ? "active" : "joining";
  cluster::JsonWriter w;
  w.beginObject()
      .field("node_id", config_.node.id)
      .field("status", status)
      .field("version", zetian_version())
      .field("uptime_s", uptime.count())
      .field("maintenance", false)
      .field("leader", config_.node.id)
      .field("term", 0)
      .key("cluster")
      .beginObject()
      .field("enabled", config_.cluster.enabled)
      .field("state", "healthy")
      .field("size", 1)
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
      .key("members")
      .beginArray()
      .beginObject()
      .field("id", config_.node.id)
      .field("address", config_.milter.socket)
      .field("region", config_.cluster.region)
      .field("status", status)
      .field("last_seen", 0)
      .key("load")
      .beginObject()
      .field("sessions", metrics_.sessions_active.load(std::memory_order_relaxed))
      .field("messages_per_s", messages_per_s_.load(std::memory_order_relaxed))
      .endObject()
      .endObject()
      .endArray()
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
  m("zetian_policy_version", "gauge", "Version of the running policy (bumped by every reload).",
    double(policy()->version));
  m("zetian_limiter_keys", "gauge", "Rate-limit keys held in memory.", double(stats.keys));
  m("zetian_limiter_max_keys", "gauge", "The configured bound on keys (ratelimit.max_keys).", double(store_->maxKeys()));
  m("zetian_limiter_evictions_total", "counter", "Keys dropped to stay within ratelimit.max_keys.",
    double(stats.evictions));
  m("zetian_limiter_expirations_total", "counter", "Idle keys dropped because their bucket was full again.",
    double(stats.expirations));
  metrics_.renderRules(out);
  metrics_.decision_latency.render(out, "zetian_decision_duration_seconds",
                                   "Time to evaluate one SMTP stage against the policy.");
  return {200, "text/plain; version=0.0.4; charset=utf-8", std::move(out)};
}

cluster::AdminReply Engine::reload() {
  Errors errors;
  if (!reload(&errors)) return json(422, errorsDocument(errors));
  cluster::JsonWriter w;
  w.beginObject().field("ok", true).field("policy_version", policy()->version).field("rules", policy()->rules.size());
  w.endObject();
  return json(200, w.take());
}

cluster::AdminReply Engine::limitsShow(const std::string& rule, const std::string& key) {
  const auto snap = policy();
  if (!rule.empty() && !snap->find(rule))
    return json(404, cluster::jsonError("no rule named '" + rule + "' in the running policy"));
  const state::Nanos t = now();
  cluster::JsonWriter w;
  w.beginObject().key("limits").beginArray();
  std::size_t listed = 0;
  bool truncated = false;
  for (const auto& c : snap->rules) {
    if (!rule.empty() && c.rule.name != rule) continue;
    const std::string prefix = key.empty() ? c.key_prefix : c.key_prefix + key;
    store_->forEach(prefix, [&](std::string_view store_key, const state::BucketState& st) {
      std::string_view value = store_key.substr(c.key_prefix.size());
      if (!key.empty() && value != key) return;
      if (listed >= kMaxLimitsListed) {
        truncated = true;
        return;
      }
      ++listed;
      state::Outcome o = state::peek(c.rule.algorithm, c.limit, st, t, 1);
      double remaining = o.allowed ? o.remaining + 1 : o.remaining;
      w.beginObject()
          .field("rule", c.rule.name)
          .field("key", value)
          .field("remaining", static_cast<std::int64_t>(remaining))
          .field("retry_after_s", o.allowed ? 0.0 : double(o.retry_after_ns) / 1e9)
          .field("limit", c.rule.limit)
          .field("burst", c.rule.burst)
          .field("period", conf::formatDuration(c.rule.period))
          .field("algorithm", state::algorithmName(c.rule.algorithm))
          .endObject();
    });
  }
  w.endArray().field("truncated", truncated).endObject();
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

}  // namespace zetian::plugin
