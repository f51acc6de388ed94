#include "cluster/node.h"

#include <arpa/inet.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <utility>

#include "cluster/discovery/multicast.h"
#include "cluster/discovery/resolver.h"
#include "cluster/events.h"
#include "cluster/listen_address.h"
#include "cluster/transport/tls.h"

namespace zetian::cluster {

using Clock = std::chrono::steady_clock;
using membership::ClusterState;
using membership::PeerStatus;
using transport::PeerLink;

namespace {

constexpr int kGossipEveryHeartbeats = 5;
constexpr auto kMinBackoff = std::chrono::milliseconds(200);
constexpr auto kMaxBackoff = std::chrono::milliseconds(5000);
constexpr auto kSeedResolveInterval = std::chrono::seconds(30);
constexpr auto kLeaveFlush = std::chrono::milliseconds(500);
constexpr int kRefusalLinesPerMinute = 20;

std::uint64_t nowUnixMs() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

timeval toTimeval(std::chrono::milliseconds d) {
  return timeval{static_cast<time_t>(d.count() / 1000),
                 static_cast<suseconds_t>((d.count() % 1000) * 1000)};
}

std::string formatSockaddr(const sockaddr* addr) {
  char host[INET6_ADDRSTRLEN] = "?";
  std::uint16_t port = 0;
  if (addr->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    port = ntohs(in->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (addr->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    port = ntohs(in6->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "unknown";
}

// "HOST:PORT" -> (host without brackets, port text).
std::pair<std::string, std::string> splitEndpoint(const std::string& endpoint) {
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos) return {endpoint, ""};
  std::string host = endpoint.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return {host, endpoint.substr(colon + 1)};
}

bool isWildcard(const std::string& host) { return host == "0.0.0.0" || host == "::" || host.empty(); }

// The host's own addresses (IPv4 and IPv6), loopback included.
std::vector<std::string> localAddresses() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return out;
  for (ifaddrs* it = list; it; it = it->ifa_next) {
    if (!it->ifa_addr) continue;
    char host[INET6_ADDRSTRLEN];
    if (it->ifa_addr->sa_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(it->ifa_addr)->sin_addr, host, sizeof host);
      out.emplace_back(host);
    } else if (it->ifa_addr->sa_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(it->ifa_addr)->sin6_addr, host, sizeof host);
      out.emplace_back(host);
    }
  }
  freeifaddrs(list);
  return out;
}

std::string firstNonLoopbackIpv4() {
  std::string found;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return found;
  for (ifaddrs* it = list; it && found.empty(); it = it->ifa_next) {
    if (!it->ifa_addr || it->ifa_addr->sa_family != AF_INET) continue;
    const auto* in = reinterpret_cast<sockaddr_in*>(it->ifa_addr);
    if ((ntohl(in->sin_addr.s_addr) >> 24) == 127) continue;
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    found = host;
  }
  freeifaddrs(list);
  return found;
}

std::string joinEndpoint(const std::string& host, const std::string& port) {
  return host.find(':') != std::string::npos ? "[" + host + "]:" + port : host + ":" + port;
}

std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> factor(0.8, 1.2);
  return std::chrono::milliseconds(static_cast<std::int64_t>(double(base.count()) * factor(rng)));
}

}  // namespace

// ---- State kept per link, per peer, per seed -------------------------------------------

struct ClusterNode::Link {
  std::unique_ptr<PeerLink> link;
  std::string dialed;   // the endpoint we dialed ("" for an accepted link)
  std::string peer_id;  // once established
};

struct ClusterNode::Peer {
  std::string address;
  std::string region;
  std::uint64_t incarnation = 0;
  Link* link = nullptr;  // the chosen established link, if any
  Clock::time_point last_heard{};
  std::int64_t last_seen_unix_ms = 0;
  NodeLoad load;
  bool in_view = false;       // the failure detector knows it (it heartbeated to us)
  bool said_goodbye = false;  // do not redial this incarnation
  bool was_failed = false;    // for node_recovered
  bool ever_active = false;
  // Dialing
  bool dialing = false;
  Clock::time_point next_dial{};
  std::chrono::milliseconds backoff{0};
};

struct ClusterNode::Seed {
  std::string text;  // as configured
  std::vector<std::string> endpoints;  // resolved, numeric
  Clock::time_point next_resolve{};
  bool resolving = false;
  std::map<std::string, Clock::time_point> next_dial;  // per endpoint
  std::map<std::string, std::chrono::milliseconds> backoff;
};

NodeOptions nodeOptionsFrom(const conf::Config& config) {
  const auto& c = config.cluster;
  NodeOptions o;
  o.node_id = config.node.id;
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
      incarnation_(nowUnixMs()),
      detector_(options_.detector) {}

ClusterNode::~ClusterNode() {
  assertLoopThread();
  for (event* e : {tick_, heartbeat_, reap_}) {
    if (e) event_free(e);
  }
  if (listener_) evconnlistener_free(listener_);
  links_.clear();
  graveyard_.clear();
  multicast_.reset();
  resolver_.reset();
  hook_.reset();
}

void ClusterNode::assertLoopThread() const {
  if (!loop_.isThisThread()) {
    std::fputs("zetian: ClusterNode used off the cluster thread\n", stderr);
    std::abort();
  }
}

void ClusterNode::logLine(conf::LogLevel level, const std::string& line) const {
  if (log_) log_(level, line);
}

// Strangers can make us refuse as often as they like: cap those lines.
void ClusterNode::logRefusal(const std::string& line) {
  const auto now = Clock::now();
  if (now - refusal_window_start_ > std::chrono::minutes(1)) {
    if (refusals_suppressed_ > 0) {
      logLine(conf::LogLevel::Warn, "cluster_refusals_suppressed count=" + std::to_string(refusals_suppressed_));
    }
    refusal_window_start_ = now;
    refusals_logged_in_window_ = 0;
    refusals_suppressed_ = 0;
  }
  if (refusals_logged_in_window_ < kRefusalLinesPerMinute) {
    ++refusals_logged_in_window_;
    logLine(conf::LogLevel::Warn, line);
  } else {
    ++refusals_suppressed_;
  }
}

membership::Millis ClusterNode::sinceStart() const {
  return std::chrono::duration_cast<membership::Millis>(Clock::now() - started_at_);
}

std::uint16_t ClusterNode::boundPort() const {
  if (!listener_) return 0;
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(evconnlistener_get_fd(listener_), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return 0;
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

bool ClusterNode::start(std::string* error) {
  assertLoopThread();
  event_base* base = loop_.base();
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
  listener_ = evconnlistener_new_bind(base, &ClusterNode::onAcceptCb, this,
                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                      128, reinterpret_cast<const sockaddr*>(&bind->addr),
                                      static_cast<int>(bind->length));
  if (!listener_) {
    *error = "cannot listen on cluster.bind " + options_.bind + ": " +
             evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()) +
             "; is another zetian-milter running, or is the address not on this host?";
    return false;
  }

  // The address peers dial; a wildcard is replaced by a real one.
  const auto [bind_host, bind_port] = splitEndpoint(options_.bind);
  const std::string port = std::to_string(boundPort());
  std::string advertise = options_.advertise.empty() ? options_.bind : options_.advertise;
  auto [adv_host, adv_port] = splitEndpoint(advertise);
  if (isWildcard(adv_host)) {
    adv_host = firstNonLoopbackIpv4();
    if (adv_host.empty()) {
      *error = "cluster.bind is a wildcard address and this host has no non-loopback IPv4 address: set "
               "cluster.advertise to the address other nodes reach this one at";
      return false;
    }
    logLine(conf::LogLevel::Info, "cluster_advertise_chosen address=" + adv_host +
                                      " reason=\"cluster.advertise not set and cluster.bind is a wildcard\"");
  }
  if (adv_port == "0" || adv_port.empty()) adv_port = port;
  advertise_ = joinEndpoint(adv_host, adv_port);
  own_endpoints_.push_back(advertise_);
  if (isWildcard(bind_host)) {
    for (const auto& address : localAddresses()) own_endpoints_.push_back(joinEndpoint(address, port));
  } else {
    own_endpoints_.push_back(joinEndpoint(bind_host, port));
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
  timeval tick_tv = toTimeval(tick_every);
  timeval hb_tv = toTimeval(options_.detector.heartbeat_interval);
  event_add(tick_, &tick_tv);
  event_add(heartbeat_, &hb_tv);

  joined_ = seeds_.empty() && options_.discovery == conf::Discovery::Seeds;
  last_state_ = currentState();
  logLine(conf::LogLevel::Info,
          "cluster_started node=" + logValue(options_.node_id) + " bind=" + logValue(options_.bind) +
              " advertise=" + logValue(advertise_) + " discovery=" + std::string(conf::discoveryName(options_.discovery)) +
              " tls=" + (tls_ ? "on" : "off") + " incarnation=" + std::to_string(incarnation_));
  resolveSeeds();
  onTick();
  return true;
}

// ---- Discovery and dialing -----------------------------------------------------------

void ClusterNode::resolveSeeds() {
  if (!resolver_) return;
  const auto now = Clock::now();
  for (std::size_t i = 0; i < seeds_.size(); ++i) {
    Seed& seed = seeds_[i];
    if (seed.resolving || now < seed.next_resolve) continue;
    seed.resolving = true;
    auto done = [this, i](std::vector<discovery::Endpoint> endpoints, std::string error) {
      Seed& s = seeds_[i];
      s.resolving = false;
      if (!error.empty()) {
        logLine(conf::LogLevel::Warn, "cluster_discovery_failed name=" + logValue(s.text) + " error=" + logValue(error));
        s.next_resolve = Clock::now() + std::chrono::seconds(5);
        return;
      }
      std::vector<std::string> resolved;
      for (const auto& e : endpoints) resolved.push_back(discovery::formatEndpoint(e));
      if (resolved != s.endpoints) {
        logLine(conf::LogLevel::Debug, "cluster_discovery name=" + logValue(s.text) + " endpoints=" +
                                           std::to_string(resolved.size()));
      }
      s.endpoints = std::move(resolved);
      s.next_resolve = Clock::now() + kSeedResolveInterval;
    };
    const std::uint16_t default_port = static_cast<std::uint16_t>(std::atoi(splitEndpoint(advertise_).second.c_str()));
    if (options_.discovery == conf::Discovery::Dns) {
      resolver_->resolveService(seed.text, default_port, done);
    } else {
      std::string host, error;
      std::uint16_t port = 0;
      if (!discovery::splitHostPort(seed.text, default_port, &host, &port, &error)) {
        seed.resolving = false;
        seed.next_resolve = now + std::chrono::hours(24 * 365);
        logLine(conf::LogLevel::Error, "cluster_seed_invalid seed=" + logValue(seed.text) + " error=" + logValue(error));
        continue;
      }
      resolver_->resolveHost(host, port, done);
    }
  }
}

bool ClusterNode::isOwnEndpoint(const std::string& endpoint) const {
  return std::find(own_endpoints_.begin(), own_endpoints_.end(), endpoint) != own_endpoints_.end();
}

void ClusterNode::maintainDials(Clock::time_point now) {
  // Known peers without a link: redial with jittered exponential backoff.
  for (auto& [id, peer] : peers_) {
    if (peer.link || peer.dialing || peer.said_goodbye || peer.address.empty()) continue;
    if (now < peer.next_dial) continue;
    peer.backoff = peer.backoff.count() == 0 ? kMinBackoff : std::min(kMaxBackoff, peer.backoff * 2);
    peer.next_dial = now + jittered(peer.backoff);
    peer.dialing = true;
    dial(peer.address, nullptr, id);
  }
  // Seeds no established peer or live link already covers.
  for (auto& seed : seeds_) {
    for (const auto& endpoint : seed.endpoints) {
      if (isOwnEndpoint(endpoint)) continue;
      bool covered = false;
      for (const auto& [id, peer] : peers_) {
        if (peer.link && peer.address == endpoint) covered = true;
      }
      for (const auto& l : links_) {
        if (l->dialed == endpoint && !l->link->closed()) covered = true;
      }
      if (covered) continue;
      auto& next = seed.next_dial[endpoint];
      if (now < next) continue;
      auto& backoff = seed.backoff[endpoint];
      backoff = backoff.count() == 0 ? kMinBackoff : std::min(kMaxBackoff, backoff * 2);
      next = now + jittered(backoff);
      dial(endpoint, &seed, "");
    }
  }
}

void ClusterNode::dial(const std::string& endpoint, Seed*, const std::string& expected_id) {
  std::string error;
  auto address = parseListenAddress(endpoint, &error);
  auto giveUp = [&](const std::string& why) {
    logLine(conf::LogLevel::Debug, "cluster_dial_failed address=" + logValue(endpoint) + " error=" + logValue(why));
    if (!expected_id.empty()) {
      if (auto it = peers_.find(expected_id); it != peers_.end()) it->second.dialing = false;
    }
  };
  if (!address) return giveUp(error);
  event_base* base = loop_.base();
  bufferevent* bev = tls_ ? tls_->wrapConnecting(base, -1)
                          : bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
  if (!bev) return giveUp("cannot create a connection");
  if (bufferevent_socket_connect(bev, reinterpret_cast<const sockaddr*>(&address->addr),
                                 static_cast<int>(address->length)) != 0) {
    bufferevent_free(bev);
    return giveUp(evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
  }
  if (int fd = bufferevent_getfd(bev); fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  auto link = std::make_unique<Link>();
  link->dialed = endpoint;
  link->peer_id = expected_id;  // a hint until the handshake says who it really is
  wire::NodeIdentity self{options_.node_id, advertise_, options_.cluster_id, options_.region, incarnation_};
  link->link = std::make_unique<PeerLink>(bev, PeerLink::Role::Initiator, tls_ != nullptr, endpoint,
                                          std::move(self), options_.secret, *this, options_.link_limits);
  link->link->start();
  links_.push_back(std::move(link));
}

void ClusterNode::onAcceptCb(evconnlistener*, int fd, sockaddr* addr, int, void* arg) {
  static_cast<ClusterNode*>(arg)->onAccept(fd, addr, 0);
}

void ClusterNode::onAccept(int fd, const sockaddr* addr, int) {
  const std::string remote = formatSockaddr(addr);
  std::size_t pending = 0;
  for (const auto& l : links_) {
    if (!l->link->established() && !l->link->closed() && l->dialed.empty()) ++pending;
  }
  if (leaving_ || pending >= options_.max_pending_links) {
    evutil_closesocket(fd);
    ++counters_.links_rejected;
    logRefusal("cluster_link_rejected remote=" + logValue(remote) +
               " reason=\"too many connections still in their handshake\"");
    return;
  }
  evutil_make_socket_nonblocking(fd);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  bufferevent* bev = tls_ ? tls_->wrapAccepted(loop_.base(), fd)
                          : bufferevent_socket_new(loop_.base(), fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
  if (!bev) {
    if (!tls_) evutil_closesocket(fd);  // TlsContext owns fd either way
    return;
  }
  auto link = std::make_unique<Link>();
  wire::NodeIdentity self{options_.node_id, advertise_, options_.cluster_id, options_.region, incarnation_};
  link->link = std::make_unique<PeerLink>(bev, PeerLink::Role::Acceptor, tls_ != nullptr, remote, std::move(self),
                                          options_.secret, *this, options_.link_limits);
  link->link->start();
  links_.push_back(std::move(link));
}

// ---- Links ---------------------------------------------------------------------------

ClusterNode::Link* ClusterNode::findLink(const PeerLink& link) {
  for (auto& l : links_) {
    if (l->link.get() == &link) return l.get();
  }
  return nullptr;
}

void ClusterNode::scheduleReap() {
  if (reap_ && !event_pending(reap_, EV_TIMEOUT, nullptr)) {
    timeval zero{0, 0};
    event_add(reap_, &zero);
  }
}

void ClusterNode::onReapCb(int, short, void* arg) {
  auto* self = static_cast<ClusterNode*>(arg);
  self->graveyard_.clear();
}

// Moves a link (closed or to be closed) out of links_; frees it after the callback.
void ClusterNode::dropLink(Link* link) {
  link->link->close();
  counters_.bytes_sent += link->link->bytesSent();
  counters_.bytes_received += link->link->bytesReceived();
  for (auto& [id, peer] : peers_) {
    if (peer.link == link) peer.link = nullptr;
  }
  if (!link->dialed.empty() && !link->peer_id.empty()) {
    if (auto it = peers_.find(link->peer_id); it != peers_.end() && it->second.address == link->dialed) {
      it->second.dialing = false;
    }
  }
  auto it = std::find_if(links_.begin(), links_.end(), [&](const auto& l) { return l.get() == link; });
  if (it != links_.end()) {
    graveyard_.push_back(std::move(*it));
    links_.erase(it);
  }
  scheduleReap();
}

void ClusterNode::onLinkClosed(PeerLink& pl, const std::string& reason, bool refused) {
  Link* link = findLink(pl);
  if (!link) return;
  const bool was_chosen = !link->peer_id.empty() && peers_.count(link->peer_id) &&
                          peers_[link->peer_id].link == link;
  const bool admitted = !pl.peer().node_id.empty();
  if (refused || (!admitted && pl.connected())) {
    // Refused by us (bad MAC...), or a connection that never finished its handshake:
    // a stranger, garbage, a half-open connection, or a peer that found our MAC wrong
    // (the mismatch is then logged on its side as well).
    ++counters_.links_refused;
    std::string hint;
    if (reason == "bad MAC") hint = " hint=\"wrong shared secret or another cluster\"";
    if (!refused) hint = " hint=\"the peer gave up during the handshake: a wrong shared secret or certificate on one side?\"";
    logRefusal("cluster_link_refused remote=" + logValue(pl.remote()) + " reason=" + logValue(reason) + hint);
  } else if (was_chosen) {
    ++counters_.links_closed;
    logLine(conf::LogLevel::Info, "cluster_link_closed peer=" + logValue(link->peer_id) +
                                      " remote=" + logValue(pl.remote()) + " reason=" + logValue(reason));
  } else {
    logLine(conf::LogLevel::Debug, "cluster_link_closed remote=" + logValue(pl.remote()) + " reason=" + logValue(reason));
  }
  dropLink(link);
}

void ClusterNode::onLinkWritable(PeerLink&) {}

void ClusterNode::onLinkEstablished(PeerLink& pl) {
  Link* link = findLink(pl);
  if (!link) return;
  const wire::Hello& hello = pl.peer();
  link->peer_id = hello.node_id;
  ++counters_.links_established;
  if (leaving_) {
    dropLink(link);
    return;
  }
  auto [it, inserted] = peers_.try_emplace(hello.node_id);
  Peer& peer = it->second;
  Link* existing = peer.link;
  if (existing && existing != link) {
    const std::uint64_t old_incarnation = existing->link->peer().incarnation;
    if (hello.incarnation == old_incarnation) {
      // Both ends dialed at once: keep the link opened by the smaller id.
      auto opener = [&](const Link* l) {
        return l->link->role() == PeerLink::Role::Initiator ? options_.node_id : hello.node_id;
      };
      const bool keep_new = opener(link) < opener(existing);
      Link* loser = keep_new ? existing : link;
      logLine(conf::LogLevel::Debug, "cluster_link_duplicate peer=" + logValue(hello.node_id));
      if (keep_new) peer.link = nullptr;
      dropLink(loser);
      if (!keep_new) return;
    } else {
      const bool old_alive = Clock::now() - peer.last_heard < 2 * options_.detector.heartbeat_interval;
      if (hello.incarnation < old_incarnation || old_alive) {
        ++counters_.links_rejected;
        logRefusal("cluster_duplicate_node_id id=" + logValue(hello.node_id) + " address=" +
                   logValue(hello.advertise_address) + " live_address=" + logValue(peer.address) +
                   " action=\"refused the newcomer: two live nodes cannot share a node id\"");
        dropLink(link);
        return;
      }
      logLine(conf::LogLevel::Info, "cluster_member_restarted id=" + logValue(hello.node_id) +
                                        " address=" + logValue(hello.advertise_address));
      Link* old = existing;
      peer.link = nullptr;
      dropLink(old);
    }
  }
  adopt(link);
}

void ClusterNode::adopt(Link* link) {
  const wire::Hello& hello = link->link->peer();
  Peer& peer = peers_[hello.node_id];
  if (hello.incarnation > peer.incarnation) peer.said_goodbye = false;
  peer.link = link;
  peer.address = hello.advertise_address;
  peer.region = hello.region;
  peer.incarnation = hello.incarnation;
  peer.dialing = false;
  peer.backoff = std::chrono::milliseconds(0);
  peer.next_dial = Clock::now();
  logLine(conf::LogLevel::Info, "cluster_link_up peer=" + logValue(hello.node_id) + " address=" +
                                    logValue(hello.advertise_address) + " remote=" + logValue(link->link->remote()) +
                                    " direction=" + (link->link->role() == PeerLink::Role::Initiator ? "out" : "in"));
  // Say hello with a heartbeat at once (the peer's detector counts it) and our view.
  link->link->send(wire::Heartbeat{heartbeat_sequence_, nowUnixMs(), 0, 0,
                                   maintenance_ ? wire::kHeartbeatMaintenance : std::uint8_t{0}});
  link->link->send(memberList(), PeerLink::Priority::Bulk);
}

void ClusterNode::onLinkMessage(PeerLink& pl, const wire::Message& message) {
  Link* link = findLink(pl);
  if (!link) return;
  auto it = peers_.find(link->peer_id);
  if (it == peers_.end() || it->second.link != link) return;  // a losing duplicate: ignore
  Peer& peer = it->second;
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
        }
      },
      message);
}

void ClusterNode::handleHeartbeat(Peer& peer, const wire::Heartbeat& heartbeat) {
  const std::string& id = peer.link->peer_id;
  peer.last_heard = Clock::now();
  peer.last_seen_unix_ms = static_cast<std::int64_t>(nowUnixMs());
  peer.load.sessions = heartbeat.sessions;
  peer.load.messages_per_s = heartbeat.messages_per_s_milli / 1000.0;
  peer.in_view = true;
  applyTransitions(detector_.onHeartbeat(id, peer.incarnation, sinceStart()));
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
}

void ClusterNode::handleMemberList(const wire::MemberList& list) {
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
      continue;
    }
    Peer& peer = it->second;
    if (!peer.link && m.incarnation > peer.incarnation && m.status != wire::NodeStatus::Left) {
      // Restarted elsewhere, perhaps at a new address: dial there.
      peer.address = m.address;
      peer.said_goodbye = false;
      peer.next_dial = Clock::now();
      peer.backoff = std::chrono::milliseconds(0);
    }
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
  // Answers older than a few intervals no longer count.
  while (probes_.size() > 1024) probes_.erase(probes_.begin());
  if (!joined_ && now - started_at_ > options_.join_timeout) {
    joined_ = true;
    logLine(conf::LogLevel::Warn, "cluster_join_timeout after=" +
                                      std::to_string(options_.join_timeout.count() / 1000) +
                                      "s action=\"running alone until a member is reachable; check cluster.seeds, "
                                      "the shared secret and the firewall\"");
    applyTransitions({});
  }
  resolveSeeds();
  maintainDials(now);
}

void ClusterNode::onHeartbeat() {
  if (leaving_) return;
  const NodeLoad load = load_ ? load_() : NodeLoad{};
  wire::Heartbeat hb{++heartbeat_sequence_, nowUnixMs(), load.sessions,
                     static_cast<std::uint32_t>(std::min(4e9, load.messages_per_s * 1000.0)),
                     maintenance_ ? wire::kHeartbeatMaintenance : std::uint8_t{0}};
  for (auto& [id, peer] : peers_) {
    if (peer.link) peer.link->link->send(hb);
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
        peer.ever_active = true;
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
  if (!transitions.empty()) gossip();
}

void ClusterNode::emit(const std::string& name, const std::string& node_id) {
  ++counters_.events[name];
  ClusterEvent event;
  event.name = name;
  event.env = {{"ZETIAN_SELF_ID", options_.node_id},
               {"ZETIAN_CLUSTER_STATE", std::string(membership::clusterStateName(currentState()))},
               {"ZETIAN_CLUSTER_SIZE", std::to_string(size())},
               {"ZETIAN_TIME", std::to_string(nowUnixMs() / 1000)}};
  if (!node_id.empty()) {
    const Peer& peer = peers_[node_id];
    auto status = detector_.statusOf(node_id);
    event.env.push_back({"ZETIAN_NODE_ID", node_id});
    event.env.push_back({"ZETIAN_NODE_ADDRESS", peer.address});
    event.env.push_back({"ZETIAN_NODE_REGION", peer.region});
    event.env.push_back({"ZETIAN_NODE_STATUS", status ? std::string(membership::statusName(*status)) : ""});
  }
  logLine(conf::LogLevel::Info, "cluster_event event=" + name + (node_id.empty() ? "" : " node=" + logValue(node_id)) +
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
  for (event* e : {tick_, heartbeat_}) {
    if (e) event_del(e);
  }
  if (listener_) {
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
  struct Waiter {
    ClusterNode* node;
    std::function<void()> done;
    Clock::time_point deadline;
    event* timer;
  };
  auto* waiter = new Waiter{this, std::move(done), Clock::now() + kLeaveFlush + std::chrono::milliseconds(50), nullptr};
  waiter->timer = event_new(loop_.base(), -1, EV_PERSIST, [](int, short, void* arg) {
    auto* w = static_cast<Waiter*>(arg);
    bool all_closed = std::all_of(w->node->links_.begin(), w->node->links_.end(),
                                  [](const auto& l) { return l->link->closed(); });
    if (!all_closed && Clock::now() < w->deadline) return;
    for (auto& l : w->node->links_) l->link->close();
    event_free(w->timer);
    auto done = std::move(w->done);
    delete w;
    if (done) done();
  }, waiter);
  timeval tv{0, 10'000};
  event_add(waiter->timer, &tv);
}

std::vector<MemberInfo> ClusterNode::members() const {
  assertLoopThread();
  std::vector<MemberInfo> out;
  const NodeLoad own = load_ ? load_() : NodeLoad{};
  out.push_back(MemberInfo{options_.node_id, advertise_, options_.region,
                           maintenance_ ? "maintenance" : joined_ ? "active" : "joining", true,
                           static_cast<std::int64_t>(nowUnixMs()), own, incarnation_});
  for (const auto& view : detector_.peers()) {
    auto it = peers_.find(view.peer);
    if (it == peers_.end()) continue;
    const Peer& peer = it->second;
    out.push_back(MemberInfo{view.peer, peer.address, peer.region, std::string(membership::statusName(view.status)),
                             false, peer.last_seen_unix_ms, peer.load, view.incarnation});
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
  return c;
}

}  // namespace zetian::cluster
