#include "cluster/policy_admin.h"

#include <utility>

#include "conf/policy.h"

namespace zetian::cluster {
namespace {

AdminReply jsonReply(int status, std::string body) { return {status, "application/json", std::move(body)}; }

AdminReply errorReply(int status, std::string_view message) { return jsonReply(status, jsonError(message)); }

std::uint64_t deadlineMs(std::chrono::milliseconds d) { return static_cast<std::uint64_t>(d.count()); }

}  // namespace

std::optional<AdminReply> raftUnavailable(const raft::PolicyService* service) {
  if (service == nullptr) {
    return errorReply(503,
                      "this node runs without [cluster] enabled, so it has no replicated policy: it enforces the "
                      "policy of its own file (change it there and run `zetianctl reload`)");
  }
  const raft::RaftStatus status = service->status();
  if (!status.in_cluster) {
    std::string message = "this node is not in a Raft cluster yet";
    if (!status.waiting_for.empty()) message += " (waiting for " + status.waiting_for + ")";
    message += "; it enforces the policy of its own file meanwhile";
    return errorReply(503, message);
  }
  return std::nullopt;
}

AdminReply policyRefusal(const raft::PolicyResult& result) {
  // A service that says "refused" without a reason still gets a readable answer.
  std::string message = result.error;
  if (message.empty()) message = "the Raft cluster refused the request (status " + std::to_string(result.status) + ")";
  return errorReply(result.status >= 400 && result.status <= 599 ? result.status : 500, message);
}

AdminReply policyDocumentReply(const raft::PolicyResult& result) {
  if (result.status != 200) return policyRefusal(result);
  if (!result.document) {
    return errorReply(404, "the Raft cluster has no policy yet: apply one with `zetianctl policy apply FILE`");
  }
  const conf::PolicyDocument& d = *result.document;
  JsonWriter w;
  w.beginObject()
      .field("version", d.version)
      .field("proposer", d.proposer)
      .field("time_unix_ms", d.time_unix_ms)
      .field("text", d.text)
      .endObject();
  return jsonReply(200, w.take());
}

std::optional<AdminReply> policyTextRefusal(std::string_view text, const std::string& name, bool node_has_redis) {
  const conf::PolicyLoadResult loaded = conf::loadPolicy(text, name, conf::PolicyLoadOptions{node_has_redis});
  if (loaded.ok()) return std::nullopt;
  JsonWriter w;
  w.beginObject()
      .field("error", "the policy has " + std::to_string(loaded.errors.size()) +
                          (loaded.errors.size() == 1 ? " error" : " errors") + "; nothing was proposed")
      .key("errors")
      .beginArray();
  for (const auto& e : loaded.errors) w.value(e.format());
  w.endArray().endObject();
  return jsonReply(400, w.take());
}

AdminReply policyCommitted(std::uint64_t version, std::uint64_t index) {
  JsonWriter w;
  w.beginObject().field("version", version).field("index", index).endObject();
  return jsonReply(200, w.take());
}

AdminReply policyHistoryReply(const raft::PolicyService* service) {
  if (auto refused = raftUnavailable(service)) return std::move(*refused);
  JsonWriter w;
  w.beginArray();
  for (const raft::PolicyHistoryItem& item : service->history()) {
    w.beginObject()
        .field("version", item.version)
        .field("proposer", item.proposer)
        .field("time_unix_ms", item.time_unix_ms)
        .field("index", item.index)
        .field("text_bytes", item.text_bytes)
        .endObject();
  }
  w.endArray();
  return jsonReply(200, w.take());
}

void readPolicy(raft::PolicyService* service, std::function<void(AdminReply)> respond) {
  if (auto refused = raftUnavailable(service)) {
    respond(std::move(*refused));
    return;
  }
  service->readPolicy(deadlineMs(kPolicyReadDeadline), [respond = std::move(respond)](raft::PolicyResult result) {
    respond(policyDocumentReply(result));
  });
}

void removeMember(raft::PolicyService* service, const std::string& node_id, std::function<void(AdminReply)> respond) {
  if (auto refused = raftUnavailable(service)) {
    respond(std::move(*refused));
    return;
  }
  service->removeMember(node_id, deadlineMs(kPolicyChangeDeadline),
                        [node_id, respond = std::move(respond)](raft::PolicyResult result) {
                          if (result.status != 200) {
                            respond(policyRefusal(result));
                            return;
                          }
                          JsonWriter w;
                          w.beginObject()
                              .field("ok", true)
                              .field("removed", node_id)
                              .field("index", result.index)
                              .endObject();
                          respond(jsonReply(200, w.take()));
                        });
}

void transferLeader(raft::PolicyService* service, const std::string& node_id,
                    std::function<void(AdminReply)> respond) {
  if (auto refused = raftUnavailable(service)) {
    respond(std::move(*refused));
    return;
  }
  service->transferLeader(node_id, deadlineMs(kPolicyChangeDeadline),
                          [service, respond = std::move(respond)](raft::PolicyResult result) {
                            if (result.status != 200) {
                              respond(policyRefusal(result));
                              return;
                            }
                            // The callback runs on the cluster thread, where the service
                            // lives: its status names the leader the transfer made.
                            const raft::RaftStatus status = service->status();
                            JsonWriter w;
                            w.beginObject().field("ok", true).key("leader");
                            if (status.leader) {
                              w.value(*status.leader);
                            } else {
                              w.null();
                            }
                            w.endObject();
                            respond(jsonReply(200, w.take()));
                          });
}

void writeRaftHealth(JsonWriter& w, const std::optional<raft::RaftStatus>& status) {
  w.key("leader");
  if (status && status->leader) {
    w.value(*status->leader);
  } else {
    w.null();
  }
  if (!status) {
    w.key("raft").null();
    return;
  }
  const raft::RaftStatus& s = *status;
  // A node in no Raft cluster yet has no term or log of a cluster to show: null, not 0.
  if (s.in_cluster) {
    w.field("term", s.term).field("commit_index", s.commit_index).field("applied_index", s.applied_index);
  } else {
    w.key("term").null().key("commit_index").null().key("applied_index").null();
  }
  w.key("policy_version");
  if (s.policy_version) {
    w.value(*s.policy_version);
  } else {
    w.null();
  }
  w.key("raft")
      .beginObject()
      .field("in_cluster", s.in_cluster)
      .field("waiting_for", s.waiting_for)
      .field("raft_id", s.raft_id);
  if (s.in_cluster) {
    w.field("role", s.role);
  } else {
    w.key("role").null();
  }
  w.field("voters", s.voters)
      .field("voters_reachable", s.voters_reachable)
      .field("leader_changes", s.leader_changes)
      .field("snapshots_taken", s.snapshots_taken)
      .field("snapshots_installed", s.snapshots_installed)
      .key("members")
      .beginArray();
  for (const raft::RaftMemberView& m : s.members) {
    w.beginObject().field("id", m.id).field("raft_id", m.raft_id).field("role", m.role).field("self", m.self);
    w.key("match_index");
    if (m.match_index) {
      w.value(*m.match_index);
    } else {
      w.null();
    }
    w.endObject();
  }
  w.endArray().endObject();
}

std::optional<std::string> raftRoleOf(const std::optional<raft::RaftStatus>& status, std::string_view node_id) {
  if (!status) return std::nullopt;
  for (const raft::RaftMemberView& m : status->members) {
    if (m.id == node_id) return m.role;
  }
  return std::nullopt;
}

}  // namespace zetian::cluster
