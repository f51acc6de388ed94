#include "cluster/redis/sentinel.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <string_view>
#include <utility>

#include "cluster/discovery/resolver.h"
#include "cluster/redis/client_parts.h"

namespace zetian::cluster::redis {

namespace {

std::optional<std::uint16_t> parsePort(std::string_view s) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc() || end != s.data() + s.size() || value == 0 || value > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

}  // namespace

std::string describe(const SentinelAddress& address) {
  const bool v6 = address.host.find(':') != std::string::npos;
  return (v6 ? "[" + address.host + "]" : address.host) + ":" + std::to_string(address.port);
}

// One question to one Sentinel on a connection of its own. hiredis's privdata for the
// connection and the command; owned by queries_ and never freed inside a hiredis
// callback (reap() frees the finished ones later).
struct Sentinel::Query {
  Sentinel* owner = nullptr;
  std::string name;  // the Sentinel, for errors
  std::vector<std::string> argv;
  redisAsyncContext* ctx = nullptr;
  Timer timer;
  std::function<void(redisReply*, std::string)> done;  // empty once finished
  bool finished() const { return !done; }
  void finish(redisReply* reply, const std::string& error) {
    if (!done) return;
    timer.cancel();
    std::exchange(done, nullptr)(reply, error);
  }
};

// One locate(): the Sentinels asked so far and why each failed.
struct Sentinel::Lookup {
  Located done;
  std::size_t next = 0;
  std::vector<SentinelAddress> order;  // the list as it was when the lookup began
  std::string errors;
};

Sentinel::Sentinel(Loop& loop, Options options, LogSink log, Changed on_change)
    : loop_(loop), options_(std::move(options)), log_(std::move(log)), on_change_(std::move(on_change)) {}

Sentinel::~Sentinel() {
  closing_ = true;
  sub_timer_.cancel();
  if (sub_ctx_) redisAsyncFree(std::exchange(sub_ctx_, nullptr));
  for (auto& q : queries_) {
    q->done = nullptr;  // abandoned: not called
    q->timer.cancel();
    if (q->ctx) redisAsyncFree(std::exchange(q->ctx, nullptr));
  }
  resolver_.reset();
}

bool Sentinel::start(std::string* error) {
  loop_.checkThisThread();
  resolver_ = discovery::Resolver::create(loop_.base(), "", error);
  if (!resolver_) return false;
  subscribe();
  return true;
}

void Sentinel::locate(Located done) {
  loop_.checkThisThread();
  reap();
  auto lookup = std::make_shared<Lookup>();
  lookup->done = std::move(done);
  lookup->order = options_.sentinels;
  ask(lookup);
}

void Sentinel::ask(const std::shared_ptr<Lookup>& lookup) {
  if (lookup->next == lookup->order.size()) {
    std::exchange(lookup->done, nullptr)(std::nullopt, "no Sentinel named master " + options_.master_name + ": " +
                                                           lookup->errors);
    return;
  }
  const SentinelAddress sentinel = lookup->order[lookup->next++];
  query(sentinel, {"SENTINEL", "get-master-addr-by-name", options_.master_name},
        [this, lookup, sentinel](redisReply* reply, std::string error) {
          if (error.empty()) {
            if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 &&
                reply->element[0]->type == REDIS_REPLY_STRING && reply->element[1]->type == REDIS_REPLY_STRING) {
              const auto port = parsePort(replyText(reply->element[1]));
              if (port && reply->element[0]->len > 0) {
                // This one answered: ask it first next time.
                auto& list = options_.sentinels;
                if (auto it = std::find(list.begin(), list.end(), sentinel); it != list.end()) {
                  std::rotate(list.begin(), it, it + 1);
                }
                std::exchange(lookup->done, nullptr)(SentinelAddress{replyText(reply->element[0]), *port}, "");
                return;
              }
              error = "an address that does not parse";
            } else if (reply->type == REDIS_REPLY_NIL) {
              error = "it monitors no master named " + options_.master_name + " (check redis.master_name)";
            } else if (reply->type == REDIS_REPLY_ERROR) {
              error = replyText(reply);
            } else {
              error = "an answer that is not an address";
            }
          }
          lookup->errors += (lookup->errors.empty() ? "" : "; ") + describe(sentinel) + ": " + error;
          ask(lookup);
        });
}

void Sentinel::reap() {
  queries_.remove_if([](const auto& q) { return q->finished() && !q->ctx; });
}

void Sentinel::query(const SentinelAddress& sentinel, std::vector<std::string> argv,
                     std::function<void(redisReply*, std::string)> done) {
  auto owned = std::make_unique<Query>();
  Query* q = owned.get();
  q->owner = this;
  q->name = describe(sentinel);
  q->argv = std::move(argv);
  q->done = std::move(done);
  queries_.push_back(std::move(owned));
  q->timer = loop_.after(options_.timeout, [this, q] {
    auto finish = std::exchange(q->done, nullptr);
    // Freed first (its pending reply callback sees the query finished), then told.
    if (q->ctx) redisAsyncFree(std::exchange(q->ctx, nullptr));
    if (finish) {
      finish(nullptr, "no answer within " + std::to_string(options_.timeout.count()) + " ms (redis.timeout)");
    }
  });
  resolver_->resolveHost(sentinel.host, sentinel.port,
                         [this, q](std::vector<discovery::Endpoint> endpoints, std::string error) {
                           if (q->finished()) return;
                           if (endpoints.empty()) return q->finish(nullptr, "cannot resolve: " + error);
                           open(q, endpoints.front().host, endpoints.front().port);
                         });
}

void Sentinel::open(Query* q, const std::string& host, std::uint16_t port) {
  redisAsyncContext* ctx = redisAsyncConnect(host.c_str(), port);
  if (!ctx || ctx->err) {
    const std::string why = ctx ? ctx->errstr : "out of memory";
    if (ctx) redisAsyncFree(ctx);
    return q->finish(nullptr, why);
  }
  ctx->data = q;
  if (redisLibeventAttach(ctx, loop_.base()) != REDIS_OK) {
    redisAsyncFree(ctx);
    return q->finish(nullptr, "cannot attach the connection to the event loop");
  }
  redisAsyncSetConnectCallback(ctx, &Sentinel::onQueryConnect);
  redisAsyncSetDisconnectCallback(ctx, &Sentinel::onQueryDisconnect);
  q->ctx = ctx;
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  for (const auto& a : q->argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAsyncCommandArgv(ctx, &Sentinel::onQueryReply, q, int(q->argv.size()), ptrs.data(), lens.data()) !=
      REDIS_OK) {
    redisAsyncFree(std::exchange(q->ctx, nullptr));
    q->finish(nullptr, "cannot send the question");
  }
}

void Sentinel::onQueryConnect(const redisAsyncContext* ctx, int status) {
  auto* q = static_cast<Query*>(ctx->data);
  if (status == REDIS_OK || q->ctx != ctx) return;
  q->ctx = nullptr;  // hiredis frees it after this callback
  q->finish(nullptr, ctx->errstr[0] ? ctx->errstr : "cannot connect");
}

void Sentinel::onQueryDisconnect(const redisAsyncContext* ctx, int) {
  auto* q = static_cast<Query*>(ctx->data);
  if (q->ctx != ctx) return;
  q->ctx = nullptr;
  q->finish(nullptr, ctx->errstr[0] ? ctx->errstr : "the Sentinel closed the connection");
}

void Sentinel::onQueryReply(redisAsyncContext* ctx, void* reply, void* privdata) {
  auto* q = static_cast<Query*>(privdata);
  if (!reply) return;  // the connection went: the connect/disconnect callback tells why
  q->finish(static_cast<redisReply*>(reply), "");
  if (q->ctx == ctx) redisAsyncDisconnect(ctx);  // closes once this callback returns
}

// --- The subscription to +switch-master ---

void Sentinel::subscribe() {
  if (closing_ || options_.sentinels.empty()) return;
  const SentinelAddress sentinel = options_.sentinels[sub_index_ % options_.sentinels.size()];
  const std::uint64_t attempt = ++sub_attempt_;
  sub_timer_ = loop_.after(options_.timeout, [this] {
    onSubscriptionLost("no subscription within " + std::to_string(options_.timeout.count()) + " ms");
  });
  resolver_->resolveHost(sentinel.host, sentinel.port, [this, attempt](std::vector<discovery::Endpoint> endpoints,
                                                                       std::string error) {
    if (closing_ || attempt != sub_attempt_ || sub_ctx_) return;
    if (endpoints.empty()) return onSubscriptionLost("cannot resolve: " + error);
    redisAsyncContext* ctx = redisAsyncConnect(endpoints.front().host.c_str(), endpoints.front().port);
    if (!ctx || ctx->err) {
      const std::string why = ctx ? ctx->errstr : "out of memory";
      if (ctx) redisAsyncFree(ctx);
      return onSubscriptionLost(why);
    }
    ctx->data = this;
    if (redisLibeventAttach(ctx, loop_.base()) != REDIS_OK) {
      redisAsyncFree(ctx);
      return onSubscriptionLost("cannot attach the connection to the event loop");
    }
    redisAsyncSetConnectCallback(ctx, &Sentinel::onSubConnect);
    redisAsyncSetDisconnectCallback(ctx, &Sentinel::onSubDisconnect);
    sub_ctx_ = ctx;
    if (redisAsyncCommand(ctx, &Sentinel::onSubReply, this, "SUBSCRIBE +switch-master") != REDIS_OK) {
      onSubscriptionLost("cannot send SUBSCRIBE");
    }
  });
}

void Sentinel::onSubscriptionLost(const std::string& why) {
  if (closing_) return;
  if (sub_ctx_) redisAsyncFree(std::exchange(sub_ctx_, nullptr));  // its callbacks see it is not sub_ctx_
  const SentinelAddress lost = options_.sentinels[sub_index_ % options_.sentinels.size()];
  if (!logged_sub_down_ && log_) {
    log_(conf::LogLevel::Warn, "redis_sentinel_unsubscribed sentinel=" + logValue(describe(lost)) +
                                   " error=" + logValue(why) +
                                   " note=\"failovers are noticed when a reconnection asks the Sentinels, until a "
                                   "subscription is back\"");
  }
  logged_sub_down_ = true;
  ++sub_index_;  // the next Sentinel
  ++sub_attempt_;
  // The next Sentinel is tried at once; the backoff is for when each has failed.
  std::chrono::milliseconds wait{0};
  if (++sub_failures_ >= options_.sentinels.size()) {
    sub_failures_ = 0;
    sub_backoff_ = sub_backoff_.count() == 0 ? options_.min_backoff : std::min(options_.max_backoff, sub_backoff_ * 2);
    wait = jittered(sub_backoff_);
  }
  sub_timer_ = loop_.after(wait, [this] { subscribe(); });
}

void Sentinel::onSubConnect(const redisAsyncContext* ctx, int status) {
  auto* self = static_cast<Sentinel*>(ctx->data);
  if (status == REDIS_OK || self->sub_ctx_ != ctx) return;
  self->sub_ctx_ = nullptr;  // hiredis frees it after this callback
  self->onSubscriptionLost(ctx->errstr[0] ? ctx->errstr : "cannot connect");
}

void Sentinel::onSubDisconnect(const redisAsyncContext* ctx, int) {
  auto* self = static_cast<Sentinel*>(ctx->data);
  if (self->sub_ctx_ != ctx) return;
  self->sub_ctx_ = nullptr;
  self->onSubscriptionLost(ctx->errstr[0] ? ctx->errstr : "the Sentinel closed the connection");
}

void Sentinel::onSubReply(redisAsyncContext* ctx, void* reply, void* privdata) {
  auto* self = static_cast<Sentinel*>(privdata);
  if (!reply || self->closing_ || self->sub_ctx_ != ctx) return;
  self->onSubscriptionMessage(static_cast<redisReply*>(reply));
}

void Sentinel::onSubscriptionMessage(redisReply* reply) {
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 || reply->element[0]->type != REDIS_REPLY_STRING) {
    return;
  }
  const std::string kind = replyText(reply->element[0]);
  if (kind == "subscribe") {
    sub_timer_.cancel();
    sub_backoff_ = std::chrono::milliseconds(0);
    sub_failures_ = 0;
    if (logged_sub_down_ && log_) {
      log_(conf::LogLevel::Info,
           "redis_sentinel_subscribed sentinel=" +
               logValue(describe(options_.sentinels[sub_index_ % options_.sentinels.size()])));
    }
    logged_sub_down_ = false;
    if (on_change_) on_change_(std::nullopt);
    return;
  }
  if (kind != "message") return;
  // "NAME OLD-IP OLD-PORT NEW-IP NEW-PORT"
  const std::string payload = replyText(reply->element[2]);
  std::vector<std::string> words;
  for (std::size_t at = 0; at <= payload.size();) {
    const std::size_t space = std::min(payload.find(' ', at), payload.size());
    words.push_back(payload.substr(at, space - at));
    at = space + 1;
  }
  if (words.size() != 5 || words[0] != options_.master_name) return;
  const auto port = parsePort(words[4]);
  if (!port || words[3].empty()) return;
  if (on_change_) on_change_(SentinelAddress{words[3], *port});
}

}  // namespace zetian::cluster::redis
