// The cluster thread: one libevent event_base run by one thread.
//
// Everything network-facing lives on this thread. Other threads reach it only through
// post(), which queues a closure in a mutex-guarded, bounded mailbox and wakes the loop;
// the loop drains a bounded batch per wake-up so a flood of posts cannot starve timers
// and sockets. Objects that belong to the loop check their thread in every method
// (checkThisThread() here, or OwnerThread in cluster/owner_thread.h), in every build.
//
// Code outside cluster/ schedules timed work with after() and every(), never with
// libevent directly: nothing outside cluster/ includes a libevent header.
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
#include <unordered_map>

#include "cluster/owner_thread.h"

struct event_base;
struct event;

namespace zetian::cluster {

class Loop;

// The handle of a timer from Loop::after() or Loop::every(). Destroying it, or
// assigning another timer to it, cancels the timer (RAII). Moving it keeps the timer.
//
// cancel() on the loop thread: the callback never runs again, and it is destroyed at
// once, or right after it returns when cancel() comes from inside the callback itself
// (which is safe). cancel() on another thread: the callback never starts again once
// cancel() has returned, but one already running finishes; the callback is destroyed
// later on the loop thread (or by the Loop's destructor when the loop is stopping).
// Either way, what the callback captures must stay valid until cancel() has returned,
// and for a cancel from another thread until a running callback has finished.
//
// Timers die with their Loop: the loop's destructor frees those still armed, and their
// handles then do nothing. A handle must not be used while its Loop is being destroyed.
class Timer {
 public:
  Timer() = default;  // holds no timer
  ~Timer() { cancel(); }
  Timer(Timer&& other) noexcept = default;
  Timer& operator=(Timer&& other) noexcept;
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void cancel();
  // Armed: neither cancelled nor (a one-shot) fired, and the loop still exists.
  bool active() const;

 private:
  friend class Loop;
  struct State;
  explicit Timer(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

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

  // Run `fn` on the loop thread and wait for its result at most `deadline`.
  //
  // When call() returns, fn has either run to its end or will never run, and fn itself
  // (everything it captured) has been destroyed: a closure may capture the caller's
  // locals by reference. nullopt when fn could not be posted (see post()) or the loop
  // had not started it when the deadline passed; it is then dropped unrun. If fn is
  // already running at the deadline, call() waits for it and returns its result: the
  // wait past the deadline is one closure's run time, which on the loop thread must be
  // short anyway. An exception from fn is rethrown here. On the loop thread itself fn
  // runs inline: waiting for a later turn of the loop from inside it would deadlock.
  template <typename Fn>
  auto call(Fn fn, std::chrono::milliseconds deadline) -> std::optional<std::invoke_result_t<Fn&>> {
    using Result = std::invoke_result_t<Fn&>;
    static_assert(!std::is_void_v<Result>, "Loop::call needs a result (return e.g. true), or use post()");
    if (isThisThread()) return fn();
    // Who runs fn is decided once, by compare-and-swap on `stage`: the loop thread
    // (queued -> running) or the caller giving up (queued -> abandoned).
    enum Stage : int { kQueued, kRunning, kAbandoned };
    struct Pending {
      std::atomic<int> stage{kQueued};
      std::optional<Fn> fn;  // touched only by the side that won `stage`
      std::promise<Result> done;
    };
    auto pending = std::make_shared<Pending>();
    pending->fn.emplace(std::move(fn));
    auto future = pending->done.get_future();
    const bool posted = post([pending] {
      int queued = kQueued;
      if (!pending->stage.compare_exchange_strong(queued, kRunning)) return;  // the caller gave up
      std::optional<Result> result;
      std::exception_ptr error;
      try {
        result.emplace((*pending->fn)());
      } catch (...) {
        error = std::current_exception();
      }
      pending->fn.reset();  // before the caller wakes up
      if (error) {
        pending->done.set_exception(error);
      } else {
        pending->done.set_value(std::move(*result));
      }
    });
    if (posted && future.wait_for(deadline) == std::future_status::ready) return future.get();
    int queued = kQueued;
    if (!posted || pending->stage.compare_exchange_strong(queued, kAbandoned)) {
      pending->fn.reset();
      return std::nullopt;
    }
    return future.get();  // running right now: it ends soon
  }

  // Run `fn` once on the loop thread after `delay` (0: on the next turn of the loop), or
  // every `interval` (more than 0) until cancelled. Call on the loop thread only (it
  // aborts elsewhere, like every loop-owned object); the handle may then travel (see
  // Timer). fn must not be empty; an exception from fn is logged to stderr and the timer
  // goes on. A timer that is not kept (the handle discarded) is cancelled at once.
  [[nodiscard]] Timer after(std::chrono::milliseconds delay, std::function<void()> fn);
  [[nodiscard]] Timer every(std::chrono::milliseconds interval, std::function<void()> fn);
  // Run `fn` once later in this same turn of the loop: after the callbacks already due
  // in this turn (sockets that were ready, the mailbox batch being drained), before
  // the loop waits again. For work that gathers what one turn produced, such as one
  // frame per peer per turn; after(0) would cost a turn of its own (one more
  // epoll_wait before anything is sent). fn must not arm soon() again from inside
  // itself, which would keep the loop in one turn: use after(0) to yield. Same handle
  // and rules as after().
  [[nodiscard]] Timer soon(std::function<void()> fn);

  // True on the loop thread (only while it runs). Inline: every ownership check of a
  // loop-owned object goes through it.
  bool isThisThread() const { return loop_thread_id_.load() == std::this_thread::get_id(); }
  // Aborts with a message naming the calling method unless on the loop thread: the
  // ownership check of objects that belong to this loop (cluster/owner_thread.h).
  void checkThisThread(CallSite where = CallSite::current()) const {
    if (!isThisThread()) [[unlikely]] abortOffLoop(where);
  }
  event_base* base() const { return base_; }

 private:
  friend class Timer;
  [[noreturn]] void abortOffLoop(const CallSite& where) const;
  Timer arm(std::optional<std::chrono::milliseconds> period, bool repeat, std::function<void()> fn);
  void release(Timer::State* state);
  static void onTimer(int fd, short what, void* arg);
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

  // Armed timers, so that they die with the loop. Loop thread only (and the destructor,
  // after the join).
  std::unordered_map<Timer::State*, std::shared_ptr<Timer::State>> timers_;
};

}  // namespace zetian::cluster
