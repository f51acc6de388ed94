// What client.cpp and client_admin.cpp share, and the small helpers sentinel.cpp uses
// too: not part of the client's interface.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include "cluster/redis/client.h"

namespace zetian::cluster::redis {

// The text of an error or status reply; "" for none.
inline std::string replyText(const redisReply* reply) {
  return reply && reply->str ? std::string(reply->str, reply->len) : std::string();
}

// A backoff step drawn from [d/2, d], so that clients that failed together do not
// retry together.
inline std::chrono::milliseconds jittered(std::chrono::milliseconds d) {
  thread_local std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<std::int64_t> spread(d.count() / 2, d.count());
  return std::chrono::milliseconds(spread(rng));
}

// hiredis's privdata for one command: freed by the reply callback, which hiredis calls
// exactly once per command (with no reply when the connection goes away).
struct Client::Inflight {
  Client* client;
  std::uint64_t generation;
  Step step;
  std::shared_ptr<Call> call;  // Item, Refund
  std::size_t index = 0;       // the item; for Load, the script
  std::function<void(redisReply*)> admin;  // Admin: called with the reply, or null
};

}  // namespace zetian::cluster::redis
