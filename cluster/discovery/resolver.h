// Name resolution for node discovery, without blocking the cluster thread.
//
// Two uses: seeds ("mx2.example.net:7946" → its A/AAAA records, or /etc/hosts) and
// DNS discovery (dns_name = "_zetian._tcp.example.net" → SRV records, each target
// resolved to A/AAAA; a name without SRV records → its own A/AAAA records with the
// node's bind port). getaddrinfo() would block the loop for seconds when a DNS server
// is slow or dead, so the lookups go through c-ares, driven by the caller's
// event_base: one libevent event per c-ares socket and one timer for its timeouts.
//
// Every answer is delivered the same way: queued, then handed to the callback from a
// libevent event of its own. So a callback never runs inside resolveHost() /
// resolveService() (numeric hosts and /etc/hosts hits are answered at once, yet still
// arrive later), and never inside c-ares, which means a callback may start new
// lookups or destroy the Resolver.
//
// A dead DNS server costs about 6 s per configured server before the error arrives
// (2 tries: 2 s, then 4 s; c-ares doubles the timeout on the second round).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

struct event_base;

namespace zetian::cluster::discovery {

struct Endpoint {
  std::string host;  // a numeric IPv4 or IPv6 address, never a name
  std::uint16_t port = 0;

  bool operator==(const Endpoint&) const = default;
};

// "192.0.2.1:7946", "[2001:db8::1]:7946".
std::string formatEndpoint(const Endpoint& endpoint);

class Resolver {
 public:
  // Called exactly once per lookup, on the thread running the event_base. error is ""
  // on success (then endpoints is not empty); otherwise it says which name failed and
  // what was tried, and endpoints is empty.
  using Callback = std::function<void(std::vector<Endpoint> endpoints, std::string error)>;

  // servers: "" uses the system's configuration (/etc/resolv.conf, /etc/hosts);
  // otherwise "IP:PORT[,IP:PORT...]" ("[V6]:PORT" for IPv6; the port defaults to 53),
  // and /etc/hosts is still consulted as /etc/nsswitch.conf says (usually first).
  // Returns null with *error set if `servers` does not parse or c-ares cannot start.
  // Create, use and destroy the Resolver on the thread that runs `base`; `base` must
  // outlive it. Callbacks must not throw: they are called from libevent.
  static std::unique_ptr<Resolver> create(event_base* base, const std::string& servers,
                                          std::string* error);

  // Lookups still in flight are abandoned: their callbacks are NOT called, not even
  // with an error, and neither are answers queued but not yet delivered. Safe from
  // inside a callback of this Resolver.
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // A numeric IPv4/IPv6 host is passed through without DNS. Anything else is looked up
  // as A and AAAA (and in /etc/hosts); the endpoints come in c-ares' order (RFC 6724
  // preference), duplicates removed, each with `port`.
  void resolveHost(const std::string& host, std::uint16_t port, Callback cb);

  // SRV records of `name`, sorted by priority (lowest first), then weight (highest
  // first); each target's addresses with that record's port, duplicates removed. A
  // target that does not resolve is left out as long as another one does. If `name`
  // does not exist (NXDOMAIN) or has no SRV records, its A/AAAA records are used with
  // `fallback_port`. Other SRV failures (timeout, SERVFAIL) are errors: the fallback
  // would only meet the same server. A numeric address as `name` is used as it is,
  // with `fallback_port`.
  void resolveService(const std::string& name, std::uint16_t fallback_port, Callback cb);

 private:
  struct Impl;
  explicit Resolver(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace zetian::cluster::discovery
