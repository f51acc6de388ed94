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

// Pure: time is an argument. Used on the cluster thread only.
class TraceBudget {
 public:
  using Clock = std::chrono::steady_clock;
  TraceBudget(std::size_t lines_per_window, Clock::duration window);

  struct Decision {
    std::optional<std::string> summary;  // of this kind's previous window: log it first
    bool log_line = false;               // the budget allows this line
  };
  // Counts one line of `kind` at `now`; the caller builds the line only when it is
  // allowed, so a suppressed line costs no formatting.
  Decision allow(TraceKind kind, Clock::time_point now);
  // Summaries of windows that ended with lines left out, so a summary comes even when
  // no further line of that kind does. Call it now and then (the node's tick).
  std::vector<std::string> flush(Clock::time_point now);
  std::uint64_t suppressed(TraceKind kind) const { return budgets_[index(kind)].suppressed_total; }

 private:
  struct Budget {
    bool open = false;
    Clock::time_point window_start{};
    std::size_t logged = 0;
    std::uint64_t suppressed = 0;
    std::uint64_t suppressed_total = 0;
  };
  static std::size_t index(TraceKind kind) { return static_cast<std::size_t>(kind); }
  std::optional<std::string> closeWindowIfOver(TraceKind kind, Clock::time_point now);

  std::size_t lines_per_window_;
  Clock::duration window_;
  std::array<Budget, kTraceKinds.size()> budgets_{};
};

// LimitRequest, LimitReply, BucketSync, RaftFrame, RaftControl: what [log] sync traces.
bool isSyncMessage(const wire::Message& message);

// The fields of a replication, lease or Raft message for a sync line ("type=bucket_sync
// reason=replication seq=12 buckets=3"), or nothing for any other message. Counts and
// numbers only: never a bucket key (they hold client addresses and senders).
std::optional<std::string> describeSync(const wire::Message& message);

}  // namespace zetian::cluster
