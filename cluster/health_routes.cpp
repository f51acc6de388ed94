// The health server's routes and its trust rule (health_routes.h).

#include "cluster/health_routes.h"

#include <algorithm>
#include <initializer_list>
#include <utility>

#include "cluster/json.h"
#include "cluster/query_string.h"

namespace zetian::cluster {
namespace {

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

// The methods a route answers, as bits: GET (with HEAD), POST, PUT.
enum Methods : unsigned { kGet = 1, kPost = 2, kPut = 4 };

struct Route {
  const char* path;
  unsigned methods;
};

constexpr Route kRoutes[] = {
    {"/health", kGet}, {"/live", kGet},    {"/ready", kGet},
    {"/metrics", kGet}, {"/limits", kGet}, {"/reload", kPost},
    {"/limits/reset", kPost}, {"/maintenance", kPost},
    {"/policy", kGet | kPut}, {"/policy/history", kGet},
    {"/cluster/remove", kPost}, {"/cluster/transfer-leader", kPost},
    {"/log/level", kGet | kPost},
};

const Route* findRoute(const std::string& path) {
  for (const Route& r : kRoutes) {
    if (path == r.path) return &r;
  }
  return nullptr;
}

// A node id as the cluster names members (1 to 64 of A-Z a-z 0-9 _ . -), or the
// "raft:<hex id>" a Raft member is shown as while its name is unknown.
bool plausibleNodeId(std::string_view id) {
  if (id.empty() || id.size() > 80) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
           c == '-' || c == ':';
  });
}

}  // namespace

HealthReply toReply(AdminReply&& r) {
  HealthReply reply;
  reply.status = r.status >= 100 && r.status <= 599 ? r.status : 500;
  reply.content_type = std::move(r.content_type);
  reply.body = std::move(r.body);
  return reply;
}

HealthReply errorReply(int status, std::string_view message) {
  return HealthReply{status, "application/json", jsonError(message), {}, {}};
}

bool isPolicyPut(const Request& req) { return req.method == "PUT" && req.path == "/policy"; }

HealthRoutes::HealthRoutes(AdminApi& api, std::string admin_token)
    : api_(api), admin_token_(std::move(admin_token)) {}

std::optional<HealthReply> HealthRoutes::admit(const Request& req, bool trusted) const {
  const std::string& path = req.path;
  const Route* route = findRoute(path);
  if (route == nullptr) return errorReply(404, "no such endpoint: " + path);

  const std::string& method = req.method;
  const bool is_get = method == "GET" || method == "HEAD";
  const bool method_ok = (is_get && (route->methods & kGet) != 0) ||
                         (method == "POST" && (route->methods & kPost) != 0) ||
                         (method == "PUT" && (route->methods & kPut) != 0);
  if (!method_ok) {
    std::string answers;
    std::string allow;
    const auto add = [&](unsigned bit, const char* said, const char* listed) {
      if ((route->methods & bit) == 0) return;
      answers += answers.empty() ? said : std::string(" and ") + said;
      allow += allow.empty() ? listed : std::string(", ") + listed;
    };
    add(kGet, "GET (and HEAD)", "GET, HEAD");
    add(kPost, "POST", "POST");
    add(kPut, "PUT", "PUT");
    HealthReply reply = errorReply(405, path + " only answers " + answers);
    reply.allow = allow;
    return reply;
  }

  // Every method but GET and HEAD changes something.
  if (!is_get && !trusted) {
    if (admin_token_.empty()) {
      return errorReply(403,
                        "changes are not allowed over TCP without [health] admin_token; use the "
                        "Unix socket");
    }
    constexpr std::string_view kScheme = "Bearer ";
    const std::string_view presented = req.authorization;
    if (!startsWithNoCase(presented, kScheme) ||
        !constantTimeEquals(presented.substr(kScheme.size()), admin_token_)) {
      return errorReply(403, "missing or wrong `Authorization: Bearer <admin_token>`");
    }
  }
  return std::nullopt;
}

HealthReply HealthRoutes::handle(const Request& req, bool trusted, std::string body) {
  if (auto refused = admit(req, trusted)) return std::move(*refused);
  if (req.path == "/policy" || req.path == "/policy/history" || req.path.rfind("/cluster/", 0) == 0) {
    return handlePolicyRoute(req.path, req.method, req.query, std::move(body));
  }
  return handleRoute(req.path, req.method == "POST", req.query);
}

// The replicated policy's routes (AdminApi's policy calls; cluster/policy_admin.h has
// their answers).
HealthReply HealthRoutes::handlePolicyRoute(const std::string& path, const std::string& method,
                                            const std::string& query, std::string body) {
  std::string query_error;
  const auto params = parseQuery(query, &query_error);
  if (!params) return errorReply(400, query_error);
  const auto only = [&](std::initializer_list<std::string_view> known,
                        const std::string& expected) -> std::optional<HealthReply> {
    for (const auto& [name, value] : *params) {
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        return errorReply(400, "unknown query parameter `" + name + "` (" + expected + ")");
      }
    }
    return std::nullopt;
  };
  HealthReply reply;
  if (path == "/policy/history") {
    if (auto bad = only({}, "GET /policy/history takes none")) return std::move(*bad);
    return toReply(api_.policyHistory());
  }
  if (path == "/policy" && method != "PUT") {
    if (auto bad = only({}, "GET /policy takes none")) return std::move(*bad);
    reply.later = [this](std::function<void(AdminReply)> respond) { api_.policyGetAsync(std::move(respond)); };
    return reply;
  }
  if (path == "/policy") {
    if (auto bad = only({"base_version"}, "expected base_version")) return std::move(*bad);
    std::optional<std::uint64_t> base;
    if (const auto it = params->find("base_version"); it != params->end()) {
      const std::string& text = it->second;
      const bool digits = !text.empty() && text.size() <= 19 &&
                          std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits || std::stoull(text) == 0) {
        return errorReply(400, "base_version must be a policy version (a whole number from 1)");
      }
      base = std::stoull(text);
    }
    if (body.empty()) return errorReply(400, "PUT /policy needs the policy's TOML text as the request body");
    reply.later = [this, text = std::move(body), base](std::function<void(AdminReply)> respond) mutable {
      api_.policyPutAsync(std::move(text), base, std::move(respond));
    };
    return reply;
  }
  const bool remove = path == "/cluster/remove";
  if (auto bad = only({"node"}, "expected node")) return std::move(*bad);
  const auto it = params->find("node");
  const std::string node = it == params->end() ? std::string() : it->second;
  if (remove && node.empty()) return errorReply(400, "node is required: POST /cluster/remove?node=NODE_ID");
  if (!node.empty() && !plausibleNodeId(node)) {
    return errorReply(400, "node must be a node id (1 to 64 characters from A-Z a-z 0-9 _ . -)");
  }
  if (remove) {
    reply.later = [this, node](std::function<void(AdminReply)> respond) {
      api_.clusterRemoveAsync(node, std::move(respond));
    };
  } else {
    reply.later = [this, node](std::function<void(AdminReply)> respond) {
      api_.clusterTransferLeaderAsync(node, std::move(respond));
    };
  }
  return reply;
}

HealthReply HealthRoutes::handleRoute(const std::string& path, bool is_post, const std::string& query) {
  if (path == "/health") return toReply(api_.health());
  if (path == "/live") return toReply(api_.live());
  if (path == "/ready") return toReply(api_.ready());
  if (path == "/metrics") return toReply(api_.metrics());
  if (path == "/reload") {
    HealthReply reply;
    reply.later = [this](std::function<void(AdminReply)> respond) { api_.reloadAsync(std::move(respond)); };
    return reply;
  }

  std::string query_error;
  const auto params = parseQuery(query, &query_error);
  if (!params) return errorReply(400, query_error);
  if (path == "/maintenance") {
    const auto state = params->find("state");
    if (params->size() != 1 || state == params->end() || (state->second != "on" && state->second != "off")) {
      return errorReply(400, "expected POST /maintenance?state=on or ?state=off");
    }
    return toReply(api_.maintenance(state->second == "on"));
  }
  if (path == "/log/level") {
    const auto level = params->find("level");
    if (!is_post) {
      if (!params->empty()) return errorReply(400, "GET /log/level takes no parameters");
      return toReply(api_.logLevel(""));
    }
    if (params->size() != 1 || level == params->end() || level->second.empty()) {
      return errorReply(400, "expected POST /log/level?level=error|warn|info|debug");
    }
    return toReply(api_.logLevel(level->second));
  }
  // /limits and /limits/reset take rule= and key=; the listing also limit= and after=.
  for (const auto& [name, value] : *params) {
    const bool known = name == "rule" || name == "key" || (!is_post && (name == "limit" || name == "after"));
    if (!known) {
      return errorReply(400, "unknown query parameter `" + name + "` (expected rule, key" +
                                 (is_post ? ")" : ", limit, after)"));
    }
  }
  const auto get = [&](const char* name) {
    const auto it = params->find(name);
    return it == params->end() ? std::string{} : it->second;
  };
  const std::string rule = get("rule");
  const std::string key = get("key");
  if (!is_post) {
    LimitsQuery q;
    q.rule = rule;
    q.key = key;
    q.after = get("after");
    if (const auto it = params->find("limit"); it != params->end()) {
      const std::string& text = it->second;
      std::size_t limit = 0;
      const bool digits = !text.empty() && text.size() <= 4 &&
                          std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (digits) limit = static_cast<std::size_t>(std::stoul(text));
      if (!digits || limit < 1 || limit > LimitsQuery::kMaxLimit) {
        return errorReply(400, "limit must be a whole number from 1 to " + std::to_string(LimitsQuery::kMaxLimit));
      }
      q.limit = limit;
    }
    HealthReply reply;
    reply.later = [this, q](std::function<void(AdminReply)> respond) { api_.limitsShowAsync(q, std::move(respond)); };
    return reply;
  }
  if (rule.empty()) return errorReply(400, "rule is required: POST /limits/reset?rule=RULE&key=KEY");
  HealthReply reply;
  reply.later = [this, rule, key](std::function<void(AdminReply)> respond) {
    api_.limitsResetAsync(rule, key, std::move(respond));
  };
  return reply;
}

}  // namespace zetian::cluster
