#include "cluster/trace_log.h"

#include <type_traits>
#include <variant>

#include "cluster/raft/types.h"

namespace zetian::cluster {

std::string_view nameOf(TraceKind kind) {
  switch (kind) {
    case TraceKind::heartbeats: return "heartbeats";
    case TraceKind::sync: return "sync";
  }
  return "?";
}

std::string traceSuppressedLine(TraceKind kind, std::uint64_t left_out,
                                std::chrono::steady_clock::duration window) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(window).count();
  return "cluster_trace_suppressed kind=" + std::string(nameOf(kind)) + " lines=" + std::to_string(left_out) +
         " window_ms=" + std::to_string(ms);
}

namespace {

std::string controlKindName(wire::RaftControlKind kind) {
  switch (kind) {
    case wire::RaftControlKind::Status: return "status";
    case wire::RaftControlKind::Join: return "join";
    case wire::RaftControlKind::Propose: return "propose";
    case wire::RaftControlKind::Change: return "change";
    case wire::RaftControlKind::Transfer: return "transfer";
    case wire::RaftControlKind::Reply: return "reply";
    case wire::RaftControlKind::Read: return "read";
  }
  return std::to_string(static_cast<unsigned>(kind));
}

}  // namespace

bool isSyncMessage(const wire::Message& message) {
  return std::holds_alternative<wire::LimitRequest>(message) || std::holds_alternative<wire::LimitReply>(message) ||
         std::holds_alternative<wire::BucketSync>(message) || std::holds_alternative<wire::RaftFrame>(message) ||
         std::holds_alternative<wire::RaftControl>(message);
}

std::optional<std::string> describeSync(const wire::Message& message) {
  return std::visit(
      [](const auto& m) -> std::optional<std::string> {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, wire::LimitRequest>) {
          std::size_t items = 0, leases = 0, refunds = 0;
          for (const auto& call : m.calls) {
            items += call.items.size();
            for (const auto& item : call.items) {
              if (item.op == wire::LimitOp::Lease) ++leases;
              if (item.op == wire::LimitOp::Refund) ++refunds;
            }
          }
          return "type=limit_request calls=" + std::to_string(m.calls.size()) + " items=" + std::to_string(items) +
                 " leases=" + std::to_string(leases) + " refunds=" + std::to_string(refunds);
        } else if constexpr (std::is_same_v<T, wire::LimitReply>) {
          return "type=limit_reply answers=" + std::to_string(m.answers.size());
        } else if constexpr (std::is_same_v<T, wire::BucketSync>) {
          return std::string("type=bucket_sync reason=") +
                 (m.reason == wire::SyncReason::Handoff ? "handoff" : "replication") + " seq=" +
                 std::to_string(m.sequence) + " buckets=" + std::to_string(m.buckets.size()) +
                 " last=" + (m.last ? "true" : "false");
        } else if constexpr (std::is_same_v<T, wire::RaftFrame>) {
          return "type=raft message=" + std::string(raft::messageTypeName(m.message.type)) + " term=" +
                 std::to_string(m.message.term) + " index=" + std::to_string(m.message.index) +
                 " commit=" + std::to_string(m.message.commit) + " entries=" + std::to_string(m.message.entries.size());
        } else if constexpr (std::is_same_v<T, wire::RaftControl>) {
          return "type=raft_control kind=" + controlKindName(m.kind) + " term=" +
                 std::to_string(m.term) + " leader=" + std::to_string(m.leader);
        } else {
          return std::nullopt;
        }
      },
      message);
}

}  // namespace zetian::cluster
