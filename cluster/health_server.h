// The health/admin HTTP server on the cluster thread (HTTP/1.1 over libevent
// bufferevents; see health_server.cpp for why not evhttp).
//
// Two listeners: the Unix socket, where every endpoint is allowed, and an optional
// loopback TCP listener for Prometheus and load balancers, where mutations (POST, PUT)
// need `Authorization: Bearer <admin_token>` and are refused (403) without it.
//
// Routes: GET /health /live /ready /metrics /limits?rule=R&key=K&limit=N&after=T (all optional);
// POST /reload, POST /limits/reset?rule=R&key=K (rule required),
// POST /maintenance?state=on|off; the replicated policy (cluster/policy_admin.h):
// GET /policy, PUT /policy[?base_version=N] (the TOML text as the body), GET
// /policy/history, POST /cluster/remove?node=ID, POST /cluster/transfer-leader[?node=ID].
// HEAD works where GET
// does. Unknown path: 404; known path, wrong method: 405 with Allow; bad query: 400.
// Errors have the body {"error":"..."}; a request that cannot be parsed, is too big
// (431 headers, 413 body) or too slow (408) gets its error and the connection closes.
// The server removes its socket file when destroyed (if it is still the one it created).
//
// Abuse bounds, per connection: at most one request's bytes are read ahead
// (max_header_bytes + max_body_bytes); while more than output_watermark bytes of
// replies wait for a client that does not read, nothing more is read from it; a
// connection whose unsent output passes output_hard_cap is closed. Per listener: at
// most max_connections at once (the newest beyond it is closed at accept). A request
// must be complete request_timeout after its first byte; a connection with nothing
// to read or write for io_timeout is closed. accept() failures (out of descriptors)
// back off instead of spinning (accept_guard.h).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "cluster/admin_api.h"
#include "cluster/log_sink.h"

struct event_base;

namespace zetian::cluster {

struct HealthServerOptions {
  std::string unix_path;       // required
  unsigned unix_mode = 0660;
  std::string tcp_listen;      // "" or "HOST:PORT" / "[V6]:PORT", numeric; port 0 = any
  std::string admin_token;     // "" disables mutations over TCP

  // Limits that keep a misbehaving client from holding memory or connections.
  std::size_t max_header_bytes = 8192;
  std::size_t max_body_bytes = 4096;  // only PUT /policy reads a body
  // PUT /policy's body may be this large (the policy loader's own bound), for a client
  // allowed to change the policy: checked before the body is read.
  std::size_t max_policy_bytes = 1 << 20;
  std::chrono::milliseconds io_timeout{10000};       // idle or stalled connections are closed
  std::chrono::milliseconds request_timeout{10000};  // from a request's first byte to its end
  std::size_t max_connections = 64;                  // per listener (Unix, TCP)
  std::size_t output_watermark = 256 * 1024;         // stop reading a client above this
  std::size_t output_hard_cap = 8 * 1024 * 1024;     // close a client above this
  std::chrono::milliseconds accept_backoff{100};     // listener paused after accept() fails

  // Where the throttled accept-failure lines go; empty: stderr.
  LogSink log;
};

// Counters for operators and tests; loop thread only.
struct HealthServerStats {
  std::size_t connections = 0;     // open now, both listeners
  std::size_t buffered_bytes = 0;  // unread input plus unsent output, all connections
  std::uint64_t refused_connections = 0;  // closed at accept: over max_connections
  std::uint64_t accept_errors = 0;        // failed accept() calls (EMFILE, ...)
  std::uint64_t shed_connections = 0;     // closed unheard to unstick the backlog
  std::uint64_t timed_out_requests = 0;   // 408: not complete within request_timeout
  std::uint64_t overflowed_connections = 0;  // closed past output_hard_cap
};

class HealthServer {
 public:
  // Must be constructed and destroyed on the loop thread of `base`.
  HealthServer(event_base* base, AdminApi& api, HealthServerOptions options);
  ~HealthServer();
  HealthServer(const HealthServer&) = delete;
  HealthServer& operator=(const HealthServer&) = delete;

  // Bind the listeners. On failure returns false and sets *error to a message that
  // says what to do ("cannot bind /run/zetian/health.sock: Permission denied; ...").
  // Call once. A second server on a live socket path refuses to start; a socket file
  // nobody answers on (left by a crash) is replaced.
  bool start(std::string* error);

  // The TCP listener's port (the chosen one when tcp_listen asked for port 0); 0
  // without a TCP listener.
  std::uint16_t tcpPort() const;

  HealthServerStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zetian::cluster
