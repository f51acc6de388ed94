// The StatsD exporter: every `metrics.statsd.interval`, the /metrics text rendered on
// the cluster thread, turned into StatsD lines (lines.h) and sent over UDP.
//
// It never blocks the cluster thread: the address is numeric (no DNS), the socket is
// non-blocking and connected once, and a send that fails (agent down: ECONNREFUSED
// from the ICMP answer to the previous datagram; a full buffer: EAGAIN, ENOBUFS) drops
// that datagram, counts it and is logged at most once a minute. StatsD is lossy by
// design; a lost datagram loses a counter change, never the process.
//
// Datagrams hold at most kMaxDatagramBytes: 1432 bytes fit a 1500-byte Ethernet MTU
// with IPv6 and UDP headers and some tunnel overhead, so none is fragmented.
//
// Owned by the loop thread: created, configured, read and destroyed there.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "cluster/loop.h"
#include "cluster/statsd/lines.h"
#include "conf/config.h"

namespace zetian::cluster::statsd {

inline constexpr std::size_t kMaxDatagramBytes = 1432;

struct ExporterStats {
  std::uint64_t pushes = 0;
  std::uint64_t datagrams_sent = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t send_errors = 0;    // datagrams not sent
  std::uint64_t lines_dropped = 0;  // lines longer than a datagram
};

class Exporter {
 public:
  using RenderFn = std::function<std::string()>;  // the /metrics text
  using LogFn = std::function<void(conf::LogLevel, std::string_view)>;

  Exporter(Loop& loop, RenderFn render, LogFn log);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  // Start pushing with `settings`, or switch to them (a reload). A new address gets a
  // new socket; the counters' memory is kept, so no change is sent twice or lost.
  // `count_from_zero`: the first push sends the counters' whole values (the process
  // just started); otherwise their current values are the starting point. False with
  // `error` when no socket could be made; the exporter then stays as it was.
  bool configure(const conf::StatsdSection& settings, bool count_from_zero, std::string* error);
  // One push now (also what the timer does).
  void push();

  const conf::StatsdSection& settings() const { return settings_; }
  const ExporterStats& stats() const { return stats_; }

 private:
  void sendFailed(int err);

  Loop& loop_;
  RenderFn render_;
  LogFn log_;
  conf::StatsdSection settings_;
  int fd_ = -1;
  LineEncoder encoder_;
  Timer timer_;
  ExporterStats stats_;
  // Send errors since the last log line about them, and when that line was written.
  std::uint64_t unlogged_errors_ = 0;
  std::chrono::steady_clock::time_point last_error_log_{};
  bool error_logged_ = false;
};

}  // namespace zetian::cluster::statsd
