// The health/admin server: routing, the trust rule, and the listening sockets.
//
// Trust comes from the listener, not from the peer address: the Unix socket and the
// TCP listener each get their own evhttp instance, and the request callback is told
// which one it serves. The Unix socket is guarded by its file mode, so everything is
// allowed there; over TCP, POST needs the admin token.
//
// We create both listening sockets ourselves instead of evhttp_bind_socket(): that
// one resolves names with a blocking getaddrinfo(), cannot set the Unix socket's mode
// before clients may connect, and cannot tell a stale socket file from a live one.
//
// Traps:
// - evhttp (2.1) puts the peer address through getnameinfo(). For Unix peers that
//   reads sun_path, which accept() leaves uninitialised; 2.1.12 clears it first
//   (libevent #807). Older libevent can abort the process here.
// - evhttp 2.1 sends a body even for HEAD; send() leaves it out itself.
// - A reply must be sent exactly once per request, so handle() builds a Reply and
//   only then is it written; an exception from the engine becomes a 500 before
//   anything was sent.
// - Writes to a peer that hung up raise SIGPIPE; the Loop thread blocks it.
#include "cluster/health_server.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <thread>
#include <utility>
#include <vector>

#include "cluster/clock.h"
#include "cluster/json.h"
#include "cluster/listen_address.h"
#include "cluster/owner_thread.h"
#include "cluster/query_string.h"
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

// Compares all of both strings whatever the first difference, so the time taken
// does not tell an attacker how much of a guessed token was right. The length is not
// hidden; tokens are long random strings, so that reveals nothing useful.
bool constantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

bool startsWithNoCase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
    if (lower(text[i]) != lower(prefix[i])) return false;
  }
  return true;
}

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string allow;  // for 405
  bool deferred = false;  // POST /reload: answered later, through reloadLater()
};

Reply errorReply(int status, std::string_view message) {
  return Reply{status, "application/json", jsonError(message), {}};
}

enum class Method { kGet, kPost };

struct Route {
  const char* path;
  Method method;
};

constexpr Route kRoutes[] = {
    {"/health", Method::kGet}, {"/live", Method::kGet},    {"/ready", Method::kGet},
    {"/metrics", Method::kGet}, {"/limits", Method::kGet}, {"/reload", Method::kPost},
    {"/limits/reset", Method::kPost}, {"/maintenance", Method::kPost},
};

}  // namespace

struct HealthServer::Impl {
  // One per listener; evhttp calls back with a pointer to it.
  struct Listener {
    Impl* impl;
    bool trusted;  // the Unix socket: mutations need no token
  };

  Impl(event_base* b, AdminApi& a, HealthServerOptions o)
      : base(b), api(a), options(std::move(o)) {}
  ~Impl() { teardown(); }

  bool start(std::string* error);
  void teardown();
  evhttp* newHttp(Listener* listener, std::string* error);
  bool openUnix(std::string* error);
  bool openTcp(std::string* error);
  bool bindToHttp(evhttp* http, int fd, std::string* error);

  static void onRequest(evhttp_request* req, void* arg);
  Reply handle(evhttp_request* req, bool trusted);
  Reply handleRoute(const std::string& path, bool is_post, const char* query);
  void send(evhttp_request* req, const Reply& reply);
  void reloadLater(evhttp_request* req);

  // All members are used on the loop thread only (owner), like every libevent object.
  event_base* base;
  AdminApi& api;
  const HealthServerOptions options;
  const OwnerThread owner;
  Listener unix_listener{this, true};
  Listener tcp_listener{this, false};
  evhttp* unix_http = nullptr;
  evhttp* tcp_http = nullptr;
  // Expires with the server: a deferred answer arriving later is dropped.
  std::shared_ptr<char> alive = std::make_shared<char>();
  std::vector<evhttp_request*> deferred;  // POST /reload requests not answered yet
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
  // A request whose client hung up is no longer on any connection: only an answer
  // frees it. On a live connection the answer is queued and the connection closed
  // right after by evhttp_free (the client may see only the close).
  const std::vector<evhttp_request*> unanswered = std::exchange(deferred, {});
  for (evhttp_request* req : unanswered) send(req, errorReply(503, "the server is stopping"));
  // evhttp_free closes the listeners and every open connection.
  if (unix_http != nullptr) evhttp_free(unix_http);
  if (tcp_http != nullptr) evhttp_free(tcp_http);
  unix_http = nullptr;
  tcp_http = nullptr;
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

evhttp* HealthServer::Impl::newHttp(Listener* listener, std::string* error) {
  evhttp* http = evhttp_new(base);
  if (http == nullptr) {
    *error = "cannot create the HTTP server (out of memory?)";
    return nullptr;
  }
  evhttp_set_gencb(http, &Impl::onRequest, listener);
  evhttp_set_max_headers_size(http, static_cast<ev_ssize_t>(options.max_header_bytes));
  evhttp_set_max_body_size(http, static_cast<ev_ssize_t>(options.max_body_bytes));
  const timeval timeout = toTimeval(options.io_timeout);
  evhttp_set_timeout_tv(http, &timeout);
  // Let every method through to onRequest so that a wrong one gets our 405, not 501.
  evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                       EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                       EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
  return http;
}

bool HealthServer::Impl::bindToHttp(evhttp* http, int fd, std::string* error) {
  // Backlog 0: the socket is already listening.
  evconnlistener* listener =
      evconnlistener_new(base, nullptr, nullptr, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
  if (listener == nullptr) {
    close(fd);
    *error = "cannot watch the listening socket (out of memory?)";
    return false;
  }
  if (evhttp_bind_listener(http, listener) == nullptr) {
    evconnlistener_free(listener);
    *error = "cannot attach the listening socket to the HTTP server";
    return false;
  }
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
  unix_http = newHttp(&unix_listener, error);
  if (unix_http == nullptr) {
    close(fd);
    return false;
  }
  return bindToHttp(unix_http, fd, error);
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
  tcp_http = newHttp(&tcp_listener, error);
  if (tcp_http == nullptr) {
    close(fd);
    return false;
  }
  return bindToHttp(tcp_http, fd, error);
}

void HealthServer::Impl::onRequest(evhttp_request* req, void* arg) {
  auto* listener = static_cast<Listener*>(arg);
  Impl* self = listener->impl;
  self->owner.check();
  Reply reply;
  try {
    reply = self->handle(req, listener->trusted);
    if (reply.deferred) {
      self->reloadLater(req);
      return;
    }
  } catch (const std::exception& e) {
    reply = errorReply(500, std::string("internal error: ") + e.what());
  } catch (...) {
    reply = errorReply(500, "internal error");
  }
  self->send(req, reply);
}

Reply HealthServer::Impl::handle(evhttp_request* req, bool trusted) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* raw_path = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
  const std::string path = raw_path != nullptr && *raw_path != '\0' ? raw_path : "/";
  const char* query = uri != nullptr ? evhttp_uri_get_query(uri) : nullptr;

  const Route* route = nullptr;
  for (const Route& r : kRoutes) {
    if (path == r.path) route = &r;
  }
  if (route == nullptr) return errorReply(404, "no such endpoint: " + path);

  const evhttp_cmd_type method = evhttp_request_get_command(req);
  const bool method_ok = route->method == Method::kGet
                             ? (method == EVHTTP_REQ_GET || method == EVHTTP_REQ_HEAD)
                             : method == EVHTTP_REQ_POST;
  if (!method_ok) {
    Reply reply = errorReply(405, route->method == Method::kGet
                                      ? path + " only answers GET (and HEAD)"
                                      : path + " only answers POST");
    reply.allow = route->method == Method::kGet ? "GET, HEAD" : "POST";
    return reply;
  }

  const bool is_post = route->method == Method::kPost;
  if (is_post && !trusted) {
    if (options.admin_token.empty()) {
      return errorReply(403,
                        "changes are not allowed over TCP without [health] admin_token; use the "
                        "Unix socket");
    }
    const char* auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    constexpr std::string_view kScheme = "Bearer ";
    const std::string_view presented = auth != nullptr ? std::string_view(auth) : std::string_view{};
    if (!startsWithNoCase(presented, kScheme) ||
        !constantTimeEquals(presented.substr(kScheme.size()), options.admin_token)) {
      return errorReply(403, "missing or wrong `Authorization: Bearer <admin_token>`");
    }
  }
  return handleRoute(path, is_post, query);
}

Reply HealthServer::Impl::handleRoute(const std::string& path, bool is_post, const char* query) {
  const auto toReply = [](AdminReply&& r) {
    Reply reply;
    reply.status = r.status >= 100 && r.status <= 599 ? r.status : 500;
    reply.content_type = std::move(r.content_type);
    reply.body = std::move(r.body);
    return reply;
  };
  if (path == "/health") return toReply(api.health());
  if (path == "/live") return toReply(api.live());
  if (path == "/ready") return toReply(api.ready());
  if (path == "/metrics") return toReply(api.metrics());
  if (path == "/reload") {
    Reply later;
    later.deferred = true;
    return later;
  }

  std::string query_error;
  const auto params = parseQuery(query != nullptr ? query : "", &query_error);
  if (!params) return errorReply(400, query_error);
  if (path == "/maintenance") {
    const auto state = params->find("state");
    if (params->size() != 1 || state == params->end() || (state->second != "on" && state->second != "off")) {
      return errorReply(400, "expected POST /maintenance?state=on or ?state=off");
    }
    return toReply(api.maintenance(state->second == "on"));
  }
  // /limits and /limits/reset take rule= and key=.
  for (const auto& [name, value] : *params) {
    if (name != "rule" && name != "key") {
      return errorReply(400, "unknown query parameter `" + name + "` (expected rule, key)");
    }
  }
  const auto get = [&](const char* name) {
    const auto it = params->find(name);
    return it == params->end() ? std::string{} : it->second;
  };
  const std::string rule = get("rule");
  const std::string key = get("key");
  if (!is_post) return toReply(api.limitsShow(rule, key));
  if (rule.empty()) return errorReply(400, "rule is required: POST /limits/reset?rule=RULE&key=KEY");
  return toReply(api.limitsReset(rule, key));
}

// evhttp keeps a request we have not answered: when its client hangs up first, the
// request is detached from the connection and evhttp_send_reply() frees it. teardown()
// answers what is still pending; an answer arriving after the server is gone is
// dropped (the liveness token).
void HealthServer::Impl::reloadLater(evhttp_request* req) {
  std::weak_ptr<char> server_alive = alive;
  deferred.push_back(req);
  auto respond = [this, req, server_alive](AdminReply r) {
    if (server_alive.expired()) return;
    const auto it = std::find(deferred.begin(), deferred.end(), req);
    if (it == deferred.end()) return;  // answered by teardown()
    deferred.erase(it);
    Reply reply;
    reply.status = r.status >= 100 && r.status <= 599 ? r.status : 500;
    reply.content_type = std::move(r.content_type);
    reply.body = std::move(r.body);
    send(req, reply);
  };
  try {
    api.reloadAsync(std::move(respond));
  } catch (...) {
    // onRequest() answers with a 500 itself; teardown() must not answer again.
    const auto it = std::find(deferred.begin(), deferred.end(), req);
    if (it != deferred.end()) deferred.erase(it);
    throw;
  }
}

void HealthServer::Impl::send(evhttp_request* req, const Reply& reply) {
  evkeyvalq* headers = evhttp_request_get_output_headers(req);
  if (!reply.content_type.empty()) {
    evhttp_add_header(headers, "Content-Type", reply.content_type.c_str());
  }
  if (!reply.allow.empty()) evhttp_add_header(headers, "Allow", reply.allow.c_str());
  evhttp_add_header(headers, "Cache-Control", "no-store");
  if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
    // evhttp 2.1 would send the body after all; HEAD gets the length only.
    evhttp_add_header(headers, "Content-Length", std::to_string(reply.body.size()).c_str());
  } else {
    evbuffer_add(evhttp_request_get_output_buffer(req), reply.body.data(), reply.body.size());
  }
  evhttp_send_reply(req, reply.status, nullptr, nullptr);
}

}  // namespace zetian::cluster
