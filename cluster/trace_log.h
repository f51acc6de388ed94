// Cluster traffic lines for debugging ([log] heartbeats and sync): one line per
// heartbeat sent (one per round, to every linked peer) or received, and one per
// replication, lease and Raft message sent or received. They are written at level
// debug, and never flood syslog: each kind has a budget of lines per window (a fixed
// window that starts at the kind's first line); the lines past it are counted, and once
// the window is over one summary line says how many were left out.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/log_budget.h"
#include "cluster/wire/codec.h"

namespace zetian::cluster {

enum class TraceKind : std::uint8_t { heartbeats, sync };
inline constexpr std::array kTraceKinds{TraceKind::heartbeats, TraceKind::sync};
// "heartbeats", "sync": as the [log] keys spell them.
std::string_view nameOf(TraceKind kind);

// 10 lines a second per kind: enough to follow a small cluster's heartbeats at the
// default interval, far below what syslog minds.
inline constexpr std::size_t kTraceLinesPerWindow = 10;
inline constexpr std::chrono::seconds kTraceWindow{1};

// The summary of a window of trace lines that left `left_out` lines out:
// "cluster_trace_suppressed kind=sync lines=48 window_ms=1000".
std::string traceSuppressedLine(TraceKind kind, std::uint64_t left_out,
                                std::chrono::steady_clock::duration window);

// Used on the cluster thread only (cluster/log_budget.h).
static_assert(numberedInOrder(kTraceKinds));
using TraceBudget = LogBudget<TraceKind, kTraceKinds.size(), traceSuppressedLine>;

// LimitRequest, LimitReply, BucketSync, RaftFrame, RaftControl: what [log] sync traces.
bool isSyncMessage(const wire::Message& message);

// The fields of a replication, lease or Raft message for a sync line ("type=bucket_sync
// reason=replication seq=12 buckets=3"), or nothing for any other message. Counts and
// numbers only: never a bucket key (they hold client addresses and senders).
std::optional<std::string> describeSync(const wire::Message& message);

}  // namespace zetian::cluster
