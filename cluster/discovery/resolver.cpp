// c-ares on the cluster thread's event_base, and the bookkeeping of one lookup.
//
// How c-ares is driven: ARES_OPT_SOCK_STATE_CB tells us which sockets it wants
// watched, for reading and/or writing; each gets one persistent libevent event, which
// hands readiness back through ares_process_fd(). One timer, re-armed from
// ares_timeout() after every call into c-ares, lets it resend and give up.
//
// A Request is one resolveHost()/resolveService() call. It owns its AddressLookups
// (the host, the fallback name, or one per SRV target) and counts what it still waits
// for; when the count reaches zero the result is queued for delivery and the Request
// is freed. c-ares holds raw pointers to Requests and AddressLookups, which is safe
// because a Request is only freed after every c-ares callback it expects has run.
//
// Traps:
// - c-ares may call a completion callback before the call that started the query
//   returns: ares_getaddrinfo() answers from /etc/hosts at once, and fails at once on
//   a bad name. The started-but-unanswered count is therefore raised before each
//   query starts, and a Request holds one extra count while it starts its lookups,
//   so a synchronous answer can never free it under our feet.
// - Completion callbacks also run inside ares_process_fd(), from within our socket
//   or timer event. Destroying the channel there would free c-ares state it is still
//   walking. That is why user callbacks are never called from c-ares: finish() only
//   queues the answer, and a separate event delivers it, outside c-ares.
// - ares_destroy() calls every pending callback with ARES_EDESTRUCTION (and the
//   socket-state callback for every socket it closes). Those callbacks must neither
//   start queries nor report anything: they return at once.
// - c-ares 1.18 does not recognise a numeric IPv4 address in ares_getaddrinfo() with
//   AF_UNSPEC (it checks IPv6 after IPv4 and forgets the IPv4 match) and sends it to
//   DNS. Numeric hosts are therefore recognised here, before c-ares sees them.
// - A socket event may be freed from inside its own callback (c-ares closes a socket
//   while processing it, or stops wanting write readiness); libevent allows that, and
//   nothing touches the event after ares_process_fd() returns.
#include "cluster/discovery/resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "cluster/listen_address.h"
#include "cluster/log_sink.h"
#include "cluster/owner_thread.h"
#include "conf/syntax.h"

namespace zetian::cluster::discovery {
namespace {

// c-ares' per-try timeout and number of rounds over the servers. The second round
// waits twice as long, so one dead server costs about 2 s + 4 s.
constexpr int kTryTimeoutMs = 2000;
constexpr int kTries = 2;

constexpr std::uint16_t kDnsPort = 53;
constexpr std::size_t kMaxTargetsNamed = 5;      // in one error message

// The canonical text of a numeric IPv4 or IPv6 address, or nullopt for anything else.
std::optional<std::string> numericAddress(const std::string& host) {
  char text[INET6_ADDRSTRLEN];
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
    return std::string(inet_ntop(AF_INET, &v4, text, sizeof text));
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    return std::string(inet_ntop(AF_INET6, &v6, text, sizeof text));
  }
  return std::nullopt;
}

// What a c-ares status means for a lookup of `records` ("A/AAAA", "SRV").
std::string describeStatus(int status, std::string_view records) {
  switch (status) {
    case ARES_ENOTFOUND:
      return "no such name (NXDOMAIN)";
    case ARES_ENODATA:
      return "the name has no " + std::string(records) + " records";
    case ARES_ETIMEOUT:
      return "no answer from the DNS server(s) within " + std::to_string(kTries) + " tries";
    case ARES_ECONNREFUSED:
      return "the DNS server(s) could not be reached (connection refused)";
    case ARES_ESERVFAIL:
      return "the DNS server failed to answer (SERVFAIL)";
    case ARES_EREFUSED:
      return "the DNS server refused the query";
    case ARES_EBADNAME:
      return "not a valid DNS name";
    default:
      return ares_strerror(status);
  }
}

// The c-ares library state is process-wide; on Linux it needs no set-up, but the API
// asks for the call, once, before the first channel.
void initAresOnce() {
  static std::once_flag once;
  std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
}

// "IP[:PORT],..." into c-ares' server list; false with *error on the first bad entry.
bool parseServers(const std::string& servers, std::vector<ares_addr_port_node>* nodes,
                  std::string* error) {
  const std::string prefix = "DNS servers " + backquoted(servers) + ": ";
  std::size_t start = 0;
  while (start <= servers.size()) {
    std::size_t comma = servers.find(',', start);
    if (comma == std::string::npos) comma = servers.size();
    std::string item = servers.substr(start, comma - start);
    const auto first = item.find_first_not_of(" \t");
    const auto last = item.find_last_not_of(" \t");
    item = first == std::string::npos ? std::string() : item.substr(first, last - first + 1);
    start = comma + 1;

    if (item.empty()) {
      *error = prefix + "an entry is empty; write IP:PORT[,IP:PORT], e.g. 127.0.0.1:53";
      return false;
    }
    std::string why;
    const auto parts = conf::parseHostPort(item, &why, {.default_port = kDnsPort});
    if (!parts) {
      *error = prefix + why;
      return false;
    }
    const std::string& host = parts->host;
    const std::uint16_t port = parts->port;
    ares_addr_port_node node{};
    in_addr v4{};
    in6_addr v6{};
    if (inet_pton(AF_INET, host.c_str(), &v4) == 1) {
      node.family = AF_INET;
      node.addr.addr4 = v4;
    } else if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
      node.family = AF_INET6;
      static_assert(sizeof node.addr.addr6 == sizeof v6);
      std::memcpy(&node.addr.addr6, &v6, sizeof v6);
    } else {
      *error = prefix + backquoted(host) +
               " is not a numeric IP address (a DNS server cannot be given by name: "
               "finding it would need a DNS server)";
      return false;
    }
    node.udp_port = port;
    node.tcp_port = port;
    nodes->push_back(node);
  }
  for (std::size_t i = 0; i + 1 < nodes->size(); ++i) (*nodes)[i].next = &(*nodes)[i + 1];
  return true;
}

struct SrvRecord {
  std::string target;
  std::uint16_t port;
  std::uint16_t priority;
  std::uint16_t weight;
};

}  // namespace

std::string formatEndpoint(const Endpoint& endpoint) {
  const std::string port = std::to_string(endpoint.port);
  if (endpoint.host.find(':') != std::string::npos) return "[" + endpoint.host + "]:" + port;
  return endpoint.host + ":" + port;
}

struct Resolver::Impl {
  struct Request;

  // One A/AAAA lookup: the host, the fallback name, or one SRV target. c-ares is handed
  // a pointer to it; it lives in its Request's deque, whose elements never move.
  struct AddressLookup {
    Request* request;
    std::string host;  // as looked up, for messages
    std::uint16_t port;
    std::vector<Endpoint> endpoints;
    int status = ARES_SUCCESS;  // endpoints is empty unless this is ARES_SUCCESS
  };

  struct Request {
    Impl* impl;
    std::uint64_t id;
    bool service;        // resolveService() rather than resolveHost()
    std::string name;    // as the caller gave it
    std::uint16_t port;  // resolveHost: the port; resolveService: the fallback port
    Callback callback;
    std::string error;              // set when the request failed before any lookup
    int srv_status = ARES_SUCCESS;  // resolveService only
    bool fell_back = false;         // the name had no SRV records: lookups[0] is its A/AAAA
    std::deque<AddressLookup> lookups;
    std::size_t unanswered = 0;  // queries started and not answered, plus held counts
  };

  struct Delivery {
    Callback callback;
    std::vector<Endpoint> endpoints;
    std::string error;
  };

  explicit Impl(event_base* b) : base(b) {}
  ~Impl();

  Request* newRequest(bool service, const std::string& name, std::uint16_t port, Callback cb);
  void startAddressLookup(Request* request, const std::string& host, std::uint16_t port,
                          bool absolute_name);
  void startSrvQuery(Request* request);
  void release(Request* request);
  void finish(Request* request);
  static std::vector<Endpoint> collectEndpoints(const Request& request);
  static std::string failureText(const Request& request);

  void watchSocket(ares_socket_t fd, bool readable, bool writable);
  void armTimer();

  static void onSocketState(void* data, ares_socket_t fd, int readable, int writable);
  static void onSocketReady(evutil_socket_t fd, short what, void* arg);
  static void onTimer(evutil_socket_t fd, short what, void* arg);
  static void onDeliveryDue(evutil_socket_t fd, short what, void* arg);
  static void onAddrInfo(void* arg, int status, int timeouts, ares_addrinfo* result);
  static void onSrvAnswer(void* arg, int status, int timeouts, unsigned char* answer, int length);

  // Everything below is used on the owner thread only (the one running `base`).
  event_base* const base;
  const OwnerThread owner;
  ares_channel channel = nullptr;
  event* timer = nullptr;           // c-ares' next timeout
  event* delivery_event = nullptr;  // made active whenever `deliveries` gains an entry
  std::map<ares_socket_t, event*> socket_events;  // the sockets c-ares asked us to watch
  std::map<std::uint64_t, std::unique_ptr<Request>> requests;
  std::uint64_t next_request_id = 1;
  std::deque<Delivery> deliveries;  // answered, waiting for onDeliveryDue
  // Points at a flag on onDeliveryDue's stack while it runs user callbacks; the
  // destructor sets it, so that onDeliveryDue stops touching a freed Impl.
  bool* destroyed_while_delivering = nullptr;
};

Resolver::Impl::~Impl() {
  if (destroyed_while_delivering != nullptr) *destroyed_while_delivering = true;
  // Calls back every pending query with ARES_EDESTRUCTION (ignored) and reports every
  // socket closed through onSocketState, which frees its event.
  if (channel != nullptr) ares_destroy(channel);
  for (auto& [fd, ev] : socket_events) event_free(ev);
  socket_events.clear();
  if (timer != nullptr) event_free(timer);
  if (delivery_event != nullptr) event_free(delivery_event);
}

Resolver::Impl::Request* Resolver::Impl::newRequest(bool service, const std::string& name,
                                                    std::uint16_t port, Callback cb) {
  auto request = std::make_unique<Request>();
  request->impl = this;
  request->id = next_request_id++;
  request->service = service;
  request->name = name;
  request->port = port;
  request->callback = std::move(cb);
  // The count held while the request starts its first query; released by the caller.
  request->unanswered = 1;
  Request* raw = request.get();
  requests.emplace(raw->id, std::move(request));
  return raw;
}

// Counts the lookup as unanswered before starting it: the answer may come before
// ares_getaddrinfo() returns.
void Resolver::Impl::startAddressLookup(Request* request, const std::string& host,
                                        std::uint16_t port, bool absolute_name) {
  AddressLookup& lookup = request->lookups.emplace_back(AddressLookup{request, host, port, {}});
  ++request->unanswered;
  if (const auto numeric = numericAddress(host)) {
    lookup.endpoints.push_back(Endpoint{*numeric, port});
    release(request);
    return;
  }
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  // A trailing dot makes c-ares skip the search list (and /etc/hosts, whose entries
  // have no dot): for SRV targets, which RFC 2782 says are absolute names.
  const std::string query_name = absolute_name && host.back() != '.' ? host + "." : host;
  ares_getaddrinfo(channel, query_name.c_str(), nullptr, &hints, &Impl::onAddrInfo, &lookup);
}

void Resolver::Impl::startSrvQuery(Request* request) {
  ++request->unanswered;
  // ares_query, not ares_search: a service name is absolute, the search list would only
  // send more queries for names that cannot exist.
  ares_query(channel, request->name.c_str(), ns_c_in, ns_t_srv, &Impl::onSrvAnswer, request);
}

void Resolver::Impl::release(Request* request) {
  // Finishing twice would deliver twice and free the request under c-ares' feet.
  if (request->unanswered == 0) abortBrokenInvariant("a lookup was released more often than it was started");
  if (--request->unanswered == 0) finish(request);
}

std::vector<Endpoint> Resolver::Impl::collectEndpoints(const Request& request) {
  std::vector<Endpoint> endpoints;
  std::set<std::pair<std::string, std::uint16_t>> seen;
  for (const AddressLookup& lookup : request.lookups) {
    for (const Endpoint& endpoint : lookup.endpoints) {
      if (seen.emplace(endpoint.host, endpoint.port).second) endpoints.push_back(endpoint);
    }
  }
  return endpoints;
}

std::string Resolver::Impl::failureText(const Request& request) {
  if (!request.error.empty()) return request.error;
  const std::string quoted = backquoted(request.name);
  if (!request.service) {
    const int status = request.lookups.empty() ? ARES_ENOTFOUND : request.lookups[0].status;
    return "cannot resolve " + quoted + " (A/AAAA): " + describeStatus(status, "A/AAAA");
  }
  const std::string prefix = "cannot discover nodes at " + quoted + ": ";
  if (request.fell_back) {
    return prefix + "tried SRV (" + describeStatus(request.srv_status, "SRV") +
           "), then A/AAAA with port " + std::to_string(request.port) + " (" +
           describeStatus(request.lookups[0].status, "A/AAAA") + ")";
  }
  if (request.srv_status != ARES_SUCCESS) {
    return prefix + "SRV lookup failed: " + describeStatus(request.srv_status, "SRV") +
           " (A/AAAA records are tried only when the name has no SRV records)";
  }
  if (request.lookups.empty()) {
    return prefix + "its SRV records say the service is not offered there (target \".\")";
  }
  // Each target once (several records may share one), and only the first few: the
  // message goes into a log line.
  std::string text = prefix + "none of its SRV targets resolved: ";
  std::set<std::string> named;
  for (const AddressLookup& lookup : request.lookups) {
    if (!named.insert(lookup.host).second) continue;
    if (named.size() > kMaxTargetsNamed) {
      text += ", ...";
      break;
    }
    if (named.size() > 1) text += ", ";
    text += backquoted(lookup.host) + " (" + describeStatus(lookup.status, "A/AAAA") + ")";
  }
  return text;
}

// Queues the answer and frees the request. Runs anywhere, including inside c-ares and
// inside resolveHost()/resolveService(), so it never calls the user.
void Resolver::Impl::finish(Request* request) {
  Delivery delivery;
  delivery.callback = std::move(request->callback);
  delivery.endpoints = collectEndpoints(*request);
  if (delivery.endpoints.empty()) delivery.error = failureText(*request);
  requests.erase(request->id);
  deliveries.push_back(std::move(delivery));
  event_active(delivery_event, EV_TIMEOUT, 0);
}

void Resolver::Impl::onAddrInfo(void* arg, int status, int /*timeouts*/, ares_addrinfo* result) {
  const std::unique_ptr<ares_addrinfo, decltype(&ares_freeaddrinfo)> owned(result,
                                                                           &ares_freeaddrinfo);
  if (status == ARES_EDESTRUCTION) return;  // inside ares_destroy(): the Impl is going away
  auto* lookup = static_cast<AddressLookup*>(arg);
  Request* request = lookup->request;
  lookup->status = status;
  if (status == ARES_SUCCESS && result != nullptr) {
    for (const ares_addrinfo_node* node = result->nodes; node != nullptr; node = node->ai_next) {
      const auto text = addressText(node->ai_addr);
      if (!text) continue;
      Endpoint endpoint{*text, lookup->port};
      if (std::find(lookup->endpoints.begin(), lookup->endpoints.end(), endpoint) ==
          lookup->endpoints.end()) {
        lookup->endpoints.push_back(std::move(endpoint));
      }
    }
  }
  if (status == ARES_SUCCESS && lookup->endpoints.empty()) lookup->status = ARES_ENODATA;
  request->impl->release(request);  // may free the request, and `lookup` with it
}

void Resolver::Impl::onSrvAnswer(void* arg, int status, int /*timeouts*/, unsigned char* answer,
                                 int length) {
  if (status == ARES_EDESTRUCTION) return;  // inside ares_destroy(): the Impl is going away
  auto* request = static_cast<Request*>(arg);
  Impl* impl = request->impl;

  std::vector<SrvRecord> records;
  if (status == ARES_SUCCESS) {
    ares_srv_reply* replies = nullptr;
    status = ares_parse_srv_reply(answer, length, &replies);
    for (const ares_srv_reply* r = replies; r != nullptr; r = r->next) {
      records.push_back(
          SrvRecord{r->host != nullptr ? r->host : "", r->port, r->priority, r->weight});
    }
    if (replies != nullptr) ares_free_data(replies);
    if (status == ARES_SUCCESS && records.empty()) status = ARES_ENODATA;
  }
  request->srv_status = status;

  if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
    request->fell_back = true;
    impl->startAddressLookup(request, request->name, request->port, false);
  } else if (status == ARES_SUCCESS) {
    // RFC 2782 picks randomly by weight among equal priorities to spread load; every
    // node gets contacted here anyway, so heavier ones simply come first.
    std::stable_sort(records.begin(), records.end(), [](const SrvRecord& a, const SrvRecord& b) {
      if (a.priority != b.priority) return a.priority < b.priority;
      return a.weight > b.weight;
    });
    for (const SrvRecord& record : records) {
      if (record.target.empty() || record.target == ".") continue;  // "not offered here"
      impl->startAddressLookup(request, record.target, record.port, true);
    }
  }
  impl->release(request);  // the SRV query's own count, held while the lookups started
}

void Resolver::Impl::onSocketState(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<Impl*>(data)->watchSocket(fd, readable != 0, writable != 0);
}

// Called by c-ares when it opens or closes a socket or changes what it waits for; it
// reports a close before closing, so the event leaves epoll while the fd is still ours.
void Resolver::Impl::watchSocket(ares_socket_t fd, bool readable, bool writable) {
  const short wanted =
      static_cast<short>(EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
  const auto it = socket_events.find(fd);
  if (it != socket_events.end()) {
    if (event_get_events(it->second) == wanted) return;
    event_free(it->second);
    socket_events.erase(it);
  }
  if (!readable && !writable) return;
  event* ev = event_new(base, fd, wanted, &Impl::onSocketReady, this);
  // Without the event the query still ends: the timer makes c-ares give up on it.
  if (ev == nullptr) return;
  if (event_add(ev, nullptr) != 0) {
    event_free(ev);
    return;
  }
  socket_events.emplace(fd, ev);
}

void Resolver::Impl::armTimer() {
  timeval buffer{};
  const timeval* wait = ares_timeout(channel, nullptr, &buffer);
  if (wait == nullptr) {
    event_del(timer);  // nothing pending
  } else {
    event_add(timer, wait);
  }
}

void Resolver::Impl::onSocketReady(evutil_socket_t fd, short what, void* arg) {
  auto* impl = static_cast<Impl*>(arg);
  impl->owner.check();
  // Answers found here only get queued (finish()), so `impl` outlives this call.
  ares_process_fd(impl->channel, (what & EV_READ) != 0 ? fd : ARES_SOCKET_BAD,
                  (what & EV_WRITE) != 0 ? fd : ARES_SOCKET_BAD);
  impl->armTimer();
}

void Resolver::Impl::onTimer(evutil_socket_t /*fd*/, short /*what*/, void* arg) {
  auto* impl = static_cast<Impl*>(arg);
  impl->owner.check();
  ares_process_fd(impl->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  impl->armTimer();
}

// Hands queued answers to their callbacks, outside c-ares. A callback may start lookups
// (their answers queue up and re-activate this event) or destroy the Resolver.
void Resolver::Impl::onDeliveryDue(evutil_socket_t /*fd*/, short /*what*/, void* arg) {
  auto* impl = static_cast<Impl*>(arg);
  impl->owner.check();
  bool destroyed = false;
  impl->destroyed_while_delivering = &destroyed;
  // Only the answers queued so far: later ones wait for the next turn of the loop.
  for (std::size_t batch = impl->deliveries.size(); batch > 0 && !impl->deliveries.empty();
       --batch) {
    Delivery delivery = std::move(impl->deliveries.front());
    impl->deliveries.pop_front();
    delivery.callback(std::move(delivery.endpoints), std::move(delivery.error));
    if (destroyed) return;  // `impl` is freed
  }
  impl->destroyed_while_delivering = nullptr;
  if (!impl->deliveries.empty()) event_active(impl->delivery_event, EV_TIMEOUT, 0);
}

std::unique_ptr<Resolver> Resolver::create(event_base* base, const std::string& servers,
                                           std::string* error) {
  std::string ignored;
  if (error == nullptr) error = &ignored;
  std::vector<ares_addr_port_node> server_nodes;
  if (!servers.empty() && !parseServers(servers, &server_nodes, error)) return nullptr;

  initAresOnce();
  auto impl = std::make_unique<Impl>(base);
  impl->timer = evtimer_new(base, &Impl::onTimer, impl.get());
  impl->delivery_event = event_new(base, -1, 0, &Impl::onDeliveryDue, impl.get());
  if (impl->timer == nullptr || impl->delivery_event == nullptr) {
    *error = "cannot start the DNS resolver: out of memory for libevent events";
    return nullptr;
  }

  ares_options options{};
  options.sock_state_cb = &Impl::onSocketState;
  options.sock_state_cb_data = impl.get();
  options.timeout = kTryTimeoutMs;  // milliseconds, with ARES_OPT_TIMEOUTMS
  options.tries = kTries;
  const int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
  int status = ares_init_options(&impl->channel, &options, mask);
  if (status != ARES_SUCCESS) {
    impl->channel = nullptr;
    *error = std::string("cannot start the DNS resolver (c-ares): ") + ares_strerror(status);
    return nullptr;
  }
  if (!server_nodes.empty()) {
    status = ares_set_servers_ports(impl->channel, server_nodes.data());
    if (status != ARES_SUCCESS) {
      *error = "cannot use DNS servers " + backquoted(servers) + ": " + ares_strerror(status);
      return nullptr;
    }
  }
  return std::unique_ptr<Resolver>(new Resolver(std::move(impl)));
}

Resolver::Resolver(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Resolver::~Resolver() { impl_->owner.check(); }

void Resolver::resolveHost(const std::string& host, std::uint16_t port, Callback cb) {
  impl_->owner.check();
  Impl::Request* request = impl_->newRequest(false, host, port, std::move(cb));
  if (host.empty()) {
    request->error = "cannot resolve an empty host name";
  } else {
    impl_->startAddressLookup(request, host, port, false);
  }
  impl_->release(request);
  impl_->armTimer();
}

void Resolver::resolveService(const std::string& name, std::uint16_t fallback_port, Callback cb) {
  impl_->owner.check();
  Impl::Request* request = impl_->newRequest(true, name, fallback_port, std::move(cb));
  if (name.empty()) {
    request->error = "cannot discover nodes: the DNS name is empty";
  } else if (numericAddress(name)) {
    // An address has no SRV records; asking would only cost a round trip.
    request->fell_back = true;
    impl_->startAddressLookup(request, name, fallback_port, false);
  } else {
    impl_->startSrvQuery(request);
  }
  impl_->release(request);
  impl_->armTimer();
}

}  // namespace zetian::cluster::discovery
