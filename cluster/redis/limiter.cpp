#include "cluster/redis/limiter.h"

#include <chrono>
#include <variant>

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
    *error = "redis.cluster: Redis Cluster is not built yet in this version; use one Redis (redis.url) for now";
    return std::nullopt;
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

}  // namespace zetian::cluster::redis
