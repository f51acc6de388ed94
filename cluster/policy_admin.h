// The admin answers of the replicated policy: GET|PUT /policy, GET /policy/history,
// POST /cluster/remove and POST /cluster/transfer-leader as JSON, and the Raft fields
// of /health, all from a raft::PolicyService (cluster/raft/policy_service.h).
//
// The engine (plugin/admin.cpp) owns the order of things (a PUT is answered only once
// the new version is in force on this node, which only the engine knows); this file
// holds what is the same for every caller: when there is no Raft cluster to ask (503),
// how a refusal, a document and the history read as JSON, and the service calls whose
// answer needs nothing from the engine. Everything here runs on the cluster thread,
// where the service lives.
//
// The answers (docs/operations.md, "The replicated policy"):
//   GET /policy          200 {"version","proposer","time_unix_ms","text"};
//                        404 before the first policy is committed
//   PUT /policy          200 {"version","index"}; 400 {"error","errors":[FILE:LINE:COL ...]}
//                        when the text is refused (nothing proposed); 409 base_version
//                        is not the current version; 503 / 504 as the service says
//   GET /policy/history  200 [{"version","proposer","time_unix_ms","index","text_bytes"}]
//   POST /cluster/remove?node=ID             200 {"ok":true,"removed":ID,"index":I}
//   POST /cluster/transfer-leader[?node=ID]  200 {"ok":true,"leader":ID or null}
// Every one is 503 {"error":...} on a node without [cluster] or not (yet) in a Raft
// cluster, and {"error":...} with the service's status when it refuses.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "cluster/admin_api.h"
#include "cluster/json.h"
#include "cluster/raft/policy_service.h"

namespace zetian::cluster {

// How long a change (PUT /policy, remove, transfer) may take to commit before it is
// answered 504; zetianctl waits longer than this for those requests.
inline constexpr std::chrono::milliseconds kPolicyChangeDeadline{10'000};
// A linearizable read: shorter than zetianctl's default timeout (5 s), so the operator
// gets the server's 503/504 rather than a client timeout.
inline constexpr std::chrono::milliseconds kPolicyReadDeadline{3'000};

// 503 when there is no Raft cluster to ask: `service` null (no [cluster] enabled) or
// this node not in a Raft cluster yet (the reply says what it waits for). nullopt:
// go ahead.
std::optional<AdminReply> raftUnavailable(const raft::PolicyService* service);

// A refusal of the service (status != 200) as {"error":...} with its status.
AdminReply policyRefusal(const raft::PolicyResult& result);

// The reply to GET /policy from a read's result.
AdminReply policyDocumentReply(const raft::PolicyResult& result);

// PUT /policy's check before anything is proposed: the text as loadPolicy reads it,
// with this node's settings (a rule with store "redis" needs [redis] here). nullopt
// when the text is a policy; else 400 with the FILE:LINE:COL lines, `name` as FILE.
std::optional<AdminReply> policyTextRefusal(std::string_view text, const std::string& name, bool node_has_redis);

// 200 {"version":N,"index":I}: PUT /policy's answer once the version is in force here.
AdminReply policyCommitted(std::uint64_t version, std::uint64_t index);

AdminReply policyHistoryReply(const raft::PolicyService* service);

// GET /policy, POST /cluster/remove, POST /cluster/transfer-leader: ask the service and
// answer once it did (503 without a Raft cluster, at once).
void readPolicy(raft::PolicyService* service, std::function<void(AdminReply)> respond);
void removeMember(raft::PolicyService* service, const std::string& node_id,
                  std::function<void(AdminReply)> respond);
void transferLeader(raft::PolicyService* service, const std::string& node_id,
                    std::function<void(AdminReply)> respond);

// /health: `leader`, and with a service `term`, `commit_index`, `applied_index`,
// `policy_version` and the `raft` object (the rest of RaftStatus). Without a service
// (no [cluster]) only `leader`: null and `raft`: null, as DESIGN.md has it.
void writeRaftHealth(JsonWriter& w, const std::optional<raft::RaftStatus>& status);
// A member's `raft_role` ("voter", "learner") by its node.id, nullopt when it is not a
// Raft member (or there is no Raft cluster).
std::optional<std::string> raftRoleOf(const std::optional<raft::RaftStatus>& status, std::string_view node_id);

}  // namespace zetian::cluster
