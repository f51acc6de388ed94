// What the health/admin HTTP server asks of the engine. The server lives in cluster/
// and knows nothing of the engine; plugin/ implements this interface. Every method is
// called on the cluster thread and must not block for long.
#pragma once

#include <functional>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace zetian::cluster {

struct AdminReply {
  int status = 200;                       // HTTP status
  std::string content_type = "application/json";
  std::string body;
};

// GET /limits: with a key, that key under each rule (or the one rule), looked up
// directly; without one, a page of the held buckets. Filters are optional.
struct LimitsQuery {
  static constexpr std::size_t kDefaultLimit = 100;
  static constexpr std::size_t kMaxLimit = 1000;

  std::string rule;                    // "" = every rule
  std::string key;                     // "" = list the held buckets, a page at a time
  std::size_t limit = kDefaultLimit;   // listing: buckets per page, 1..kMaxLimit
  std::string after;                   // listing: the previous page's "next" ("" = first page)
};

class AdminApi {
 public:
  virtual ~AdminApi() = default;
  virtual AdminReply health() = 0;   // GET /health: JSON document
  virtual AdminReply live() = 0;     // GET /live: 200 while the process serves
  virtual AdminReply ready() = 0;    // GET /ready: 200 once it can take mail
  virtual AdminReply metrics() = 0;  // GET /metrics: Prometheus text format 0.0.4
  virtual AdminReply reload() = 0;   // POST /reload: re-read the policy file
  // What the server calls for POST /reload. `respond` must be called exactly once, on
  // the loop thread, now or later: an engine whose reload is slow runs it elsewhere and
  // answers when done, so the loop keeps serving meanwhile. The server drops the
  // answer if it was destroyed in between.
  virtual void reloadAsync(std::function<void(AdminReply)> respond) { respond(reload()); }
  // GET /limits?rule=R&key=K&limit=N&after=TOKEN
  virtual AdminReply limitsShow(const LimitsQuery& query) = 0;
  // POST /limits/reset?rule=R&key=K
  virtual AdminReply limitsReset(const std::string& rule, const std::string& key) = 0;
  // What the server calls for the two above: as reloadAsync, `respond` exactly once on
  // the loop thread, now or later (an engine that must ask Redis answers when it has).
  virtual void limitsShowAsync(const LimitsQuery& query, std::function<void(AdminReply)> respond) {
    respond(limitsShow(query));
  }
  virtual void limitsResetAsync(const std::string& rule, const std::string& key,
                                std::function<void(AdminReply)> respond) {
    respond(limitsReset(rule, key));
  }
  // POST /maintenance?state=on|off: drain this node (new SMTP sessions get 421 4.3.2,
  // peers show it as `maintenance`) or bring it back
  virtual AdminReply maintenance(bool enabled) = 0;
  // GET /log/level (`level` empty) shows the log level in force and the file's;
  // POST /log/level?level=debug sets it until the next reload or restart.
  virtual AdminReply logLevel(const std::string& level) {
    (void)level;
    return AdminReply{404, "application/json", R"({"error":"this server has no run-time log level"})"};
  }

  // The replicated policy (docs/operations.md, "The replicated policy"). Each answers
  // through `respond` as the async calls above do: exactly once, on the loop thread.
  // GET /policy: the policy in force, read linearizably.
  virtual void policyGetAsync(std::function<void(AdminReply)> respond) = 0;
  // PUT /policy[?base_version=N] with the TOML text as the body: answered once the
  // change is committed and in force on this node.
  virtual void policyPutAsync(std::string text, std::optional<std::uint64_t> base_version,
                              std::function<void(AdminReply)> respond) = 0;
  // GET /policy/history: the applied versions, oldest first.
  virtual AdminReply policyHistory() = 0;
  // POST /cluster/remove?node=ID: takes ID out of the Raft membership.
  virtual void clusterRemoveAsync(const std::string& node_id, std::function<void(AdminReply)> respond) = 0;
  // POST /cluster/transfer-leader[?node=ID]: "" lets the leader choose.
  virtual void clusterTransferLeaderAsync(const std::string& node_id, std::function<void(AdminReply)> respond) = 0;
};

}  // namespace zetian::cluster
