#include "cluster/loop.h"

#include <event2/event.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
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
  ASSERT_TRUE(loop.post([&] { ++ran; }));  // may be accepted before the stop above runs
  loop.stop();                              // joins
  EXPECT_LE(ran, 1);
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

}  // namespace
}  // namespace zetian::cluster
