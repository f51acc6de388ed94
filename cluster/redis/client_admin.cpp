// The Redis client's admin side (client.h): what the health socket's /limits and
// /limits/reset ask of Redis, and ClusterClient's own commands. Each runs on the ready
// connection beside the stages' scripts, and answers exactly once.
#include <hiredis/hiredis.h>

#include <memory>
#include <string>
#include <vector>

#include "cluster/redis/client.h"
#include "cluster/redis/client_parts.h"

namespace zetian::cluster::redis {

void Client::peek(const wire::LimitItem& item, PeekDone done) {
  loop_.checkThisThread();
  if (status().state != LinkState::Ready || !ctx_) {
    done(std::nullopt, "Redis is not connected: " + status().last_error);
    return;
  }
  std::string error;
  auto args = scripts_.peek_args(item, &error);
  if (!args) {
    done(std::nullopt, error);
    return;
  }
  // EXISTS first (same connection, answered in order): a key Redis does not hold is
  // reported as such, not as the fresh bucket a peek would describe.
  const std::string key = options_.key_prefix + item.key;
  auto exists = std::make_shared<std::optional<bool>>();
  command(new Inflight{this, generation_, Step::Admin, nullptr, 0, [exists](redisReply* r) {
                         if (r && r->type == REDIS_REPLY_INTEGER) *exists = r->integer > 0;
                       }},
          {"EXISTS", key});
  std::vector<std::string> argv{"EVALSHA", shas_.at(scripts_.which(item)), "1", key};
  for (auto& a : *args) argv.push_back(std::move(a));
  const bool queued = command(new Inflight{this, generation_, Step::Admin, nullptr, 0,
                                           [this, exists, done](redisReply* r) {
                                             if (!r) return done(std::nullopt, "the Redis connection closed");
                                             if (r->type == REDIS_REPLY_ERROR) return done(std::nullopt, replyText(r));
                                             if (!exists->value_or(false)) return done(std::nullopt, "");
                                             std::vector<long long> values;
                                             for (std::size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; ++i) {
                                               if (r->element[i]->type == REDIS_REPLY_INTEGER) {
                                                 values.push_back(r->element[i]->integer);
                                               }
                                             }
                                             auto outcome = scripts_.outcome(values);
                                             if (!outcome) return done(std::nullopt, "an unexpected reply from Redis");
                                             done(outcome, "");
                                           }},
                              argv);
  if (!queued) done(std::nullopt, "the Redis connection is closing");
}

void Client::erase(const std::string& store_key, EraseDone done) {
  loop_.checkThisThread();
  if (status().state != LinkState::Ready || !ctx_) {
    done(0, "Redis is not connected: " + status().last_error);
    return;
  }
  const bool queued = command(new Inflight{this, generation_, Step::Admin, nullptr, 0,
                                           [done](redisReply* r) {
                                             if (!r) return done(0, "the Redis connection closed");
                                             if (r->type != REDIS_REPLY_INTEGER) return done(0, replyText(r));
                                             done(r->integer, "");
                                           }},
                              {"DEL", options_.key_prefix + store_key});
  if (!queued) done(0, "the Redis connection is closing");
}

// One eraseAll(): SCAN from `cursor` until it comes back to 0.
struct Client::Sweep {
  std::string pattern;
  std::string cursor = "0";
  long long erased = 0;
  EraseDone done;
};

namespace {
// A SCAN MATCH pattern for the keys that start with `prefix` (glob characters escaped).
std::string globPrefix(const std::string& prefix) {
  std::string out;
  for (const char c : prefix) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out + "*";
}
}  // namespace

void Client::eraseAll(const std::string& store_key_prefix, EraseDone done) {
  loop_.checkThisThread();
  if (status().state != LinkState::Ready || !ctx_) {
    done(0, "Redis is not connected: " + status().last_error);
    return;
  }
  auto s = std::make_shared<Sweep>();
  s->pattern = globPrefix(options_.key_prefix + store_key_prefix);
  s->done = std::move(done);
  sweep(s);
}

void Client::sweep(const std::shared_ptr<Sweep>& s) {
  const bool queued = command(
      new Inflight{this, generation_, Step::Admin, nullptr, 0,
                   [this, s](redisReply* r) {
                     if (!r) return s->done(s->erased, "the Redis connection closed");
                     if (r->type == REDIS_REPLY_ERROR) return s->done(s->erased, replyText(r));
                     if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
                         r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
                       return s->done(s->erased, "an unexpected reply to SCAN");
                     }
                     s->cursor.assign(r->element[0]->str, r->element[0]->len);
                     const redisReply* keys = r->element[1];
                     auto next = [this, s] {
                       if (s->cursor == "0") return s->done(s->erased, "");
                       sweep(s);
                     };
                     if (keys->elements == 0) return next();
                     // One UNLINK per key, pipelined: a Redis Cluster refuses a
                     // multi-key UNLINK whose keys lie in different slots.
                     auto batch = std::make_shared<std::size_t>(keys->elements);
                     auto failed = std::make_shared<bool>(false);
                     for (std::size_t i = 0; i < keys->elements; ++i) {
                       const bool sent = command(
                           new Inflight{this, generation_, Step::Admin, nullptr, 0,
                                        [s, next, batch, failed](redisReply* u) {
                                          if (*failed) return;
                                          if (!u || u->type != REDIS_REPLY_INTEGER) {
                                            *failed = true;
                                            return s->done(s->erased, u ? replyText(u) : "the Redis connection closed");
                                          }
                                          s->erased += u->integer;
                                          if (--*batch == 0) next();
                                        }},
                           {"UNLINK", std::string(keys->element[i]->str, keys->element[i]->len)});
                       if (!sent) {
                         *failed = true;
                         return s->done(s->erased, "the Redis connection is closing");
                       }
                     }
                   }},
      {"SCAN", s->cursor, "MATCH", s->pattern, "COUNT", "1000"});
  if (!queued) s->done(s->erased, "the Redis connection is closing");
}

void Client::query(const std::vector<std::string>& argv, QueryDone done) {
  loop_.checkThisThread();
  if (status().state != LinkState::Ready || !ctx_) {
    done(nullptr, "not connected: " + status().last_error);
    return;
  }
  const bool queued = command(new Inflight{this, generation_, Step::Admin, nullptr, 0,
                                           [done](redisReply* r) {
                                             if (!r) return done(nullptr, "the Redis connection closed");
                                             done(r, "");
                                           }},
                              argv);
  if (!queued) done(nullptr, "the Redis connection is closing");
}

}  // namespace zetian::cluster::redis
