#include "cluster/redis/cluster_client.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <optional>
#include <utility>

#include "cluster/redis/client_parts.h"
#include "cluster/redis/key_slot.h"

namespace zetian::cluster::redis {

namespace {

std::string joinAddress(const std::string& host, std::uint16_t port) { return host + ":" + std::to_string(port); }

// "HOST:PORT" (HOST may hold colons: an IPv6 address, as Redis writes it in MOVED).
bool splitAddress(std::string_view address, std::string* host, std::uint16_t* port) {
  const auto colon = address.rfind(':');
  if (colon == std::string_view::npos) return false;
  unsigned value = 0;
  const std::string_view digits = address.substr(colon + 1);
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size() || value == 0 || value > 65535) return false;
  *host = std::string(address.substr(0, colon));
  *port = static_cast<std::uint16_t>(value);
  return true;
}

struct Redirect {
  bool ask = false;
  std::uint16_t slot = 0;
  std::string address;
};

// "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381". An empty host (Redis 7,
// the node's endpoint unknown to it) means the host of the node that answered.
std::optional<Redirect> parseRedirect(std::string_view text, const std::string& from) {
  Redirect r;
  if (text.rfind("MOVED ", 0) == 0) {
    text.remove_prefix(6);
  } else if (text.rfind("ASK ", 0) == 0) {
    r.ask = true;
    text.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  const auto space = text.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  unsigned slot = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + space, slot);
  if (ec != std::errc() || end != text.data() + space || slot >= kClusterSlots) return std::nullopt;
  r.slot = static_cast<std::uint16_t>(slot);
  std::string host;
  std::uint16_t port = 0;
  if (!splitAddress(text.substr(space + 1), &host, &port)) return std::nullopt;
  if (host.empty()) {
    std::uint16_t ignored = 0;
    if (!splitAddress(from, &host, &ignored)) return std::nullopt;
  }
  r.address = joinAddress(host, port);
  return r;
}

std::string joined(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ",") + p;
  return out;
}

void add(ClientCounters& to, const ClientCounters& from, bool with_calls) {
  if (with_calls) to.calls += from.calls;
  to.items += from.items;
  to.late_answers += from.late_answers;
  to.connects += from.connects;
  to.script_loads += from.script_loads;
  for (std::size_t k = 0; k < kErrorKinds; ++k) to.errors[k] += from.errors[k];
  to.moved += from.moved;
  to.asked += from.asked;
  to.slot_map_loads += from.slot_map_loads;
}

}  // namespace

// One stage (or a refund), from call() until every item has its answer.
struct ClusterClient::Stage {
  std::vector<wire::LimitItem> items;
  std::vector<std::optional<wire::LimitOutcome>> outcomes;
  std::vector<std::optional<limits::FallbackReason>> failed;  // per item
  std::vector<int> redirects;                                 // per item: MOVED/ASK followed
  std::size_t unanswered = 0;
  Clock::time_point deadline;
  Done done;  // empty for a refund
  bool finished = false;
  Timer wait_timer;  // while waiting for the first slot map
};

ClusterClient::ClusterClient(Loop& loop, ClusterOptions options, Scripts scripts, LogSink log,
                             std::function<void(std::int64_t nanos)> on_latency)
    : loop_(loop),
      options_(std::move(options)),
      scripts_(std::move(scripts)),
      log_(std::move(log)),
      on_latency_(std::move(on_latency)),
      slots_(kClusterSlots, -1) {}

ClusterClient::~ClusterClient() {
  loop_.checkThisThread();
  closing_ = true;
  map_timer_.cancel();
  changed_timer_.cancel();
  retire_timer_.cancel();
  failWaiting(limits::FallbackReason::Closed);
  std::map<std::string, std::unique_ptr<Client>> connections;
  {
    std::lock_guard lock(connections_mutex_);
    connections.swap(connections_);
  }
  // Each answers its calls Closed; the stages they belong to report Closed (finish()).
  for (auto& [address, client] : connections) {
    client->onStateChange(nullptr);
    client.reset();
  }
}

void ClusterClient::start() {
  loop_.checkThisThread();
  if (started_) return;
  started_ = true;
  map_wanted_ = true;
  for (const auto& seed : options_.seeds) connectionTo(joinAddress(seed.host, seed.port));
}

Client& ClusterClient::connectionTo(const std::string& address) {
  if (auto it = connections_.find(address); it != connections_.end()) return *it->second;
  ClientOptions o = options_.connection;
  o.target = Target{};
  std::uint16_t port = 0;
  if (!splitAddress(address, &o.target.host, &port)) o.target.host = address;  // fails to connect, visibly
  o.target.port = port;
  o.target.db = 0;
  auto client = std::make_unique<Client>(loop_, std::move(o), scripts_, log_, on_latency_);
  client->onStateChange([this] {
    // Off the connection's call stack: it may be in the middle of failing its calls.
    if (!closing_ && !changed_timer_.active()) {
      changed_timer_ = loop_.after(std::chrono::milliseconds(0), [this] { onConnectionsChanged(); });
    }
  });
  Client& ref = *client;
  {
    std::lock_guard lock(connections_mutex_);
    connections_.emplace(address, std::move(client));
  }
  ref.start();
  return ref;
}

std::string ClusterClient::masterOf(std::uint16_t slot) const {
  const std::int32_t node = slot < slots_.size() ? slots_[slot] : -1;
  return node < 0 ? std::string() : nodes_[std::size_t(node)];
}

void ClusterClient::setSlot(std::uint16_t slot, const std::string& address) {
  auto it = std::find(nodes_.begin(), nodes_.end(), address);
  if (it == nodes_.end()) it = nodes_.insert(nodes_.end(), address);
  slots_[slot] = static_cast<std::int32_t>(it - nodes_.begin());
}

void ClusterClient::call(std::vector<wire::LimitItem> items, Clock::time_point deadline, Done done) {
  loop_.checkThisThread();
  {
    std::lock_guard lock(connections_mutex_);
    ++own_.calls;
  }
  if (items.empty()) {
    done(limits::CallResult{std::nullopt, {}});
    return;
  }
  auto stage = std::make_shared<Stage>();
  stage->deadline = std::min(deadline, Clock::now() + options_.connection.timeout);
  stage->done = std::move(done);
  stage->items = std::move(items);
  const std::size_t n = stage->items.size();
  stage->outcomes.assign(n, std::nullopt);
  stage->failed.assign(n, std::nullopt);
  stage->redirects.assign(n, 0);
  stage->unanswered = n;
  if (!map_loaded_) {
    // Only while the first map is still on its way may a call wait for it; once every
    // seed has failed, or a seed refused CLUSTER SLOTS, Redis is known down.
    std::string error;
    {
      std::lock_guard lock(connections_mutex_);
      error = map_error_;
    }
    if (!started_ || !error.empty() || seedsAllDown()) {
      std::exchange(stage->done, nullptr)(limits::CallResult{limits::FallbackReason::Unreachable, {}});
      return;
    }
    wait(stage);
    return;
  }
  std::vector<std::size_t> all(n);
  for (std::size_t i = 0; i < n; ++i) all[i] = i;
  run(stage, all, std::vector<std::string>(n), std::vector<bool>(n, false));
}

void ClusterClient::refund(std::vector<wire::LimitItem> items) {
  loop_.checkThisThread();
  if (items.empty() || !map_loaded_ || closing_) return;
  auto stage = std::make_shared<Stage>();
  stage->deadline = Clock::now() + options_.connection.timeout;
  for (auto& item : items) item.op = wire::LimitOp::Refund;
  stage->items = std::move(items);
  const std::size_t n = stage->items.size();
  stage->outcomes.assign(n, std::nullopt);
  stage->failed.assign(n, std::nullopt);
  stage->redirects.assign(n, 0);
  stage->unanswered = n;
  std::vector<std::size_t> all(n);
  for (std::size_t i = 0; i < n; ++i) all[i] = i;
  run(stage, all, std::vector<std::string>(n), std::vector<bool>(n, false));
}

// Sends `indices` of the stage, each to addresses[k] (a redirection's node) or, when
// that is empty, to its slot's master: one raw call per node, all at once.
void ClusterClient::run(const std::shared_ptr<Stage>& stage, const std::vector<std::size_t>& indices,
                        const std::vector<std::string>& addresses, const std::vector<bool>& asking) {
  struct Group {
    std::vector<std::size_t> indices;
    std::vector<wire::LimitItem> items;
    std::vector<bool> asking;
  };
  std::map<std::string, Group> groups;
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const std::size_t i = indices[k];
    const std::string address =
        addresses[k].empty() ? masterOf(keySlot(options_.connection.key_prefix + stage->items[i].key)) : addresses[k];
    if (address.empty()) {
      // A slot no master serves (the cluster lost it): as unreachable as a master down.
      stage->failed[i] = limits::FallbackReason::Unreachable;
      --stage->unanswered;
      continue;
    }
    Group& g = groups[address];
    g.indices.push_back(i);
    g.items.push_back(stage->items[i]);
    g.asking.push_back(asking[k]);
  }
  for (auto& [address, g] : groups) {
    Client& connection = connectionTo(address);
    connection.callRaw(std::move(g.items), std::move(g.asking), stage->deadline,
                       [this, stage, indices = g.indices, from = address](std::vector<Client::ItemReply> replies) {
                         onReplies(stage, indices, from, std::move(replies));
                       });
  }
  if (stage->unanswered == 0) finish(stage);
}

void ClusterClient::onReplies(const std::shared_ptr<Stage>& stage, const std::vector<std::size_t>& indices,
                              const std::string& from, std::vector<Client::ItemReply> replies) {
  std::vector<std::size_t> again;
  std::vector<std::string> again_at;
  std::vector<bool> again_asking;
  const auto now = Clock::now();
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const std::size_t i = indices[k];
    Client::ItemReply reply = k < replies.size() ? std::move(replies[k]) : Client::ItemReply{};
    if (reply.outcome) {
      stage->outcomes[i] = reply.outcome;
    } else if (!reply.redirect.empty() && !closing_) {
      const auto redirect = parseRedirect(reply.redirect, from);
      if (!redirect || ++stage->redirects[i] > kMaxRedirects) {
        stage->failed[i] = limits::FallbackReason::Refused;
        {
          std::lock_guard lock(connections_mutex_);
          ++own_.errors[std::size_t(redirect ? ErrorKind::Reply : ErrorKind::Protocol)];
        }
        if (log_) {
          log_(conf::LogLevel::Warn, "redis_cluster_redirect_refused node=" + logValue(from) + " reply=" +
                                         logValue(reply.redirect) +
                                         (redirect ? " error=\"too many redirections for one item\""
                                                   : " error=\"not a redirection this client can follow\""));
        }
      } else if (now >= stage->deadline) {
        stage->failed[i] = limits::FallbackReason::Timeout;
        std::lock_guard lock(connections_mutex_);
        ++own_.errors[std::size_t(ErrorKind::Timeout)];
      } else {
        {
          std::lock_guard lock(connections_mutex_);
          ++(redirect->ask ? own_.asked : own_.moved);
        }
        if (!redirect->ask) {
          // The slot has a new owner for good: use it from now on, and learn the rest
          // of the map (a resharding seldom moves one slot alone).
          setSlot(redirect->slot, redirect->address);
          preferred_ = redirect->address;
          requestSlotMap();
        }
        again.push_back(i);
        again_at.push_back(redirect->address);
        again_asking.push_back(redirect->ask);
        continue;  // still unanswered
      }
    } else {
      stage->failed[i] = reply.failed.value_or(closing_ ? limits::FallbackReason::Closed
                                                        : limits::FallbackReason::Refused);
    }
    --stage->unanswered;
  }
  if (!again.empty()) {
    run(stage, again, again_at, again_asking);
    return;  // run() finishes the stage when it is complete
  }
  if (stage->unanswered == 0) finish(stage);
}

void ClusterClient::finish(const std::shared_ptr<Stage>& stage) {
  if (stage->finished) return;
  stage->finished = true;
  if (!stage->done) return;  // a refund: nothing to report
  if (closing_) {
    std::exchange(stage->done, nullptr)(limits::CallResult{limits::FallbackReason::Closed, {}});
    return;
  }
  // A failed item fails the stage, as on one server; the first by rule order names why.
  std::optional<limits::FallbackReason> failed;
  for (const auto& f : stage->failed) {
    if (f) {
      failed = f;
      break;
    }
  }
  Settled settled = settleCall(stage->items, stage->outcomes, failed);
  std::vector<wire::LimitItem> back;
  for (const std::size_t i : settled.give_back) back.push_back(stage->items[i]);
  std::exchange(stage->done, nullptr)(std::move(settled.result));
  refund(std::move(back));
}

void ClusterClient::wait(const std::shared_ptr<Stage>& stage) {
  waiting_.push_back(stage);
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(stage->deadline - Clock::now());
  Stage* raw = stage.get();  // the timer lives in the stage: no owning capture
  stage->wait_timer = loop_.after(std::max(left, std::chrono::milliseconds(0)), [this, raw] {
    auto it = std::find_if(waiting_.begin(), waiting_.end(), [raw](const auto& s) { return s.get() == raw; });
    if (it == waiting_.end()) return;
    auto stage = *it;
    waiting_.erase(it);
    {
      std::lock_guard lock(connections_mutex_);
      ++own_.errors[std::size_t(ErrorKind::Timeout)];
    }
    if (stage->done) std::exchange(stage->done, nullptr)(limits::CallResult{limits::FallbackReason::Timeout, {}});
  });
}

void ClusterClient::runWaiting() {
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (const auto& stage : waiting) {
    stage->wait_timer.cancel();
    if (!stage->done) continue;
    std::vector<std::size_t> all(stage->items.size());
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
    run(stage, all, std::vector<std::string>(all.size()), std::vector<bool>(all.size(), false));
  }
}

void ClusterClient::failWaiting(limits::FallbackReason reason) {
  auto waiting = std::move(waiting_);
  waiting_.clear();
  for (const auto& stage : waiting) {
    stage->wait_timer.cancel();
    if (stage->done) std::exchange(stage->done, nullptr)(limits::CallResult{reason, {}});
  }
}

bool ClusterClient::seedsAllDown() const {
  if (options_.seeds.empty()) return true;
  for (const auto& seed : options_.seeds) {
    auto it = connections_.find(joinAddress(seed.host, seed.port));
    if (it == connections_.end() || it->second->status().state != LinkState::Down) return false;
  }
  return true;
}

void ClusterClient::requestSlotMap() {
  map_wanted_ = true;
  if (!map_loading_ && !map_timer_.active()) loadSlotMap();
}

void ClusterClient::loadSlotMap() {
  if (closing_ || map_loading_) return;
  // Who to ask: the node a MOVED named (it knows its new slots first), the masters,
  // then the seeds; the first whose connection is ready.
  std::vector<std::string> candidates;
  if (!preferred_.empty()) candidates.push_back(preferred_);
  for (const auto& m : masters_) candidates.push_back(m);
  for (const auto& seed : options_.seeds) candidates.push_back(joinAddress(seed.host, seed.port));
  for (const auto& [address, client] : connections_) candidates.push_back(address);
  preferred_.clear();
  Client* ask = nullptr;
  std::string from;
  for (const auto& address : candidates) {
    auto it = connections_.find(address);
    if (it != connections_.end() && it->second->status().state == LinkState::Ready) {
      ask = it->second.get();
      from = address;
      break;
    }
  }
  if (!ask) {
    // Nobody to ask yet: the seeds are dialled (again), and the load runs when one of
    // them is ready (onConnectionsChanged).
    map_wanted_ = true;
    for (const auto& seed : options_.seeds) connectionTo(joinAddress(seed.host, seed.port));
    return;
  }
  map_wanted_ = false;
  map_loading_ = true;
  ask->query({"CLUSTER", "SLOTS"}, [this, from](const redisReply* reply, std::string error) {
    if (closing_) return;
    map_loading_ = false;
    if (reply && reply->type == REDIS_REPLY_ERROR) error = std::string(reply->str, reply->len);
    if (error.empty() && reply && applySlotMap(reply, from, &error)) {
      if (map_wanted_) {
        loadSlotMap();
      } else if (aMasterIsDown()) {
        // Its slots may move to a promoted replica once the cluster notices (after its
        // cluster-node-timeout): nothing else would tell this node, since no MOVED comes
        // from a master it cannot reach. Asked again with backoff until every master
        // of the map is reachable.
        scheduleSlotMap();
      } else {
        map_backoff_ = std::chrono::milliseconds(0);
      }
      return;
    }
    onSlotMapFailed(from + ": " + (error.empty() ? std::string("no answer") : error));
  });
}

bool ClusterClient::applySlotMap(const redisReply* reply, const std::string& from, std::string* error) {
  if (reply->type != REDIS_REPLY_ARRAY) {
    *error = "CLUSTER SLOTS gave no array";
    return false;
  }
  std::string from_host;
  std::uint16_t from_port = 0;
  splitAddress(from, &from_host, &from_port);
  std::vector<std::pair<std::pair<long long, long long>, std::string>> ranges;
  for (std::size_t e = 0; e < reply->elements; ++e) {
    const redisReply* range = reply->element[e];
    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3 || range->element[0]->type != REDIS_REPLY_INTEGER ||
        range->element[1]->type != REDIS_REPLY_INTEGER || range->element[2]->type != REDIS_REPLY_ARRAY ||
        range->element[2]->elements < 2 || range->element[2]->element[0]->type != REDIS_REPLY_STRING ||
        range->element[2]->element[1]->type != REDIS_REPLY_INTEGER) {
      *error = "CLUSTER SLOTS gave an entry this client cannot read";
      return false;
    }
    const long long first = range->element[0]->integer;
    const long long last = range->element[1]->integer;
    const redisReply* master = range->element[2];
    std::string host(master->element[0]->str, master->element[0]->len);
    const long long port = master->element[1]->integer;
    if (first < 0 || last < first || last >= kClusterSlots || port <= 0 || port > 65535) {
      *error = "CLUSTER SLOTS gave a slot range or port out of bounds";
      return false;
    }
    if (host == "?") continue;  // the master's endpoint is unknown to that node: not served for now
    if (host.empty()) host = from_host;  // "the node you asked"
    ranges.push_back({{first, last}, joinAddress(host, static_cast<std::uint16_t>(port))});
  }
  if (ranges.empty()) {
    *error = "CLUSTER SLOTS lists no served slot: the cluster has no slots assigned yet";
    return false;
  }
  std::fill(slots_.begin(), slots_.end(), -1);
  std::vector<std::string> masters;
  std::size_t covered = 0;
  for (const auto& [span, address] : ranges) {
    for (long long s = span.first; s <= span.second; ++s) setSlot(static_cast<std::uint16_t>(s), address);
    covered += std::size_t(span.second - span.first + 1);
    if (std::find(masters.begin(), masters.end(), address) == masters.end()) masters.push_back(address);
  }
  std::sort(masters.begin(), masters.end());
  bool changed = false;
  {
    std::lock_guard lock(connections_mutex_);
    changed = masters != masters_ || !map_error_.empty() || !map_loaded_;
    masters_ = masters;
    map_error_.clear();
    ++own_.slot_map_loads;
  }
  map_loaded_ = true;
  if (changed && log_) {
    log_(conf::LogLevel::Info,
         "redis_cluster_map from=" + logValue(from) + " masters=" + logValue(joined(masters)) +
             " slots_served=" + std::to_string(covered) +
             (covered < kClusterSlots ? " note=\"keys of the slots no master serves follow ratelimit.fail_mode\"" : ""));
  }
  logged_map_down_ = false;
  for (const auto& m : masters) connectionTo(m);  // dialled before the first item needs them
  runWaiting();
  retireUnused();
  return true;
}

void ClusterClient::onSlotMapFailed(const std::string& why) {
  {
    std::lock_guard lock(connections_mutex_);
    ++own_.errors[std::size_t(ErrorKind::Reply)];
    if (!map_loaded_) map_error_ = why;
  }
  if (!logged_map_down_ && log_) {
    log_(conf::LogLevel::Warn, "redis_cluster_map_failed error=" + logValue(why) +
                                   (map_loaded_ ? " action=\"keeping the slot map it had; asking again\""
                                                : " action=\"rules with store = redis follow ratelimit.fail_mode until "
                                                  "a node answers CLUSTER SLOTS; asking again\""));
  }
  logged_map_down_ = true;
  if (!map_loaded_) failWaiting(limits::FallbackReason::Unreachable);
  scheduleSlotMap();
}

void ClusterClient::scheduleSlotMap() {
  map_backoff_ = map_backoff_.count() == 0 ? options_.connection.min_backoff
                                           : std::min(options_.connection.max_backoff, map_backoff_ * 2);
  map_wanted_ = true;
  map_timer_ = loop_.after(jittered(map_backoff_), [this] {
    if (map_wanted_) loadSlotMap();
  });
}

bool ClusterClient::aMasterIsDown() const {
  for (const auto& m : masters_) {
    auto it = connections_.find(m);
    if (it != connections_.end() && it->second->status().state == LinkState::Down) return true;
  }
  return false;
}

void ClusterClient::onConnectionsChanged() {
  if (closing_) return;
  // A master whose connection went down may have been replaced by a failover.
  for (const auto& m : masters_) {
    auto it = connections_.find(m);
    if (it == connections_.end()) continue;
    const LinkState state = it->second->status().state;
    auto& last = last_states_[m];
    if (state == LinkState::Down && last != LinkState::Down) map_wanted_ = true;
    last = state;
  }
  if (map_wanted_ && !map_loading_ && !map_timer_.active()) loadSlotMap();
  if (!map_loaded_ && !waiting_.empty() && seedsAllDown()) failWaiting(limits::FallbackReason::Unreachable);
}

// Connections to nodes that are no longer masters (seeds that were replicas, a master
// whose slots all moved) close once whatever they were sent is past its deadline.
void ClusterClient::retireUnused() {
  retire_timer_ = loop_.after(2 * options_.connection.timeout + std::chrono::milliseconds(100), [this] {
    std::vector<std::unique_ptr<Client>> unused;
    {
      std::lock_guard lock(connections_mutex_);
      for (auto it = connections_.begin(); it != connections_.end();) {
        if (std::find(masters_.begin(), masters_.end(), it->first) != masters_.end()) {
          ++it;
          continue;
        }
        add(retired_, it->second->counters(), false);
        last_states_.erase(it->first);
        unused.push_back(std::move(it->second));
        it = connections_.erase(it);
      }
    }
    for (auto& client : unused) {
      client->onStateChange(nullptr);
      client.reset();
    }
  });
}

std::string ClusterClient::masterForKey(const std::string& store_key, std::string* error) const {
  const std::uint16_t slot = keySlot(options_.connection.key_prefix + store_key);
  std::string address = masterOf(slot);
  if (address.empty()) {
    *error = "no master serves slot " + std::to_string(slot) + " (or the slot map is not loaded yet)";
  }
  return address;
}

std::string ClusterClient::movedTo(const std::string& error, const std::string& from) {
  const auto redirect = closing_ ? std::nullopt : parseRedirect(error, from);
  if (!redirect || redirect->ask) return "";
  setSlot(redirect->slot, redirect->address);
  requestSlotMap();
  return redirect->address;
}

// An admin command goes to its key's master; a MOVED is followed once (the admin asks
// again if it meets another).
void ClusterClient::peek(const wire::LimitItem& item, PeekDone done) {
  loop_.checkThisThread();
  std::string error;
  const std::string address = masterForKey(item.key, &error);
  if (address.empty()) return done(std::nullopt, error);
  connectionTo(address).peek(item, [this, item, done, address](std::optional<state::Outcome> outcome,
                                                                std::string error) {
    const std::string moved = movedTo(error, address);
    if (moved.empty()) return done(outcome, std::move(error));
    connectionTo(moved).peek(item, done);
  });
}

void ClusterClient::erase(const std::string& store_key, EraseDone done) {
  loop_.checkThisThread();
  std::string error;
  const std::string address = masterForKey(store_key, &error);
  if (address.empty()) return done(0, error);
  connectionTo(address).erase(store_key, [this, store_key, done, address](long long erased, std::string error) {
    const std::string moved = movedTo(error, address);
    if (moved.empty()) return done(erased, std::move(error));
    connectionTo(moved).erase(store_key, done);
  });
}

void ClusterClient::eraseAll(const std::string& store_key_prefix, EraseDone done) {
  loop_.checkThisThread();
  // Every master holds its own slots' keys: each is swept, and the answer waits for all.
  std::vector<std::string> masters;
  {
    std::lock_guard lock(connections_mutex_);
    masters = masters_;
  }
  if (masters.empty()) {
    done(0, "no master known yet (the slot map is not loaded)");
    return;
  }
  struct Sweeps {
    std::size_t left = 0;
    long long erased = 0;
    std::string error;
    EraseDone done;
  };
  auto all = std::make_shared<Sweeps>();
  all->left = masters.size();
  all->done = std::move(done);
  for (const auto& address : masters) {
    connectionTo(address).eraseAll(store_key_prefix, [all, address](long long erased, std::string error) {
      all->erased += erased;
      if (!error.empty() && all->error.empty()) all->error = address + ": " + error;
      if (--all->left == 0) all->done(all->erased, all->error);
    });
  }
}

ClientStatus ClusterClient::status() const {
  std::lock_guard lock(connections_mutex_);
  ClientStatus s;
  s.role = "cluster";
  if (masters_.empty()) {
    std::vector<std::string> seeds;
    for (const auto& seed : options_.seeds) seeds.push_back(joinAddress(seed.host, seed.port));
    s.address = joined(seeds);
    s.state = LinkState::Connecting;
    if (!map_error_.empty()) {
      s.state = LinkState::Down;
      s.last_error = map_error_;
    } else if (seedsAllDown()) {
      s.state = LinkState::Down;
      auto it = connections_.find(seeds.front());
      s.last_error = seeds.front() + ": " + (it == connections_.end() ? "" : it->second->status().last_error);
    }
    return s;
  }
  s.address = joined(masters_);
  s.ever_ready = true;
  s.state = LinkState::Ready;
  for (const auto& m : masters_) {
    auto it = connections_.find(m);
    const ClientStatus one = it == connections_.end() ? ClientStatus{} : it->second->status();
    if (one.state == LinkState::Down) {
      if (s.state != LinkState::Down) s.last_error = m + ": " + one.last_error;
      s.state = LinkState::Down;
    } else if (one.state == LinkState::Connecting && s.state == LinkState::Ready) {
      s.state = LinkState::Connecting;
    }
  }
  return s;
}

ClientCounters ClusterClient::counters() const {
  std::lock_guard lock(connections_mutex_);
  ClientCounters c = own_;
  add(c, retired_, false);
  // `calls` are stages, counted here once; a connection counts its share of each.
  for (const auto& [address, client] : connections_) add(c, client->counters(), false);
  return c;
}

}  // namespace zetian::cluster::redis
