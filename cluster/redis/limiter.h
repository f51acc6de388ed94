// What the Redis client needs from the rest of the limiter: the scripts of
// state/redis_scripts.h as a Scripts table, the connection options from [redis], and
// the Backend that [redis] asks for (one server, or a Redis Cluster).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "cluster/log_sink.h"
#include "cluster/loop.h"
#include "cluster/redis/backend.h"
#include "cluster/redis/client.h"
#include "conf/config.h"

namespace zetian::cluster::redis {

// One script per algorithm (state::redisScript), in state::Algorithm order; an item's
// op picks charge or refund inside it.
Scripts limiterScripts();

// The client options for `section`; nullopt with *error set when the section asks for
// something this build cannot do yet.
// With `cluster`: the options every node's connection shares (no target: each node's
// is its own).
std::optional<ClientOptions> clientOptionsFrom(const conf::RedisSection& section, std::string* error);

// The Backend for `section` (not started): a ClusterClient with `cluster`, else a
// Client; null with *error set as clientOptionsFrom() says.
std::unique_ptr<Backend> backendFrom(Loop& loop, const conf::RedisSection& section, LogSink log,
                                     std::function<void(std::int64_t nanos)> on_latency, std::string* error);

}  // namespace zetian::cluster::redis
