#include "milter/policy_server.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "milter/log.h"

namespace zetian::milter::policy {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kReadPiece = 16384;
constexpr int kAcceptBatch = 64;
constexpr auto kStopWait = std::chrono::seconds(10);
constexpr auto kLogEvery = std::chrono::seconds(10);

// Request states as labels, in ProtocolState's order.
constexpr std::array kStates = {ProtocolState::Connect, ProtocolState::Ehlo, ProtocolState::Helo,
                                ProtocolState::Mail,    ProtocolState::Rcpt, ProtocolState::Data,
                                ProtocolState::EndOfMessage, ProtocolState::Vrfy, ProtocolState::Etrn,
                                ProtocolState::Unknown};

static_assert(kStates.size() <= 16, "a state index is packed in 4 bits beside the connection id");

std::size_t stateIndex(ProtocolState state) {
  for (std::size_t i = 0; i < kStates.size(); ++i)
    if (kStates[i] == state) return i;
  return kStates.size() - 1;
}

// Why a connection was closed for its input: the parser's errors, then the view's.
constexpr std::array kMalformed = {ParseError::LineTooLong,  ParseError::TooManyAttributes, ParseError::RequestTooLarge,
                                   ParseError::MissingEquals, ParseError::EmptyName,        ParseError::BadNameByte,
                                   ParseError::NulByte,       ParseError::ControlByte,      ParseError::EmptyRequest,
                                   ParseError::TruncatedRequest};
constexpr std::size_t kNotPolicyRequest = kMalformed.size();  // viewOf() refused it
constexpr std::size_t kMalformedKinds = kMalformed.size() + 1;

std::size_t malformedIndex(ParseError error) {
  for (std::size_t i = 0; i < kMalformed.size(); ++i)
    if (kMalformed[i] == error) return i;
  return kNotPolicyRequest;
}

const char* malformedName(std::size_t index) {
  return index < kMalformed.size() ? errorName(kMalformed[index]) : "not_a_policy_request";
}

std::string jsonString(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (byte < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", byte);
      out += buf;
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

std::string describePeer(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = "";
  if (addr.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(addr);
    inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(a.sin_port));
  }
  if (addr.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(addr);
    inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a.sin6_port));
  }
  return "unix";
}

// A listening socket for libmilter's syntax. -1 and *error on failure.
int openListener(const std::string& spec, bool* unix_created, std::string* error) {
  *unix_created = false;
  const auto colon = spec.find(':');
  const std::string kind = colon == std::string::npos ? "" : spec.substr(0, colon);
  const std::string rest = colon == std::string::npos ? spec : spec.substr(colon + 1);
  if (kind == "unix" || kind == "local") {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (rest.empty() || rest.size() >= sizeof sun.sun_path) {
      *error = "policy.socket '" + spec + "': the path is empty or too long";
      return -1;
    }
    std::memcpy(sun.sun_path, rest.c_str(), rest.size() + 1);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      *error = std::string("socket(): ") + std::strerror(errno);
      return -1;
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun) != 0 || ::listen(fd, SOMAXCONN) != 0) {
      *error = "cannot listen on " + spec + ": " + std::strerror(errno) +
               "; is another zetian-milter running there, or is the folder missing or not writable by "
               "milter.user?";
      ::close(fd);
      return -1;
    }
    *unix_created = true;
    return fd;
  }
  if (kind != "inet" && kind != "inet6") {
    *error = "policy.socket '" + spec + "': expected inet:PORT@HOST, inet6:PORT@HOST or unix:/path";
    return -1;
  }
  const auto at = rest.find('@');
  const std::string port = rest.substr(0, at);
  char* end = nullptr;
  const unsigned long port_number = std::strtoul(port.c_str(), &end, 10);
  if (port.empty() || *end != '\0' || port_number > 65535) {
    *error = "policy.socket '" + spec + "': the port must be a number from 0 to 65535";
    return -1;
  }
  std::string host = at == std::string::npos ? "" : rest.substr(at + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = kind == "inet6" ? AF_INET6 : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const int gai = getaddrinfo(host.empty() || host == "*" ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (gai != 0 || !res) {
    *error = "policy.socket '" + spec + "': " + gai_strerror(gai);
    return -1;
  }
  const int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(res);
    *error = std::string("socket(): ") + std::strerror(errno);
    return -1;
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (res->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  const bool ok = ::bind(fd, res->ai_addr, res->ai_addrlen) == 0 && ::listen(fd, SOMAXCONN) == 0;
  const int saved = errno;
  freeaddrinfo(res);
  if (!ok) {
    *error = "cannot listen on " + spec + ": " + std::strerror(saved) + "; is another zetian-milter running there?";
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::optional<ServerOptions> serverOptionsOf(zetian_engine* engine, std::string* error) {
  auto text = [&](const char* key) -> std::optional<std::string> {
    const char* value = zetian_engine_option(engine, key);
    if (!value) {
      *error = std::string("the engine has no option ") + key;
      return std::nullopt;
    }
    return std::string(value);
  };
  auto number = [&](const char* key) -> std::optional<unsigned long long> {
    auto value = text(key);
    if (!value) return std::nullopt;
    char* end = nullptr;
    errno = 0;
    const unsigned long long n = std::strtoull(value->c_str(), &end, 10);
    if (value->empty() || *end != '\0' || errno != 0) {
      *error = std::string("option ") + key + " is not a number: '" + *value + "'";
      return std::nullopt;
    }
    return n;
  };
  ServerOptions o;
  auto socket = text("policy.socket");
  auto connections = number("policy.max_connections");
  auto idle = number("policy.idle_timeout_ms");
  auto request = number("policy.request_timeout_ms");
  auto session = number("policy.session_timeout_ms");
  auto sessions = number("policy.max_sessions");
  auto tempfail = text("policy.tempfail_action");
  if (!socket || !connections || !idle || !request || !session || !sessions || !tempfail) return std::nullopt;
  o.socket = *socket;
  o.max_connections = static_cast<std::size_t>(*connections);
  o.idle_timeout = std::chrono::milliseconds(*idle);
  o.request_timeout = std::chrono::milliseconds(*request);
  o.host.session_timeout = std::chrono::milliseconds(*session);
  o.host.max_sessions = static_cast<std::size_t>(*sessions);
  o.host.action.tempfail_as_defer_if_permit = *tempfail == "defer_if_permit";
  return o;
}

// Closures from other threads for the loop: a mutex-guarded queue and an eventfd.
// Shared with the Host's pending checks, so a verdict that arrives after the loop has
// ended is dropped here without touching anything else.
struct Mailbox {
  std::mutex mutex;
  std::vector<std::function<void()>> queue;
  bool closed = false;
  int fd = -1;

  void post(std::function<void()> fn) {
    bool wake = false;
    {
      std::lock_guard lock(mutex);
      if (closed) return;
      wake = queue.empty();
      queue.push_back(std::move(fn));
    }
    if (wake) {
      const std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
    }
  }
};

struct Counters {
  std::atomic<std::uint64_t> requests[kStates.size()][kAnswerKinds] = {};
  std::atomic<std::uint64_t> malformed[kMalformedKinds] = {};
  std::atomic<std::uint64_t> connections{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> idle_timeouts{0};
  std::atomic<std::uint64_t> request_timeouts{0};
  std::atomic<std::uint64_t> accept_errors{0};
  std::atomic<std::uint64_t> sessions{0};
  std::atomic<std::uint64_t> in_flight{0};
  std::atomic<std::uint64_t> sessions_expired{0};
  std::atomic<std::uint64_t> sessions_evicted{0};
  std::atomic<std::uint64_t> sessions_ended{0};
  std::atomic<std::uint64_t> headers_dropped{0};
  std::atomic<std::uint64_t> repeats{0};
};

struct Server::Impl {
  struct Connection {
    Impl* impl = nullptr;
    std::uint64_t id = 0;
    int fd = -1;
    std::string peer;
    event* read_event = nullptr;
    event* write_event = nullptr;
    RequestParser parser;
    std::string in;  // read, not yet given to the parser
    std::string out;  // answer not yet written
    bool waiting = false;  // a request is with the Host
    bool eof = false;      // the peer closed its side
    bool reading = false;  // read_event is added
    bool writing = false;  // write_event is added
    bool processing = false;  // inside process(): an inline answer must not re-enter it
    Clock::time_point last_activity;
    Clock::time_point request_started;
  };

  zetian_engine* engine;
  ServerOptions options;
  int listen_fd = -1;
  bool unix_created = false;
  int bound_port = 0;

  event_base* base = nullptr;
  event* accept_event = nullptr;
  event* mailbox_event = nullptr;
  event* tick_event = nullptr;
  event* resume_accept = nullptr;
  std::shared_ptr<Mailbox> mailbox = std::make_shared<Mailbox>();
  std::unique_ptr<Host> host;
  std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections;
  std::uint64_t next_id = 1;
  std::thread thread;
  bool started = false;
  bool stopped = false;
  bool stopping = false;
  Clock::time_point stop_deadline;
  timeval tick{1, 0};  // how often timeouts are checked

  Counters counters;
  // Rate-limited log lines: when each kind last logged, and how many since.
  std::unordered_map<std::string, std::pair<Clock::time_point, std::uint64_t>> log_marks;

  void log(int level, const std::string& line) { logLine(engine, level, line); }

  // At most one line per kind every kLogEvery; the count says how many it stands for.
  void logLimited(int level, const std::string& kind, const std::string& line) {
    const auto now = Clock::now();
    auto& [last, count] = log_marks[kind];
    ++count;
    if (last != Clock::time_point{} && now - last < kLogEvery) return;
    log(level, line + (count > 1 ? " count=" + std::to_string(count) : ""));
    last = now;
    count = 0;
  }

  void publishHost() {
    const HostCounters& c = host->counters();
    counters.sessions.store(host->sessions(), std::memory_order_relaxed);
    counters.in_flight.store(host->inFlight(), std::memory_order_relaxed);
    counters.sessions_expired.store(c.sessions_expired, std::memory_order_relaxed);
    counters.sessions_evicted.store(c.sessions_evicted, std::memory_order_relaxed);
    counters.sessions_ended.store(c.sessions_ended, std::memory_order_relaxed);
    counters.headers_dropped.store(c.headers_dropped, std::memory_order_relaxed);
    counters.repeats.store(c.repeats, std::memory_order_relaxed);
  }

  // -- the loop thread

  void run() {
    host = std::make_unique<Host>(engine, options.host,
                                  [mailbox = mailbox](std::function<void()> fn) { mailbox->post(std::move(fn)); });
    event_add(accept_event, nullptr);
    event_add(mailbox_event, nullptr);
    // Timeouts are checked every tick: a quarter of the shortest, within 10 ms and 1 s,
    // so a timeout fires at most a quarter late (or 1 s for the long ones).
    const auto shortest = std::min(options.request_timeout, options.idle_timeout);
    const auto step = std::clamp<std::chrono::milliseconds>(shortest / 4, std::chrono::milliseconds(10),
                                                            std::chrono::milliseconds(1000));
    tick = timeval{static_cast<time_t>(step.count() / 1000), static_cast<suseconds_t>(step.count() % 1000 * 1000)};
    event_add(tick_event, &tick);
    event_base_dispatch(base);
    {
      std::lock_guard lock(mailbox->mutex);
      mailbox->closed = true;
      mailbox->queue.clear();
    }
    host.reset();
    counters.sessions.store(0, std::memory_order_relaxed);
  }

  void onAccept() {
    for (int i = 0; i < kAcceptBatch; ++i) {
      sockaddr_storage addr{};
      socklen_t len = sizeof addr;
      const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        if (errno == ECONNABORTED || errno == EPROTO) continue;
        counters.accept_errors.fetch_add(1, std::memory_order_relaxed);
        logLimited(1, "accept", std::string("policy_accept_failed error=\"") + std::strerror(errno) +
                                    "\" hint=\"raise LimitNOFILE or lower policy.max_connections\"");
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors: pause instead of spinning on a listener that stays readable.
          event_del(accept_event);
          const timeval pause{0, 100000};
          event_add(resume_accept, &pause);
        }
        return;
      }
      if (connections.size() >= options.max_connections) {
        ::close(fd);
        counters.refused.fetch_add(1, std::memory_order_relaxed);
        logLimited(1, "cap",
                   "policy_connection_refused reason=max_connections max=" + std::to_string(options.max_connections) +
                       " hint=\"raise policy.max_connections, or lower Postfix's smtpd process limit\"");
        continue;
      }
      if (addr.ss_family == AF_INET || addr.ss_family == AF_INET6) {
        const int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      }
      auto c = std::make_unique<Connection>();
      c->id = next_id++;
      c->fd = fd;
      c->peer = describePeer(addr);
      c->last_activity = Clock::now();
      c->impl = this;
      c->read_event = event_new(base, fd, EV_READ | EV_PERSIST, &Impl::readCallback, c.get());
      c->write_event = event_new(base, fd, EV_WRITE | EV_PERSIST, &Impl::writeCallback, c.get());
      if (!c->read_event || !c->write_event) {
        if (c->read_event) event_free(c->read_event);
        if (c->write_event) event_free(c->write_event);
        ::close(fd);
        continue;
      }
      event_add(c->read_event, nullptr);
      c->reading = true;
      counters.connections_total.fetch_add(1, std::memory_order_relaxed);
      connections.emplace(c->id, std::move(c));
      counters.connections.store(connections.size(), std::memory_order_relaxed);
    }
  }

  void close(Connection* c) {
    event_free(c->read_event);
    event_free(c->write_event);
    ::close(c->fd);
    host->connectionClosed(c->id);
    connections.erase(c->id);  // frees c
    counters.connections.store(connections.size(), std::memory_order_relaxed);
  }

  void malformed(Connection* c, std::size_t kind, const std::string& detail) {
    counters.malformed[kind].fetch_add(1, std::memory_order_relaxed);
    logLimited(1, std::string("malformed ") + malformedName(kind),
               std::string("policy_request_malformed peer=") + c->peer + " reason=" + malformedName(kind) +
                   (detail.empty() ? "" : " detail=" + jsonString(detail)) + " effect=\"connection closed\"");
    close(c);
  }

  void onRead(Connection* c) {
    char buf[kReadPiece];
    const ssize_t n = ::read(c->fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      close(c);
      return;
    }
    if (n == 0) {
      c->eof = true;
      pauseReading(c);
    } else {
      c->in.append(buf, static_cast<std::size_t>(n));
      c->last_activity = Clock::now();
    }
    process(c);
  }

  // Parse what was read and hand the requests over, one at a time. Returns false when
  // the connection was closed (and freed).
  bool process(Connection* c) {
    if (c->processing) return true;  // an inline answer inside the loop below
    c->processing = true;
    const std::uint64_t id = c->id;
    while (!c->waiting && c->out.empty()) {
      const bool was_idle = c->parser.idle();
      const auto step = c->parser.feed(c->in);
      c->in.erase(0, step.consumed);
      if (was_idle && step.consumed > 0) c->request_started = Clock::now();
      if (step.status == RequestParser::Status::Failed) {
        malformed(c, malformedIndex(c->parser.error()), "");
        return false;
      }
      if (step.status == RequestParser::Status::NeedMore) break;
      Request request = c->parser.takeRequest();
      std::string why;
      auto view = viewOf(request, &why);
      if (!view) {
        malformed(c, kNotPolicyRequest, why);
        return false;
      }
      c->waiting = true;
      const std::size_t state = stateIndex(view->state);
      // id and state in one word, so the closure fits std::function's own storage.
      const std::uint64_t key = id << 4 | state;
      host->handle(id, std::move(*view), Clock::now(),
                   [this, key](const Answer& answer) { answered(key >> 4, key & 0xf, answer); });
      auto it = connections.find(id);  // an answer given inline may have failed to send
      if (it == connections.end()) return false;
      c = it->second.get();
    }
    c->processing = false;
    // Not read while an answer is pending: a connection holds one request at most. An
    // answer given at once leaves the read event as it was (no epoll_ctl per request).
    if (c->waiting || !c->out.empty()) {
      pauseReading(c);
      return true;
    }
    if (c->eof) {
      if (c->parser.finish() != ParseError::None) {
        malformed(c, malformedIndex(c->parser.error()), "");
      } else {
        close(c);  // Postfix closes between requests (max_idle, max_ttl): quietly
      }
      return false;
    }
    if (!c->reading) {
      event_add(c->read_event, nullptr);
      c->reading = true;
    }
    return true;
  }

  static void pauseReading(Connection* c) {
    if (!c->reading) return;
    event_del(c->read_event);
    c->reading = false;
  }

  void answered(std::uint64_t id, std::size_t state, const Answer& answer) {
    counters.requests[state][static_cast<std::size_t>(answer.kind)].fetch_add(1, std::memory_order_relaxed);
    publishHost();
    auto it = connections.find(id);
    if (it == connections.end()) return;  // closed while its request was with the Host
    Connection* c = it->second.get();
    c->waiting = false;
    c->out += answer.text;
    flush(c);
  }

  void flush(Connection* c) {
    while (!c->out.empty()) {
      const ssize_t n = ::send(c->fd, c->out.data(), c->out.size(), MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          if (!c->writing) event_add(c->write_event, nullptr);
          c->writing = true;
          return;
        }
        if (errno == EINTR) continue;
        close(c);
        return;
      }
      c->out.erase(0, static_cast<std::size_t>(n));
    }
    if (c->writing) event_del(c->write_event);
    c->writing = false;
    c->last_activity = Clock::now();
    process(c);  // a pipelined request, the end of input, or reading again
  }

  void onTick() {
    const auto now = Clock::now();
    // Closed after the pass, so the map is not changed while it is walked.
    enum class Why { Idle, Request, Unread };
    std::vector<std::pair<Connection*, Why>> expired;
    for (auto& [id, c] : connections) {
      if (c->waiting) continue;  // the engine's check deadline bounds it
      if (!c->out.empty()) {
        // An answer the client does not read (reading it is paused meanwhile).
        if (now - c->last_activity >= options.request_timeout) expired.emplace_back(c.get(), Why::Unread);
      } else if (!c->parser.idle() || !c->in.empty()) {
        if (now - c->request_started >= options.request_timeout) expired.emplace_back(c.get(), Why::Request);
      } else if (now - c->last_activity >= options.idle_timeout) {
        expired.emplace_back(c.get(), Why::Idle);
      }
    }
    for (const auto& [c, why] : expired) {
      if (why == Why::Idle) {
        counters.idle_timeouts.fetch_add(1, std::memory_order_relaxed);
      } else {
        counters.request_timeouts.fetch_add(1, std::memory_order_relaxed);
        const bool unread = why == Why::Unread;
        logLimited(1, unread ? "answer_unread" : "request_timeout",
                   std::string(unread ? "policy_answer_unread" : "policy_request_timeout") + " peer=" + c->peer +
                       (unread ? " unsent=" + std::to_string(c->out.size())
                               : " buffered=" + std::to_string(c->parser.bufferedBytes())) +
                       " effect=\"connection closed\"");
      }
      close(c);
    }
    host->expire(now);
    publishHost();
    if (stopping && (host->inFlight() == 0 || now >= stop_deadline)) {
      if (host->inFlight() != 0)
        log(1, "policy_stop checks_in_flight=" + std::to_string(host->inFlight()) +
                   " effect=\"their sessions are left to the engine\"");
      event_base_loopbreak(base);
      return;
    }
    const timeval next = stopping ? timeval{0, 20000} : tick;
    event_add(tick_event, &next);
  }

  void beginStop() {
    stopping = true;
    stop_deadline = Clock::now() + kStopWait;
    event_del(accept_event);
    event_del(resume_accept);
    std::vector<Connection*> all;
    for (auto& [id, c] : connections) all.push_back(c.get());
    for (Connection* c : all) close(c);
    event_del(tick_event);
    const timeval now{0, 0};
    event_add(tick_event, &now);
  }

  void onMailbox() {
    std::uint64_t value;
    [[maybe_unused]] ssize_t n = ::read(mailbox->fd, &value, sizeof value);
    std::vector<std::function<void()>> batch;
    {
      std::lock_guard lock(mailbox->mutex);
      batch.swap(mailbox->queue);
    }
    for (auto& fn : batch) fn();
  }

  static void acceptCallback(evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onAccept(); }
  static void mailboxCallback(evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onMailbox(); }
  static void tickCallback(evutil_socket_t, short, void* arg) { static_cast<Impl*>(arg)->onTick(); }
  static void resumeCallback(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<Impl*>(arg);
    if (!self->stopping) event_add(self->accept_event, nullptr);
  }
  static void readCallback(evutil_socket_t, short, void* arg);
  static void writeCallback(evutil_socket_t, short, void* arg);
};

void Server::Impl::readCallback(evutil_socket_t, short, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  c->impl->onRead(c);
}

void Server::Impl::writeCallback(evutil_socket_t, short, void* arg) {
  auto* c = static_cast<Connection*>(arg);
  c->impl->flush(c);
}

std::unique_ptr<Server> Server::open(zetian_engine* engine, ServerOptions options, std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->engine = engine;
  impl->options = std::move(options);
  impl->listen_fd = openListener(impl->options.socket, &impl->unix_created, error);
  if (impl->listen_fd < 0) return nullptr;
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  if (getsockname(impl->listen_fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    if (addr.ss_family == AF_INET) impl->bound_port = ntohs(reinterpret_cast<sockaddr_in&>(addr).sin_port);
    if (addr.ss_family == AF_INET6) impl->bound_port = ntohs(reinterpret_cast<sockaddr_in6&>(addr).sin6_port);
  }
  impl->mailbox->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  impl->base = event_base_new();
  if (impl->mailbox->fd < 0 || !impl->base) {
    *error = std::string("policy server: cannot set up its loop: ") + std::strerror(errno);
    if (impl->mailbox->fd >= 0) ::close(impl->mailbox->fd);
    if (impl->base) event_base_free(impl->base);
    ::close(impl->listen_fd);
    return nullptr;
  }
  Impl* raw = impl.get();
  impl->accept_event = event_new(impl->base, impl->listen_fd, EV_READ | EV_PERSIST, &Impl::acceptCallback, raw);
  impl->mailbox_event = event_new(impl->base, impl->mailbox->fd, EV_READ | EV_PERSIST, &Impl::mailboxCallback, raw);
  impl->tick_event = event_new(impl->base, -1, 0, &Impl::tickCallback, raw);
  impl->resume_accept = event_new(impl->base, -1, 0, &Impl::resumeCallback, raw);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  stop();
  Impl& i = *impl_;
  event_free(i.accept_event);
  event_free(i.mailbox_event);
  event_free(i.tick_event);
  event_free(i.resume_accept);
  event_base_free(i.base);
  ::close(i.mailbox->fd);
  ::close(i.listen_fd);
}

void Server::start() {
  if (impl_->started) return;
  impl_->started = true;
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

void Server::stop() {
  Impl& i = *impl_;
  if (!i.started || i.stopped) return;
  i.stopped = true;
  i.mailbox->post([impl = &i] { impl->beginStop(); });
  i.thread.join();
}

int Server::boundPort() const { return impl_->bound_port; }
bool Server::createdUnixSocket() const { return impl_->unix_created; }

void Server::report(void* ctx, int what, zetian_append_fn append, void* sink) {
  const Impl& i = *static_cast<Server*>(ctx)->impl_;
  const Counters& c = i.counters;
  auto load = [](const std::atomic<std::uint64_t>& v) { return v.load(std::memory_order_relaxed); };
  std::string out;
  if (what == ZETIAN_REPORT_HEALTH) {
    std::uint64_t requests = 0, malformed = 0;
    for (const auto& row : c.requests)
      for (const auto& v : row) requests += load(v);
    for (const auto& v : c.malformed) malformed += load(v);
    out = "{\"socket\":" + jsonString(i.options.socket) + ",\"connections\":" + std::to_string(load(c.connections)) +
          ",\"max_connections\":" + std::to_string(i.options.max_connections) +
          ",\"sessions\":" + std::to_string(load(c.sessions)) + ",\"requests_total\":" + std::to_string(requests) +
          ",\"malformed_total\":" + std::to_string(malformed) + "}";
  } else if (what == ZETIAN_REPORT_METRICS) {
    auto head = [&](const char* name, const char* type, const char* help) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    };
    auto line = [&](const std::string& name, std::uint64_t value) {
      out += name + " " + std::to_string(value) + "\n";
    };
    head("zetian_policy_requests_total", "counter", "Policy delegation requests answered, by protocol_state and action.");
    for (std::size_t s = 0; s < kStates.size(); ++s)
      for (std::size_t a = 0; a < kAnswerKinds; ++a) {
        const std::uint64_t v = load(c.requests[s][a]);
        if (v == 0) continue;
        line(std::string("zetian_policy_requests_total{state=\"") + protocolStateName(kStates[s]) + "\",action=\"" +
                 answerKindName(static_cast<AnswerKind>(a)) + "\"}",
             v);
      }
    head("zetian_policy_repeats_total", "counter",
         "Requests identical to the one before them in the same transaction, answered again without a new charge.");
    line("zetian_policy_repeats_total", load(c.repeats));
    head("zetian_policy_malformed_total", "counter", "Policy connections closed for a malformed request, by reason.");
    for (std::size_t k = 0; k < kMalformedKinds; ++k)
      line(std::string("zetian_policy_malformed_total{reason=\"") + malformedName(k) + "\"}", load(c.malformed[k]));
    head("zetian_policy_connections", "gauge", "Policy connections open now.");
    line("zetian_policy_connections", load(c.connections));
    head("zetian_policy_connections_total", "counter", "Policy connections accepted.");
    line("zetian_policy_connections_total", load(c.connections_total));
    head("zetian_policy_connections_refused_total", "counter", "Policy connections closed at accept: over policy.max_connections.");
    line("zetian_policy_connections_refused_total", load(c.refused));
    head("zetian_policy_connections_timed_out_total", "counter",
         "Policy connections closed for silence (idle_timeout) or an unfinished request (request_timeout).");
    line("zetian_policy_connections_timed_out_total{kind=\"idle\"}", load(c.idle_timeouts));
    line("zetian_policy_connections_timed_out_total{kind=\"request\"}", load(c.request_timeouts));
    head("zetian_policy_accept_errors_total", "counter", "accept() failures on the policy socket.");
    line("zetian_policy_accept_errors_total", load(c.accept_errors));
    head("zetian_policy_sessions", "gauge", "SMTP sessions the policy host holds an engine session for.");
    line("zetian_policy_sessions", load(c.sessions));
    head("zetian_policy_sessions_closed_total", "counter",
         "Policy host sessions closed: unused for session_timeout, the table full, or their smtpd moved on.");
    line("zetian_policy_sessions_closed_total{reason=\"expired\"}", load(c.sessions_expired));
    line("zetian_policy_sessions_closed_total{reason=\"evicted\"}", load(c.sessions_evicted));
    line("zetian_policy_sessions_closed_total{reason=\"ended\"}", load(c.sessions_ended));
    head("zetian_policy_checks_in_flight", "gauge", "Policy host checks waiting for another node's answer.");
    line("zetian_policy_checks_in_flight", load(c.in_flight));
    head("zetian_policy_headers_dropped_total", "counter",
         "Tag headers still waiting at END-OF-MESSAGE, where Postfix cannot prepend them (hook DATA too).");
    line("zetian_policy_headers_dropped_total", load(c.headers_dropped));
  }
  if (!out.empty()) append(sink, out.data(), out.size());
}

}  // namespace zetian::milter::policy
