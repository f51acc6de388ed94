// LAN discovery by UDP multicast (`[cluster] discovery = "multicast"`): every node sends
// a signed beacon (beacon.h) to the group now and then, and reports each verified
// beacon of another node through on_peer, so the caller can dial it. The beacon only
// says where to dial; admission is the TCP handshake.
//
// IPv4 multicast only (a group in 224.0.0.0/4; 239.0.0.0/8 is the organisation-local
// range meant for this). The socket:
// - is bound to the group address and port, not INADDR_ANY: then only datagrams sent to
//   the group reach it, never unicast to that port nor other groups joined on the host,
//   and IP_MULTICAST_ALL is off so groups joined by other sockets do not leak in either.
// - has SO_REUSEADDR and SO_REUSEPORT, so several nodes on one host share the port
//   (each gets its own copy of every multicast datagram; SO_REUSEPORT binds need the
//   same user for all of them).
// - sends with IP_MULTICAST_TTL 1: beacons never cross a router, discovery is for one
//   LAN segment. Nodes elsewhere are found by seeds or DNS.
// - has IP_MULTICAST_LOOP on, so nodes on the same host hear each other. We hear our
//   own beacons too; they are dropped by node id and not counted.
// - is non-blocking: one send per beacon, lost beacons are simply lost (the next comes
//   within an interval), and each readiness reads a bounded batch.
//
// Refused beacons (any BeaconError, or a node with the secret claiming OUR node id from
// another address) are counted in ignored() and logged at most once a minute per source
// address, from at most kMaxQuietSources sources at a time, so a hostile LAN can flood
// neither the log nor our memory. Send errors are logged at most once a minute.
//
// Not thread-safe: construction, every method, on_peer and destruction happen on the
// thread that runs `base` (loop thread only); a call from another thread aborts.
#pragma once

#include <netinet/in.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>

#include "cluster/log_sink.h"
#include "cluster/owner_thread.h"

struct event_base;
struct event;

namespace zetian::cluster::discovery {

struct MulticastOptions {
  std::string group;  // "239.255.1.1:7946": numeric IPv4 multicast address and port
  // "" lets the kernel choose the interface (the route to the group, usually the default
  // route's); else the numeric IPv4 address of the interface to join and send on.
  std::string interface_address;
  std::chrono::milliseconds interval{2000};  // between beacons, each jittered by ±20%
  std::string cluster_id;
  std::string node_id;    // ours; 1 to 255 bytes
  std::string advertise;  // "HOST:PORT" others dial to reach us; 1 to 255 bytes
  std::string secret;     // the cluster's shared secret; never logged
  std::chrono::milliseconds max_skew{60000};  // beacons older or newer are stale
};

class MulticastDiscovery {
 public:
  // `base` must outlive this object (null: std::invalid_argument). Nothing happens
  // before start().
  MulticastDiscovery(event_base* base, MulticastOptions options, LogSink log);
  // Leaves the group and closes the socket. May be called from inside on_peer.
  ~MulticastDiscovery();
  MulticastDiscovery(const MulticastDiscovery&) = delete;
  MulticastDiscovery& operator=(const MulticastDiscovery&) = delete;

  // Opens the socket, joins the group and sends the first beacon; later ones follow
  // every interval. Call once. On failure returns false and sets *error to a message
  // that names the group and says what to do.
  bool start(std::string* error);

  // Called for every verified beacon of another node, each time (about once per
  // interval per node): the caller dedupes and decides whether to dial.
  std::function<void(const std::string& node_id, const std::string& address)> on_peer;

  // One beacon now, besides the periodic ones; does nothing before start().
  void sendNow();

  // Beacons refused since start (see the top of this file).
  std::uint64_t ignored() const { return ignored_; }

  // At most this many sources are remembered for rate-limiting refusal logs; beyond
  // that, refusals from new sources are counted but not logged until entries expire.
  static constexpr std::size_t kMaxQuietSources = 1024;

 private:
  using Clock = std::chrono::steady_clock;

  static void onReadable(int fd, short what, void* arg);
  static void onTimer(int fd, short what, void* arg);
  bool open(std::string* error);
  void readBatch();
  void handleDatagram(std::string_view datagram, const sockaddr_in& source);
  void refuse(const sockaddr_in& source, std::string_view reason, conf::LogLevel level);
  int sendBeacon();  // 0 or the errno of sendto
  void scheduleNext();
  bool mayLogFrom(const std::string& source);
  void log(conf::LogLevel level, const std::string& line) const;

  // All members: loop thread only (owner_).
  event_base* const base_;
  const MulticastOptions options_;
  const LogSink log_;
  const OwnerThread owner_;
  sockaddr_in group_{};
  std::string group_text_;  // for log lines and errors
  int fd_ = -1;
  event* read_event_ = nullptr;
  event* send_timer_ = nullptr;
  bool started_ = false;
  std::uint64_t ignored_ = 0;
  std::minstd_rand jitter_;
  // Source address -> when we last logged a refusal from it (at most kMaxQuietSources).
  std::unordered_map<std::string, Clock::time_point> last_refusal_log_;
  std::optional<Clock::time_point> last_send_error_log_;
  std::optional<Clock::time_point> last_recv_error_log_;
  // Cleared by the destructor; a callback that may have destroyed us checks it before
  // touching any member (on_peer is allowed to destroy this object).
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace zetian::cluster::discovery
