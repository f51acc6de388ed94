#include "cluster/node.h"

#include <event2/event.h>
#include <event2/listener.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>

#include "cluster/clock.h"
#include "cluster/discovery/multicast.h"
#include "cluster/discovery/resolver.h"
#include "cluster/events.h"
#include "cluster/incarnation.h"
#include "cluster/member_cache.h"
#include "cluster/listen_address.h"
#include "cluster/node_state.h"
#include "cluster/transport/tls.h"
#include "conf/policy.h"
#include "conf/syntax.h"

namespace zetian::cluster {

using Clock = std::chrono::steady_clock;
using membership::ClusterState;
using membership::PeerStatus;
using transport::PeerLink;

namespace {

constexpr int kGossipEveryHeartbeats = 5;
constexpr auto kLeaveFlush = std::chrono::milliseconds(500);
constexpr int kRefusalLinesPerMinute = 20;
constexpr std::size_t kProbesRemembered = 1024;

bool isWildcard(const std::string& host) { return host == "0.0.0.0" || host == "::" || host.empty(); }

// The host's own addresses (IPv4 and IPv6, loopback included), or only its
// non-loopback IPv4 ones.
std::vector<std::string> localAddresses(bool ipv4_non_loopback_only) {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* it = list; it; it = it->ifa_next) {
    const auto text = it->ifa_addr ? addressText(it->ifa_addr) : std::nullopt;
    if (!text) continue;
    if (ipv4_non_loopback_only && (it->ifa_addr->sa_family != AF_INET || text->rfind("127.", 0) == 0)) continue;
    out.push_back(*text);
  }
  freeifaddrs(list);
  return out;
}

}  // namespace

NodeOptions nodeOptionsFrom(const conf::Config& config) {
  const auto& c = config.cluster;
  NodeOptions o;
  o.node_id = config.node.id;
  o.state_dir = config.node.state_dir;
  o.bind = c.bind;
  o.advertise = c.advertise;
  o.region = c.region;
  o.secret = c.shared_secret;
  o.discovery = c.discovery;
  o.seeds = c.seeds;
  o.dns_name = c.dns_name;
  o.multicast_group = c.multicast_group;
  o.detector.heartbeat_interval = std::chrono::duration_cast<std::chrono::milliseconds>(c.heartbeat_interval);
  o.detector.failure_threshold = c.failure_threshold;
  o.detector.success_threshold = c.success_threshold;
  o.detector.failure_detection_timeout =
      std::chrono::duration_cast<std::chrono::milliseconds>(c.failure_detection_timeout);
  o.join_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(c.join_timeout);
  o.tls = c.tls;
  o.events_exec = config.events.exec;
  o.replication_factor = static_cast<std::size_t>(c.replication_factor);
  o.replication_interval = std::chrono::duration_cast<std::chrono::milliseconds>(c.replication_interval);
  o.check_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(c.check_timeout);
  raft::DriverOptions r;
  r.node_id = config.node.id;
  r.dir = (std::filesystem::path(config.node.state_dir) / "raft").string();
  r.bootstrap_expect = c.bootstrap_expect;
  r.election_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(c.election_timeout);
  r.snapshot_every = static_cast<std::size_t>(c.snapshot_every);
  r.max_voters = static_cast<std::size_t>(c.max_voters);
  r.seed_policy_text = conf::policyText(config.policy);
  o.raft = std::move(r);
  // A link with nothing received for the whole failure window plus slack is dead.
  o.link_limits.idle_timeout = std::max(
      std::chrono::milliseconds(5000),
      o.detector.heartbeat_interval * o.detector.failure_threshold + o.detector.failure_detection_timeout);
  return o;
}

ClusterNode::ClusterNode(Loop& loop, NodeOptions options, LogSink log, std::function<NodeLoad()> load)
    : loop_(loop),
      options_(std::move(options)),
      log_(std::move(log)),
      load_(std::move(load)),
      detector_(options_.detector),
      refusals_(kRefusalLinesPerMinute, std::chrono::minutes(1)),
      handshake_slots_({options_.max_pending_links, options_.max_pending_per_address}) {
  if (options_.raft) raft_ = std::make_unique<raft::RaftDriver>(loop_, *options_.raft, *this, log_);
}

ClusterNode::~ClusterNode() {
  assertLoopThread();
  // First: its pending calls are answered (Closed) while everything they touch lives.
  limits_.reset();
  if (raft_) raft_->stop();
  raft_.reset();
  for (event* e : {tick_, heartbeat_, reap_, leave_timer_}) {
    if (e) event_free(e);
  }
  accept_guard_.reset();
  if (listener_) evconnlistener_free(listener_);
  links_.clear();
  graveyard_.clear();
  multicast_.reset();
  resolver_.reset();
  hook_.reset();
}

void ClusterNode::assertLoopThread(CallSite where) const { loop_.checkThisThread(where); }

void ClusterNode::logLine(conf::LogLevel level, const std::string& line) const {
  if (log_) log_(level, line);
}

// Strangers can make us refuse as often as they like: cap those lines, per kind.
bool ClusterNode::mayLogRefusal(RefusalKind kind) {
  auto decision = refusals_.allow(kind, Clock::now());
  if (decision.summary) logLine(conf::LogLevel::Warn, *decision.summary);
  return decision.log_line;
}

bool ClusterNode::mayTrace(TraceKind kind) {
  if (!options_.trace || !options_.trace(kind)) return false;
  auto decision = trace_budget_.allow(kind, Clock::now());
  if (decision.summary) logLine(conf::LogLevel::Debug, *decision.summary);
  return decision.log_line;
}

void ClusterNode::traceSync(std::string_view direction, const std::string& peer, const wire::Message& message) {
  if (!isSyncMessage(message) || !mayTrace(TraceKind::sync)) return;
  logLine(conf::LogLevel::Debug, "cluster_sync_" + std::string(direction) +
                                     (direction == "sent" ? " to=" : " from=") + logValue(peer) + " " +
                                     describeSync(message).value_or(""));
}

membership::Millis ClusterNode::sinceStart() const {
  return std::chrono::duration_cast<membership::Millis>(Clock::now() - started_at_);
}

std::uint16_t ClusterNode::boundPort() const {
  assertLoopThread();
  if (!listener_) return 0;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(evconnlistener_get_fd(listener_), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

// The fsync blocks the loop thread once, at start-up, before any peer depends on it.
bool ClusterNode::takeIncarnation(std::string* error) {
  if (options_.state_dir.empty()) {
    *error = "node.state_dir is not set: the cluster keeps the node's incarnation there";
    return false;
  }
  std::string offset_error;
  const auto clock_offset = testClockOffsetMs(std::getenv(kTestClockOffsetVariable), &offset_error);
  if (!offset_error.empty()) {
    *error = offset_error;
    return false;
  }
  std::uint64_t wall_clock_ms = unixMillis();
  if (clock_offset) {
    const std::int64_t shifted = static_cast<std::int64_t>(wall_clock_ms) + *clock_offset;
    wall_clock_ms = shifted > 0 ? static_cast<std::uint64_t>(shifted) : 0;
    logLine(conf::LogLevel::Warn, "cluster_test_clock_offset offset_ms=" + std::to_string(*clock_offset) +
                                      " note=\"" + kTestClockOffsetVariable +
                                      " is set: a test hook that moves the clock of the incarnation; never set it "
                                      "in production\"");
  }
  const IncarnationOutcome incarnation = advanceIncarnation(options_.state_dir, wall_clock_ms);
  if (!incarnation.error.empty()) {
    *error = incarnation.error;
    return false;
  }
  if (!incarnation.warning.empty()) logLine(conf::LogLevel::Warn, incarnation.warning);
  incarnation_ = incarnation.value;
  return true;
}

bool ClusterNode::start(std::string* error) {
  assertLoopThread();
  event_base* base = loop_.base();
  // Before the listener opens, so that no handshake ever carries another value.
  if (!takeIncarnation(error)) return false;
  std::string parse_error;
  auto bind = parseListenAddress(options_.bind, &parse_error);
  if (!bind) {
    *error = "cluster.bind " + options_.bind + ": " + parse_error;
    return false;
  }
  if (options_.tls) {
    std::string tls_error;
    tls_ = transport::TlsContext::create(*options_.tls, &tls_error);
    if (!tls_) {
      *error = tls_error;
      return false;
    }
  }
  listener_ = evconnlistener_new_bind(base, nullptr, nullptr,
                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC |
                                          LEV_OPT_DISABLED,
                                      128, reinterpret_cast<const sockaddr*>(&bind->addr),
                                      static_cast<int>(bind->length));
  if (!listener_) {
    *error = "cannot listen on cluster.bind " + options_.bind + ": " +
             evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()) +
             "; is another zetian-milter running, or is the address not on this host?";
    return false;
  }
  guardListener();

  // The address peers dial; a wildcard is replaced by a real one.
  const std::string bind_host = addressText(reinterpret_cast<const sockaddr*>(&bind->addr)).value_or("");
  const std::uint16_t port = boundPort();
  const std::string advertise = options_.advertise.empty() ? options_.bind : options_.advertise;
  // Without a port, or with port 0, the advertised port is the one the listener got.
  std::string advertise_error;
  auto advertised = conf::parseHostPort(advertise, &advertise_error, {.default_port = port, .allow_port_zero = true});
  if (!advertised) {
    *error = "cluster.advertise " + advertise + ": " + advertise_error;
    return false;
  }
  std::string& adv_host = advertised->host;
  if (isWildcard(adv_host)) {
    const auto candidates = localAddresses(true);
    adv_host = candidates.empty() ? std::string() : candidates.front();
    if (adv_host.empty()) {
      *error = "cluster.bind is a wildcard address and this host has no non-loopback IPv4 address: set "
               "cluster.advertise to the address other nodes reach this one at";
      return false;
    }
    logLine(conf::LogLevel::Info, "cluster_advertise_chosen address=" + adv_host +
                                      " reason=\"cluster.advertise not set and cluster.bind is a wildcard\"");
  }
  if (advertised->port == 0) advertised->port = port;
  advertise_ = discovery::formatEndpoint({adv_host, advertised->port});
  own_endpoints_.push_back(advertise_);
  if (isWildcard(bind_host)) {
    for (const auto& address : localAddresses(false)) own_endpoints_.push_back(discovery::formatEndpoint({address, port}));
  } else {
    own_endpoints_.push_back(discovery::formatEndpoint({bind_host, port}));
  }

  hook_ = std::make_unique<EventHook>(base, options_.events_exec, log_);

  if (options_.discovery == conf::Discovery::Seeds || options_.discovery == conf::Discovery::Dns) {
    std::string resolver_error;
    resolver_ = discovery::Resolver::create(base, "", &resolver_error);
    if (!resolver_) {
      *error = "cluster discovery: " + resolver_error;
      return false;
    }
  }
  if (options_.discovery == conf::Discovery::Seeds) {
    for (const auto& text : options_.seeds) seeds_.push_back(Seed{text, {}, {}, false, {}, {}});
  } else if (options_.discovery == conf::Discovery::Dns) {
    seeds_.push_back(Seed{options_.dns_name, {}, {}, false, {}, {}});
  } else if (options_.discovery == conf::Discovery::Multicast) {
    discovery::MulticastOptions mo;
    mo.group = options_.multicast_group;
    mo.interval = std::max(options_.detector.heartbeat_interval * 2, std::chrono::milliseconds(1000));
    mo.cluster_id = options_.cluster_id;
    mo.node_id = options_.node_id;
    mo.advertise = advertise_;
    mo.secret = options_.secret;
    multicast_ = std::make_unique<discovery::MulticastDiscovery>(base, mo, log_);
    multicast_->on_peer = [this](const std::string& id, const std::string& address) {
      if (id == options_.node_id || leaving_) return;
      auto [it, inserted] = peers_.try_emplace(id);
      if (inserted || (!it->second.link && it->second.address != address)) {
        it->second.address = address;
        it->second.next_dial = Clock::now();
        rebuildMemberAddresses();
      }
    };
    std::string mc_error;
    if (!multicast_->start(&mc_error)) {
      *error = mc_error;
      return false;
    }
  }

  tick_ = event_new(base, -1, EV_PERSIST, &ClusterNode::onTickCb, this);
  heartbeat_ = event_new(base, -1, EV_PERSIST, &ClusterNode::onHeartbeatCb, this);
  reap_ = event_new(base, -1, 0, &ClusterNode::onReapCb, this);
  const auto tick_every = std::max(std::chrono::milliseconds(20), options_.detector.heartbeat_interval / 4);
  const timeval tick_tv = toTimeval(tick_every);
  const timeval hb_tv = toTimeval(options_.detector.heartbeat_interval);
  event_add(tick_, &tick_tv);
  event_add(heartbeat_, &hb_tv);

  joined_ = seeds_.empty() && options_.discovery == conf::Discovery::Seeds;
  last_state_ = currentState();
  logLine(conf::LogLevel::Info,
          "cluster_started node=" + logValue(options_.node_id) + " bind=" + logValue(options_.bind) +
              " advertise=" + logValue(advertise_) + " discovery=" + std::string(conf::discoveryName(options_.discovery)) +
              " tls=" + (tls_ ? "on" : "off") + " incarnation=" + std::to_string(incarnation_));
  if (!options_.store) options_.capabilities &= ~(wire::kCapLimiter | wire::kCapBucketSync | wire::kCapLeases);
  if (options_.raft) options_.capabilities |= wire::kCapRaft;
  if (options_.store) {
    auto now = options_.now ? options_.now : [] {
      return static_cast<state::Nanos>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
    };
    limits::ReplicationOptions replication;
    replication.self = options_.node_id;
    replication.factor = options_.replication_factor;
    replication.interval = options_.replication_interval;
    replication.changes = options_.changes;
    replication.emit = [this](const std::string& event, std::uint64_t keys) {
      emit(event, "", {{"ZETIAN_KEYS_MOVED", std::to_string(keys)}});
    };
    replication.check_timeout = options_.check_timeout;
    replication.on_unsettled = [this](std::shared_ptr<const std::vector<std::string>> peers) {
      if (settling_listener_) settling_listener_(std::move(peers));
    };
    limits_ = std::make_unique<limits::LimitService>(loop_, *this, *options_.store, std::move(now),
                                                     std::move(replication));
  }
  if (raft_ && !raft_->start(error)) return false;
  // The members known before a restart are dialed at once, as seeds are.
  std::size_t cached = 0;
  for (auto& [id, address] : readMemberCache(options_.state_dir)) {
    if (id == options_.node_id || isOwnEndpoint(address) || peers_.count(id)) continue;
    Peer& peer = peers_[id];
    peer.address = address;
    peer.next_dial = Clock::now();
    ++cached;
  }
  if (cached > 0) {
    logLine(conf::LogLevel::Info, "cluster_member_cache members=" + std::to_string(cached) +
                                      " note=\"dialing the members known before this start\"");
  }
  rebuildMemberAddresses();
  resolveSeeds();
  onTick();
  publishView();
  return true;
}

void ClusterNode::saveMemberCache() {
  if (options_.state_dir.empty()) return;
  std::vector<CachedMember> members;
  for (const auto& [id, peer] : peers_) {
    if (peer.address.empty() || peer.said_goodbye) continue;
    if (detector_.statusOf(id) == PeerStatus::left) continue;
    members.emplace_back(id, peer.address);
  }
  std::string text = formatMemberCache(members);
  if (text == member_cache_text_) return;
  std::string error;
  // A small file and a rename, no fsync: the loop thread does not wait on the disk.
  if (!writeMemberCache(options_.state_dir, text, &error)) {
    if (!member_cache_error_logged_) {
      member_cache_error_logged_ = true;
      logLine(conf::LogLevel::Warn, "cluster_member_cache_unwritable error=" + logValue(error) +
                                        " action=\"a restarted node will wait to be dialed; check node.state_dir\"");
    }
    return;
  }
  member_cache_text_ = std::move(text);
}

void ClusterNode::setSettlingListener(std::function<void(std::shared_ptr<const std::vector<std::string>>)> listener) {
  assertLoopThread();
  settling_listener_ = std::move(listener);
}

void ClusterNode::setViewListener(std::function<void(std::shared_ptr<const placement::View>)> listener) {
  assertLoopThread();
  view_listener_ = std::move(listener);
  view_.reset();
}

std::optional<std::uint64_t> ClusterNode::peerCapabilities(const std::string& peer) const {
  assertLoopThread();
  auto it = peers_.find(peer);
  if (it == peers_.end() || !it->second.link || !it->second.link->link->established()) return std::nullopt;
  return it->second.link->link->peer().capabilities;
}

bool ClusterNode::linkComing(const std::string& peer) const {
  assertLoopThread();
  auto it = peers_.find(peer);
  return it != peers_.end() && !it->second.link && it->second.link_coming;
}

std::vector<std::string> ClusterNode::raftPeers() const {
  std::vector<std::string> out;
  for (const auto& [id, peer] : peers_) {
    if (peer.link && (peer.link->link->peer().capabilities & wire::kCapRaft)) out.push_back(id);
  }
  return out;
}

bool ClusterNode::sendRaft(const std::string& peer, const wire::Message& message) {
  assertLoopThread();
  auto it = peers_.find(peer);
  if (it == peers_.end() || !it->second.link || !(it->second.link->link->peer().capabilities & wire::kCapRaft)) {
    return false;
  }
  const bool sent = it->second.link->link->send(message, PeerLink::Priority::Control);
  if (sent) traceSync("sent", peer, message);
  return sent;
}

void ClusterNode::raftEvent(const std::string& name, std::vector<std::pair<std::string, std::string>> extra) {
  emit(name, "", std::move(extra));
}

bool ClusterNode::sendToPeer(const std::string& peer, const wire::Message& message) {
  assertLoopThread();
  auto it = peers_.find(peer);
  if (it == peers_.end() || !it->second.link) return false;
  const bool sent = it->second.link->link->send(message, PeerLink::Priority::Control);
  if (sent) traceSync("sent", peer, message);
  return sent;
}

void ClusterNode::publishView() {
  if (!view_listener_ && !limits_) return;
  auto view = std::make_shared<placement::View>();
  view->self = options_.node_id;
  // Candidates are the peers this node can ask (an established link) and that are
  // alive and not draining: joining ones too, so that a newcomer and the others agree
  // on the owners as soon as the links are up, not success_threshold heartbeats later.
  // Without a link a peer is no candidate: its keys go to their next member at once
  // (which holds their replicated state) instead of every check falling back until the
  // failure detector has made up its mind.
  std::size_t known = 1;      // members not left, this node included
  std::size_t reachable = 1;  // of those, this node and the peers it has a link to
  std::vector<std::string> in_detector;
  for (const auto& pv : detector_.peers()) {
    in_detector.push_back(pv.peer);
    if (pv.status == PeerStatus::left) continue;
    ++known;
    auto it = peers_.find(pv.peer);
    if (pv.status == PeerStatus::failed) continue;
    const bool linked = it != peers_.end() && it->second.link && it->second.link->link->established();
    // A peer whose link is being replaced (crossing dials, see dropLink) keeps its place.
    const bool coming = it != peers_.end() && !it->second.link && it->second.link_coming;
    if (!linked && !coming) {
      if (pv.status != PeerStatus::maintenance) view->pending.push_back(pv.peer);
      continue;
    }
    ++reachable;
    if (pv.status == PeerStatus::maintenance) continue;
    view->members.push_back(pv.peer);
    if (it->second.region == options_.region) view->region_members.push_back(pv.peer);
    if (linked && (it->second.link->link->peer().capabilities & wire::kCapLeases)) {
      view->lease_granters.push_back(pv.peer);
    }
  }
  // This node owns keys once it has a peer to agree with (or runs alone after
  // join_timeout), and not while draining or leaving.
  if ((joined_ || reachable > 1) && !maintenance_ && !leaving_) {
    view->members.push_back(options_.node_id);
    view->region_members.push_back(options_.node_id);
  }
  std::sort(view->members.begin(), view->members.end());
  std::sort(view->region_members.begin(), view->region_members.end());
  std::sort(view->lease_granters.begin(), view->lease_granters.end());
  // Members only heard of (a peer's member list), or linked but not heard from yet,
  // are pending too.
  std::sort(in_detector.begin(), in_detector.end());
  for (const auto& [id, peer] : peers_) {
    if (peer.said_goodbye) continue;
    if (std::binary_search(in_detector.begin(), in_detector.end(), id)) continue;
    view->pending.push_back(id);
  }
  std::sort(view->pending.begin(), view->pending.end());
  // A majority of the known members, this node included, must be reachable: the
  // minority side of a partition has no quorum, and its cluster rules follow fail_mode.
  view->quorum = 2 * reachable > known;
  view->forming = !joined_ && reachable == 1 && !maintenance_ && !leaving_;
  if (view_ && view_->members == view->members && view_->region_members == view->region_members &&
      view_->quorum == view->quorum && view_->lease_granters == view->lease_granters &&
      view_->pending == view->pending && view_->forming == view->forming) {
    return;
  }
  view->epoch = view_ ? view_->epoch + 1 : 1;
  view_ = view;
  // The hand-offs to await first (limits/service.h, beforeView), then the checking
  // threads: from now on they charge the new owners, and the walk that follows (which
  // first takes every charge made so far) misses none.
  if (limits_) limits_->beforeView(*view_);
  if (view_listener_) view_listener_(view_);
  if (limits_) limits_->onView(view_);
}

void ClusterNode::onLinkMessage(PeerLink& pl, const wire::Message& message) {
  Link* link = findLink(pl);
  if (!link) return;
  auto it = peers_.find(link->peer_id);
  if (it == peers_.end() || it->second.link != link) return;  // a losing duplicate: ignore
  Peer& peer = it->second;
  traceSync("received", link->peer_id, message);
  std::visit(
      [&](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, wire::Heartbeat>) {
          handleHeartbeat(peer, m);
        } else if constexpr (std::is_same_v<T, wire::Goodbye>) {
          peer.said_goodbye = true;
          logLine(conf::LogLevel::Info, "cluster_member_leaving id=" + logValue(link->peer_id) +
                                            " reason=" + logValue(m.reason));
          applyTransitions(detector_.onGoodbye(link->peer_id, peer.incarnation, sinceStart()));
        } else if constexpr (std::is_same_v<T, wire::MemberList>) {
          handleMemberList(m);
        } else if constexpr (std::is_same_v<T, wire::ProbeRequest>) {
          handleProbeRequest(*link, m);
        } else if constexpr (std::is_same_v<T, wire::ProbeAck>) {
          auto probe = probes_.find(m.request_id);
          if (probe != probes_.end() && probe->second == m.target && m.alive) {
            detector_.onIndirectAck(m.target, sinceStart());
          }
        } else if constexpr (std::is_same_v<T, wire::LimitRequest>) {
          if (limits_) limits_->onRequest(link->peer_id, m);
        } else if constexpr (std::is_same_v<T, wire::LimitReply>) {
          if (limits_) limits_->onReply(link->peer_id, m);
        } else if constexpr (std::is_same_v<T, wire::BucketSync>) {
          if (limits_) limits_->onSync(link->peer_id, m);
        } else if constexpr (std::is_same_v<T, wire::RaftFrame>) {
          if (raft_ && (pl.peer().capabilities & wire::kCapRaft)) raft_->onFrame(link->peer_id, m);
        } else if constexpr (std::is_same_v<T, wire::RaftControl>) {
          if (raft_ && (pl.peer().capabilities & wire::kCapRaft)) raft_->onControl(link->peer_id, m);
        }
      },
      message);
}

void ClusterNode::handleHeartbeat(Peer& peer, const wire::Heartbeat& heartbeat) {
  const std::string& id = peer.link->peer_id;
  peer.last_heard = Clock::now();
  peer.last_seen_unix_ms = static_cast<std::int64_t>(unixMillis());
  peer.load.sessions = heartbeat.sessions;
  peer.load.messages_per_s = heartbeat.messages_per_s_milli / 1000.0;
  if (peer.link->link->peer().capabilities & wire::kCapLimiter) peer.keys_owned = heartbeat.keys_owned;
  applyTransitions(detector_.onHeartbeat(id, peer.incarnation, sinceStart()));
  if (mayTrace(TraceKind::heartbeats)) {
    logLine(conf::LogLevel::Debug, "cluster_heartbeat_received from=" + logValue(id) + " seq=" +
                                       std::to_string(heartbeat.sequence) + " sessions=" +
                                       std::to_string(heartbeat.sessions) + " keys_owned=" +
                                       std::to_string(heartbeat.keys_owned) + " maintenance=" +
                                       ((heartbeat.flags & wire::kHeartbeatMaintenance) ? "true" : "false"));
  }
  const bool draining = heartbeat.flags & wire::kHeartbeatMaintenance;
  if (draining != (detector_.statusOf(id) == PeerStatus::maintenance)) {
    applyTransitions(detector_.onMaintenance(id, draining, sinceStart()));
  }
}

void ClusterNode::setMaintenance(bool enabled) {
  assertLoopThread();
  if (maintenance_ == enabled) return;
  maintenance_ = enabled;
  // Tell the peers now rather than at the next heartbeat.
  onHeartbeat();
  publishView();
}

void ClusterNode::handleMemberList(const wire::MemberList& list) {
  bool addresses_changed = false;
  for (const auto& m : list.members) {
    if (m.node_id == options_.node_id || m.address.empty()) continue;
    auto it = peers_.find(m.node_id);
    if (it == peers_.end()) {
      if (m.status == wire::NodeStatus::Left) continue;
      Peer& peer = peers_[m.node_id];
      peer.address = m.address;
      peer.region = m.region;
      peer.incarnation = m.incarnation;
      peer.next_dial = Clock::now();
      addresses_changed = true;
      continue;
    }
    Peer& peer = it->second;
    if (!peer.link && m.incarnation > peer.incarnation && m.status != wire::NodeStatus::Left) {
      // Restarted elsewhere, perhaps at a new address: dial there.
      addresses_changed = addresses_changed || peer.address != m.address;
      peer.address = m.address;
      peer.said_goodbye = false;
      peer.next_dial = Clock::now();
      peer.backoff = std::chrono::milliseconds(0);
    }
  }
  if (addresses_changed) {
    rebuildMemberAddresses();
    publishView();  // new members are pending in the view (a new owner waits for their hand-off)
  }
}

void ClusterNode::handleProbeRequest(Link& link, const wire::ProbeRequest& request) {
  bool alive = false;
  if (auto it = peers_.find(request.target); it != peers_.end() && it->second.link) {
    alive = Clock::now() - it->second.last_heard <=
            options_.detector.heartbeat_interval * options_.detector.failure_threshold;
  }
  link.link->send(wire::ProbeAck{request.request_id, request.target, alive});
}

// ---- Timers ----------------------------------------------------------------------------

void ClusterNode::onTickCb(int, short, void* arg) { static_cast<ClusterNode*>(arg)->onTick(); }
void ClusterNode::onHeartbeatCb(int, short, void* arg) { static_cast<ClusterNode*>(arg)->onHeartbeat(); }

void ClusterNode::onTick() {
  if (leaving_) return;
  const auto now = Clock::now();
  for (const auto& summary : trace_budget_.flush(now)) logLine(conf::LogLevel::Debug, summary);
  auto result = detector_.tick(sinceStart());
  applyTransitions(result.transitions);
  for (const auto& target : result.probe_requests) {
    const std::uint64_t id = next_probe_id_++;
    probes_[id] = target;
    for (auto& [peer_id, peer] : peers_) {
      if (peer_id == target || !peer.link) continue;
      peer.link->link->send(wire::ProbeRequest{id, target});
    }
  }
  // Only the latest requests are remembered: a late answer to an older one is ignored.
  while (probes_.size() > kProbesRemembered) probes_.erase(probes_.begin());
  if (!joined_ && now - started_at_ > options_.join_timeout) {
    joined_ = true;
    logLine(conf::LogLevel::Warn, "cluster_join_timeout after=" +
                                      std::to_string(options_.join_timeout.count() / 1000) +
                                      "s action=\"running alone until a member is reachable; check cluster.seeds, "
                                      "the shared secret and the firewall\"");
    applyTransitions({});
  }
  for (const auto& line : refusals_.flush(now)) logLine(conf::LogLevel::Warn, line);
  resolveSeeds();
  maintainDials(now);
}

void ClusterNode::onHeartbeat() {
  if (leaving_) return;
  const NodeLoad load = load_ ? load_() : NodeLoad{};
  wire::Heartbeat hb{++heartbeat_sequence_, unixMillis(), load.sessions,
                     static_cast<std::uint32_t>(std::min(4e9, load.messages_per_s * 1000.0)),
                     maintenance_ ? wire::kHeartbeatMaintenance : std::uint8_t{0}};
  if (limits_) hb.keys_owned = static_cast<std::uint32_t>(std::min<std::uint64_t>(limits_->keysOwned(), 0xffffffffu));
  for (auto& [id, peer] : peers_) {
    if (peer.link && peer.link->link->send(hb) && mayTrace(TraceKind::heartbeats)) {
      logLine(conf::LogLevel::Debug, "cluster_heartbeat_sent to=" + logValue(id) + " seq=" + std::to_string(hb.sequence) +
                                         " sessions=" + std::to_string(hb.sessions) +
                                         " keys_owned=" + std::to_string(hb.keys_owned));
    }
  }
  if (++heartbeats_sent_ % kGossipEveryHeartbeats == 0) gossip();
}

void ClusterNode::gossip() {
  const wire::MemberList list = memberList();
  for (auto& [id, peer] : peers_) {
    if (peer.link) peer.link->link->send(list, PeerLink::Priority::Bulk);
  }
}

wire::MemberList ClusterNode::memberList() const {
  wire::MemberList list;
  list.members.push_back(wire::Member{options_.node_id, advertise_, options_.region,
                                      maintenance_ ? wire::NodeStatus::Maintenance : wire::NodeStatus::Active,
                                      incarnation_});
  for (const auto& [id, peer] : peers_) {
    if (list.members.size() >= wire::kMaxMembers) break;
    auto status = detector_.statusOf(id);
    if (!status || peer.address.empty()) continue;
    list.members.push_back(wire::Member{id, peer.address, peer.region,
                                        static_cast<wire::NodeStatus>(static_cast<int>(*status)), peer.incarnation});
  }
  return list;
}

// ---- Membership events -------------------------------------------------------------------

void ClusterNode::applyTransitions(const std::vector<membership::Transition>& transitions) {
  for (const auto& t : transitions) {
    auto it = peers_.find(t.peer);
    if (it == peers_.end()) continue;
    Peer& peer = it->second;
    const std::string from = t.from ? std::string(membership::statusName(*t.from)) : "unknown";
    const std::string to(membership::statusName(t.to));
    const conf::LogLevel level =
        (t.to == PeerStatus::failed || t.to == PeerStatus::suspect) ? conf::LogLevel::Warn : conf::LogLevel::Info;
    logLine(level, "cluster_member id=" + logValue(t.peer) + " address=" + logValue(peer.address) + " from=" + from +
                       " to=" + to);
    switch (t.to) {
      case PeerStatus::active:
        joined_ = true;
        if (peer.was_failed) {
          peer.was_failed = false;
          emit("node_recovered", t.peer);
        } else if (t.from == PeerStatus::joining || !t.from) {
          emit("node_joined", t.peer);
        }
        break;
      case PeerStatus::failed:
        peer.was_failed = true;
        emit("node_failed", t.peer);
        break;
      case PeerStatus::left:
        peer.was_failed = false;
        emit("node_left", t.peer);
        break;
      default:
        break;
    }
  }
  const ClusterState state = currentState();
  if (state != last_state_) {
    logLine(state == ClusterState::healthy ? conf::LogLevel::Info : conf::LogLevel::Warn,
            "cluster_state from=" + std::string(membership::clusterStateName(last_state_)) +
                " to=" + std::string(membership::clusterStateName(state)) + " size=" + std::to_string(size()));
    last_state_ = state;
    emit("cluster_state_changed", "");
  }
  if (!transitions.empty()) {
    gossip();
    saveMemberCache();
  }
  publishView();
}

void ClusterNode::emit(const std::string& name, const std::string& node_id,
                       std::vector<std::pair<std::string, std::string>> extra) {
  ++counters_.events[name];
  ClusterEvent event;
  event.name = name;
  event.env = {{"ZETIAN_SELF_ID", options_.node_id},
               {"ZETIAN_CLUSTER_STATE", std::string(membership::clusterStateName(currentState()))},
               {"ZETIAN_CLUSTER_SIZE", std::to_string(size())},
               {"ZETIAN_TIME", std::to_string(unixMillis() / 1000)}};
  if (!node_id.empty()) {
    const Peer& peer = peers_[node_id];
    auto status = detector_.statusOf(node_id);
    event.env.push_back({"ZETIAN_NODE_ID", node_id});
    event.env.push_back({"ZETIAN_NODE_ADDRESS", peer.address});
    event.env.push_back({"ZETIAN_NODE_REGION", peer.region});
    event.env.push_back({"ZETIAN_NODE_STATUS", status ? std::string(membership::statusName(*status)) : ""});
  }
  std::string details;
  for (auto& [key, value] : extra) {
    // ZETIAN_KEYS_MOVED -> keys_moved=N in the log line.
    std::string field = key.substr(key.rfind("ZETIAN_", 0) == 0 ? 7 : 0);
    for (char& c : field) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    details += " " + field + "=" + logValue(value);
    event.env.push_back({std::move(key), std::move(value)});
  }
  logLine(conf::LogLevel::Info, "cluster_event event=" + name + (node_id.empty() ? "" : " node=" + logValue(node_id)) +
                                    details +
                                    " cluster_state=" + std::string(membership::clusterStateName(currentState())));
  if (hook_) hook_->emit(std::move(event));
}

// ---- Leaving and views ---------------------------------------------------------------------

void ClusterNode::leave(std::function<void()> done) {
  assertLoopThread();
  if (leaving_) {
    if (done) done();
    return;
  }
  leaving_ = true;
  // This node owns nothing from now on: the view without it hands every key it owns,
  // its latest charges included, to the new owners before the goodbyes go out.
  publishView();
  if (limits_) limits_->finishWalk();
  limits_.reset();
  if (raft_) raft_->stop();
  for (event* e : {tick_, heartbeat_}) {
    if (e) event_del(e);
  }
  if (listener_) {
    if (accept_guard_) {
      // Its counts outlive it: a counter must not go back to zero.
      counters_.accept_errors += accept_guard_->errors();
      counters_.connections_shed += accept_guard_->shed();
    }
    accept_guard_.reset();
    evconnlistener_free(listener_);
    listener_ = nullptr;
  }
  std::size_t told = 0;
  for (auto& [id, peer] : peers_) {
    if (peer.link && peer.link->link->send(wire::Goodbye{"shutdown"})) ++told;
  }
  for (auto& l : links_) l->link->closeAfterFlush(kLeaveFlush);
  logLine(conf::LogLevel::Info, "cluster_leaving told=" + std::to_string(told));
  // Poll until every goodbye is written (or kLeaveFlush passed), then report.
  leave_done_ = std::move(done);
  leave_deadline_ = Clock::now() + kLeaveFlush + std::chrono::milliseconds(50);
  leave_timer_ = event_new(loop_.base(), -1, EV_PERSIST, &ClusterNode::onLeaveTimerCb, this);
  const timeval every = toTimeval(std::chrono::milliseconds(10));
  event_add(leave_timer_, &every);
}

void ClusterNode::onLeaveTimerCb(int, short, void* arg) {
  auto* self = static_cast<ClusterNode*>(arg);
  const bool all_closed = std::all_of(self->links_.begin(), self->links_.end(),
                                      [](const auto& l) { return l->link->closed(); });
  if (!all_closed && Clock::now() < self->leave_deadline_) return;
  for (auto& l : self->links_) l->link->close();
  event_del(self->leave_timer_);
  // `done` may destroy this node: nothing of it is touched afterwards.
  auto done = std::move(self->leave_done_);
  if (done) done();
}

std::vector<MemberInfo> ClusterNode::members() const {
  assertLoopThread();
  std::vector<MemberInfo> out;
  const NodeLoad own = load_ ? load_() : NodeLoad{};
  out.push_back(MemberInfo{options_.node_id, advertise_, options_.region,
                           maintenance_ ? "maintenance" : joined_ ? "active" : "joining", true,
                           static_cast<std::int64_t>(unixMillis()), own, incarnation_,
                           limits_ ? std::optional<std::uint64_t>(limits_->keysOwned()) : std::nullopt});
  for (const auto& view : detector_.peers()) {
    auto it = peers_.find(view.peer);
    if (it == peers_.end()) continue;
    const Peer& peer = it->second;
    out.push_back(MemberInfo{view.peer, peer.address, peer.region, std::string(membership::statusName(view.status)),
                             false, peer.last_seen_unix_ms, peer.load, view.incarnation,
                             peer.keys_owned ? std::optional<std::uint64_t>(*peer.keys_owned) : std::nullopt});
  }
  return out;
}

ClusterState ClusterNode::state() const {
  assertLoopThread();
  return currentState();
}

// Until this node has joined (a peer became active, or join_timeout passed) the
// cluster is still forming from where it stands, whatever the first links suggest.
ClusterState ClusterNode::currentState() const {
  return joined_ ? detector_.clusterState() : ClusterState::forming;
}

std::size_t ClusterNode::size() const {
  std::size_t n = 1;
  for (const auto& view : detector_.peers()) {
    if (view.status != PeerStatus::left) ++n;
  }
  return n;
}

ClusterCounters ClusterNode::counters() const {
  assertLoopThread();
  ClusterCounters c = counters_;
  for (const auto& l : links_) {
    c.bytes_sent += l->link->bytesSent();
    c.bytes_received += l->link->bytesReceived();
  }
  if (accept_guard_) {
    c.accept_errors += accept_guard_->errors();
    c.connections_shed += accept_guard_->shed();
  }
  return c;
}

}  // namespace zetian::cluster
