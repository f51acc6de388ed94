// The health/admin HTTP server (libevent evhttp) on the cluster thread.
//
// Two listeners: the Unix socket, where every endpoint is allowed, and an optional
// loopback TCP listener for Prometheus and load balancers, where mutations (POST)
// need `Authorization: Bearer <admin_token>` and are refused (403) without it.
#pragma once

#include <memory>
#include <string>

#include "cluster/admin_api.h"

struct event_base;
struct evhttp;

namespace zetian::cluster {

struct HealthServerOptions {
  std::string unix_path;       // required
  unsigned unix_mode = 0660;
  std::string tcp_listen;      // "" or "HOST:PORT"
  std::string admin_token;     // "" disables mutations over TCP
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
  bool start(std::string* error);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace zetian::cluster
