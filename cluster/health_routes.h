// The health server's routes and its trust rule: which paths exist and the methods
// each answers, who may change something, and each route's query checked and turned
// into an AdminApi call. No I/O: a request arrives parsed (cluster/http_request.h)
// and leaves as a HealthReply; the sockets, the HTTP framing and the abuse bounds are
// health_server.cpp's.
//
// Trust is the caller's word on where the request came from: the Unix socket
// (trusted: guarded by its file mode, everything allowed) or TCP, where every method
// but GET and HEAD needs `Authorization: Bearer <admin_token>` and is refused (403)
// without a configured token.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "cluster/admin_api.h"
#include "cluster/http_request.h"

namespace zetian::cluster {

// A route's answer, before it is written as HTTP.
struct HealthReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::string allow;      // for 405
  // Answered later (POST /reload, /limits): `later` starts the work and is given the
  // function that answers (answerLater()).
  std::function<void(std::function<void(AdminReply)>)> later;
};

// An engine's answer as sent: a status outside 100-599 is the engine's bug, sent as 500.
HealthReply toReply(AdminReply&& r);

// `status` with the body {"error": message}.
HealthReply errorReply(int status, std::string_view message);

// The one request whose body may be larger than max_body_bytes (up to max_policy_bytes).
bool isPolicyPut(const Request& req);

class HealthRoutes {
 public:
  // A reply's `later` calls `api` through this object: start it while both live.
  HealthRoutes(AdminApi& api, std::string admin_token);

  // The route, method and trust checks: an error reply, or nullopt to go on.
  std::optional<HealthReply> admit(const Request& req, bool trusted) const;
  // admit(), then the route's answer (now, or `later`). Throws what the engine throws.
  HealthReply handle(const Request& req, bool trusted, std::string body);

 private:
  HealthReply handleRoute(const std::string& path, bool is_post, const std::string& query);
  HealthReply handlePolicyRoute(const std::string& path, const std::string& method, const std::string& query,
                                std::string body);

  AdminApi& api_;
  const std::string admin_token_;  // "" refuses every change over TCP
};

}  // namespace zetian::cluster
