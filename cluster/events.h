// The operator's event hook: `[events] exec = "/path/to/hook"`, run once per cluster
// event ("node_joined", "node_left", "node_failed", "node_recovered",
// "cluster_state_changed") with the event in its environment. Each event is also one
// log line, written by whoever emits it; this file only runs the hook.
//
// The hook is `exec_path EVENT_NAME` with exactly these variables: ZETIAN_EVENT=<name>,
// the event's own pairs (ZETIAN_NODE_ID=mx2, ...), and a fixed
// PATH=/usr/sbin:/usr/bin:/sbin:/bin. The milter's own environment is not passed on: it
// may hold secrets. stdin is /dev/null and every descriptor above 2 is closed.
//
// Invariants:
// - Hooks run one at a time, in emit() order; operators rely on that order (a
//   "node_recovered" never overtakes the "node_failed" before it). The next hook starts
//   only after the previous one was reaped.
// - At most max_queued events wait behind the running hook. Beyond that an event is
//   dropped with one warning line, so a slow or hung hook costs memory bounded by the
//   queue, never the loop's time.
// - Every emitted event ends exactly once as one of: success, failed() (could not be
//   started, exited non-zero or died of a signal), timed_out(), dropped(), or
//   discarded because the EventHook was destroyed while it was still queued.
//
// Traps:
// - The loop thread must never wait for a hook. posix_spawn (vfork-like in glibc) is
//   used instead of fork(): forking a multi-threaded process and then allocating in the
//   child can deadlock on a lock another thread held, and copying a large heap's page
//   tables is slow. Exit statuses are collected by polling waitpid(WNOHANG) on a timer
//   that exists only while a hook runs: the milter is a libmilter daemon and installs
//   no SIGCHLD handler.
// - The loop thread blocks SIGTERM, SIGHUP, SIGPIPE ...; a blocked mask survives exec,
//   and a hook that cannot be stopped by SIGTERM surprises everyone (`timeout`,
//   systemd). The child starts with an empty mask and default dispositions.
// - A hook is often a shell script whose children would outlive a SIGKILL sent to the
//   shell alone; each hook gets its own process group, and a timeout kills the group.
//
// Not thread-safe: construction, every method and destruction happen on the loop
// thread that runs `base` (loop thread only); a call from another thread aborts.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cluster/log_sink.h"
#include "cluster/owner_thread.h"

struct event_base;
struct event;

namespace zetian::cluster {

struct ClusterEvent {
  // "node_joined" | "node_left" | "node_failed" | "node_recovered" | "cluster_state_changed"
  std::string name;
  // Extra variables for the hook, e.g. {"ZETIAN_NODE_ID", "mx2"}. Names must be
  // non-empty, without '=', and not ZETIAN_EVENT or PATH (those are set here);
  // a pair that breaks this is left out, with a warning line.
  std::vector<std::pair<std::string, std::string>> env;
};

class EventHook {
 public:
  // exec_path "" means no hook: emit() then does nothing. `base` is the loop's
  // event_base and must outlive this object. A hook running longer than `timeout` is
  // killed (SIGKILL to its process group).
  EventHook(event_base* base, std::string exec_path, LogSink log,
            std::chrono::milliseconds timeout = std::chrono::seconds(30),
            std::size_t max_queued = 64);
  // Frees the timer and discards queued events (one warning line if there were any).
  // A hook still running is left to finish, not killed, and no longer timed: a
  // detached thread with every signal blocked waits for it, so it never stays a
  // zombie. That thread holds only the pid and ends with the child.
  // Must not be called from inside this object's LogSink.
  ~EventHook();
  EventHook(const EventHook&) = delete;
  EventHook& operator=(const EventHook&) = delete;

  // Run the hook for `event` now if none is running, else queue it (or drop it when
  // max_queued events already wait). Returns at once; a failure to start the hook is
  // logged, counted in failed(), and the next queued event is tried.
  void emit(ClusterEvent event);

  // Counters for metrics, since construction.
  std::uint64_t started() const { return started_; }      // hooks spawned
  std::uint64_t failed() const { return failed_; }        // see the invariants above
  std::uint64_t dropped() const { return dropped_; }      // queue full
  std::uint64_t timed_out() const { return timed_out_; }  // killed after `timeout`
  // Gauges: a hook is running now; events waiting behind it.
  bool running() const { return child_.has_value(); }
  std::size_t queued() const { return queue_.size(); }

 private:
  struct Child {
    pid_t pid;
    std::string event_name;
    std::chrono::steady_clock::time_point started_at;
    bool killed;  // SIGKILL sent at the timeout; waiting to reap it
  };

  static void onPollTimer(int fd, short what, void* arg);
  void poll();
  void startNext();
  void spawn(const ClusterEvent& event);
  void finish(int wait_status);
  void killOnTimeout();
  void schedulePoll();
  void log(conf::LogLevel level, const std::string& line) const;

  // All members: loop thread only (owner_, the constructing thread).
  const OwnerThread owner_;
  const std::string exec_path_;
  const LogSink log_;
  const std::chrono::milliseconds timeout_;
  const std::size_t max_queued_;
  event* poll_timer_ = nullptr;  // armed only while child_ is set; null without a hook
  std::optional<Child> child_;
  std::deque<ClusterEvent> queue_;  // waiting behind child_, oldest first
  std::uint64_t started_ = 0;
  std::uint64_t failed_ = 0;
  std::uint64_t dropped_ = 0;
  std::uint64_t timed_out_ = 0;
};

}  // namespace zetian::cluster
