// Finding and following the master that Redis Sentinels name (`[redis] sentinels` and
// `master_name`), on the cluster thread, for the Redis client (client.h).
//
// - locate() asks the Sentinels in turn (`SENTINEL get-master-addr-by-name NAME`),
//   each on a short-lived connection bounded by the timeout, and answers with the
//   first address one of them gives. A Sentinel that answers moves to the front of
//   the list, so the next lookup asks it first (what Redis's client guidelines
//   recommend). The caller still checks ROLE on the master it connects to: a Sentinel
//   may name an old master for a moment during a failover.
// - A subscription to `+switch-master` on one Sentinel at a time tells the client at
//   once when a failover has chosen a new master, rather than when its backoff next
//   tries. The subscription moves to the next Sentinel at once when its connection
//   drops, and waits the client's backoff only when every Sentinel has failed in turn. Every new subscription is reported too (with no address):
//   a failover announced while no Sentinel was listening is then not missed for long.
//
// Sentinels are asked without AUTH (a Sentinel's own `requirepass` is not supported).
//
// Threads: everything on the loop thread.
#pragma once

#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cluster/log_sink.h"
#include "cluster/loop.h"

struct redisAsyncContext;
struct redisReply;

namespace zetian::cluster::discovery {
class Resolver;
}

namespace zetian::cluster::redis {

struct SentinelAddress {
  std::string host;  // a name or a numeric address
  std::uint16_t port = 26379;
  bool operator==(const SentinelAddress&) const = default;
};
std::string describe(const SentinelAddress& address);  // "host:port", "[v6]:port"

class Sentinel {
 public:
  struct Options {
    std::vector<SentinelAddress> sentinels;  // at least one
    std::string master_name;
    std::chrono::milliseconds timeout{250};  // per Sentinel asked
    std::chrono::milliseconds min_backoff{100};
    std::chrono::milliseconds max_backoff{5000};
  };
  // The master's address, or nullopt with why no Sentinel named it.
  using Located = std::function<void(std::optional<SentinelAddress> master, std::string error)>;
  // A failover's new master (`+switch-master` for our name), or nullopt when a
  // subscription has just been (re)established.
  using Changed = std::function<void(const std::optional<SentinelAddress>& master)>;

  Sentinel(Loop& loop, Options options, LogSink log, Changed on_change);
  // Abandons lookups in flight (their callbacks are not called) and the subscription.
  ~Sentinel();
  Sentinel(const Sentinel&) = delete;
  Sentinel& operator=(const Sentinel&) = delete;

  // Subscribes; nullptr error: fine. Fails only when the resolver cannot start.
  bool start(std::string* error);
  // `done` runs exactly once, later on the loop thread (never inside locate()),
  // unless this Sentinel is destroyed first.
  void locate(Located done);

 private:
  struct Query;
  struct Lookup;

  void ask(const std::shared_ptr<Lookup>& lookup);
  void query(const SentinelAddress& sentinel, std::vector<std::string> argv,
             std::function<void(redisReply* reply, std::string error)> done);
  void open(Query* q, const std::string& host, std::uint16_t port);
  void reap();
  void subscribe();
  void onSubscriptionLost(const std::string& why);
  void onSubscriptionMessage(redisReply* reply);
  static void onQueryReply(redisAsyncContext* ctx, void* reply, void* privdata);
  static void onQueryConnect(const redisAsyncContext* ctx, int status);
  static void onQueryDisconnect(const redisAsyncContext* ctx, int status);
  static void onSubReply(redisAsyncContext* ctx, void* reply, void* privdata);
  static void onSubConnect(const redisAsyncContext* ctx, int status);
  static void onSubDisconnect(const redisAsyncContext* ctx, int status);

  Loop& loop_;
  Options options_;
  LogSink log_;
  Changed on_change_;
  std::unique_ptr<discovery::Resolver> resolver_;
  std::list<std::unique_ptr<Query>> queries_;  // finished ones are reaped on the next query
  bool closing_ = false;

  // The subscription.
  redisAsyncContext* sub_ctx_ = nullptr;
  std::size_t sub_index_ = 0;  // the Sentinel it is on (or tries next)
  std::uint64_t sub_attempt_ = 0;
  bool logged_sub_down_ = false;
  std::size_t sub_failures_ = 0;  // in a row, since the last subscription or backoff
  std::chrono::milliseconds sub_backoff_{0};
  Timer sub_timer_;  // the subscription's connect deadline, or its next try
};

}  // namespace zetian::cluster::redis
