// Multicast discovery on the loop thread: socket setup, the beacon timer and the
// receive path. The socket choices are explained in multicast.h.
//
// Traps:
// - Errors that make discovery impossible (no route for multicast, no such interface,
//   a firewall) are found in start(), by joining the group and sending the first
//   beacon there, so the operator reads them at startup instead of in a log line a
//   minute later.
// - A datagram larger than the receive buffer is cut to kMaxBeaconBytes + 1 bytes by the
//   kernel, which decodeBeacon() refuses as oversized; no need for MSG_TRUNC.
// - on_peer may destroy this object. The receive loop holds alive_ and stops as soon as
//   it is cleared; on_peer is called through a copy, so the std::function running is not
//   the one the destructor frees. libevent allows event_free() on the event whose
//   callback is running.
// - Timers are jittered: nodes started together (a fleet rebooted at once) would beacon
//   in lockstep forever otherwise.
#include "cluster/discovery/multicast.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <openssl/rand.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <utility>
#include <variant>

#include "cluster/clock.h"
#include "cluster/discovery/beacon.h"
#include "conf/syntax.h"
#include "conf/text.h"

namespace zetian::cluster::discovery {
namespace {

// Datagrams read per readiness. Readiness is level-triggered, so what is left is read
// on the next turn of the loop, after timers and other sockets had theirs.
constexpr int kReadBatch = 64;
constexpr auto kLogQuietPeriod = std::chrono::minutes(1);

using conf::errnoText;

std::string addressText(const in_addr& address) {
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &address, text, sizeof text);
  return text;
}

// "A.B.C.D:PORT", numeric, multicast, port 1..65535.
bool parseGroup(const std::string& text, sockaddr_in* group, std::string* error) {
  const std::string quoted = "multicast group `" + text + "`";
  // Every IPv6 form, bracketed or not, gets this answer rather than a syntax error.
  if (!text.empty() && (text.front() == '[' || text.find(':') != text.rfind(':'))) {
    *error = quoted +
             " is IPv6; only IPv4 multicast is supported: use an IPv4 group such as "
             "239.255.1.1:7946";
    return false;
  }
  std::string why;
  const auto parts = conf::parseHostPort(text, &why);
  if (!parts) {
    *error = "multicast group: " + why;
    return false;
  }
  const std::string& host = parts->host;
  sockaddr_in result{};
  result.sin_family = AF_INET;
  result.sin_port = htons(parts->port);
  if (inet_pton(AF_INET, host.c_str(), &result.sin_addr) != 1) {
    *error = quoted + ": `" + host + "` is not a numeric IPv4 address (names are not looked up)";
    return false;
  }
  if (!IN_MULTICAST(ntohl(result.sin_addr.s_addr))) {
    *error = quoted +
             " is not a multicast address: use one in 239.0.0.0/8 (meant for use "
             "inside an organisation), such as 239.255.1.1:7946";
    return false;
  }
  *group = result;
  return true;
}

bool setIntOption(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof value) == 0;
}

}  // namespace

MulticastDiscovery::MulticastDiscovery(event_base* base, MulticastOptions options, LogSink log)
    : base_(base),
      options_(std::move(options)),
      log_(std::move(log)),
      group_text_(options_.group),
      jitter_(std::random_device{}()) {
  if (base_ == nullptr) throw std::invalid_argument("MulticastDiscovery needs an event_base");
}

MulticastDiscovery::~MulticastDiscovery() {
  owner_.check();
  *alive_ = false;
  if (read_event_ != nullptr) event_free(read_event_);
  if (send_timer_ != nullptr) event_free(send_timer_);
  // Closing the socket leaves the group: the kernel drops a socket's memberships with it.
  if (fd_ >= 0) close(fd_);
}

bool MulticastDiscovery::start(std::string* error) {
  owner_.check();
  std::string unused;
  if (error == nullptr) error = &unused;
  if (started_) {
    *error = "multicast discovery on " + group_text_ + " already started";
    return false;
  }
  started_ = true;
  if (!open(error)) {
    if (read_event_ != nullptr) event_free(read_event_);
    if (send_timer_ != nullptr) event_free(send_timer_);
    if (fd_ >= 0) close(fd_);
    read_event_ = nullptr;
    send_timer_ = nullptr;
    fd_ = -1;
    return false;
  }
  scheduleNext();
  return true;
}

bool MulticastDiscovery::open(std::string* error) {
  if (!parseGroup(options_.group, &group_, error)) return false;
  const std::string& group = group_text_;
  if (options_.interval.count() <= 0) {
    *error = "multicast discovery on " + group + ": the beacon interval must be longer than 0";
    return false;
  }
  if (options_.secret.empty()) {
    *error = "multicast discovery on " + group + " needs the cluster's shared secret";
    return false;
  }
  const auto badLength = [](const std::string& s, bool allow_empty) {
    return s.size() > kMaxBeaconStringBytes || (s.empty() && !allow_empty);
  };
  if (badLength(options_.node_id, false) || badLength(options_.advertise, false) ||
      badLength(options_.cluster_id, true)) {
    *error = "multicast discovery on " + group +
             ": node id and advertise address must be 1 to 255 bytes, the cluster id at most "
             "255 bytes, to fit in a beacon";
    return false;
  }
  in_addr local_interface{};
  local_interface.s_addr = htonl(INADDR_ANY);
  if (!options_.interface_address.empty() &&
      inet_pton(AF_INET, options_.interface_address.c_str(), &local_interface) != 1) {
    *error = "multicast interface `" + options_.interface_address +
             "` is not a numeric IPv4 address: give the address of the interface to send " + group +
             " beacons on";
    return false;
  }
  // Without an interface the hint is a route: it fixes the common case (a host without a
  // default route) with no zetian setting at all.
  const std::string no_route_hint =
      options_.interface_address.empty()
          ? "this host has no route for multicast: add one on the LAN interface (ip route add "
            "224.0.0.0/4 dev IFACE)"
          : "no interface has the address " + options_.interface_address +
                ": choose one of this host's IPv4 addresses as the multicast interface";

  fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    *error = "cannot create a UDP socket for multicast group " + group + ": " + errnoText(errno);
    return false;
  }
  if (!setIntOption(fd_, SOL_SOCKET, SO_REUSEADDR, 1) ||
      !setIntOption(fd_, SOL_SOCKET, SO_REUSEPORT, 1)) {
    *error = "cannot share the port of multicast group " + group +
             " (SO_REUSEADDR/SO_REUSEPORT): " + errnoText(errno);
    return false;
  }
  if (bind(fd_, reinterpret_cast<const sockaddr*>(&group_), sizeof group_) != 0) {
    const int err = errno;
    *error = "cannot bind multicast group " + group + ": " + errnoText(err);
    if (err == EADDRINUSE) {
      *error +=
          "; another program (or a zetian-milter running as another user) holds the port "
          "without sharing it: stop it or choose another [cluster] multicast_group port";
    }
    return false;
  }
#ifdef IP_MULTICAST_ALL
  // Linux delivers every group joined by ANY socket on the host to every socket bound to
  // the port, unless this is off; a node must hear only the group it joined.
  if (!setIntOption(fd_, IPPROTO_IP, IP_MULTICAST_ALL, 0)) {
    *error = "cannot limit the socket to multicast group " + group + ": " + errnoText(errno);
    return false;
  }
#endif
  ip_mreqn membership{};
  membership.imr_multiaddr = group_.sin_addr;
  membership.imr_address = local_interface;
  membership.imr_ifindex = 0;
  if (setsockopt(fd_, IPPROTO_IP, IP_ADD_MEMBERSHIP, &membership, sizeof membership) != 0) {
    const int err = errno;
    *error = "cannot join multicast group " + group + ": " + errnoText(err);
    if (err == ENODEV || err == EADDRNOTAVAIL) {
      *error += "; " + no_route_hint;
    } else if (err == ENOBUFS) {
      *error += "; this host has joined too many groups (sysctl net.ipv4.igmp_max_memberships)";
    }
    return false;
  }
  if (!options_.interface_address.empty()) {
    ip_mreqn sender{};
    sender.imr_address = local_interface;
    if (setsockopt(fd_, IPPROTO_IP, IP_MULTICAST_IF, &sender, sizeof sender) != 0) {
      const int err = errno;
      *error = "cannot send to multicast group " + group + " from " + options_.interface_address +
               ": " + errnoText(err) + "; " + no_route_hint;
      return false;
    }
  }
  if (!setIntOption(fd_, IPPROTO_IP, IP_MULTICAST_LOOP, 1) ||
      !setIntOption(fd_, IPPROTO_IP, IP_MULTICAST_TTL, 1)) {
    *error = "cannot set up sending to multicast group " + group + ": " + errnoText(errno);
    return false;
  }

  read_event_ = event_new(base_, fd_, EV_READ | EV_PERSIST, &MulticastDiscovery::onReadable, this);
  send_timer_ = evtimer_new(base_, &MulticastDiscovery::onTimer, this);
  if (read_event_ == nullptr || send_timer_ == nullptr || event_add(read_event_, nullptr) != 0) {
    *error = "cannot watch the socket of multicast group " + group + " (out of memory?)";
    return false;
  }

  const int err = sendBeacon();
  if (err == ENETUNREACH || err == EHOSTUNREACH || err == ENODEV || err == EADDRNOTAVAIL) {
    *error =
        "cannot send to multicast group " + group + ": " + errnoText(err) + "; " + no_route_hint;
    return false;
  }
  if (err == EPERM || err == EACCES) {
    *error = "cannot send to multicast group " + group + ": " + errnoText(err) +
             "; a firewall refuses it: allow UDP to " + group + " (OUTPUT and INPUT)";
    return false;
  }
  if (err != 0) {
    // Transient (a full send queue): the next beacon will do.
    last_send_error_log_ = Clock::now();
    log(conf::LogLevel::Warn, "multicast_beacon_send_failed group=" + logValue(group) +
                                  " error=" + logValue(errnoText(err)));
  }
  return true;
}

void MulticastDiscovery::sendNow() {
  owner_.check();
  if (fd_ < 0) return;
  const int err = sendBeacon();
  if (err == 0) return;
  const auto now = Clock::now();
  if (last_send_error_log_ && now - *last_send_error_log_ < kLogQuietPeriod) return;
  last_send_error_log_ = now;
  log(conf::LogLevel::Warn,
      "multicast_beacon_send_failed group=" + logValue(group_text_) +
          " error=" + logValue(errnoText(err)) +
          " hint=" + logValue("other nodes stop finding this one; logged at most once a minute"));
}

int MulticastDiscovery::sendBeacon() {
  Beacon beacon;
  beacon.cluster_id = options_.cluster_id;
  beacon.node_id = options_.node_id;
  beacon.address = options_.advertise;
  beacon.sent_at_ms = unixMillis();
  // The nonce only keeps beacons distinct (nothing relies on it being unguessable), so if
  // OpenSSL's generator fails, a weaker one will do.
  if (RAND_bytes(beacon.nonce.data(), static_cast<int>(beacon.nonce.size())) != 1) {
    for (auto& byte : beacon.nonce) byte = static_cast<std::uint8_t>(jitter_());
  }
  const std::string datagram = encodeBeacon(beacon, options_.secret);
  if (sendto(fd_, datagram.data(), datagram.size(), 0, reinterpret_cast<const sockaddr*>(&group_),
             sizeof group_) < 0) {
    return errno;
  }
  return 0;
}

void MulticastDiscovery::scheduleNext() {
  // ±20%, written so that no interval can overflow.
  const std::int64_t interval = options_.interval.count();
  std::uniform_int_distribution<std::int64_t> pick(interval - interval / 5,
                                                   interval + interval / 5);
  const std::int64_t delay_ms = std::max<std::int64_t>(1, pick(jitter_));
  const timeval delay = toTimeval(std::chrono::milliseconds(delay_ms));
  evtimer_add(send_timer_, &delay);
}

void MulticastDiscovery::onTimer(int, short, void* arg) {
  auto* self = static_cast<MulticastDiscovery*>(arg);
  self->sendNow();
  self->scheduleNext();
}

void MulticastDiscovery::onReadable(int, short, void* arg) {
  static_cast<MulticastDiscovery*>(arg)->readBatch();
}

void MulticastDiscovery::readBatch() {
  owner_.check();
  const std::shared_ptr<bool> alive = alive_;
  char buffer[kMaxBeaconBytes + 1];
  for (int i = 0; i < kReadBatch; ++i) {
    sockaddr_in source{};
    socklen_t source_length = sizeof source;
    const ssize_t n = recvfrom(fd_, buffer, sizeof buffer, 0, reinterpret_cast<sockaddr*>(&source),
                               &source_length);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      const auto now = Clock::now();
      if (!last_recv_error_log_ || now - *last_recv_error_log_ >= kLogQuietPeriod) {
        last_recv_error_log_ = now;
        log(conf::LogLevel::Warn, "multicast_receive_failed group=" + logValue(group_text_) +
                                      " error=" + logValue(errnoText(err)));
      }
      return;
    }
    handleDatagram(std::string_view(buffer, static_cast<std::size_t>(n)), source);
    if (!*alive) return;
  }
}

void MulticastDiscovery::handleDatagram(std::string_view datagram, const sockaddr_in& source) {
  auto decoded = decodeBeacon(
      datagram, options_.secret, options_.cluster_id, unixMillis(),
      static_cast<std::uint64_t>(std::max<std::int64_t>(0, options_.max_skew.count())));
  if (const auto* error = std::get_if<BeaconError>(&decoded)) {
    refuse(source, nameOf(*error), conf::LogLevel::Debug);
    return;
  }
  const Beacon& beacon = std::get<Beacon>(decoded);
  if (beacon.node_id == options_.node_id) {
    if (beacon.address == options_.advertise) return;  // our own, looped back
    refuse(source,
           "another node with the secret uses our node id (at " + beacon.address +
               "); every node needs its own node id",
           conf::LogLevel::Warn);
    return;
  }
  if (!on_peer) return;
  const auto callback = on_peer;
  callback(beacon.node_id, beacon.address);
}

void MulticastDiscovery::refuse(const sockaddr_in& source, std::string_view reason,
                                conf::LogLevel level) {
  ++ignored_;
  const std::string from = addressText(source.sin_addr);
  if (!mayLogFrom(from)) return;
  log(level, "multicast_beacon_ignored group=" + logValue(group_text_) + " source=" + from +
                 " reason=" + logValue(reason) + " ignored=" + std::to_string(ignored_) +
                 " hint=" + logValue("logged at most once a minute per source"));
}

bool MulticastDiscovery::mayLogFrom(const std::string& source) {
  const auto now = Clock::now();
  const auto found = last_refusal_log_.find(source);
  if (found != last_refusal_log_.end()) {
    if (now - found->second < kLogQuietPeriod) return false;
    found->second = now;
    return true;
  }
  if (last_refusal_log_.size() >= kMaxQuietSources) {
    std::erase_if(last_refusal_log_,
                  [&](const auto& entry) { return now - entry.second >= kLogQuietPeriod; });
    if (last_refusal_log_.size() >= kMaxQuietSources) return false;
  }
  last_refusal_log_.emplace(source, now);
  return true;
}

void MulticastDiscovery::log(conf::LogLevel level, const std::string& line) const {
  if (log_) log_(level, line);
}

}  // namespace zetian::cluster::discovery
