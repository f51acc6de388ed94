// What a listener does when accept() fails, shared by the health server and the
// cluster listener.
//
// Without it, libevent's evconnlistener retries a failing accept() on every loop turn:
// with the file descriptors exhausted (EMFILE/ENFILE), the listening socket stays
// readable, the loop spins at 100% CPU and libevent prints `Error from accept() call`
// each time (175,000 lines a second were seen). The guard installs the listener's
// error callback, which also silences libevent's own message, and on a failure:
// - disables the listener for `backoff` (a timer re-enables it), so a failing accept()
//   costs one call per back-off period, not one per loop turn;
// - on EMFILE/ENFILE, gives up the spare descriptor it keeps open (/dev/null), accepts
//   the newest pending connection and closes it at once, then reopens the spare: the
//   backlog keeps moving and the client is told "go away" instead of hanging;
// - logs one line per `log_every` at most, with the number of failures since the last
//   line (throttled the same way: ThrottledLog below).
//
// The guard takes over the listener's callbacks (libevent gives both the same user
// pointer), so accepted sockets reach the owner through `on_accept`.
// Loop thread only, like the listener it guards; it must be destroyed before the
// listener is freed.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "cluster/log_sink.h"

struct event;
struct event_base;
struct evconnlistener;

namespace zetian::cluster {

// At most one line per `every`; what it held back is counted and reported with the
// next line that goes out. Not thread-safe (one per loop-thread owner).
class ThrottledLog {
 public:
  explicit ThrottledLog(std::chrono::steady_clock::duration every) : every_(every) {}
  // Whether a line may go out now; *held_back is the number of events swallowed
  // since the previous line (0 if none). Counts this event either way.
  bool admit(std::chrono::steady_clock::time_point now, std::uint64_t* held_back);

 private:
  std::chrono::steady_clock::duration every_;
  std::chrono::steady_clock::time_point last_{};
  bool logged_once_ = false;
  std::uint64_t held_back_ = 0;
};

struct AcceptGuardOptions {
  std::string name;  // the listener in log lines: "health", "cluster"
  std::chrono::milliseconds backoff{100};
  std::chrono::seconds log_every{10};
};

class AcceptGuard {
 public:
  // An accepted socket (non-blocking); the callee owns `fd`.
  using OnAccept = std::function<void(int fd, const sockaddr* addr, int addr_len)>;

  // Installs itself as `listener`'s callbacks and opens the spare descriptor.
  // `log` may be empty: the line then goes to stderr, as libevent's did.
  AcceptGuard(event_base* base, evconnlistener* listener, AcceptGuardOptions options, LogSink log,
              OnAccept on_accept);
  ~AcceptGuard();
  AcceptGuard(const AcceptGuard&) = delete;
  AcceptGuard& operator=(const AcceptGuard&) = delete;

  std::uint64_t errors() const { return errors_; }  // accept() failures seen
  std::uint64_t shed() const { return shed_; }      // pending connections closed unheard
  bool backingOff() const { return backing_off_; }

 private:
  static void onAcceptCb(evconnlistener* listener, int fd, sockaddr* addr, int addr_len, void* arg);
  static void onErrorCb(evconnlistener* listener, void* arg);
  static void onResumeCb(int fd, short what, void* arg);
  void onError(int err);
  void shedNewest();
  void log(const std::string& line);

  evconnlistener* listener_;
  AcceptGuardOptions options_;
  LogSink log_;
  OnAccept on_accept_;
  event* resume_ = nullptr;
  int spare_fd_ = -1;
  bool backing_off_ = false;
  std::uint64_t errors_ = 0;
  std::uint64_t shed_ = 0;
  ThrottledLog throttle_;
};

}  // namespace zetian::cluster
