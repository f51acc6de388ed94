#include "cluster/loop.h"

#include <event2/event.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace zetian::cluster {
namespace {

using namespace std::chrono_literals;

TEST(Loop, RunsEveryClosureExactlyOnceInPerProducerOrder) {
  constexpr int kProducers = 8;
  constexpr int kPerProducer = 5000;
  Loop loop(1024);  // small, so producers also meet a full mailbox
  loop.start();

  // Touched only on the loop thread.
  std::vector<std::vector<int>> seen(kProducers);
  std::atomic<bool> off_thread{false};

  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&, p] {
      for (int i = 0; i < kPerProducer; ++i) {
        while (!loop.post([&, p, i] {
          if (!loop.isThisThread()) off_thread = true;
          seen[p].push_back(i);
        })) {
          std::this_thread::yield();  // full: wait for the loop to drain
        }
      }
    });
  }
  for (auto& t : producers) t.join();
  loop.stop();

  EXPECT_FALSE(off_thread);
  for (int p = 0; p < kProducers; ++p) {
    ASSERT_EQ(seen[p].size(), static_cast<std::size_t>(kPerProducer)) << "producer " << p;
    for (int i = 0; i < kPerProducer; ++i) ASSERT_EQ(seen[p][i], i) << "producer " << p;
  }
}

TEST(Loop, IsThisThreadOnlyOnTheLoopThread) {
  Loop loop;
  EXPECT_FALSE(loop.isThisThread());
  loop.start();
  std::promise<bool> on_loop;
  ASSERT_TRUE(loop.post([&] { on_loop.set_value(loop.isThisThread()); }));
  EXPECT_TRUE(on_loop.get_future().get());
  EXPECT_FALSE(loop.isThisThread());
  loop.stop();
  EXPECT_FALSE(loop.isThisThread());
}

TEST(Loop, StopRunsEverythingAlreadyPosted) {
  Loop loop;
  loop.start();
  int ran = 0;  // loop thread only; read after stop() joined
  for (int i = 0; i < 10'000; ++i) ASSERT_TRUE(loop.post([&] { ++ran; }));
  loop.stop();
  EXPECT_EQ(ran, 10'000);
}

TEST(Loop, PostAfterStopReturnsFalse) {
  Loop loop;
  loop.start();
  loop.stop();
  EXPECT_FALSE(loop.post([] {}));
  loop.stop();  // twice is fine
}

TEST(Loop, PostReturnsFalseWhenTheMailboxIsFull) {
  Loop loop(4);
  loop.start();
  std::promise<void> release;
  std::promise<void> blocked;
  ASSERT_TRUE(loop.post([&] {
    blocked.set_value();
    release.get_future().wait();  // hold the loop so the mailbox fills up
  }));
  blocked.get_future().wait();
  int ran = 0;
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(loop.post([&] { ++ran; }));
  EXPECT_FALSE(loop.post([&] { ++ran; }));
  release.set_value();
  loop.stop();
  EXPECT_EQ(ran, 4);
}

TEST(Loop, RefusesAnEmptyFunction) {
  Loop loop;
  EXPECT_FALSE(loop.post(std::function<void()>{}));
}

TEST(Loop, StopFromAnotherThreadWhileProducersPost) {
  constexpr int kProducers = 8;
  constexpr int kPerProducer = 50'000;
  Loop loop(kProducers * kPerProducer);  // never full: a refusal can only mean stopping
  loop.start();
  std::atomic<long> accepted{0};
  long executed = 0;  // loop thread only; read after stop() joined
  std::atomic<bool> go{false};
  std::atomic<bool> posted_after_refusal{false};

  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&] {
      while (!go) std::this_thread::yield();
      for (int i = 0; i < kPerProducer; ++i) {
        if (loop.post([&] { ++executed; })) {
          ++accepted;
          continue;
        }
        // Refused once: stopping. Every later post must be refused too.
        for (int k = 0; k < 100; ++k) {
          if (loop.post([] {})) posted_after_refusal = true;
        }
        return;
      }
    });
  }
  go = true;
  std::this_thread::sleep_for(5ms);
  std::thread stopper([&] { loop.stop(); });
  stopper.join();
  for (auto& t : producers) t.join();

  EXPECT_FALSE(posted_after_refusal);
  EXPECT_FALSE(loop.post([] {}));
  EXPECT_EQ(executed, accepted.load());  // every accepted closure ran, exactly once
  EXPECT_GT(accepted.load(), 0);
}

TEST(Loop, AFloodOfPostsDoesNotStarveTimers) {
  Loop loop;
  loop.start();
  std::atomic<bool> timer_fired{false};
  std::atomic<long> turns{0};

  // A task that re-posts itself until the timer has fired: without the bounded batch
  // per wake-up the loop would never get back to epoll and the timer would starve.
  std::function<void()> flood;
  flood = [&] {
    ++turns;
    if (!timer_fired) loop.post(flood);
  };
  event* timer = nullptr;
  ASSERT_TRUE(loop.post([&] {
    timer = evtimer_new(
        loop.base(), [](evutil_socket_t, short, void* arg) { static_cast<std::atomic<bool>*>(arg)->store(true); },
        &timer_fired);
    const timeval tv{0, 20'000};
    evtimer_add(timer, &tv);
    for (int i = 0; i < 1000; ++i) loop.post(flood);
  }));

  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!timer_fired && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(1ms);
  EXPECT_TRUE(timer_fired) << "the timer starved behind " << turns.load() << " tasks";
  loop.stop();
  event_free(timer);
}

TEST(Loop, AThrowingClosureDoesNotStopTheLoop) {
  Loop loop;
  loop.start();
  ASSERT_TRUE(loop.post([] { throw std::runtime_error("boom"); }));
  std::promise<void> after;
  ASSERT_TRUE(loop.post([&] { after.set_value(); }));
  EXPECT_EQ(after.get_future().wait_for(5s), std::future_status::ready);
  loop.stop();
}

TEST(Loop, StopCalledOnTheLoopThreadFinishesTheLoop) {
  Loop loop;
  loop.start();
  int ran = 0;
  ASSERT_TRUE(loop.post([&] { loop.stop(); }));
  // Refused when the stop above already ran; when accepted, it runs exactly once.
  const bool accepted = loop.post([&] { ++ran; });
  loop.stop();  // joins
  EXPECT_EQ(ran, accepted ? 1 : 0);
  EXPECT_FALSE(loop.post([] {}));
}

TEST(Loop, DestructorStopsAndJoins) {
  std::atomic<int> ran{0};
  {
    Loop loop;
    loop.start();
    for (int i = 0; i < 100; ++i) loop.post([&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 100);
}

TEST(Loop, PostBeforeStartIsRefused) {
  // A closure accepted by a loop that never runs would never run: waiting on it hangs.
  Loop loop;
  EXPECT_FALSE(loop.post([] {}));
  loop.start();
  std::promise<void> ran;
  ASSERT_TRUE(loop.post([&] { ran.set_value(); }));
  EXPECT_EQ(ran.get_future().wait_for(5s), std::future_status::ready);
}

TEST(Loop, StartAfterStopDoesNothing) {
  Loop loop;
  loop.stop();
  loop.start();
  EXPECT_FALSE(loop.post([] {}));
}

// ---- Loop::call ------------------------------------------------------------------

// Runs fn on the loop thread and returns its result; fails the test on a timeout.
template <typename Fn>
auto onLoop(Loop& loop, Fn fn) {
  auto result = loop.call(std::move(fn), 10s);
  if (!result) throw std::runtime_error("the loop did not run the task within 10 s");
  return std::move(*result);
}

// Holds the loop thread inside a closure until release() (or destruction).
class LoopBlocker {
 public:
  explicit LoopBlocker(Loop& loop) {
    auto entered = std::make_shared<std::promise<void>>();
    auto entered_future = entered->get_future();
    std::shared_future<void> release = release_.get_future().share();
    if (!loop.post([entered, release] {
          entered->set_value();
          release.wait();
        })) {
      throw std::runtime_error("loop refused the blocker");
    }
    entered_future.wait();
  }
  ~LoopBlocker() { release(); }
  void release() {
    if (!released_) release_.set_value();
    released_ = true;
  }

 private:
  std::promise<void> release_;
  bool released_ = false;
};

TEST(LoopCall, ReturnsTheResultComputedOnTheLoopThread) {
  Loop loop;
  loop.start();
  auto on_loop = loop.call([&] { return loop.isThisThread(); }, 10s);
  ASSERT_TRUE(on_loop.has_value());
  EXPECT_TRUE(*on_loop);
}

TEST(LoopCall, ATimedOutCallNeverRunsItsClosureAndHasDestroyedItOnReturn) {
  Loop loop;
  loop.start();
  LoopBlocker blocker(loop);  // the loop cannot reach the call before its deadline
  int ran = 0;                // on the caller's stack: by design safe to capture
  auto token = std::make_shared<int>(7);
  const auto result = loop.call(
      [&ran, token] {
        ++ran;
        return *token;
      },
      20ms);
  EXPECT_FALSE(result.has_value());
  // The closure and what it captured by value are gone already, on this thread.
  EXPECT_EQ(token.use_count(), 1);
  blocker.release();
  // The abandoned closure's turn comes before this one: it did nothing.
  EXPECT_TRUE(onLoop(loop, [] { return true; }));
  EXPECT_EQ(ran, 0);
}

TEST(LoopCall, ACallStillRunningAtItsDeadlineIsWaitedForAndReturnsItsResult) {
  Loop loop;
  loop.start();
  // The loop must start the closure before the deadline for this case to arise; on a
  // loaded machine it may not, and the call then gives up (nullopt, closure unrun):
  // try again with a longer deadline.
  for (auto deadline = 20ms; deadline <= 5s; deadline *= 2) {
    std::promise<void> running;
    std::promise<void> finish;
    std::promise<void> returned;
    auto running_future = running.get_future();
    auto returned_future = returned.get_future();
    std::shared_future<void> finish_future = finish.get_future().share();
    std::optional<int> result;
    std::string written;  // on the caller's frame
    auto token = std::make_shared<int>(42);
    std::thread caller([&] {
      result = loop.call(
          [&written, &running, finish_future, token] {
            running.set_value();
            finish_future.wait();
            written = "done";
            return *token;
          },
          deadline);
      returned.set_value();
    });
    bool started = false;
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < give_up) {
      if (running_future.wait_for(1ms) == std::future_status::ready) {
        started = true;
        break;
      }
      if (returned_future.wait_for(1ms) == std::future_status::ready) break;
    }
    if (!started) {
      finish.set_value();
      caller.join();
      EXPECT_FALSE(result.has_value());
      EXPECT_TRUE(written.empty());
      EXPECT_EQ(token.use_count(), 1);
      continue;
    }
    // Running: the caller must wait for it, however long past its deadline.
    EXPECT_EQ(returned_future.wait_for(deadline * 3), std::future_status::timeout);
    finish.set_value();
    caller.join();
    ASSERT_TRUE(result.has_value());
    EXPECT_EQ(*result, 42);
    EXPECT_EQ(written, "done");
    EXPECT_EQ(token.use_count(), 1);  // destroyed on the loop thread before call() returned
    return;
  }
  FAIL() << "the loop never started a closure within 5 s";
}

TEST(LoopCall, RethrowsTheClosuresException) {
  Loop loop;
  loop.start();
  EXPECT_THROW(loop.call([]() -> int { throw std::runtime_error("boom"); }, 10s), std::runtime_error);
  EXPECT_TRUE(onLoop(loop, [] { return true; }));  // the loop goes on
}

TEST(LoopCall, OnTheLoopThreadRunsInline) {
  Loop loop;
  loop.start();
  // A nested call waiting for a later turn of the loop would deadlock.
  EXPECT_EQ(onLoop(loop, [&] { return loop.call([] { return 5; }, 0ms).value_or(-1); }), 5);
}

TEST(LoopCall, ALoopThatRefusesThePostGivesNulloptAndDropsTheClosure) {
  auto token = std::make_shared<int>(1);
  Loop never_started;
  EXPECT_FALSE(never_started.call([token] { return *token; }, 10s).has_value());
  EXPECT_EQ(token.use_count(), 1);
  Loop stopped;
  stopped.start();
  stopped.stop();
  EXPECT_FALSE(stopped.call([token] { return *token; }, 10s).has_value());
  EXPECT_EQ(token.use_count(), 1);
}

TEST(LoopCall, NoClosureRunsAfterItsCallReturnedUnderRacingDeadlines) {
  // Deadlines around the loop's latency, so some calls win and some give up. A closure
  // whose call has returned must never run: it would write into a dead stack frame.
  constexpr int kCallers = 4;
  constexpr int kCallsEach = 2000;
  Loop loop;
  loop.start();
  std::atomic<int> ran_after_return{0};
  std::atomic<int> answered{0};
  std::atomic<int> gave_up{0};
  std::atomic<int> ran{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      for (int i = 0; i < kCallsEach; ++i) {
        auto returned = std::make_shared<std::atomic<bool>>(false);
        const auto result = loop.call(
            [&ran, &ran_after_return, returned] {
              if (returned->load()) ++ran_after_return;
              ++ran;
              return 1;
            },
            std::chrono::milliseconds((i + c) % 2));
        returned->store(true);
        ++(result ? answered : gave_up);
      }
    });
  }
  for (auto& t : callers) t.join();
  loop.stop();  // every closure still queued has had its turn
  EXPECT_EQ(ran_after_return.load(), 0);
  EXPECT_EQ(answered.load() + gave_up.load(), kCallers * kCallsEach);
  EXPECT_EQ(ran.load(), answered.load());  // exactly the answered ones ran
}

// ---- timers ----------------------------------------------------------------------

TEST(LoopTimer, AfterFiresOnceOnTheLoopThread) {
  Loop loop;
  loop.start();
  std::promise<bool> fired;
  std::atomic<int> count{0};
  Timer timer = onLoop(loop, [&] {
    return loop.after(10ms, [&] {
      if (++count == 1) fired.set_value(loop.isThisThread());
    });
  });
  auto future = fired.get_future();
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(future.get());
  // Once fired, a one-shot timer is gone: it can never fire again.
  EXPECT_FALSE(onLoop(loop, [&] { return timer.active(); }));
  EXPECT_EQ(count.load(), 1);
}

TEST(LoopTimer, AfterZeroRunsOnTheNextTurn) {
  Loop loop;
  loop.start();
  std::promise<void> fired;
  Timer timer = onLoop(loop, [&] { return loop.after(0ms, [&] { fired.set_value(); }); });
  EXPECT_EQ(fired.get_future().wait_for(10s), std::future_status::ready);
}

// soon() runs in the turn that armed it, after the callbacks already due: before a
// timer of after(0), which waits for the next turn, even when armed after it.
TEST(LoopTimer, SoonRunsInThisTurnBeforeAnAfterZeroArmedFirst) {
  Loop loop;
  loop.start();
  std::vector<std::string> order;  // loop thread only
  std::promise<void> both;
  Timer later;
  Timer now;
  onLoop(loop, [&] {
    later = loop.after(0ms, [&] {
      order.push_back("after(0)");
      both.set_value();
    });
    now = loop.soon([&] { order.push_back("soon"); });
    order.push_back("armed");
    return true;
  });
  ASSERT_EQ(both.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_EQ(onLoop(loop, [&] { return order; }), (std::vector<std::string>{"armed", "soon", "after(0)"}));
  EXPECT_FALSE(onLoop(loop, [&] { return now.active(); }));
}

// Reads `read()` on the loop thread once `span` has passed, from a timer of its own:
// the loop has had its turns meanwhile, so a timer that should have stopped had every
// chance to fire again.
template <typename Fn>
auto readLater(Loop& loop, std::chrono::milliseconds span, Fn read) {
  using Result = decltype(read());
  auto promise = std::make_shared<std::promise<Result>>();
  auto future = promise->get_future();
  Timer probe = onLoop(loop, [&] { return loop.after(span, [promise, read] { promise->set_value(read()); }); });
  if (future.wait_for(10s) != std::future_status::ready) throw std::runtime_error("the probe timer never fired");
  return future.get();
}

TEST(LoopTimer, EveryRepeatsUntilCancelled) {
  Loop loop;
  loop.start();
  int count = 0;  // loop thread only
  std::promise<void> third;
  Timer timer = onLoop(loop, [&] {
    return loop.every(2ms, [&] {
      if (++count == 3) third.set_value();
    });
  });
  ASSERT_EQ(third.get_future().wait_for(10s), std::future_status::ready);
  const int at_cancel = onLoop(loop, [&] {
    EXPECT_TRUE(timer.active());
    timer.cancel();
    EXPECT_FALSE(timer.active());
    return count;
  });
  EXPECT_GE(at_cancel, 3);
  EXPECT_EQ(readLater(loop, 50ms, [&] { return count; }), at_cancel);
}

TEST(LoopTimer, ASoonCancelledBeforeItsTurnNeverRuns) {
  Loop loop;
  loop.start();
  std::atomic<int> count{0};
  onLoop(loop, [&] {
    Timer t = loop.soon([&] { ++count; });
    t.cancel();
    static_cast<void>(loop.soon([&] { ++count; }));  // discarded handle: cancelled at once
    return true;
  });
  EXPECT_EQ(readLater(loop, 50ms, [&] { return count.load(); }), 0);
}

TEST(LoopTimer, DestroyingOrDiscardingTheHandleCancels) {
  Loop loop;
  loop.start();
  std::atomic<int> fired{0};
  onLoop(loop, [&] {
    { Timer scoped = loop.every(1ms, [&] { ++fired; }); }
    (void)loop.after(1ms, [&] { ++fired; });
    Timer replaced = loop.after(1ms, [&] { ++fired; });
    replaced = Timer();  // assigning over a handle cancels the timer it held
    return true;
  });
  EXPECT_EQ(readLater(loop, 30ms, [&] { return fired.load(); }), 0);
}

TEST(LoopTimer, CancelInsideItsOwnCallbackIsSafe) {
  Loop loop;
  loop.start();
  int count = 0;  // loop thread only
  auto token = std::make_shared<int>(0);
  Timer timer;
  onLoop(loop, [&] {
    timer = loop.every(1ms, [&, token] {
      ++count;
      timer.cancel();  // the callback running now must survive its own cancellation
      ++*token;        // still usable after the cancel: freed only on return
    });
    return true;
  });
  EXPECT_EQ(readLater(loop, 30ms, [&] { return count; }), 1);
  EXPECT_EQ(onLoop(loop, [&] { return *token; }), 1);
  EXPECT_EQ(token.use_count(), 1);  // the callback is gone
}

TEST(LoopTimer, AOneShotMayRearmItselfThroughItsOwnHandle) {
  Loop loop;
  loop.start();
  int count = 0;  // loop thread only
  std::promise<void> fifth;
  Timer timer;
  std::function<void()> tick = [&] {
    if (++count == 5) {
      fifth.set_value();
      return;
    }
    timer = loop.after(1ms, tick);  // replaces the handle of the timer running now
  };
  onLoop(loop, [&] {
    timer = loop.after(1ms, tick);
    return true;
  });
  ASSERT_EQ(fifth.get_future().wait_for(10s), std::future_status::ready);
  EXPECT_EQ(readLater(loop, 20ms, [&] { return count; }), 5);
}

TEST(LoopTimer, CancelFromAnotherThreadStopsItAndFreesItOnTheLoop) {
  Loop loop;
  loop.start();
  std::atomic<int> count{0};
  std::promise<void> third;
  auto token = std::make_shared<int>(0);
  Timer timer = onLoop(loop, [&] {
    return loop.every(1ms, [&, token] {
      if (++count == 3) third.set_value();
    });
  });
  ASSERT_EQ(third.get_future().wait_for(10s), std::future_status::ready);
  timer.cancel();  // on this thread: posted to the loop
  EXPECT_FALSE(timer.active());
  // A callback running during cancel() may finish; none starts after it returned.
  const int after_cancel = onLoop(loop, [&] { return count.load(); });
  EXPECT_EQ(token.use_count(), 1);  // the posted cancel ran before the call: freed there
  EXPECT_EQ(readLater(loop, 30ms, [&] { return count.load(); }), after_cancel);
}

TEST(LoopTimer, ACancelWhosePostIsRefusedStillStopsAndFreesTheTimer) {
  Loop loop(1);  // one slot: easy to fill
  loop.start();
  std::atomic<int> count{0};
  auto token = std::make_shared<int>(0);
  Timer timer = onLoop(loop, [&] { return loop.every(1ms, [&, token] { ++count; }); });
  // Hold the loop inside a closure and fill the mailbox behind it, so that the post
  // cancel() makes from this thread is refused.
  LoopBlocker blocker(loop);
  ASSERT_TRUE(loop.post([] {}));
  ASSERT_FALSE(loop.post([] {}));  // full
  timer.cancel();
  EXPECT_FALSE(timer.active());
  blocker.release();
  // The timer's next firing frees it, instead of it firing (and keeping its closure)
  // until the loop dies.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (token.use_count() > 1 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  EXPECT_EQ(token.use_count(), 1);
  const int after_cancel = onLoop(loop, [&] { return count.load(); });
  EXPECT_EQ(readLater(loop, 30ms, [&] { return count.load(); }), after_cancel);
}

TEST(LoopTimer, AThrowingCallbackKeepsItsTimerGoing) {
  Loop loop;
  loop.start();
  int count = 0;  // loop thread only
  std::promise<void> third;
  Timer timer = onLoop(loop, [&] {
    return loop.every(1ms, [&] {
      if (++count == 3) third.set_value();
      throw std::runtime_error("timer boom");
    });
  });
  EXPECT_EQ(third.get_future().wait_for(10s), std::future_status::ready);
  onLoop(loop, [&] {
    timer.cancel();
    return true;
  });
}

TEST(LoopTimer, TimersDieWithTheLoop) {
  auto token = std::make_shared<int>(0);
  Timer repeating;
  Timer one_shot;
  {
    Loop loop;
    loop.start();
    onLoop(loop, [&] {
      repeating = loop.every(1h, [token] {});
      one_shot = loop.after(1h, [token] {});
      return true;
    });
    EXPECT_TRUE(repeating.active());
    EXPECT_EQ(token.use_count(), 3);
  }
  // The loop freed both timers and their callbacks; the handles outlive it, inert.
  EXPECT_EQ(token.use_count(), 1);
  EXPECT_FALSE(repeating.active());
  EXPECT_FALSE(one_shot.active());
  repeating.cancel();
}

TEST(LoopTimer, RefusesWhatCannotWork) {
  Loop loop;
  loop.start();
  const std::vector<std::string> errors = onLoop(loop, [&] {
    std::vector<std::string> out;
    const auto attempt = [&](auto arm) {
      try {
        Timer t = arm();
        out.push_back("accepted");
      } catch (const std::invalid_argument& e) {
        out.push_back(e.what());
      }
    };
    attempt([&] { return loop.every(0ms, [] {}); });
    attempt([&] { return loop.after(-1ms, [] {}); });
    attempt([&] { return loop.after(1ms, std::function<void()>{}); });
    return out;
  });
  ASSERT_EQ(errors.size(), 3u);
  EXPECT_EQ(errors[0], "Loop::every: the interval must be more than 0");
  EXPECT_EQ(errors[1], "Loop::after: negative delay");
  EXPECT_EQ(errors[2], "Loop timer: empty callback");
}

}  // namespace
}  // namespace zetian::cluster
