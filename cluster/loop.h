// The cluster thread: one libevent event_base run by one thread.
//
// Everything network-facing lives on this thread. Other threads reach it only through
// post(), which queues a closure in a mutex-guarded, bounded mailbox and wakes the loop;
// the loop drains a bounded batch per wake-up so a flood of posts cannot starve timers
// and sockets. Objects that belong to the loop assert isThisThread() in every method.
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <chrono>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>

struct event_base;
struct event;

namespace zetian::cluster {

class Loop {
 public:
  explicit Loop(std::size_t mailbox_capacity = 65536);
  ~Loop();  // stops and joins if still running
  Loop(const Loop&) = delete;
  Loop& operator=(const Loop&) = delete;

  // Start the thread (once; later calls do nothing). The caller's signal mask is
  // inherited by the thread: block the signals libmilter waits for before calling
  // this. The thread also blocks SIGPIPE, so a peer that hangs up while we write gives
  // EPIPE instead of killing the process.
  void start();
  // Refuse new posts, run every closure already posted, then exit and join the thread.
  // Safe from any thread and more than once. Called on the loop thread itself (from a
  // closure) it only asks the loop to finish; the destructor, which must then run on
  // another thread, joins.
  void stop();

  // Queue `fn` to run on the loop thread. True means it will run, exactly once, even if
  // stop() comes first. Returns false (and drops fn) when the loop is not started yet,
  // is stopping, or its mailbox is full; the caller then falls back on its own.
  bool post(std::function<void()> fn);

  // Run `fn` on the loop thread and wait for its result at most `deadline`. nullopt
  // when it could not be posted or did not finish in time (it may still run later:
  // it owns what it captured by value, and the caller's wait is over). An exception
  // from fn is rethrown here. On the loop thread itself fn runs inline: waiting for a
  // later turn of the loop from inside it would deadlock.
  template <typename Fn>
  auto call(Fn fn, std::chrono::milliseconds deadline) -> std::optional<std::invoke_result_t<Fn&>> {
    using Result = std::invoke_result_t<Fn&>;
    if (isThisThread()) return fn();
    auto promise = std::make_shared<std::promise<Result>>();
    auto future = promise->get_future();
    const bool posted = post([promise, fn = std::move(fn)]() mutable {
      try {
        promise->set_value(fn());
      } catch (...) {
        promise->set_exception(std::current_exception());
      }
    });
    if (!posted || future.wait_for(deadline) != std::future_status::ready) return std::nullopt;
    return future.get();
  }

  // True on the loop thread (only while it runs).
  bool isThisThread() const;
  event_base* base() const { return base_; }

 private:
  static void onWake(int fd, short what, void* arg);
  void run();
  void drain();
  void wakeLocked();  // needs mailbox_mutex_

  // At most this many closures run per wake-up; the rest wait for the next turn of
  // the loop, after timers and sockets have had theirs.
  static constexpr std::size_t kDrainBatch = 256;

  // Set in the constructor, freed in the destructor; used only by the loop thread
  // in between (other threads reach the loop through wake_fd_ alone).
  event_base* base_ = nullptr;
  event* wake_event_ = nullptr;
  int wake_fd_ = -1;  // eventfd; written under mailbox_mutex_, read by the loop thread
  std::atomic<std::thread::id> loop_thread_id_{};

  std::mutex lifecycle_mutex_;  // guards thread_ and started_: start()/stop()
  std::thread thread_;
  bool started_ = false;

  std::mutex mailbox_mutex_;  // guards mailbox_, wake_pending_, accepting_ and stopping_
  std::deque<std::function<void()>> mailbox_;
  bool wake_pending_ = false;  // wake_fd_ written and not yet consumed by a drain
  bool accepting_ = false;     // started and not stopping: post() may queue
  bool stopping_ = false;      // the loop exits once mailbox_ is empty
  const std::size_t mailbox_capacity_;
};

}  // namespace zetian::cluster
