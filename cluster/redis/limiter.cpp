#include "cluster/redis/limiter.h"

#include <chrono>
#include <variant>

#include "cluster/redis/cluster_client.h"
#include "state/redis_scripts.h"

namespace zetian::cluster::redis {

namespace {
constexpr state::Algorithm kAlgorithms[] = {state::Algorithm::TokenBucket, state::Algorithm::Gcra,
                                            state::Algorithm::SlidingWindow, state::Algorithm::FixedWindow};
}  // namespace

Scripts limiterScripts() {
  Scripts s;
  for (const state::Algorithm algo : kAlgorithms) {
    const state::RedisScript script = state::redisScript(algo);
    s.all.push_back(Script{std::string(script.name), std::string(script.source)});
  }
  s.which = [](const wire::LimitItem& item) -> std::size_t { return item.algorithm; };
  s.args = [](const wire::LimitItem& item, std::string* error) {
    const auto op = item.op == wire::LimitOp::Refund ? state::ScriptOp::Refund : state::ScriptOp::Charge;
    return state::redisScriptArgs(op, static_cast<state::Algorithm>(item.algorithm),
                                  state::Limit{item.limit, item.period_ns, item.burst}, item.cost, std::nullopt, error);
  };
  s.peek_args = [](const wire::LimitItem& item, std::string* error) {
    return state::redisScriptArgs(state::ScriptOp::Peek, static_cast<state::Algorithm>(item.algorithm),
                                  state::Limit{item.limit, item.period_ns, item.burst}, item.cost, std::nullopt, error);
  };
  s.outcome = [](const std::vector<long long>& reply) { return state::outcomeFromReply(reply); };
  return s;
}

std::optional<ClientOptions> clientOptionsFrom(const conf::RedisSection& section, std::string* error) {
  ClientOptions o;
  if (const auto* server = std::get_if<conf::RedisServer>(&section.endpoint)) {
    o.target.host = server->address.host;
    o.target.port = server->address.port;
  } else if (const auto* socket = std::get_if<conf::RedisUnixSocket>(&section.endpoint)) {
    o.target.unix_path = socket->path;
  } else if (const auto* sentinels = std::get_if<conf::RedisSentinels>(&section.endpoint)) {
    for (const auto& s : sentinels->sentinels) o.sentinels.push_back(SentinelAddress{s.host, s.port});
    o.master_name = sentinels->master_name;
  } else if (std::holds_alternative<conf::RedisCluster>(section.endpoint)) {
    // Each node's target comes from the slot map (ClusterClient).
  } else {
    *error = "no [redis] section: set redis.url";
    return std::nullopt;
  }
  o.target.db = section.database;
  o.username = section.username;
  o.password = section.password;
  o.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(section.timeout);
  o.key_prefix = section.key_prefix;
  return o;
}

std::unique_ptr<Backend> backendFrom(Loop& loop, const conf::RedisSection& section, LogSink log,
                                     std::function<void(std::int64_t nanos)> on_latency, std::string* error) {
  auto options = clientOptionsFrom(section, error);
  if (!options) return nullptr;
  if (const auto* cluster = std::get_if<conf::RedisCluster>(&section.endpoint)) {
    ClusterOptions c;
    for (const auto& node : cluster->nodes) c.seeds.push_back(ClusterOptions::Node{node.host, node.port});
    c.connection = std::move(*options);
    return std::make_unique<ClusterClient>(loop, std::move(c), limiterScripts(), std::move(log),
                                           std::move(on_latency));
  }
  return std::make_unique<Client>(loop, std::move(*options), limiterScripts(), std::move(log), std::move(on_latency));
}

}  // namespace zetian::cluster::redis
