// The health/admin server: the listening sockets, the connections and their HTTP.
// What each request gets (the routes and the trust rule) is health_routes.h's.
//
// Trust comes from the listener, not from the peer address: the Unix socket and the
// TCP listener each get their own Listener, and every connection knows which one
// accepted it. The Unix socket is guarded by its file mode, so everything is
// allowed there; over TCP, POST and PUT need the admin token.
//
// We create both listening sockets ourselves: libevent's helpers resolve names with a
// blocking getaddrinfo(), cannot set the Unix socket's mode before clients may
// connect, and cannot tell a stale socket file from a live one.
//
// Why not evhttp: libevent 2.1's evhttp keeps reading a connection while it writes a
// reply, so a client that pipelines requests and never reads made the input buffer
// grow without bound (2 GB in 6.5 s), and it offers no connection cap, no hook at
// accept and no deadline per request. The HTTP we need is small (one request body,
// PUT /policy's, framed by Content-Length; no chunked coding; replies with
// Content-Length), so each connection is a
// bufferevent parsed here, with every bound under our control:
// - Input: the read high-watermark is one request's maximum, so the kernel, not our
//   heap, holds whatever a client sends ahead. A PUT /policy raises it to its own
//   Content-Length (at most max_policy_bytes), once its head passed the trust check.
// - Output: requests are answered in order while the unsent output is below
//   output_watermark; above it, EV_READ is disabled until the output drains (the
//   write callback fires only once it is empty). One reply can overshoot the
//   watermark; output_hard_cap closes a connection whose reply alone is that big.
// - Time: the read timeout closes idle connections; the write timeout closes one whose
//   client stopped reading; the request timer (armed at a request's first byte)
//   closes a slowloris that sends a byte per io_timeout.
//
// Traps:
// - A reply must be sent exactly once per request, so routes.handle() builds a
//   HealthReply and only then is it written; an exception from the engine becomes a
//   500 before anything was sent.
// - A Connection may be freed inside any of its callbacks (closeConnection());
//   nothing touches it after that returns.
// - Writes to a peer that hung up raise SIGPIPE; the Loop thread blocks it.
#include "cluster/health_server.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <memory>
#include <thread>
#include <unordered_map>

#include "cluster/accept_guard.h"
#include "cluster/clock.h"
#include "cluster/health_routes.h"
#include "cluster/http_request.h"
#include "cluster/listen_address.h"
#include "cluster/owner_thread.h"
#include "conf/text.h"

namespace zetian::cluster {
namespace {

constexpr int kListenBacklog = 64;

using conf::errnoText;

std::string directoryOf(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// "zetian (uid 998)" for error messages; the reentrant call because libmilter
// threads may be using the passwd database at the same time.
std::string currentUser() {
  const uid_t uid = geteuid();
  passwd entry{};
  passwd* found = nullptr;
  char buf[4096];
  if (getpwuid_r(uid, &entry, buf, sizeof buf, &found) == 0 && found != nullptr &&
      found->pw_name != nullptr) {
    return std::string(found->pw_name) + " (uid " + std::to_string(uid) + ")";
  }
  return "uid " + std::to_string(uid);
}

std::string octalMode(unsigned mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

const char* reasonPhrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 400 ? "OK" : "Error";
  }
}

}  // namespace

struct HealthServer::Impl {
  struct Connection;

  // One per listening socket.
  struct Listener {
    Listener(Impl* i, bool t) : impl(i), trusted(t) {}
    Impl* impl;
    bool trusted;  // the Unix socket: mutations need no token
    evconnlistener* evl = nullptr;
    std::unique_ptr<AcceptGuard> guard;
    std::size_t open = 0;  // connections accepted here and not yet closed
    ThrottledLog refusals{std::chrono::seconds(10)};  // "full" lines, one per 10 s at most
  };

  // One client connection; owned by Impl::connections, freed by close().
  struct Connection {
    Connection(Impl* i, Listener* l, bufferevent* b) : impl(i), listener(l), bev(b) {}
    Impl* impl;
    Listener* listener;
    bufferevent* bev = nullptr;
    event* request_timer = nullptr;
    bool request_started = false;  // bytes of an unfinished request are buffered
    bool paused = false;           // EV_READ off until the output drains
    bool closing = false;          // last reply queued; close once it is sent
    // A request answered later (answerLater: /reload, /limits): nothing more is read, and no
    // timeout runs, until it comes. Its ticket is its key in Impl::awaiting.
    bool awaiting = false;
    bool awaiting_keep_alive = true;
    bool awaiting_head_only = false;  // a HEAD: the answer goes without its body
    std::uint64_t ticket = 0;
    // A PUT /policy body larger than max_body_bytes is being read: the read watermark
    // is raised for it until the request is taken.
    bool large_body = false;
  };

  Impl(event_base* b, AdminApi& a, HealthServerOptions o)
      : base(b), options(std::move(o)), routes(a, options.admin_token) {}
  ~Impl() { teardown(); }

  bool start(std::string* error);
  void teardown();
  bool openUnix(std::string* error);
  bool openTcp(std::string* error);
  bool watch(Listener* listener, int fd, std::string* error);

  void onAccepted(Listener* listener, int fd);
  void closeConnection(Connection* conn);
  static void onReadCb(bufferevent* bev, void* arg);
  static void onWriteCb(bufferevent* bev, void* arg);
  static void onEventCb(bufferevent* bev, short what, void* arg);
  static void onRequestTimeoutCb(int fd, short what, void* arg);
  void readRequests(Connection* conn);
  void fail(Connection* conn, int status, std::string_view message);
  void failWith(Connection* conn, const HealthReply& reply);
  void send(Connection* conn, const HealthReply& reply, bool head_only, bool keep_alive);
  void answerLater(Connection* conn, bool keep_alive, bool head_only,
                   std::function<void(std::function<void(AdminReply)>)> later);
  void finishRequest(Connection* conn, const HealthReply& reply, bool head_only, bool keep_alive);

  // All members are used on the loop thread only (owner), like every libevent object.
  event_base* base;
  const HealthServerOptions options;
  HealthRoutes routes;  // after options: it is given the admin token
  const OwnerThread owner;
  Listener unix_listener{this, true};
  Listener tcp_listener{this, false};
  std::unordered_map<Connection*, std::unique_ptr<Connection>> connections;
  // Connections waiting for a reload's answer, by ticket: an answer whose ticket is gone
  // (the client went away) is dropped. Plain numbers, not a shared_ptr per connection,
  // so accepting and closing touch no reference counts.
  std::unordered_map<std::uint64_t, Connection*> awaiting;
  std::uint64_t next_ticket = 1;
  // Expires with the server: an answer arriving after it is gone is dropped.
  std::shared_ptr<char> alive = std::make_shared<char>();
  HealthServerStats counters;  // the cumulative ones; the rest are computed in stats()
  bool started = false;
  // Identity of the socket file we created, so that we only ever remove our own.
  bool created_socket_file = false;
  dev_t socket_dev = 0;
  ino_t socket_ino = 0;
  std::uint16_t tcp_port = 0;
};

HealthServer::HealthServer(event_base* base, AdminApi& api, HealthServerOptions options)
    : impl_(std::make_unique<Impl>(base, api, std::move(options))) {}

HealthServer::~HealthServer() { impl_->owner.check(); }

bool HealthServer::start(std::string* error) {
  impl_->owner.check();
  std::string ignored;
  return impl_->start(error != nullptr ? error : &ignored);
}

std::uint16_t HealthServer::tcpPort() const {
  impl_->owner.check();
  return impl_->tcp_port;
}

HealthServerStats HealthServer::stats() const {
  impl_->owner.check();
  HealthServerStats s = impl_->counters;
  s.connections = impl_->connections.size();
  s.buffered_bytes = 0;
  for (const auto& [conn, owned] : impl_->connections) {
    s.buffered_bytes += evbuffer_get_length(bufferevent_get_input(conn->bev)) +
                        evbuffer_get_length(bufferevent_get_output(conn->bev));
  }
  for (const Impl::Listener* l : {&impl_->unix_listener, &impl_->tcp_listener}) {
    if (l->guard) {
      s.accept_errors += l->guard->errors();
      s.shed_connections += l->guard->shed();
    }
  }
  return s;
}

bool HealthServer::Impl::start(std::string* error) {
  if (started) {
    *error = "health server already started";
    return false;
  }
  started = true;
  if (!openUnix(error) || !openTcp(error)) {
    teardown();
    return false;
  }
  return true;
}

void HealthServer::Impl::teardown() {
  while (!connections.empty()) closeConnection(connections.begin()->first);
  for (Listener* l : {&unix_listener, &tcp_listener}) {
    l->guard.reset();  // before the listener it guards
    if (l->evl != nullptr) evconnlistener_free(l->evl);  // closes the socket
    l->evl = nullptr;
  }
  if (created_socket_file) {
    struct stat st {};
    if (lstat(options.unix_path.c_str(), &st) == 0 && st.st_dev == socket_dev &&
        st.st_ino == socket_ino) {
      unlink(options.unix_path.c_str());
    }
    created_socket_file = false;
  }
  tcp_port = 0;
}

bool HealthServer::Impl::watch(Listener* listener, int fd, std::string* error) {
  // Backlog 0: the socket is already listening. No callback yet: the guard sets it.
  listener->evl = evconnlistener_new(base, nullptr, nullptr,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED, 0, fd);
  if (listener->evl == nullptr) {
    ::close(fd);
    *error = "cannot watch the listening socket (out of memory?)";
    return false;
  }
  AcceptGuardOptions guard_options;
  guard_options.name = listener->trusted ? "health_unix" : "health_tcp";
  guard_options.backoff = options.accept_backoff;
  listener->guard = std::make_unique<AcceptGuard>(
      base, listener->evl, std::move(guard_options), options.log,
      [listener](int client, const sockaddr*, int) { listener->impl->onAccepted(listener, client); });
  evconnlistener_enable(listener->evl);
  return true;
}

bool HealthServer::Impl::openUnix(std::string* error) {
  const std::string& path = options.unix_path;
  if (path.empty()) {
    *error = "no health socket path configured ([health] socket)";
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    *error = "health socket path " + path + " is too long (" + std::to_string(path.size()) +
             " bytes, at most " + std::to_string(sizeof addr.sun_path - 1) + ")";
    return false;
  }
  std::memcpy(addr.sun_path, path.data(), path.size());

  // An existing file: a live server's socket (refuse), a crashed one's (replace), or
  // something else entirely (refuse: never delete what we do not understand).
  struct stat st {};
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      *error = path + " exists and is not a socket; move it away or choose another [health] socket";
      return false;
    }
    const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0) {
      *error = "cannot create a socket: " + errnoText(errno);
      return false;
    }
    // Non-blocking: a live server with a full backlog gives EAGAIN, never ECONNREFUSED.
    const int rc = connect(probe, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    const int err = rc == 0 ? 0 : errno;
    close(probe);
    if (rc == 0 || err == EAGAIN || err == EINPROGRESS) {
      *error = "cannot use " + path +
               ": another process is answering on it (is another zetian-milter running?); stop "
               "it or choose another [health] socket";
      return false;
    }
    if (err == ECONNREFUSED) {
      if (unlink(path.c_str()) != 0 && errno != ENOENT) {
        *error = "cannot remove the stale socket " + path + ": " + errnoText(errno) +
                 "; remove it by hand or check the permissions of " + directoryOf(path);
        return false;
      }
    } else if (err != ENOENT) {
      *error = "cannot check the existing socket " + path + ": " + errnoText(err) +
               (err == EACCES ? "; it may belong to another user's zetian-milter" : "");
      return false;
    }
  } else if (errno != ENOENT) {
    const int err = errno;
    *error = "cannot access " + path + ": " + errnoText(err) + "; check that " + directoryOf(path) +
             " exists and that user " + currentUser() + " may enter it";
    return false;
  }

  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = "cannot create a socket: " + errnoText(errno);
    return false;
  }
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    close(fd);
    *error = "cannot bind " + path + ": " + errnoText(err);
    if (err == EACCES || err == EPERM || err == EROFS) {
      *error += "; check that user " + currentUser() + " may write to " + directoryOf(path);
    } else if (err == ENOENT || err == ENOTDIR) {
      *error += "; create the directory " + directoryOf(path) +
                " (with systemd: RuntimeDirectory=zetian)";
    } else if (err == EADDRINUSE) {
      *error += "; is another zetian-milter starting on the same socket?";
    }
    return false;
  }
  struct stat bound {};
  if (lstat(path.c_str(), &bound) == 0) {
    created_socket_file = true;
    socket_dev = bound.st_dev;
    socket_ino = bound.st_ino;
  }
  // The mode is set before listen(): until then nobody can connect, so no client ever
  // sees the socket with the umask's mode instead of the configured one.
  if (chmod(path.c_str(), options.unix_mode & 07777) != 0) {
    const int err = errno;
    close(fd);
    *error = "cannot set mode " + octalMode(options.unix_mode) + " on " + path + ": " + errnoText(err);
    return false;
  }
  if (listen(fd, kListenBacklog) != 0) {
    const int err = errno;
    close(fd);
    *error = "cannot listen on " + path + ": " + errnoText(err);
    return false;
  }
  return watch(&unix_listener, fd, error);
}

bool HealthServer::Impl::openTcp(std::string* error) {
  if (options.tcp_listen.empty()) return true;
  std::string parse_error;
  const auto address = parseListenAddress(options.tcp_listen, &parse_error);
  if (!address) {
    *error = "[health] listen: " + parse_error;
    return false;
  }
  const std::string& where = options.tcp_listen;
  const int fd = socket(address->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = "cannot create a socket for " + where + ": " + errnoText(errno);
    return false;
  }
  const int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);  // restart despite TIME_WAIT
  if (address->family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address->addr), address->length) != 0) {
    const int err = errno;
    close(fd);
    *error = "cannot listen on " + where + ": " + errnoText(err);
    if (err == EADDRINUSE) {
      *error += "; is another zetian-milter running? (or choose another [health] listen)";
    } else if (err == EACCES) {
      *error += "; ports below 1024 need root, choose a higher [health] listen port";
    } else if (err == EADDRNOTAVAIL) {
      *error += "; this host has no such address";
    }
    return false;
  }
  if (listen(fd, kListenBacklog) != 0) {
    const int err = errno;
    close(fd);
    *error = "cannot listen on " + where + ": " + errnoText(err);
    return false;
  }
  sockaddr_storage bound{};
  socklen_t bound_len = sizeof bound;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bound_len) == 0) {
    tcp_port = ntohs(bound.ss_family == AF_INET6
                         ? reinterpret_cast<const sockaddr_in6*>(&bound)->sin6_port
                         : reinterpret_cast<const sockaddr_in*>(&bound)->sin_port);
  }
  return watch(&tcp_listener, fd, error);
}

void HealthServer::Impl::onAccepted(Listener* listener, int fd) {
  if (listener->open >= options.max_connections) {
    // The newest goes: the ones already here may be mid-request.
    ::close(fd);
    ++counters.refused_connections;
    std::uint64_t held_back = 0;
    if (listener->refusals.admit(std::chrono::steady_clock::now(), &held_back)) {
      const std::string line = std::string("health_connection_refused listener=") +
                               (listener->trusted ? "health_unix" : "health_tcp") +
                               " reason=\"max_connections reached\" max_connections=" +
                               std::to_string(options.max_connections) +
                               " refused_since_last_line=" + std::to_string(held_back + 1);
      if (options.log) {
        options.log(conf::LogLevel::Warn, line);
      } else {
        std::fprintf(stderr, "%s\n", line.c_str());
      }
    }
    return;
  }
  bufferevent* bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
  if (bev == nullptr) {
    ::close(fd);
    return;
  }
  auto owned = std::make_unique<Connection>(this, listener, bev);
  Connection* conn = owned.get();
  conn->request_timer = evtimer_new(base, &Impl::onRequestTimeoutCb, conn);
  if (conn->request_timer == nullptr) {
    bufferevent_free(bev);
    return;
  }
  connections.emplace(conn, std::move(owned));
  ++listener->open;
  bufferevent_setcb(bev, &Impl::onReadCb, &Impl::onWriteCb, &Impl::onEventCb, conn);
  // A whole request (plus one byte, to tell "too big" from "complete") is the most
  // that is ever read ahead (a PUT /policy raises it for its own body).
  bufferevent_setwatermark(bev, EV_READ, 0, options.max_header_bytes + options.max_body_bytes + 1);
  const timeval io = toTimeval(options.io_timeout);
  bufferevent_set_timeouts(bev, &io, &io);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

void HealthServer::Impl::closeConnection(Connection* conn) {
  const auto it = connections.find(conn);
  if (it == connections.end()) return;
  --conn->listener->open;
  if (conn->awaiting) awaiting.erase(conn->ticket);
  event_free(conn->request_timer);
  bufferevent_free(conn->bev);  // closes the socket; libevent defers it if in a callback
  connections.erase(it);        // frees conn
}

void HealthServer::Impl::onReadCb(bufferevent*, void* arg) {
  auto* conn = static_cast<Connection*>(arg);
  conn->impl->owner.check();
  conn->impl->readRequests(conn);
}

void HealthServer::Impl::onWriteCb(bufferevent*, void* arg) {
  // Called once the output is empty (write low-watermark 0).
  auto* conn = static_cast<Connection*>(arg);
  Impl* self = conn->impl;
  if (conn->closing) {
    self->closeConnection(conn);
    return;
  }
  if (conn->paused && !conn->awaiting) {
    conn->paused = false;
    bufferevent_enable(conn->bev, EV_READ);
    self->readRequests(conn);  // what was read ahead before the pause
  }
}

void HealthServer::Impl::onEventCb(bufferevent*, short what, void* arg) {
  auto* conn = static_cast<Connection*>(arg);
  Impl* self = conn->impl;
  if ((what & BEV_EVENT_EOF) != 0 && (what & BEV_EVENT_READING) != 0 &&
      evbuffer_get_length(bufferevent_get_output(conn->bev)) > 0) {
    // A client that half-closed after its requests still gets the replies.
    conn->closing = true;
    bufferevent_disable(conn->bev, EV_READ);
    evtimer_del(conn->request_timer);
    return;
  }
  self->closeConnection(conn);  // EOF with nothing to send, an error, or an I/O timeout
}

void HealthServer::Impl::onRequestTimeoutCb(int, short, void* arg) {
  auto* conn = static_cast<Connection*>(arg);
  ++conn->impl->counters.timed_out_requests;
  conn->impl->fail(conn, 408, "the request was not complete in time");
}

void HealthServer::Impl::readRequests(Connection* conn) {
  evbuffer* in = bufferevent_get_input(conn->bev);
  evbuffer* out = bufferevent_get_output(conn->bev);
  while (!conn->closing && !conn->awaiting) {
    if (evbuffer_get_length(out) > options.output_watermark) {
      // The client is not reading its replies: stop reading its requests. The read
      // timeout does not run meanwhile; the write timeout does.
      conn->paused = true;
      bufferevent_disable(conn->bev, EV_READ);
      evtimer_del(conn->request_timer);
      conn->request_started = false;
      return;
    }
    const std::size_t available = evbuffer_get_length(in);
    if (available == 0) {
      evtimer_del(conn->request_timer);
      conn->request_started = false;
      return;
    }
    if (!conn->request_started) {
      conn->request_started = true;
      const timeval deadline = toTimeval(options.request_timeout);
      evtimer_add(conn->request_timer, &deadline);
    }

    const evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, nullptr);
    if (end.pos < 0) {
      if (available > options.max_header_bytes) {
        fail(conn, 431, "request headers larger than " + std::to_string(options.max_header_bytes) + " bytes");
      }
      return;  // wait for the rest of the headers
    }
    const std::size_t head_len = static_cast<std::size_t>(end.pos) + 4;
    if (head_len > options.max_header_bytes) {
      fail(conn, 431, "request headers larger than " + std::to_string(options.max_header_bytes) + " bytes");
      return;
    }
    std::string head(head_len, '\0');
    evbuffer_copyout(in, head.data(), head_len);
    Request req;
    ParseError error;
    if (!parseRequestHead(head, &req, &error)) {
      fail(conn, error.status, error.message);
      return;
    }
    if (req.content_length > options.max_body_bytes) {
      // Only a policy may be larger, and only for a client allowed to change it: the
      // others are refused before their body is read.
      if (!isPolicyPut(req)) {
        fail(conn, 413, "request body larger than " + std::to_string(options.max_body_bytes) + " bytes");
        return;
      }
      if (auto refused = routes.admit(req, conn->listener->trusted)) {
        failWith(conn, *refused);
        return;
      }
      if (req.content_length > options.max_policy_bytes) {
        fail(conn, 413, "policy larger than " + std::to_string(options.max_policy_bytes) + " bytes");
        return;
      }
      if (!conn->large_body) {
        conn->large_body = true;
        bufferevent_setwatermark(conn->bev, EV_READ, 0, head_len + req.content_length + 1);
      }
    }
    if (available < head_len + req.content_length) return;  // wait for the body
    // Only PUT /policy reads its body; the others' is dropped with the head.
    std::string body;
    if (isPolicyPut(req)) {
      body.resize(req.content_length);
      evbuffer_drain(in, head_len);
      evbuffer_remove(in, body.data(), body.size());
    } else {
      evbuffer_drain(in, head_len + req.content_length);
    }
    if (conn->large_body) {
      conn->large_body = false;
      bufferevent_setwatermark(conn->bev, EV_READ, 0, options.max_header_bytes + options.max_body_bytes + 1);
    }
    evtimer_del(conn->request_timer);
    conn->request_started = false;

    HealthReply reply;
    try {
      reply = routes.handle(req, conn->listener->trusted, std::move(body));
    } catch (const std::exception& e) {
      reply = errorReply(500, std::string("internal error: ") + e.what());
    } catch (...) {
      reply = errorReply(500, "internal error");
    }
    if (reply.later) {
      answerLater(conn, req.keep_alive, req.method == "HEAD", std::move(reply.later));
      return;
    }
    finishRequest(conn, reply, req.method == "HEAD", req.keep_alive);
    if (connections.find(conn) == connections.end()) return;  // closed: output overflowed
  }
}

void HealthServer::Impl::finishRequest(Connection* conn, const HealthReply& reply, bool head_only, bool keep_alive) {
  send(conn, reply, head_only, keep_alive);
  if (!keep_alive) {
    conn->closing = true;
    bufferevent_disable(conn->bev, EV_READ);
  }
  if (evbuffer_get_length(bufferevent_get_output(conn->bev)) > options.output_hard_cap) {
    ++counters.overflowed_connections;
    closeConnection(conn);
  }
}

// POST /reload is answered when the engine's reload worker is done (AdminApi::
// reloadAsync): meanwhile the connection reads nothing more (replies stay in request
// order) and runs no timeout, while the loop serves everyone else. If the client goes
// away first its ticket is gone, and if the server does its liveness token has
// expired: either way the answer is dropped.
void HealthServer::Impl::answerLater(Connection* conn, bool keep_alive, bool head_only,
                                     std::function<void(std::function<void(AdminReply)>)> later) {
  conn->awaiting = true;
  conn->awaiting_keep_alive = keep_alive;
  conn->awaiting_head_only = head_only;
  bufferevent_disable(conn->bev, EV_READ);
  bufferevent_set_timeouts(conn->bev, nullptr, nullptr);
  conn->ticket = next_ticket++;
  awaiting.emplace(conn->ticket, conn);
  std::weak_ptr<char> server_alive = alive;
  auto respond = [this, ticket = conn->ticket, server_alive](AdminReply r) {
    if (server_alive.expired()) return;
    owner.check();
    const auto it = awaiting.find(ticket);
    if (it == awaiting.end()) return;  // the connection closed meanwhile
    Connection* conn = it->second;
    awaiting.erase(it);
    conn->awaiting = false;
    const timeval io = toTimeval(options.io_timeout);
    bufferevent_set_timeouts(conn->bev, &io, &io);
    finishRequest(conn, toReply(std::move(r)), conn->awaiting_head_only, conn->awaiting_keep_alive);
    if (connections.find(conn) == connections.end() || conn->closing) return;
    bufferevent_enable(conn->bev, EV_READ);
    readRequests(conn);  // a request the client pipelined behind the reload
  };
  try {
    later(std::move(respond));
  } catch (const std::exception& e) {
    awaiting.erase(conn->ticket);
    conn->awaiting = false;
    finishRequest(conn, errorReply(500, std::string("internal error: ") + e.what()), false, false);
  } catch (...) {
    awaiting.erase(conn->ticket);
    conn->awaiting = false;
    finishRequest(conn, errorReply(500, "internal error"), false, false);
  }
}

void HealthServer::Impl::fail(Connection* conn, int status, std::string_view message) {
  evtimer_del(conn->request_timer);
  conn->request_started = false;
  bufferevent_disable(conn->bev, EV_READ);
  // Whatever else the client sent is not read: the connection ends after this reply.
  evbuffer* in = bufferevent_get_input(conn->bev);
  evbuffer_drain(in, evbuffer_get_length(in));
  send(conn, errorReply(status, message), false, false);
  conn->closing = true;
}

// As fail(), with a reply already built (a refusal of routes.admit()).
void HealthServer::Impl::failWith(Connection* conn, const HealthReply& reply) {
  evtimer_del(conn->request_timer);
  conn->request_started = false;
  bufferevent_disable(conn->bev, EV_READ);
  evbuffer* in = bufferevent_get_input(conn->bev);
  evbuffer_drain(in, evbuffer_get_length(in));
  send(conn, reply, false, false);
  conn->closing = true;
}

void HealthServer::Impl::send(Connection* conn, const HealthReply& reply, bool head_only, bool keep_alive) {
  std::string head = "HTTP/1.1 " + std::to_string(reply.status) + " " + reasonPhrase(reply.status) + "\r\n";
  if (!reply.content_type.empty()) head += "Content-Type: " + reply.content_type + "\r\n";
  if (!reply.allow.empty()) head += "Allow: " + reply.allow + "\r\n";
  head += "Cache-Control: no-store\r\nContent-Length: " + std::to_string(reply.body.size()) + "\r\n";
  if (!keep_alive) head += "Connection: close\r\n";
  head += "\r\n";
  evbuffer* out = bufferevent_get_output(conn->bev);
  evbuffer_add(out, head.data(), head.size());
  if (!head_only) evbuffer_add(out, reply.body.data(), reply.body.size());
}

}  // namespace zetian::cluster
