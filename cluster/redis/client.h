// The limiter's connection to Redis, on the cluster thread (hiredis's async API on the
// loop's event_base).
//
// What it does:
// - Connects (TCP, the host resolved without blocking the loop, or a Unix socket),
//   authenticates (AUTH [username] password), selects the database and loads the
//   scripts (SCRIPT LOAD) before it takes any call: a connection is Ready only once all
//   of that has succeeded. A failure at any step closes it and tries again with
//   jittered exponential backoff; the first failure of an episode is logged with what
//   to do, the recovery once.
// - call() runs one SMTP stage's Redis items, one EVALSHA per item, all sent back to
//   back on the one connection (pipelined: one round trip for the stage). The answer
//   follows the owner's rule for a call (limits/evaluate.h): items in order, and a
//   blocking denial gives back what the items before it charged (Returned); items after
//   it are NotEvaluated (given back too, since the pipeline charged them already).
// - While Redis is known to be down (no connection, or one being re-established after
//   a failure), a call fails at once (Unreachable): no message waits for a connect
//   timeout. Only the first connection after start() lets calls wait for it, up to
//   their deadline. A call without an answer by its deadline fails (Timeout); what its
//   late answers charged is given back. A connection that leaves a call unanswered for
//   twice the timeout is considered stuck and is replaced.
// - NOSCRIPT (the server lost its scripts: restart without persistence, SCRIPT FLUSH)
//   reloads them and runs the item again, once.
//
// The scripts themselves are data from the caller (Scripts below, built from
// state/redis_scripts.h), so this file knows nothing of the algorithms.
//
// Threads: everything runs on the loop thread and checks it, except status() and
// counters(), which any thread may call.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cluster/limits/service.h"
#include "cluster/log_sink.h"
#include "cluster/loop.h"
#include "cluster/redis/backend.h"
#include "cluster/redis/sentinel.h"
#include "cluster/wire/codec.h"
#include "state/limit.h"

struct redisAsyncContext;
struct redisReply;

namespace zetian::cluster::discovery {
class Resolver;
}

namespace zetian::cluster::redis {

struct Script {
  std::string name;    // for logs
  std::string source;  // Lua
};

// How the limiter's items become script calls, supplied by the caller.
struct Scripts {
  std::vector<Script> all;  // loaded on every new connection
  // Which of `all` runs an item (its op and algorithm decide), and its ARGV; nullopt
  // with *error set: the item cannot run in Redis (outside the scripts' domain), and
  // fails.
  std::function<std::size_t(const wire::LimitItem& item)> which;
  std::function<std::optional<std::vector<std::string>>(const wire::LimitItem& item, std::string* error)> args;
  // The ARGV of a peek (what a charge of `item` would answer, changing nothing).
  std::function<std::optional<std::vector<std::string>>(const wire::LimitItem& item, std::string* error)> peek_args;
  // A charge's reply (an array of integers) as an outcome; nullopt: not a reply the
  // scripts give (counted as a protocol error, the item fails). A refund's reply is
  // not read beyond being no error.
  std::function<std::optional<state::Outcome>(const std::vector<long long>& reply)> outcome;
};

struct Target {
  std::string host;  // a name or a numeric address; empty for a Unix socket
  std::uint16_t port = 6379;
  std::string unix_path;
  int db = 0;
};

std::string describe(const Target& target);  // "redis://host:port/db" or "unix:/path?db=N"

struct ClientOptions {
  // The server; with `sentinels`, only its database (the Sentinels name host and port).
  Target target;
  // Not empty: follow the master the Sentinels name `master_name` (sentinel.h).
  std::vector<SentinelAddress> sentinels;
  std::string master_name;
  std::string username;  // empty: AUTH with the password alone
  std::string password;  // empty: no AUTH
  std::chrono::milliseconds timeout{250};
  std::string key_prefix = "zetian:";
  std::chrono::milliseconds min_backoff{100};
  std::chrono::milliseconds max_backoff{5000};
};

class Client : public Backend {
 public:
  // `on_latency`: every answered item's round trip in nanoseconds (may be empty).
  Client(Loop& loop, ClientOptions options, Scripts scripts, LogSink log,
         std::function<void(std::int64_t nanos)> on_latency = {});
  // Fails every call still waiting with Closed and closes the connection.
  ~Client() override;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Backend (backend.h).
  void start() override;
  void call(std::vector<wire::LimitItem> items, Clock::time_point deadline, Done done) override;
  void refund(std::vector<wire::LimitItem> items) override;
  void peek(const wire::LimitItem& item, PeekDone done) override;
  void erase(const std::string& store_key, EraseDone done) override;
  ClientStatus status() const override;
  ClientCounters counters() const override;

  void eraseAll(const std::string& store_key_prefix, EraseDone done) override;

  // For ClusterClient, which runs one Client per master and settles a stage itself once
  // every master has answered: one master's share of a stage, reported item by item
  // instead of settled. `asking[i]`: send ASKING right before item i (it follows an
  // ASK redirection; the two go back to back on the connection). `done` runs exactly
  // once on the loop thread (inline when the call fails at once), with one reply per
  // item; a charge it reports is the caller's to keep or give back, while a charge
  // answered after `done` ran (past the deadline) is given back here, as for call().
  struct ItemReply {
    std::optional<wire::LimitOutcome> outcome;     // Charged, Denied or Refunded
    std::optional<limits::FallbackReason> failed;  // or the item could not run
    std::string redirect;  // or the error reply "MOVED <slot> <host>:<port>" / "ASK ...": it runs elsewhere
  };
  using RawDone = std::function<void(std::vector<ItemReply> replies)>;
  void callRaw(std::vector<wire::LimitItem> items, std::vector<bool> asking, Clock::time_point deadline,
               RawDone done);
  // One command of the caller's (CLUSTER SLOTS) on the ready connection; `done` runs
  // exactly once on the loop thread, with the reply (valid during the call only), or
  // null and an error text.
  using QueryDone = std::function<void(const redisReply* reply, std::string error)>;
  void query(const std::vector<std::string>& argv, QueryDone done);
  // Called (on the loop thread) whenever the connection's state changes: a ClusterClient
  // learns when a connection is ready or down without polling. It must not call back
  // into this client synchronously (defer with Loop::after).
  void onStateChange(std::function<void()> fn) { on_state_ = std::move(fn); }

 private:
  struct Call;
  struct Inflight;
  enum class Step : std::uint8_t { Auth, Select, Role, Load, Item, Refund, Admin };

  struct Sweep;
  void sweep(const std::shared_ptr<Sweep>& sweep);
  void connect();
  void connectToTarget();
  void onMasterChange(const std::optional<SentinelAddress>& announced);
  std::string address() const;  // for status and logs
  void onResolved(const std::string& host);
  void attach(redisAsyncContext* ctx);
  void onDisconnected(int status);
  void onSetupReply(Step step, redisReply* reply, std::size_t script);
  void onItemReply(const std::shared_ptr<Call>& call, std::size_t index, redisReply* reply);
  void send(const std::shared_ptr<Call>& call, std::size_t index);
  void finishIfComplete(const std::shared_ptr<Call>& call);
  void dispatch(const std::shared_ptr<Call>& call);
  void fail(const std::string& why, ErrorKind kind);
  void scheduleReconnect();
  void becomeReady();
  void armDeadline();
  void onDeadline();
  void flushWaiting();
  void setState(LinkState state, const std::string& error);
  void countError(ErrorKind kind);
  bool command(Inflight* inflight, const std::vector<std::string>& argv);  // false: not queued (freed)
  static void onReplyCb(redisAsyncContext* ctx, void* reply, void* privdata);
  static void onConnectCb(const redisAsyncContext* ctx, int status);
  static void onDisconnectCb(const redisAsyncContext* ctx, int status);

  Loop& loop_;
  ClientOptions options_;
  Scripts scripts_;
  LogSink log_;
  std::function<void(std::int64_t)> on_latency_;
  std::function<void()> on_state_;
  std::unique_ptr<discovery::Resolver> resolver_;
  std::unique_ptr<Sentinel> sentinel_;  // with options_.sentinels only
  std::uint64_t attempt_ = 0;           // of connect(): a stale Sentinel answer is ignored
  redisAsyncContext* ctx_ = nullptr;
  std::uint64_t generation_ = 0;  // of ctx_: callbacks of an older connection are ignored
  std::vector<std::string> shas_;  // of scripts_.all on this connection
  std::size_t setup_pending_ = 0;
  bool closing_ = false;
  bool started_ = false;
  std::chrono::milliseconds backoff_{0};
  Timer reconnect_timer_;
  Timer connect_timer_;  // the connection and its setup must finish within timeout
  Timer deadline_timer_;
  Clock::time_point deadline_armed_for_{};
  // Calls sent and not yet complete (answered or past their deadline with answers
  // still due), by deadline; calls waiting for the first connection.
  std::deque<std::shared_ptr<Call>> inflight_;
  std::deque<std::shared_ptr<Call>> waiting_;
  bool logged_down_ = false;  // the current episode's first failure was logged

  mutable std::mutex status_mutex_;  // guards status_ and counters_ for other threads
  ClientStatus status_;
  ClientCounters counters_;
};

}  // namespace zetian::cluster::redis
