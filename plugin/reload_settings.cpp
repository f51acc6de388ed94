#include "plugin/reload_settings.h"

#include <array>
#include <string>
#include <variant>

namespace zetian::plugin {
namespace {

using enum ReloadEffect;

#define ZETIAN_SAME(expr) [](const conf::Config& a, const conf::Config& b) { return a.expr == b.expr; }

std::string tlsField(const conf::Config& c, std::string conf::ClusterTls::*field) {
  return c.cluster.tls ? (*c.cluster.tls).*field : std::string();
}

// The part of the Redis endpoint one key gives; an empty value when the other mode is used.
template <class Endpoint>
Endpoint redisEndpoint(const conf::Config& c) {
  const auto* e = std::get_if<Endpoint>(&c.redis.endpoint);
  return e ? *e : Endpoint{};
}

bool sameRedisUrl(const conf::Config& a, const conf::Config& b) {
  return a.redis.database == b.redis.database &&
         redisEndpoint<conf::RedisServer>(a) == redisEndpoint<conf::RedisServer>(b) &&
         redisEndpoint<conf::RedisUnixSocket>(a) == redisEndpoint<conf::RedisUnixSocket>(b);
}

constexpr std::array kSettings = std::to_array<ReloadSetting>({
    {"node.id", "", Restart, ZETIAN_SAME(node.id)},
    {"node.state_dir", "", Restart, ZETIAN_SAME(node.state_dir)},

    {"milter.socket", "", Restart, ZETIAN_SAME(milter.socket)},
    {"milter.timeout", "", Restart, ZETIAN_SAME(milter.timeout)},
    {"milter.default_action", "", Live, ZETIAN_SAME(milter.default_action)},
    {"milter.user", "", Restart, ZETIAN_SAME(milter.user)},
    {"milter.group", "", Restart, ZETIAN_SAME(milter.group)},
    {"milter.umask", "", Restart, ZETIAN_SAME(milter.umask)},
    {"milter.pid_file", "", Restart, ZETIAN_SAME(milter.pid_file)},

    // The policy host reads its section once, at start.
    {"policy.socket", "", Restart, ZETIAN_SAME(policy_host.socket)},
    {"policy.max_connections", "", Restart, ZETIAN_SAME(policy_host.max_connections)},
    {"policy.idle_timeout", "", Restart, ZETIAN_SAME(policy_host.idle_timeout)},
    {"policy.request_timeout", "", Restart, ZETIAN_SAME(policy_host.request_timeout)},
    {"policy.session_timeout", "", Restart, ZETIAN_SAME(policy_host.session_timeout)},
    {"policy.max_sessions", "", Restart, ZETIAN_SAME(policy_host.max_sessions)},
    {"policy.tempfail_action", "", Restart, ZETIAN_SAME(policy_host.tempfail_action)},

    {"health.socket", "", Restart, ZETIAN_SAME(health.socket)},
    {"health.socket_mode", "", Restart, ZETIAN_SAME(health.socket_mode)},
    {"health.listen", "", Restart, ZETIAN_SAME(health.listen)},
    {"health.admin_token", "health.admin_token_file", Restart, ZETIAN_SAME(health.admin_token)},

    {"log.level", "", Live, ZETIAN_SAME(log.level)},
    {"log.target", "", Restart, ZETIAN_SAME(log.target)},
    {"log.file", "", Restart, ZETIAN_SAME(log.file)},
    {"log.heartbeats", "", Live, ZETIAN_SAME(log.heartbeats)},
    {"log.sync", "", Live, ZETIAN_SAME(log.sync)},

    {"ratelimit.exempt", "", Live, nullptr},
    {"ratelimit.exempt_authenticated", "", Live, nullptr},
    // The store is sized for it at start (its hash table and shards).
    {"ratelimit.max_keys", "", Restart, ZETIAN_SAME(policy.max_keys)},
    {"ratelimit.fail_mode", "", Live, nullptr},
    {"ratelimit.store", "", Live, nullptr},
    {"ratelimit.rule", "", Live, nullptr},

    {"cluster.enabled", "", Restart, ZETIAN_SAME(cluster.enabled)},
    {"cluster.bind", "", Restart, ZETIAN_SAME(cluster.bind)},
    {"cluster.advertise", "", Restart, ZETIAN_SAME(cluster.advertise)},
    {"cluster.discovery", "", Restart, ZETIAN_SAME(cluster.discovery)},
    {"cluster.seeds", "", Restart, ZETIAN_SAME(cluster.seeds)},
    {"cluster.dns_name", "", Restart, ZETIAN_SAME(cluster.dns_name)},
    {"cluster.multicast_group", "", Restart, ZETIAN_SAME(cluster.multicast_group)},
    {"cluster.shared_secret", "cluster.shared_secret_file", Restart, ZETIAN_SAME(cluster.shared_secret)},
    {"cluster.heartbeat_interval", "", Restart, ZETIAN_SAME(cluster.heartbeat_interval)},
    {"cluster.failure_threshold", "", Restart, ZETIAN_SAME(cluster.failure_threshold)},
    {"cluster.success_threshold", "", Restart, ZETIAN_SAME(cluster.success_threshold)},
    {"cluster.failure_detection_timeout", "", Restart, ZETIAN_SAME(cluster.failure_detection_timeout)},
    {"cluster.join_timeout", "", Restart, ZETIAN_SAME(cluster.join_timeout)},
    {"cluster.region", "", Restart, ZETIAN_SAME(cluster.region)},
    // The cluster thread reads these when it starts.
    {"cluster.replication_factor", "", Restart, ZETIAN_SAME(cluster.replication_factor)},
    {"cluster.replication_interval", "", Restart, ZETIAN_SAME(cluster.replication_interval)},
    {"cluster.sync_interval", "", Restart, ZETIAN_SAME(cluster.sync_interval)},
    {"cluster.check_timeout", "", Restart, ZETIAN_SAME(cluster.check_timeout)},
    {"cluster.bootstrap_expect", "", Restart, ZETIAN_SAME(cluster.bootstrap_expect)},
    {"cluster.election_timeout", "", Restart, ZETIAN_SAME(cluster.election_timeout)},
    {"cluster.snapshot_every", "", Restart, ZETIAN_SAME(cluster.snapshot_every)},
    {"cluster.max_voters", "", Restart, ZETIAN_SAME(cluster.max_voters)},
    {"cluster.tls.cert", "", Restart,
     [](const conf::Config& a, const conf::Config& b) {
       return tlsField(a, &conf::ClusterTls::cert) == tlsField(b, &conf::ClusterTls::cert) &&
              a.cluster.tls.has_value() == b.cluster.tls.has_value();
     }},
    {"cluster.tls.key", "", Restart,
     [](const conf::Config& a, const conf::Config& b) {
       return tlsField(a, &conf::ClusterTls::key) == tlsField(b, &conf::ClusterTls::key);
     }},
    {"cluster.tls.ca", "", Restart,
     [](const conf::Config& a, const conf::Config& b) {
       return tlsField(a, &conf::ClusterTls::ca) == tlsField(b, &conf::ClusterTls::ca);
     }},

    {"affinity.method", "", Live, nullptr},

    {"redis.url", "", Restart, sameRedisUrl},
    {"redis.sentinels", "", Restart,
     [](const conf::Config& a, const conf::Config& b) {
       return redisEndpoint<conf::RedisSentinels>(a).sentinels == redisEndpoint<conf::RedisSentinels>(b).sentinels;
     }},
    {"redis.master_name", "", Restart,
     [](const conf::Config& a, const conf::Config& b) {
       return redisEndpoint<conf::RedisSentinels>(a).master_name == redisEndpoint<conf::RedisSentinels>(b).master_name;
     }},
    {"redis.cluster", "", Restart,
     [](const conf::Config& a, const conf::Config& b) {
       return redisEndpoint<conf::RedisCluster>(a) == redisEndpoint<conf::RedisCluster>(b);
     }},
    {"redis.username", "", Restart, ZETIAN_SAME(redis.username)},
    {"redis.password", "redis.password_file", Restart, ZETIAN_SAME(redis.password)},
    {"redis.key_prefix", "", Restart, ZETIAN_SAME(redis.key_prefix)},
    {"redis.timeout", "", Restart, ZETIAN_SAME(redis.timeout)},

    {"events.exec", "", Restart, ZETIAN_SAME(events.exec)},

    // The cluster thread switches the exporter to the new settings (or starts or
    // stops it); counter changes are neither lost nor sent twice across the switch.
    {"metrics.statsd.address", "", Live, ZETIAN_SAME(metrics.statsd)},
    {"metrics.statsd.prefix", "", Live, ZETIAN_SAME(metrics.statsd)},
    {"metrics.statsd.interval", "", Live, ZETIAN_SAME(metrics.statsd)},
    {"metrics.statsd.tags", "", Live, ZETIAN_SAME(metrics.statsd)},
});

#undef ZETIAN_SAME

}  // namespace

std::span<const ReloadSetting> reloadSettings() { return kSettings; }

std::vector<std::string_view> settingsNeedingRestart(const conf::Config& running, const conf::Config& next) {
  std::vector<std::string_view> changed;
  for (const auto& s : kSettings) {
    if (s.effect == Restart && s.same != nullptr && !s.same(running, next)) changed.push_back(s.key);
  }
  return changed;
}

}  // namespace zetian::plugin
