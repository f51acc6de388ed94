#include "conf/schema.h"

#include <array>

namespace zetian::conf {
namespace {

using enum ValueType;

constexpr std::array kKeys = std::to_array<KeySchema>({
    {"node", Table},
    {"node.id", String},
    {"node.state_dir", String},

    {"milter", Table},
    {"milter.socket", String},
    {"milter.timeout", Duration},
    {"milter.default_action", String},
    {"milter.user", String},
    {"milter.group", String},
    {"milter.umask", String},
    {"milter.pid_file", String},

    {"policy", Table},
    {"policy.socket", String},
    {"policy.max_connections", Integer},
    {"policy.idle_timeout", Duration},
    {"policy.request_timeout", Duration},
    {"policy.session_timeout", Duration},
    {"policy.max_sessions", Integer},
    {"policy.tempfail_action", String},

    {"health", Table},
    {"health.socket", String},
    {"health.socket_mode", String},
    {"health.listen", String},
    {"health.admin_token", String},
    {"health.admin_token_file", String},

    {"log", Table},
    {"log.level", String},
    {"log.target", String},
    {"log.file", String},
    {"log.heartbeats", Boolean},
    {"log.sync", Boolean},

    {"ratelimit", Table},
    {"ratelimit.exempt", StringArray},
    {"ratelimit.exempt_authenticated", Boolean},
    {"ratelimit.max_keys", Integer},
    {"ratelimit.fail_mode", String},
    {"ratelimit.store", String},
    {"ratelimit.rule", TableArray},
    {"ratelimit.rule.name", String},
    {"ratelimit.rule.key", String},
    {"ratelimit.rule.prefix_v4", Integer},
    {"ratelimit.rule.prefix_v6", Integer},
    {"ratelimit.rule.stage", String},
    {"ratelimit.rule.limit", Integer},
    {"ratelimit.rule.period", Duration},
    {"ratelimit.rule.burst", Integer},
    {"ratelimit.rule.algorithm", String},
    {"ratelimit.rule.scope", String},
    {"ratelimit.rule.action", String},
    {"ratelimit.rule.reply", String},
    {"ratelimit.rule.senders", String},
    {"ratelimit.rule.consistency", String},
    {"ratelimit.rule.store", String},

    {"cluster", Table},
    {"cluster.enabled", Boolean},
    {"cluster.bind", String},
    {"cluster.advertise", String},
    {"cluster.discovery", String},
    {"cluster.seeds", StringArray},
    {"cluster.dns_name", String},
    {"cluster.multicast_group", String},
    {"cluster.shared_secret", String},
    {"cluster.shared_secret_file", String},
    {"cluster.heartbeat_interval", Duration},
    {"cluster.failure_threshold", Integer},
    {"cluster.success_threshold", Integer},
    {"cluster.failure_detection_timeout", Duration},
    {"cluster.join_timeout", Duration},
    {"cluster.region", String},
    {"cluster.replication_factor", Integer},
    {"cluster.replication_interval", Duration},
    {"cluster.sync_interval", Duration},
    {"cluster.check_timeout", Duration},
    {"cluster.bootstrap_expect", Integer},
    {"cluster.election_timeout", Duration},
    {"cluster.snapshot_every", Integer},
    {"cluster.max_voters", Integer},
    {"cluster.tls", Table},
    {"cluster.tls.cert", String},
    {"cluster.tls.key", String},
    {"cluster.tls.ca", String},

    {"affinity", Table},
    {"affinity.method", String},

    {"redis", Table},
    {"redis.url", String},
    {"redis.sentinels", StringArray},
    {"redis.master_name", String},
    {"redis.cluster", StringArray},
    {"redis.username", String},
    {"redis.password", String},
    {"redis.password_file", String},
    {"redis.key_prefix", String},
    {"redis.timeout", Duration},

    {"events", Table},
    {"events.exec", String},

    {"metrics", Table},
    {"metrics.statsd", Table},
    {"metrics.statsd.address", String},
    {"metrics.statsd.prefix", String},
    {"metrics.statsd.interval", Duration},
    {"metrics.statsd.tags", String},
});

}  // namespace

std::span<const KeySchema> schemaKeys() { return kKeys; }

const KeySchema* findSchemaKey(std::string_view path) {
  for (const auto& key : kKeys) {
    if (key.path == path) return &key;
  }
  return nullptr;
}

std::string_view valueTypeName(ValueType t) {
  switch (t) {
    case String: return "string";
    case Integer: return "integer";
    case Boolean: return "boolean";
    case Duration: return "duration";
    case StringArray: return "array of strings";
    case Table: return "table";
    case TableArray: return "array of tables";
  }
  return "?";
}

}  // namespace zetian::conf
