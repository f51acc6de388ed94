#include "cluster/redis/client.h"

#include <arpa/inet.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <string_view>
#include <utility>

#include "cluster/discovery/resolver.h"
#include "cluster/limits/evaluate.h"
#include "cluster/redis/client_parts.h"

namespace zetian::cluster::redis {

namespace {

bool numericHost(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::chrono::milliseconds ceilMillis(Client::Clock::duration d) {
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(d);
  return ms.count() < 0 ? std::chrono::milliseconds(0) : ms;
}

}  // namespace

std::string describe(const Target& target) {
  if (!target.unix_path.empty()) return "unix:" + target.unix_path + "?db=" + std::to_string(target.db);
  const bool v6 = target.host.find(':') != std::string::npos;
  return "redis://" + (v6 ? "[" + target.host + "]" : target.host) + ":" + std::to_string(target.port) + "/" +
         std::to_string(target.db);
}

std::string_view nameOf(LinkState state) {
  switch (state) {
    case LinkState::Connecting: return "connecting";
    case LinkState::Ready: return "up";
    case LinkState::Down: return "down";
  }
  return "unknown";
}

std::string_view nameOf(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Connect: return "connect";
    case ErrorKind::Auth: return "auth";
    case ErrorKind::Timeout: return "timeout";
    case ErrorKind::NoScript: return "noscript";
    case ErrorKind::Reply: return "reply";
    case ErrorKind::Protocol: return "protocol";
  }
  return "unknown";
}

// One stage's items (or a refund), from call() until every item has its answer.
struct Client::Call {
  std::vector<wire::LimitItem> items;
  std::vector<std::optional<wire::LimitOutcome>> outcomes;  // per item, once answered
  std::vector<bool> answered;
  std::vector<bool> retried;  // NOSCRIPT: run again once
  std::size_t unanswered = 0;
  std::optional<limits::FallbackReason> failed;  // an item could not be run
  Clock::time_point deadline;
  Clock::time_point sent_at;
  Done done;                // empty once reported (or for a refund)
  bool refund_only = false;
  // callRaw(): each item reported as it is (`done` then only reports a failure of the
  // whole call), and ASKING sent before the items that follow an ASK.
  RawDone raw_done;
  std::vector<bool> asking;
  std::vector<std::string> redirects;  // per item: its MOVED or ASK reply
};

Client::Client(Loop& loop, ClientOptions options, Scripts scripts, LogSink log,
               std::function<void(std::int64_t nanos)> on_latency)
    : loop_(loop),
      options_(std::move(options)),
      scripts_(std::move(scripts)),
      log_(std::move(log)),
      on_latency_(std::move(on_latency)) {
  status_.address = address();
}

Client::~Client() {
  loop_.checkThisThread();
  closing_ = true;
  reconnect_timer_.cancel();
  connect_timer_.cancel();
  deadline_timer_.cancel();
  sentinel_.reset();  // its lookups in flight are abandoned
  resolver_.reset();  // a lookup in flight is abandoned
  if (ctx_) {
    redisAsyncContext* ctx = std::exchange(ctx_, nullptr);
    ++generation_;
    redisAsyncFree(ctx);  // the callbacks still due run now, with no reply
  }
  auto sent = std::move(inflight_);
  auto waiting = std::move(waiting_);
  for (auto* q : {&sent, &waiting}) {
    for (const auto& call : *q) {
      if (call->done) std::exchange(call->done, nullptr)(limits::CallResult{limits::FallbackReason::Closed, {}});
    }
  }
}

void Client::start() {
  loop_.checkThisThread();
  if (started_) return;
  started_ = true;
  // A Sentinel may name its master by a host name (announce-hostnames).
  if (!options_.sentinels.empty() || (!options_.target.host.empty() && !numericHost(options_.target.host))) {
    std::string error;
    resolver_ = discovery::Resolver::create(loop_.base(), "", &error);
    if (!resolver_) {
      fail("cannot start the DNS resolver: " + error, ErrorKind::Connect);
      return;
    }
  }
  if (!options_.sentinels.empty()) {
    Sentinel::Options so;
    so.sentinels = options_.sentinels;
    so.master_name = options_.master_name;
    so.timeout = options_.timeout;
    so.min_backoff = options_.min_backoff;
    so.max_backoff = options_.max_backoff;
    sentinel_ = std::make_unique<Sentinel>(loop_, std::move(so), log_, [this](const auto& master) {
      onMasterChange(master);
    });
    std::string error;
    if (!sentinel_->start(&error)) {
      fail("cannot start the DNS resolver: " + error, ErrorKind::Connect);
      return;
    }
  }
  connect();
}

std::string Client::address() const {
  if (options_.sentinels.empty()) return describe(options_.target);
  const std::string master = "sentinel master " + options_.master_name;
  return options_.target.host.empty() ? master + " (not located yet)" : master + " at " + describe(options_.target);
}

void Client::connect() {
  if (closing_) return;
  // A reconnection during an episode keeps showing `down` (with the last error): only
  // the first connection after start is `connecting`.
  if (!logged_down_) setState(LinkState::Connecting, status().last_error);
  const std::uint64_t attempt = ++attempt_;
  if (!sentinel_) {
    connectToTarget();
    return;
  }
  // Every connection asks the Sentinels first: after a failover the old address is
  // stale, and ROLE (checked in the setup) refuses a replica they may still name.
  sentinel_->locate([this, attempt](std::optional<SentinelAddress> master, std::string error) {
    if (closing_ || attempt != attempt_ || ctx_) return;
    if (!master) {
      fail(error + "; check redis.sentinels and redis.master_name", ErrorKind::Connect);
      return;
    }
    options_.target.host = master->host;
    options_.target.port = master->port;
    {
      std::lock_guard lock(status_mutex_);
      status_.address = address();
    }
    connectToTarget();
  });
}

// A failover's new master (or, with no address, a Sentinel subscription made again).
void Client::onMasterChange(const std::optional<SentinelAddress>& announced) {
  if (closing_) return;
  if (announced) {
    if (log_) {
      log_(conf::LogLevel::Info, "redis_master_switch master_name=" + logValue(options_.master_name) +
                                     " address=" + logValue(describe(*announced)));
    }
    const bool same = announced->host == options_.target.host && announced->port == options_.target.port;
    if (same && ctx_) return;  // connected, or connecting, to it already
    if (ctx_) fail("the Sentinels moved master " + options_.master_name + " to " + describe(*announced), ErrorKind::Connect);
  } else if (ctx_ || status().state != LinkState::Down) {
    return;  // only a client that is down retries at once
  }
  // Now, not after the backoff: the failover is what it was waiting for.
  reconnect_timer_.cancel();
  backoff_ = std::chrono::milliseconds(0);
  connect();
}

void Client::connectToTarget() {
  // The connection and its setup (AUTH, SELECT, ROLE, SCRIPT LOAD) within the timeout.
  connect_timer_ = loop_.after(options_.timeout, [this] {
    fail("no connection within " + std::to_string(options_.timeout.count()) + " ms (redis.timeout)",
         ErrorKind::Connect);
  });
  const Target& t = options_.target;
  if (!t.unix_path.empty()) {
    attach(redisAsyncConnectUnix(t.unix_path.c_str()));
  } else if (numericHost(t.host)) {
    attach(redisAsyncConnect(t.host.c_str(), t.port));
  } else {
    const std::uint64_t generation = generation_;
    const std::uint64_t attempt = attempt_;
    resolver_->resolveHost(t.host, t.port, [this, generation, attempt](std::vector<discovery::Endpoint> endpoints,
                                                                       std::string error) {
      if (closing_ || generation != generation_ || attempt != attempt_ || ctx_) return;
      if (endpoints.empty()) {
        fail("cannot resolve " + options_.target.host + ": " + error, ErrorKind::Connect);
        return;
      }
      {
        std::lock_guard lock(status_mutex_);
        status_.address = address() + " (" + discovery::formatEndpoint(endpoints.front()) + ")";
      }
      attach(redisAsyncConnect(endpoints.front().host.c_str(), endpoints.front().port));
    });
  }
}

void Client::attach(redisAsyncContext* ctx) {
  if (!ctx) {
    fail("cannot create a connection (out of memory?)", ErrorKind::Connect);
    return;
  }
  if (ctx->err) {
    const std::string why = ctx->errstr;
    redisAsyncFree(ctx);
    fail(why, ErrorKind::Connect);
    return;
  }
  ctx->data = this;
  if (redisLibeventAttach(ctx, loop_.base()) != REDIS_OK) {
    redisAsyncFree(ctx);
    fail("cannot attach the connection to the event loop", ErrorKind::Connect);
    return;
  }
  redisAsyncSetConnectCallback(ctx, &Client::onConnectCb);
  redisAsyncSetDisconnectCallback(ctx, &Client::onDisconnectCb);
  ctx_ = ctx;
  ++generation_;
  shas_.assign(scripts_.all.size(), std::string());
  // The setup, pipelined behind the connect: hiredis sends it once connected.
  setup_pending_ = 0;
  auto setup = [&](Step step, std::vector<std::string> argv, std::size_t script = 0) {
    if (command(new Inflight{this, generation_, step, nullptr, script, {}}, argv)) ++setup_pending_;
  };
  if (!options_.password.empty()) {
    if (options_.username.empty()) {
      setup(Step::Auth, {"AUTH", options_.password});
    } else {
      setup(Step::Auth, {"AUTH", options_.username, options_.password});
    }
  }
  if (options_.target.db != 0) setup(Step::Select, {"SELECT", std::to_string(options_.target.db)});
  setup(Step::Role, {"ROLE"});
  for (std::size_t i = 0; i < scripts_.all.size(); ++i) {
    setup(Step::Load, {"SCRIPT", "LOAD", scripts_.all[i].source}, i);
    std::lock_guard lock(status_mutex_);
    ++counters_.script_loads;
  }
}

bool Client::command(Inflight* inflight, const std::vector<std::string>& argv) {
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (const auto& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  if (!ctx_ || redisAsyncCommandArgv(ctx_, &Client::onReplyCb, inflight, static_cast<int>(argv.size()), ptrs.data(),
                                     lens.data()) != REDIS_OK) {
    delete inflight;
    return false;
  }
  return true;
}

void Client::onConnectCb(const redisAsyncContext* ctx, int status) {
  auto* self = static_cast<Client*>(ctx->data);
  if (self->ctx_ != ctx) return;
  if (status != REDIS_OK) {
    // hiredis frees the context after this callback.
    const std::string why = ctx->errstr;
    self->ctx_ = nullptr;
    ++self->generation_;
    self->fail(why, ErrorKind::Connect);
    return;
  }
  // Nothing else to do: Ready needs every setup reply.
}

void Client::onDisconnectCb(const redisAsyncContext* ctx, int status) {
  auto* self = static_cast<Client*>(ctx->data);
  if (self->ctx_ != ctx) return;  // one we dropped ourselves
  self->onDisconnected(status);
}

void Client::onDisconnected(int) {
  // hiredis frees the context after this callback.
  const std::string why = ctx_ && ctx_->errstr[0] ? ctx_->errstr : "the server closed the connection";
  ctx_ = nullptr;
  ++generation_;
  fail(why, ErrorKind::Connect);
}

void Client::onReplyCb(redisAsyncContext*, void* reply, void* privdata) {
  std::unique_ptr<Inflight> in(static_cast<Inflight*>(privdata));
  Client* self = in->client;
  auto* r = static_cast<redisReply*>(reply);
  switch (in->step) {
    case Step::Item:
    case Step::Refund:
      self->onItemReply(in->call, in->index, in->generation == self->generation_ ? r : nullptr);
      return;
    case Step::Admin:
      in->admin(in->generation == self->generation_ && !self->closing_ ? r : nullptr);
      return;
    default:
      if (self->closing_ || in->generation != self->generation_) return;
      self->onSetupReply(in->step, r, in->index);
      return;
  }
}

void Client::onSetupReply(Step step, redisReply* reply, std::size_t script) {
  if (!reply) return;  // the connection is going: fail() has run or will
  const auto target = describe(options_.target);
  if (reply->type == REDIS_REPLY_ERROR) {
    const std::string text = replyText(reply);
    switch (step) {
      case Step::Auth:
        fail("AUTH refused: " + text + "; check redis.password_file (and redis.username for an ACL user)",
             ErrorKind::Auth);
        return;
      case Step::Select:
        fail("SELECT " + std::to_string(options_.target.db) + " refused: " + text, ErrorKind::Auth);
        return;
      case Step::Role:
        fail("ROLE refused: " + text + " (an ACL user needs +role, or +@all)", ErrorKind::Auth);
        return;
      default:
        fail("SCRIPT LOAD of " + scripts_.all[script].name + " refused: " + text, ErrorKind::Reply);
        return;
    }
  }
  if (step == Step::Role) {
    std::string role;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 && reply->element[0]->str) {
      role.assign(reply->element[0]->str, reply->element[0]->len);
    }
    {
      std::lock_guard lock(status_mutex_);
      status_.role = role;
    }
    if (role != "master") {
      fail("the server is a " + (role.empty() ? std::string("server of unknown role") : role) +
               ", not a master: it would refuse the limiter's writes; " +
               (sentinel_ ? "asking the Sentinels again" : "point redis.url at the master"),
           ErrorKind::Reply);
      return;
    }
  }
  if (step == Step::Load) {
    if (reply->type != REDIS_REPLY_STRING) {
      fail("SCRIPT LOAD gave no digest", ErrorKind::Protocol);
      return;
    }
    shas_[script].assign(reply->str, reply->len);
  }
  if (setup_pending_ > 0 && --setup_pending_ == 0 && ctx_) becomeReady();
}

void Client::becomeReady() {
  connect_timer_.cancel();
  backoff_ = std::chrono::milliseconds(0);
  if (logged_down_ && log_) {
    log_(conf::LogLevel::Info, "redis_up address=" + logValue(status().address) + " note=\"limits in Redis again\"");
  }
  logged_down_ = false;
  {
    std::lock_guard lock(status_mutex_);
    ++counters_.connects;
    status_.ever_ready = true;
  }
  setState(LinkState::Ready, "");
  flushWaiting();
}

void Client::setState(LinkState state, const std::string& error) {
  {
    std::lock_guard lock(status_mutex_);
    status_.state = state;
    status_.last_error = error;
  }
  if (on_state_) on_state_();
}

void Client::countError(ErrorKind kind) {
  std::lock_guard lock(status_mutex_);
  ++counters_.errors[std::size_t(kind)];
}

ClientStatus Client::status() const {
  std::lock_guard lock(status_mutex_);
  return status_;
}

ClientCounters Client::counters() const {
  std::lock_guard lock(status_mutex_);
  return counters_;
}

void Client::fail(const std::string& why, ErrorKind kind) {
  if (closing_) return;
  countError(kind);
  connect_timer_.cancel();
  if (!logged_down_ && log_) {
    log_(conf::LogLevel::Warn, "redis_down address=" + logValue(status().address) + " error=" + logValue(why) +
                                   " action=\"rules with store = redis follow ratelimit.fail_mode until Redis "
                                   "answers again; reconnecting in the background\"");
  }
  logged_down_ = true;
  ++attempt_;  // a connection still being located or resolved is abandoned
  setState(LinkState::Down, why);
  if (ctx_) {
    redisAsyncContext* ctx = std::exchange(ctx_, nullptr);
    ++generation_;
    redisAsyncFree(ctx);  // from inside a callback too: hiredis frees it on return
  }
  // Known down: everything waiting fails now, and so does what was sent (its answers
  // are lost with the connection).
  auto sent = std::move(inflight_);
  inflight_.clear();
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (auto* q : {&sent, &waiting}) {
    for (const auto& call : *q) {
      if (call->done) std::exchange(call->done, nullptr)(limits::CallResult{limits::FallbackReason::Unreachable, {}});
    }
  }
  armDeadline();
  scheduleReconnect();
}

void Client::scheduleReconnect() {
  backoff_ = backoff_.count() == 0 ? options_.min_backoff : std::min(options_.max_backoff, backoff_ * 2);
  reconnect_timer_ = loop_.after(jittered(backoff_), [this] { connect(); });
}

void Client::call(std::vector<wire::LimitItem> items, Clock::time_point deadline, Done done) {
  loop_.checkThisThread();
  auto c = std::make_shared<Call>();
  c->deadline = std::min(deadline, Clock::now() + options_.timeout);
  c->done = std::move(done);
  c->items = std::move(items);
  c->outcomes.assign(c->items.size(), std::nullopt);
  c->answered.assign(c->items.size(), false);
  c->retried.assign(c->items.size(), false);
  c->unanswered = c->items.size();
  {
    std::lock_guard lock(status_mutex_);
    ++counters_.calls;
  }
  if (c->items.empty()) {
    std::exchange(c->done, nullptr)(limits::CallResult{std::nullopt, {}});
    return;
  }
  dispatch(c);
}

void Client::callRaw(std::vector<wire::LimitItem> items, std::vector<bool> asking, Clock::time_point deadline,
                     RawDone done) {
  loop_.checkThisThread();
  auto c = std::make_shared<Call>();
  c->deadline = std::min(deadline, Clock::now() + options_.timeout);
  const std::size_t n = items.size();
  // A failure of the whole call (Redis down, the deadline, closing) is every item's.
  c->done = [done, n](limits::CallResult r) {
    std::vector<ItemReply> replies(n);
    for (auto& reply : replies) reply.failed = r.failed.value_or(limits::FallbackReason::Refused);
    done(std::move(replies));
  };
  c->raw_done = std::move(done);
  c->items = std::move(items);
  c->asking = std::move(asking);
  c->asking.resize(n, false);
  c->redirects.assign(n, std::string());
  c->outcomes.assign(n, std::nullopt);
  c->answered.assign(n, false);
  c->retried.assign(n, false);
  c->unanswered = n;
  {
    std::lock_guard lock(status_mutex_);
    ++counters_.calls;
  }
  if (n == 0) {
    c->done = nullptr;
    std::exchange(c->raw_done, nullptr)({});
    return;
  }
  dispatch(c);
}

void Client::dispatch(const std::shared_ptr<Call>& c) {
  const LinkState state = status().state;
  if (state == LinkState::Ready && ctx_) {
    c->sent_at = Clock::now();
    inflight_.push_back(c);
    for (std::size_t i = 0; i < c->items.size(); ++i) send(c, i);
    armDeadline();
    return;
  }
  if (!status().ever_ready && !logged_down_ && state == LinkState::Connecting) {
    // The first connection is under way, and nothing has failed yet: the call may wait
    // for it, up to its deadline.
    waiting_.push_back(c);
    armDeadline();
    return;
  }
  std::exchange(c->done, nullptr)(limits::CallResult{limits::FallbackReason::Unreachable, {}});
}

void Client::refund(std::vector<wire::LimitItem> items) {
  loop_.checkThisThread();
  if (items.empty() || status().state != LinkState::Ready || !ctx_) return;
  auto c = std::make_shared<Call>();
  c->refund_only = true;
  c->deadline = Clock::now() + options_.timeout;
  c->sent_at = Clock::now();
  for (auto& item : items) item.op = wire::LimitOp::Refund;
  c->items = std::move(items);
  c->outcomes.assign(c->items.size(), std::nullopt);
  c->answered.assign(c->items.size(), false);
  c->retried.assign(c->items.size(), false);
  c->unanswered = c->items.size();
  inflight_.push_back(c);
  for (std::size_t i = 0; i < c->items.size(); ++i) send(c, i);
  armDeadline();
}

void Client::send(const std::shared_ptr<Call>& call, std::size_t index) {
  const wire::LimitItem& item = call->items[index];
  const std::size_t script = scripts_.which(item);
  std::string error;
  auto args = scripts_.args(item, &error);
  if (!args) {
    countError(ErrorKind::Reply);
    if (log_) {
      log_(conf::LogLevel::Warn, "redis_refused_item key=" + logValue(item.key) + " error=" + logValue(error));
    }
    call->answered[index] = true;
    --call->unanswered;
    if (!call->failed) call->failed = limits::FallbackReason::Refused;
    finishIfComplete(call);
    return;
  }
  std::vector<std::string> argv{"EVALSHA", shas_.at(script), "1", options_.key_prefix + item.key};
  for (auto& a : *args) argv.push_back(std::move(a));
  {
    std::lock_guard lock(status_mutex_);
    ++counters_.items;
  }
  const Step step = call->refund_only ? Step::Refund : Step::Item;
  if (!call->asking.empty() && call->asking[index]) {
    // Its reply (+OK) tells nothing: a refusal shows as the item's own MOVED.
    command(new Inflight{this, generation_, Step::Admin, nullptr, 0, [](redisReply*) {}}, {"ASKING"});
  }
  if (!command(new Inflight{this, generation_, step, call, index, {}}, argv)) {
    // The context refused the command: it is going away; fail() follows from hiredis.
    onItemReply(call, index, nullptr);
  }
}

void Client::onItemReply(const std::shared_ptr<Call>& call, std::size_t index, redisReply* reply) {
  if (call->answered[index]) return;
  if (!reply) {
    call->answered[index] = true;
    --call->unanswered;
    if (!call->failed) call->failed = closing_ ? limits::FallbackReason::Closed : limits::FallbackReason::Unreachable;
    finishIfComplete(call);
    return;
  }
  if (on_latency_) on_latency_((Clock::now() - call->sent_at).count());
  if (reply->type == REDIS_REPLY_ERROR) {
    const std::string text = replyText(reply);
    if (text.rfind("NOSCRIPT", 0) == 0 && !call->retried[index]) {
      // The server lost the scripts: load this one again, then run the item again
      // (both queued in order on the connection).
      countError(ErrorKind::NoScript);
      call->retried[index] = true;
      const std::size_t script = scripts_.which(call->items[index]);
      command(new Inflight{this, generation_, Step::Load, nullptr, script, {}},
              {"SCRIPT", "LOAD", scripts_.all[script].source});
      {
        std::lock_guard lock(status_mutex_);
        ++counters_.script_loads;
      }
      send(call, index);
      return;
    }
    if (call->raw_done && (text.rfind("MOVED ", 0) == 0 || text.rfind("ASK ", 0) == 0)) {
      // A Redis Cluster's redirection: the caller runs the item at the node it names.
      call->redirects[index] = text;
      call->answered[index] = true;
      --call->unanswered;
      finishIfComplete(call);
      return;
    }
    if (text.rfind("READONLY", 0) == 0) {
      // A master demoted under us (a failover while it still answers): drop it, and
      // find the master again (ROLE refuses a replica).
      call->answered[index] = true;
      --call->unanswered;
      if (!call->failed) call->failed = limits::FallbackReason::Refused;
      fail("the server answered READONLY: it is a replica now; " +
               std::string(sentinel_ ? "asking the Sentinels for the master" : "point redis.url at the master"),
           ErrorKind::Reply);
      finishIfComplete(call);
      return;
    }
    countError(ErrorKind::Reply);
    if (call->raw_done && text.rfind("CLUSTERDOWN", 0) == 0) {
      // The cluster refuses every key while it lacks a master: as unreachable as a
      // master down, and reported per episode by the engine's fallback lines rather
      // than once per item here.
      call->answered[index] = true;
      --call->unanswered;
      if (!call->failed) call->failed = limits::FallbackReason::Unreachable;
      finishIfComplete(call);
      return;
    }
    if (log_) {
      log_(conf::LogLevel::Warn, "redis_error address=" + logValue(status().address) + " error=" + logValue(text));
    }
    call->answered[index] = true;
    --call->unanswered;
    if (!call->failed) call->failed = limits::FallbackReason::Refused;
    finishIfComplete(call);
    return;
  }
  if (call->items[index].op == wire::LimitOp::Refund) {
    call->answered[index] = true;
    --call->unanswered;
    call->outcomes[index] = wire::LimitOutcome{wire::ItemResult::Refunded, 0, 0};
    finishIfComplete(call);
    return;
  }
  std::vector<long long> values;
  bool ok = reply->type == REDIS_REPLY_ARRAY;
  for (std::size_t i = 0; ok && i < reply->elements; ++i) {
    if (reply->element[i]->type != REDIS_REPLY_INTEGER) {
      ok = false;
      break;
    }
    values.push_back(reply->element[i]->integer);
  }
  std::optional<state::Outcome> outcome;
  if (ok) outcome = scripts_.outcome(values);
  call->answered[index] = true;
  --call->unanswered;
  if (!outcome) {
    countError(ErrorKind::Protocol);
    if (!call->failed) call->failed = limits::FallbackReason::Refused;
  } else {
    call->outcomes[index] =
        limits::toWire(*outcome, outcome->allowed ? wire::ItemResult::Charged : wire::ItemResult::Denied);
  }
  finishIfComplete(call);
}

// Once every item has its answer: the call's verdict (settleCall, backend.h), and
// whatever must be given back.
void Client::finishIfComplete(const std::shared_ptr<Call>& call) {
  if (call->unanswered > 0) return;
  std::erase(inflight_, call);
  if (call->refund_only) return;
  if (call->raw_done && call->done) {
    // Raw: each item as it is; the caller settles (and gives back what it must).
    call->done = nullptr;
    std::vector<ItemReply> replies(call->items.size());
    for (std::size_t i = 0; i < replies.size(); ++i) {
      if (call->outcomes[i]) {
        replies[i].outcome = call->outcomes[i];
      } else if (!call->redirects[i].empty()) {
        replies[i].redirect = std::move(call->redirects[i]);
      } else {
        replies[i].failed = call->failed.value_or(limits::FallbackReason::Refused);
      }
    }
    std::exchange(call->raw_done, nullptr)(std::move(replies));
    return;
  }
  // Decided without these answers (the deadline passed): every charge goes back.
  const bool late = !call->done;
  if (late) {
    std::lock_guard lock(status_mutex_);
    ++counters_.late_answers;
  }
  Settled settled = settleCall(call->items, call->outcomes, late ? limits::FallbackReason::Timeout : call->failed);
  std::vector<wire::LimitItem> back;
  for (const std::size_t i : settled.give_back) back.push_back(call->items[i]);
  if (call->done) std::exchange(call->done, nullptr)(std::move(settled.result));
  refund(std::move(back));
}

void Client::flushWaiting() {
  auto waiting = std::move(waiting_);
  waiting_.clear();
  const auto now = Clock::now();
  for (const auto& c : waiting) {
    if (!c->done) continue;
    if (c->deadline <= now) {
      countError(ErrorKind::Timeout);
      std::exchange(c->done, nullptr)(limits::CallResult{limits::FallbackReason::Timeout, {}});
      continue;
    }
    c->sent_at = now;
    inflight_.push_back(c);
    for (std::size_t i = 0; i < c->items.size(); ++i) send(c, i);
  }
  armDeadline();
}

void Client::armDeadline() {
  Clock::time_point first = Clock::time_point::max();
  for (const auto* q : {&inflight_, &waiting_}) {
    for (const auto& c : *q) {
      // A call already reported still matters: its answers are overdue at 2x.
      const auto due = c->done ? c->deadline : c->deadline + options_.timeout;
      first = std::min(first, due);
    }
  }
  if (first == Clock::time_point::max()) {
    deadline_timer_.cancel();
    deadline_armed_for_ = {};
    return;
  }
  if (deadline_armed_for_ == first && deadline_timer_.active()) return;
  deadline_armed_for_ = first;
  deadline_timer_ = loop_.after(ceilMillis(first - Clock::now()), [this] { onDeadline(); });
}

void Client::onDeadline() {
  deadline_armed_for_ = {};
  const auto now = Clock::now();
  bool stuck = false;
  // Collected first, called after: a callback may call back into this client (a
  // refund), which must not change the queues under these loops.
  std::vector<Done> due;
  for (auto* q : {&inflight_, &waiting_}) {
    for (const auto& c : *q) {
      if (c->done && c->deadline <= now && !c->refund_only) {
        countError(ErrorKind::Timeout);
        due.push_back(std::exchange(c->done, nullptr));
      } else if (!c->done && c->deadline + options_.timeout <= now && c->unanswered > 0) {
        stuck = true;
      }
    }
  }
  std::erase_if(waiting_, [](const auto& c) { return !c->done; });
  for (auto& done : due) done(limits::CallResult{limits::FallbackReason::Timeout, {}});
  if (stuck && ctx_) {
    fail("no answer for " + std::to_string(2 * options_.timeout.count()) + " ms: the connection is stuck",
         ErrorKind::Timeout);
    return;
  }
  armDeadline();
}

}  // namespace zetian::cluster::redis
