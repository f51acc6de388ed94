// ClusterNode, part two: the listener, discovery and dialing, and the life of each
// link (admission, the one-link-per-pair rule, restarts and duplicate ids, closing).
// The design notes are in node.h; membership is in node.cpp.
#include "cluster/node.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <utility>

#include "cluster/clock.h"
#include "cluster/discovery/resolver.h"
#include "cluster/listen_address.h"
#include "cluster/node_state.h"
#include "cluster/transport/tls.h"
#include "conf/syntax.h"

namespace zetian::cluster {

using transport::PeerLink;

namespace {

constexpr auto kMinBackoff = std::chrono::milliseconds(200);
constexpr auto kMaxBackoff = std::chrono::milliseconds(5000);
constexpr auto kSeedResolveInterval = std::chrono::seconds(30);

std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> factor(0.8, 1.2);
  return std::chrono::milliseconds(static_cast<std::int64_t>(double(base.count()) * factor(rng)));
}

// The address a connection comes from, as handshake slots count it: numeric, without
// the port, and an IPv4 peer on a dual-stack listener (::ffff:192.0.2.1) as plain IPv4,
// so that it compares equal to the member's configured address.
std::string sourceAddress(const sockaddr* addr) {
  if (addr && addr->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(addr);
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      sockaddr_in v4{};
      v4.sin_family = AF_INET;
      std::memcpy(&v4.sin_addr, v6->sin6_addr.s6_addr + 12, 4);
      return addressText(reinterpret_cast<const sockaddr*>(&v4)).value_or("unknown");
    }
  }
  return addressText(addr).value_or("unknown");
}

// The host part of a member's "HOST:PORT" in the form sourceAddress() gives, or "".
std::string sourceAddressOf(const std::string& endpoint) {
  std::string ignored;
  const auto parsed = parseListenAddress(endpoint, &ignored);
  return parsed ? sourceAddress(reinterpret_cast<const sockaddr*>(&parsed->addr)) : std::string();
}

}  // namespace

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
      const bool changed = resolved != s.endpoints;
      if (changed) {
        logLine(conf::LogLevel::Debug, "cluster_discovery name=" + logValue(s.text) + " endpoints=" +
                                           std::to_string(resolved.size()));
      }
      s.endpoints = std::move(resolved);
      s.next_resolve = Clock::now() + kSeedResolveInterval;
      if (changed) rebuildMemberAddresses();
    };
    // A seed without a port is taken to listen on the port this node advertises.
    const auto own = conf::parseHostPort(advertise_);
    const std::uint16_t default_port = own ? own->port : 0;
    if (options_.discovery == conf::Discovery::Dns) {
      resolver_->resolveService(seed.text, default_port, done);
    } else {
      std::string error;
      const auto parts = conf::parseHostPort(seed.text, &error, {.default_port = default_port});
      if (!parts) {
        seed.resolving = false;
        seed.next_resolve = now + std::chrono::hours(24 * 365);
        logLine(conf::LogLevel::Error, "cluster_seed_invalid seed=" + logValue(seed.text) + " error=" + logValue(error));
        continue;
      }
      resolver_->resolveHost(parts->host, parts->port, done);
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
    dial(peer.address, id);
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
      dial(endpoint, "");
    }
  }
}

void ClusterNode::dial(const std::string& endpoint, const std::string& expected_id) {
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
  wire::NodeIdentity self{options_.node_id, advertise_, options_.cluster_id, options_.region, incarnation_,
                          options_.capabilities};
  link->link = std::make_unique<PeerLink>(bev, PeerLink::Role::Initiator, tls_ != nullptr, endpoint,
                                          std::move(self), options_.secret, *this, options_.link_limits);
  link->link->start();
  links_.push_back(std::move(link));
}

// Out of descriptors, the listener backs off instead of spinning, and its failures
// are one throttled log line (accept_guard.h).
void ClusterNode::guardListener() {
  AcceptGuardOptions guard_options;
  guard_options.name = "cluster";
  accept_guard_ = std::make_unique<AcceptGuard>(
      loop_.base(), listener_, std::move(guard_options),
      [this](conf::LogLevel level, std::string_view line) { logLine(level, std::string(line)); },
      [this](int fd, const sockaddr* addr, int len) { onAccept(fd, addr, len); });
  evconnlistener_enable(listener_);
}

// A seed's or a member's address (any status: a member that left may be the one
// coming back). Only a hint for a handshake slot; the handshake decides admission.
bool ClusterNode::isMemberAddress(const std::string& source) const {
  return member_addresses_.count(source) != 0;
}

void ClusterNode::rebuildMemberAddresses() {
  member_addresses_.clear();
  auto add = [this](const std::string& endpoint) {
    if (std::string host = sourceAddressOf(endpoint); !host.empty()) member_addresses_.insert(std::move(host));
  };
  for (const auto& [id, peer] : peers_) {
    if (!peer.address.empty()) add(peer.address);
  }
  for (const auto& seed : seeds_) {
    for (const auto& endpoint : seed.endpoints) add(endpoint);
  }
}

void ClusterNode::reject(const std::string& reason) {
  ++counters_.links_rejected_by_reason[reason];
}

void ClusterNode::onAccept(int fd, const sockaddr* addr, int) {
  if (leaving_) {
    evutil_closesocket(fd);
    reject("leaving");
    return;
  }
  const std::string source = sourceAddress(addr);
  const bool member = isMemberAddress(source);
  const auto decision = handshake_slots_.admit(source, member);
  if (decision.outcome != transport::HandshakeSlots::Outcome::admitted) {
    evutil_closesocket(fd);
    const std::string reason(transport::nameOf(decision.outcome));
    reject(reason);
    if (mayLogRefusal(RefusalKind::admission)) {
      logLine(conf::LogLevel::Warn,
              "cluster_link_rejected remote=" + logValue(endpointText(addr)) + " reason=" + reason +
                  (decision.outcome == transport::HandshakeSlots::Outcome::refused_source_full
                       ? " detail=\"" + std::to_string(handshake_slots_.limits().max_per_source) +
                             " connections from this address are still in their handshake\""
                       : " detail=\"every handshake slot is held by a member's address\""));
    }
    return;
  }
  const std::string remote = endpointText(addr);
  if (decision.evicted) {
    // Its slot is released already: the link closes without a second release.
    for (const auto& l : links_) {
      if (l->handshake_slot != *decision.evicted) continue;
      l->handshake_slot = 0;
      reject("evicted");
      if (mayLogRefusal(RefusalKind::admission)) {
        logLine(conf::LogLevel::Warn, "cluster_link_evicted remote=" + logValue(l->link->remote()) +
                                          " for=" + logValue(remote) + " member=" + (member ? "yes" : "no") +
                                          " reason=\"the oldest connection still in its handshake, to make "
                                          "room\"");
      }
      dropLink(l.get());
      break;
    }
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
  wire::NodeIdentity self{options_.node_id, advertise_, options_.cluster_id, options_.region, incarnation_,
                          options_.capabilities};
  link->link = std::make_unique<PeerLink>(bev, PeerLink::Role::Acceptor, tls_ != nullptr, remote, std::move(self),
                                          options_.secret, *this, options_.link_limits);
  link->handshake_slot = decision.slot;
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
    const timeval zero{0, 0};
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
  handshake_slots_.release(link->handshake_slot);
  link->handshake_slot = 0;
  counters_.bytes_sent += link->link->bytesSent();
  counters_.bytes_received += link->link->bytesReceived();
  bool chosen = false;
  bool coming = false;
  bool publish = false;
  for (auto& [id, peer] : peers_) {
    if (peer.link != link) continue;
    peer.link = nullptr;
    chosen = true;
    if (limits_) limits_->onPeerDown(id);
    if (raft_) raft_->onPeerDown(id);
    // Closed while our own dial to the peer is under way: most likely the peer keeping
    // that link of two that crossed (the one opened by the smaller id). Leaving the view
    // now and coming back in a moment would move its keys away and back, and a key
    // charged in between on both sides would lose charges when the copies merge.
    // So it stays in the view until the dial ends: adopted (adopt()), or failed (below;
    // at the latest at the handshake timeout).
    if (peer.dialing) {
      peer.link_coming = true;
      coming = true;
    }
  }
  if (!link->dialed.empty() && !link->peer_id.empty()) {
    if (auto it = peers_.find(link->peer_id); it != peers_.end() && it->second.address == link->dialed) {
      it->second.dialing = false;
      if (!chosen && it->second.link_coming) {
        // The dial a closed link waited for failed: now the peer leaves the view.
        it->second.link_coming = false;
        if (limits_) limits_->onPeerDown(link->peer_id);
        publish = true;
      }
    }
  }
  auto it = std::find_if(links_.begin(), links_.end(), [&](const auto& l) { return l.get() == link; });
  if (it != links_.end()) {
    graveyard_.push_back(std::move(*it));
    links_.erase(it);
  }
  scheduleReap();
  if ((chosen && !coming) || publish) publishView();
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
    const RefusalKind kind = pl.handshakeFailure().value_or(RefusalKind::gave_up);
    ++counters_.links_refused_by_kind[std::string(nameOf(kind))];
    if (mayLogRefusal(kind)) {
      std::string hint;
      if (kind == RefusalKind::bad_mac) hint = " hint=\"wrong shared secret or another cluster\"";
      if (kind == RefusalKind::gave_up) {
        hint = " hint=\"the peer gave up during the handshake: a wrong shared secret or certificate on one side?\"";
      }
      logLine(conf::LogLevel::Warn, "cluster_link_refused remote=" + logValue(pl.remote()) + " reason=" +
                                        logValue(reason) + " kind=" + std::string(nameOf(kind)) + hint);
    }
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
  handshake_slots_.release(link->handshake_slot);
  link->handshake_slot = 0;
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
      adopt(link);
      // Whatever went out on the link just dropped (a hand-off to this peer, say) is
      // lost: the peer ignores a losing duplicate. Send its keys again on this one.
      if (limits_) limits_->onPeerRestarted(hello.node_id);
      return;
    } else {
      const bool old_alive = Clock::now() - peer.last_heard < 2 * options_.detector.heartbeat_interval;
      if (hello.incarnation < old_incarnation || old_alive) {
        reject("duplicate_node_id");
        if (mayLogRefusal(RefusalKind::duplicate_id)) {
          logLine(conf::LogLevel::Warn, "cluster_duplicate_node_id id=" + logValue(hello.node_id) + " address=" +
                                            logValue(hello.advertise_address) + " live_address=" +
                                            logValue(peer.address) +
                                            " action=\"refused the newcomer: two live nodes cannot share a node id\"");
        }
        dropLink(link);
        return;
      }
      logLine(conf::LogLevel::Info, "cluster_member_restarted id=" + logValue(hello.node_id) +
                                        " address=" + logValue(hello.advertise_address));
      Link* old = existing;
      peer.link = nullptr;
      dropLink(old);
      adopt(link);
      // It came back with an empty store: give it the state of the keys it owns.
      if (limits_) limits_->onPeerRestarted(hello.node_id);
      return;
    }
  }
  adopt(link);
}

void ClusterNode::adopt(Link* link) {
  const wire::Hello& hello = link->link->peer();
  Peer& peer = peers_[hello.node_id];
  if (hello.incarnation > peer.incarnation) peer.said_goodbye = false;
  peer.link = link;
  const bool moved = peer.address != hello.advertise_address;
  peer.address = hello.advertise_address;
  peer.region = hello.region;
  peer.incarnation = hello.incarnation;
  peer.dialing = false;
  peer.link_coming = false;
  peer.backoff = std::chrono::milliseconds(0);
  peer.next_dial = Clock::now();
  if (moved) rebuildMemberAddresses();
  logLine(conf::LogLevel::Info, "cluster_link_up peer=" + logValue(hello.node_id) + " address=" +
                                    logValue(hello.advertise_address) + " remote=" + logValue(link->link->remote()) +
                                    " direction=" + (link->link->role() == PeerLink::Role::Initiator ? "out" : "in"));
  // Say hello with a heartbeat at once (the peer's detector counts it) and our view.
  link->link->send(wire::Heartbeat{heartbeat_sequence_, unixMillis(), 0, 0,
                                   maintenance_ ? wire::kHeartbeatMaintenance : std::uint8_t{0}});
  link->link->send(memberList(), PeerLink::Priority::Bulk);
  saveMemberCache();
  publishView();
  if (limits_) limits_->onPeerUp(hello.node_id);
  if (raft_ && (hello.capabilities & wire::kCapRaft)) raft_->onPeerUp(hello.node_id);
}

}  // namespace zetian::cluster
