// What the Redis client needs from the rest of the limiter: the scripts of
// state/redis_scripts.h as a Scripts table, and the connection options from [redis].
#pragma once

#include <optional>
#include <string>

#include "cluster/redis/client.h"
#include "conf/config.h"

namespace zetian::cluster::redis {

// One script per algorithm (state::redisScript), in state::Algorithm order; an item's
// op picks charge or refund inside it.
Scripts limiterScripts();

// The client options for `section`; nullopt with *error set when the section asks for
// something this build cannot do yet.
std::optional<ClientOptions> clientOptionsFrom(const conf::RedisSection& section, std::string* error);

}  // namespace zetian::cluster::redis
