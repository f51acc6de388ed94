// The wake-up protocol, in one place:
//
// - post() pushes under mailbox_mutex_ and writes the eventfd only when no wake-up is
//   pending (wake_pending_), so a burst of posts costs one write(2), not one each.
// - drain() first consumes the eventfd, then takes up to kDrainBatch closures under
//   the lock. If some remain it writes the eventfd again (wake_pending_ stays true):
//   epoll sees the fd readable on the next turn, after timers and sockets ran. Making
//   the event active from inside its own callback instead would run it again in the
//   same turn and starve everything else.
// - The eventfd is only ever written under mailbox_mutex_. That is what makes stop()
//   plus the destructor safe against a racing post(): once stop() has run no post
//   writes the fd again, so the destructor can close it after joining.
//
// Timers: each armed timer is a Timer::State, shared by its handle and the loop's
// registry (timers_), which keeps it alive while its libevent event exists: a handle
// dropped on another thread or a loop that stops with timers still armed must not
// leave an event whose argument is freed. The callback is never destroyed while it
// runs: a cancel from inside it only marks it, and the trampoline frees it on return.
#include "cluster/loop.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <system_error>
#include <vector>

#include "cluster/clock.h"
#include "cluster/owner_thread.h"

namespace zetian::cluster {

struct Timer::State {
  Loop* loop = nullptr;  // null once the loop was destroyed; set before the handle exists
  event* ev = nullptr;   // loop thread only; null once released
  std::function<void()> fn;  // loop thread only (and the Loop's destructor)
  bool repeat = false;
  bool running = false;  // loop thread only: inside fn
  // Set by cancel() on any thread, and when the loop releases the timer: once seen,
  // fn is never started again.
  std::atomic<bool> cancelled{false};
};

namespace {

void useLibeventThreads() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (evthread_use_pthreads() != 0) throw std::runtime_error("evthread_use_pthreads failed");
  });
}

}  // namespace

Loop::Loop(std::size_t mailbox_capacity) : mailbox_capacity_(mailbox_capacity) {
  useLibeventThreads();
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  base_ = event_base_new();
  if (base_ == nullptr) {
    close(wake_fd_);
    throw std::runtime_error("event_base_new failed");
  }
  wake_event_ = event_new(base_, wake_fd_, EV_READ | EV_PERSIST, &Loop::onWake, this);
  if (wake_event_ == nullptr || event_add(wake_event_, nullptr) != 0) {
    if (wake_event_ != nullptr) event_free(wake_event_);
    event_base_free(base_);
    close(wake_fd_);
    throw std::runtime_error("cannot register the loop's wake-up event");
  }
}

Loop::~Loop() {
  if (isThisThread()) {
    std::fputs("zetian: Loop destroyed on its own thread\n", stderr);
    std::abort();
  }
  stop();
  {
    // Joined: nothing else touches the libevent objects any more.
    std::lock_guard lock(lifecycle_mutex_);
    if (thread_.joinable()) thread_.join();
  }
  // Joined: timers still armed die here, and their handles then do nothing.
  std::vector<std::function<void()>> callbacks;  // destroyed after the registry is consistent
  for (auto& [raw, state] : timers_) {
    event_free(state->ev);
    state->ev = nullptr;
    state->loop = nullptr;
    state->cancelled.store(true, std::memory_order_release);
    callbacks.push_back(std::move(state->fn));
  }
  timers_.clear();
  callbacks.clear();
  event_free(wake_event_);
  event_base_free(base_);
  close(wake_fd_);
}

void Loop::start() {
  std::lock_guard lifecycle(lifecycle_mutex_);
  if (started_) return;
  started_ = true;
  std::lock_guard lock(mailbox_mutex_);
  if (stopping_) return;
  // Accepting before the thread exists is fine: what is posted waits in the mailbox,
  // and the eventfd stays readable until the thread's first drain.
  thread_ = std::thread([this] { run(); });
  // Also stored here, not only by run(): a check made before the thread got going
  // must name it, not call the loop "not running". It cannot exit (and clear the id)
  // before we release mailbox_mutex_.
  loop_thread_id_.store(thread_.get_id());
  accepting_ = true;
}

void Loop::run() {
  loop_thread_id_.store(std::this_thread::get_id());
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);
  pthread_setname_np(pthread_self(), "zetian-cluster");

  event_base_loop(base_, EVLOOP_NO_EXIT_ON_EMPTY);

  // A later thread may reuse this id; it must not pass isThisThread().
  loop_thread_id_.store(std::thread::id{});
}

void Loop::stop() {
  {
    std::lock_guard lock(mailbox_mutex_);
    stopping_ = true;
    accepting_ = false;
    wakeLocked();
  }
  if (isThisThread()) return;
  std::lock_guard lifecycle(lifecycle_mutex_);
  if (thread_.joinable()) thread_.join();
}

bool Loop::post(std::function<void()> fn) {
  if (!fn) return false;
  std::lock_guard lock(mailbox_mutex_);
  if (!accepting_ || mailbox_.size() >= mailbox_capacity_) return false;
  mailbox_.push_back(std::move(fn));
  wakeLocked();
  return true;
}

void Loop::abortOffLoop(const CallSite& where) const {
  const std::thread::id owner = loop_thread_id_.load();
  abortWrongThread(where, owner,
                   owner == std::thread::id{} ? "the cluster thread (not running)" : nullptr);
}

Timer Loop::after(std::chrono::milliseconds delay, std::function<void()> fn) {
  checkThisThread();
  if (delay.count() < 0) throw std::invalid_argument("Loop::after: negative delay");
  return arm(delay, false, std::move(fn));
}

Timer Loop::every(std::chrono::milliseconds interval, std::function<void()> fn) {
  checkThisThread();
  // A zero interval would make a persistent event due on every turn of the loop.
  if (interval.count() <= 0) throw std::invalid_argument("Loop::every: the interval must be more than 0");
  return arm(interval, true, std::move(fn));
}

Timer Loop::soon(std::function<void()> fn) {
  checkThisThread();
  return arm(std::nullopt, false, std::move(fn));
}

// `period` nullopt: active at once, in this turn (soon()).
Timer Loop::arm(std::optional<std::chrono::milliseconds> period, bool repeat, std::function<void()> fn) {
  if (!fn) throw std::invalid_argument("Loop timer: empty callback");
  auto state = std::make_shared<Timer::State>();
  state->loop = this;
  state->fn = std::move(fn);
  state->repeat = repeat;
  state->ev = event_new(base_, -1, repeat ? EV_PERSIST : 0, &Loop::onTimer, state.get());
  if (state->ev == nullptr) throw std::runtime_error("cannot create a timer event (out of memory?)");
  if (period) {
    const timeval tv = toTimeval(*period);
    if (event_add(state->ev, &tv) != 0) {
      event_free(state->ev);
      throw std::runtime_error("cannot arm a timer event");
    }
  } else {
    // Queued behind the events already active in this turn; event_free() (cancel)
    // takes it off the active queue.
    event_active(state->ev, EV_TIMEOUT, 1);
  }
  timers_.emplace(state.get(), state);
  return Timer(std::move(state));
}

void Loop::onTimer(int /*fd*/, short /*what*/, void* arg) {
  auto* state = static_cast<Timer::State*>(arg);
  Loop* loop = state->loop;
  loop->checkThisThread();
  // Cancelled from another thread. The release it posted may have been refused (a full
  // mailbox), so release here too: otherwise a persistent event would keep firing, and
  // keep what fn captured, until the loop dies. A release that arrives later finds
  // nothing to do.
  if (state->cancelled.load(std::memory_order_acquire)) {
    loop->release(state);
    return;
  }
  state->running = true;
  // Like a posted closure, a callback must not throw across libevent's C frames.
  try {
    state->fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zetian: a timer on the cluster thread threw: %s\n", e.what());
  } catch (...) {
    std::fputs("zetian: a timer on the cluster thread threw a non-standard exception\n", stderr);
  }
  state->running = false;
  if (!state->repeat || state->cancelled.load(std::memory_order_acquire)) loop->release(state);
}

void Loop::release(Timer::State* state) {
  const auto it = timers_.find(state);
  if (it == timers_.end()) return;  // released already
  std::shared_ptr<Timer::State> keep = std::move(it->second);
  timers_.erase(it);
  // Inside the timer's own callback too: libevent does not touch the event after the
  // callback returns.
  event_free(keep->ev);
  keep->ev = nullptr;
  keep->cancelled.store(true, std::memory_order_release);
  // Destroyed last: what it captured may cancel other timers from its destructor.
  std::function<void()> fn = std::move(keep->fn);
}

Timer& Timer::operator=(Timer&& other) noexcept {
  if (this != &other) {
    cancel();
    state_ = std::move(other.state_);
  }
  return *this;
}

bool Timer::active() const {
  return state_ != nullptr && !state_->cancelled.load(std::memory_order_acquire);
}

void Timer::cancel() {
  if (!state_) return;
  std::shared_ptr<State> state = std::move(state_);
  // Fired (one-shot), cancelled before, or its loop is gone.
  if (state->cancelled.exchange(true, std::memory_order_acq_rel)) return;
  Loop* loop = state->loop;
  if (loop->isThisThread()) {
    if (!state->running) loop->release(state.get());  // else onTimer releases it on return
    return;
  }
  // The flag above keeps fn from starting again; the event and fn are the loop
  // thread's to free. If the post is refused (the loop is stopping, or its mailbox is
  // full), the timer's next firing frees them, or the Loop's destructor does.
  loop->post([state] { state->loop->release(state.get()); });
}

void Loop::wakeLocked() {
  if (wake_pending_) return;
  wake_pending_ = true;
  const std::uint64_t one = 1;
  // Cannot fail short of the counter overflowing, which one pending wake-up rules out.
  [[maybe_unused]] const ssize_t n = write(wake_fd_, &one, sizeof one);
}

void Loop::onWake(int /*fd*/, short /*what*/, void* arg) {
  static_cast<Loop*>(arg)->drain();
}

void Loop::drain() {
  std::uint64_t count = 0;
  [[maybe_unused]] const ssize_t n = read(wake_fd_, &count, sizeof count);

  std::vector<std::function<void()>> batch;
  {
    std::lock_guard lock(mailbox_mutex_);
    const std::size_t take = std::min(mailbox_.size(), kDrainBatch);
    batch.reserve(take);
    for (std::size_t i = 0; i < take; ++i) {
      batch.push_back(std::move(mailbox_.front()));
      mailbox_.pop_front();
    }
    wake_pending_ = false;
    if (!mailbox_.empty()) wakeLocked();  // come back next turn
  }

  for (auto& fn : batch) {
    // A closure must not throw: the exception would cross libevent's C frames.
    try {
      fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "zetian: a task on the cluster thread threw: %s\n", e.what());
    } catch (...) {
      std::fputs("zetian: a task on the cluster thread threw a non-standard exception\n", stderr);
    }
  }
  batch.clear();  // captured state dies here, on the loop thread

  bool finished = false;
  {
    std::lock_guard lock(mailbox_mutex_);
    finished = stopping_ && mailbox_.empty();
  }
  if (finished) event_base_loopbreak(base_);
}

}  // namespace zetian::cluster
