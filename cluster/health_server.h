// The health/admin HTTP server (libevent evhttp) on the cluster thread.
//
// Two listeners: the Unix socket, where every endpoint is allowed, and an optional
// loopback TCP listener for Prometheus and load balancers, where mutations (POST)
// need `Authorization: Bearer <admin_token>` and are refused (403) without it.
//
// Routes: GET /health /live /ready /metrics /limits?rule=R&key=K (filters optional);
// POST /reload, POST /limits/reset?rule=R&key=K (rule required),
// POST /maintenance?state=on|off. HEAD works where GET
// does. Unknown path: 404; known path, wrong method: 405 with Allow; bad query: 400.
// Errors from the routing have the body {"error":"..."} (a request too broken to parse
// gets evhttp's own 400, 413 or a closed connection instead). The server removes
// its socket file when destroyed (if the file is still the one it created).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "cluster/admin_api.h"

struct event_base;
struct evhttp;

namespace zetian::cluster {

struct HealthServerOptions {
  std::string unix_path;       // required
  unsigned unix_mode = 0660;
  std::string tcp_listen;      // "" or "HOST:PORT" / "[V6]:PORT", numeric; port 0 = any
  std::string admin_token;     // "" disables mutations over TCP

  // Limits that keep a misbehaving client from holding memory or connections.
  std::size_t max_header_bytes = 8192;
  std::size_t max_body_bytes = 4096;  // no endpoint reads a body
  std::chrono::milliseconds io_timeout{10000};  // idle or stalled connections are closed
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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zetian::cluster
