// Concrete behaviour of the algorithms, one property per test, in numbers an operator
// can check by hand.
#include <gtest/gtest.h>

#include <limits>

#include "state/limit.h"

namespace zetian::state {
namespace {

constexpr Nanos kSecond = kNanosPerSecond;
constexpr Nanos kMs = 1'000'000;
constexpr Nanos kNanosMax = std::numeric_limits<Nanos>::max();
constexpr Nanos kNanosMin = std::numeric_limits<Nanos>::min();
constexpr std::uint64_t kHuge = std::numeric_limits<std::uint64_t>::max();

constexpr Algorithm kAll[] = {Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow,
                              Algorithm::FixedWindow};
constexpr Algorithm kBuckets[] = {Algorithm::TokenBucket, Algorithm::Gcra};

// How many unit charges succeed in a row at `now`.
int drain(Algorithm algo, const Limit& limit, BucketState& s, Nanos now, int at_most = 1'000'000) {
  int n = 0;
  while (n < at_most && charge(algo, limit, s, now, 1).allowed) ++n;
  return n;
}

TEST(LimitNames, RoundTripThroughParse) {
  for (Algorithm a : kAll) EXPECT_EQ(parseAlgorithm(algorithmName(a)), a);
  EXPECT_EQ(algorithmName(Algorithm::TokenBucket), "token_bucket");
  EXPECT_EQ(algorithmName(Algorithm::Gcra), "gcra");
  EXPECT_EQ(algorithmName(Algorithm::SlidingWindow), "sliding_window");
  EXPECT_EQ(algorithmName(Algorithm::FixedWindow), "fixed_window");
  EXPECT_FALSE(parseAlgorithm("token-bucket"));
  EXPECT_FALSE(parseAlgorithm(""));
}

TEST(LimitBuckets, AdmitExactlyBurstAtOnceThenDeny) {
  const Limit limit{10, kSecond, 25};
  for (Algorithm a : kBuckets) {
    BucketState s;
    EXPECT_EQ(drain(a, limit, s, 5 * kSecond), 25) << algorithmName(a);
    EXPECT_FALSE(charge(a, limit, s, 5 * kSecond, 1).allowed);
  }
}

TEST(LimitBuckets, RefillOneTokenAfterPeriodOverLimit) {
  const Limit limit{10, kSecond, 5};  // one token per 100 ms
  for (Algorithm a : kBuckets) {
    BucketState s;
    ASSERT_EQ(drain(a, limit, s, 0), 5);
    EXPECT_FALSE(charge(a, limit, s, 100 * kMs - 1, 1).allowed) << algorithmName(a);
    EXPECT_TRUE(charge(a, limit, s, 100 * kMs, 1).allowed) << algorithmName(a);
    EXPECT_FALSE(charge(a, limit, s, 100 * kMs, 1).allowed) << algorithmName(a);
    EXPECT_EQ(drain(a, limit, s, 350 * kMs), 2) << algorithmName(a);  // 250 ms more: 2.5 tokens
    EXPECT_EQ(drain(a, limit, s, 400 * kMs), 1) << algorithmName(a);  // the half token completed
  }
}

TEST(LimitBuckets, RefillWhenPeriodIsNotAMultipleOfLimit) {
  const Limit limit{3, kSecond, 1};  // one token per 333,333,333.3 ns
  for (Algorithm a : kBuckets) {
    BucketState s;
    ASSERT_TRUE(charge(a, limit, s, 0, 1).allowed);
    Outcome denied = charge(a, limit, s, 0, 1);
    EXPECT_EQ(denied.retry_after_ns, 333'333'334) << algorithmName(a);
    EXPECT_FALSE(charge(a, limit, s, 333'333'333, 1).allowed) << algorithmName(a);
    EXPECT_TRUE(charge(a, limit, s, 333'333'334, 1).allowed) << algorithmName(a);
    // One token at the first nanosecond each is earned, for 1000 s: no rounding drift.
    // (Burst 2: with burst 1 the bucket would cap at 1 and lose the fraction earned
    // beyond the token every third step.)
    const Limit two{3, kSecond, 2};
    BucketState t;
    int admitted = 0;
    for (Nanos k = 0; k <= 3000; ++k) {
      const Nanos now = (k * kSecond + 2) / 3;  // the first nanosecond with k tokens earned
      admitted += charge(a, two, t, now, 1).allowed;
    }
    EXPECT_EQ(admitted, 3001) << algorithmName(a);  // the initial token, then 3 per second
  }
}

TEST(LimitBuckets, ReportRemainingAndRetryAfter) {
  const Limit limit{2, kSecond, 4};  // one token per 500 ms
  for (Algorithm a : kBuckets) {
    BucketState s;
    Outcome o = charge(a, limit, s, 0, 3);
    EXPECT_TRUE(o.allowed);
    EXPECT_EQ(o.remaining, 1);
    o = charge(a, limit, s, 0, 3);
    EXPECT_FALSE(o.allowed);
    EXPECT_EQ(o.remaining, 1);
    EXPECT_EQ(o.retry_after_ns, kSecond) << algorithmName(a);  // two more tokens
    o = charge(a, limit, s, 250 * kMs, 3);
    EXPECT_EQ(o.retry_after_ns, 750 * kMs) << algorithmName(a);
    EXPECT_EQ(o.remaining, 1) << algorithmName(a);  // 1.5 tokens, rounded down
  }
}

TEST(LimitBuckets, AFreshBucketIsFull) {
  const Limit limit{5, kSecond, 7};
  for (Algorithm a : kBuckets) {
    EXPECT_EQ(peek(a, limit, BucketState{}, 123, 0).remaining, 7) << algorithmName(a);
    EXPECT_EQ(peek(a, limit, BucketState{}, -123, 0).remaining, 7) << algorithmName(a);
    EXPECT_EQ(idleAt(a, limit, BucketState{}), kNanosMin);
  }
}

TEST(LimitBuckets, ZeroBurstAdmitsNothing) {
  const Limit limit{5, kSecond, 0};
  for (Algorithm a : kBuckets) {
    BucketState s;
    Outcome o = charge(a, limit, s, 0, 1);
    EXPECT_FALSE(o.allowed);
    EXPECT_EQ(o.retry_after_ns, kSecond);
  }
}

TEST(LimitFixedWindow, CountsPerWindowAlignedToMultiplesOfThePeriod) {
  const Limit limit{3, 10 * kSecond, 0};
  BucketState s;
  EXPECT_EQ(drain(Algorithm::FixedWindow, limit, s, 18 * kSecond), 3);
  Outcome o = charge(Algorithm::FixedWindow, limit, s, 19 * kSecond, 1);
  EXPECT_FALSE(o.allowed);
  EXPECT_EQ(o.retry_after_ns, 1 * kSecond);  // the window [10 s, 20 s) ends
  EXPECT_EQ(drain(Algorithm::FixedWindow, limit, s, 20 * kSecond), 3);
  EXPECT_EQ(idleAt(Algorithm::FixedWindow, limit, s), 30 * kSecond);
}

TEST(LimitFixedWindow, NegativeTimesAlignDownward) {
  const Limit limit{1, 10, 0};
  BucketState s;
  EXPECT_TRUE(charge(Algorithm::FixedWindow, limit, s, -1, 1).allowed);  // window [-10, 0)
  Outcome o = charge(Algorithm::FixedWindow, limit, s, -1, 1);
  EXPECT_EQ(o.retry_after_ns, 1);
  EXPECT_TRUE(charge(Algorithm::FixedWindow, limit, s, 0, 1).allowed);
}

TEST(LimitSlidingWindow, WeighsThePreviousWindowByItsOverlap) {
  const Limit limit{10, kSecond, 0};
  BucketState s;
  ASSERT_EQ(drain(Algorithm::SlidingWindow, limit, s, 500 * kMs), 10);
  // At 1.5 s the sliding window [0.5 s, 1.5 s) covers half of [0, 1 s): 10 * 0.5 = 5.
  Outcome o = peek(Algorithm::SlidingWindow, limit, s, 1500 * kMs, 0);
  EXPECT_EQ(o.remaining, 5);
  EXPECT_EQ(drain(Algorithm::SlidingWindow, limit, s, 1500 * kMs), 5);
  // Now 10 * (1 - e) + 5 where e is the elapsed share of [1 s, 2 s): one more fits at
  // e = 0.6, i.e. at 1.6 s.
  o = charge(Algorithm::SlidingWindow, limit, s, 1500 * kMs, 1);
  EXPECT_FALSE(o.allowed);
  EXPECT_EQ(o.retry_after_ns, 100 * kMs);
  // At 2 s the previous window holds 5, fully weighted: 5 fit.
  EXPECT_EQ(drain(Algorithm::SlidingWindow, limit, s, 2 * kSecond), 5);
  EXPECT_EQ(idleAt(Algorithm::SlidingWindow, limit, s), 4 * kSecond);
}

TEST(LimitSlidingWindow, RetryAfterCanReachIntoTheNextWindow) {
  const Limit limit{4, kSecond, 0};
  BucketState s;
  ASSERT_EQ(drain(Algorithm::SlidingWindow, limit, s, 0), 4);
  // cost 4 needs the whole of [0, 1 s) to slide out: at 2 s.
  Outcome o = charge(Algorithm::SlidingWindow, limit, s, 0, 4);
  EXPECT_EQ(o.retry_after_ns, 2 * kSecond);
  // cost 2 needs 4 * (1 - e) + 0 <= 2 in the next window: e = 0.5, at 1.5 s.
  o = charge(Algorithm::SlidingWindow, limit, s, 0, 2);
  EXPECT_EQ(o.retry_after_ns, 1500 * kMs);
}

TEST(LimitAllAlgorithms, CostLargerThanCapacityIsDeniedWithRetryAfterPeriod) {
  const Limit limit{10, 60 * kSecond, 20};
  for (Algorithm a : kAll) {
    BucketState s;
    const std::uint64_t capacity = (a == Algorithm::TokenBucket || a == Algorithm::Gcra) ? 20 : 10;
    for (std::uint64_t cost : {capacity + 1, std::uint64_t{1} << 60, kHuge}) {
      Outcome o = charge(a, limit, s, kSecond, cost);
      EXPECT_FALSE(o.allowed) << algorithmName(a);
      EXPECT_EQ(o.retry_after_ns, 60 * kSecond) << algorithmName(a);
      EXPECT_EQ(o.remaining, double(capacity)) << algorithmName(a);
    }
    EXPECT_TRUE(charge(a, limit, s, kSecond, capacity).allowed) << algorithmName(a);
  }
}

TEST(LimitAllAlgorithms, LimitZeroAlwaysDenies) {
  const Limit limit{0, kSecond, 100};
  for (Algorithm a : kAll) {
    BucketState s;
    for (std::uint64_t cost : {0, 1, 100}) {
      Outcome o = charge(a, limit, s, 0, cost);
      EXPECT_FALSE(o.allowed) << algorithmName(a);
      EXPECT_EQ(o.retry_after_ns, kSecond) << algorithmName(a);
    }
    EXPECT_FALSE(s.initialised);
  }
}

TEST(LimitAllAlgorithms, NonPositivePeriodDeniesWithoutDividingByZero) {
  for (Nanos period : {Nanos{0}, Nanos{-5}, kNanosMin}) {
    const Limit limit{10, period, 10};
    for (Algorithm a : kAll) {
      BucketState s;
      Outcome o = charge(a, limit, s, 0, 1);
      EXPECT_FALSE(o.allowed);
      EXPECT_EQ(o.retry_after_ns, 0);
      refund(a, limit, s, 0, 1);
      EXPECT_EQ(idleAt(a, limit, s), kNanosMin);
    }
  }
}

TEST(LimitAllAlgorithms, ZeroCostIsAlwaysAllowedOnAValidLimit) {
  const Limit limit{1, kSecond, 1};
  for (Algorithm a : kAll) {
    BucketState s;
    ASSERT_TRUE(charge(a, limit, s, 0, 1).allowed);
    Outcome o = charge(a, limit, s, 0, 0);
    EXPECT_TRUE(o.allowed) << algorithmName(a);
    EXPECT_EQ(o.remaining, 0) << algorithmName(a);
  }
}

TEST(LimitAllAlgorithms, TimeGoingBackwardsCreatesNoTokens) {
  const Limit limit{10, kSecond, 10};
  for (Algorithm a : kAll) {
    for (Nanos back : {Nanos{1}, kSecond / 2, 3 * kSecond, 1'000'000 * kSecond}) {
      BucketState s;
      const Nanos t = 7 * kSecond + 300 * kMs;
      ASSERT_EQ(drain(a, limit, s, t), 10) << algorithmName(a);
      EXPECT_FALSE(charge(a, limit, s, t - back, 1).allowed) << algorithmName(a) << " back " << back;
      EXPECT_EQ(peek(a, limit, s, t - back, 0).remaining, 0) << algorithmName(a);
      // Once the clock is past the old time again, the bucket is no fuller than it
      // would have been without the detour.
      BucketState straight;
      drain(a, limit, straight, t);
      for (Nanos later : {t, t + 100 * kMs, t + 2 * kSecond})
        EXPECT_LE(peek(a, limit, s, later, 0).remaining, peek(a, limit, straight, later, 0).remaining)
            << algorithmName(a);
    }
  }
}

TEST(LimitAllAlgorithms, ExtremeInputsNeitherOverflowNorCrash) {
  const Limit limits[] = {{kHuge, kNanosMax, kHuge}, {1, kNanosMax, 1}, {kHuge, 1, kHuge}, {1, 1, 1},
                          {kHuge, kNanosMax, 1}};
  const Nanos times[] = {kNanosMin, kNanosMin + 1, -1, 0, 1, kNanosMax - 1, kNanosMax, 0, kNanosMin};
  for (Algorithm a : kAll) {
    for (const Limit& limit : limits) {
      BucketState s;
      for (Nanos now : times) {
        for (std::uint64_t cost : {std::uint64_t{0}, std::uint64_t{1}, kMaxCount, kHuge}) {
          Outcome o = charge(a, limit, s, now, cost);
          EXPECT_GE(o.remaining, 0);
          EXPECT_GE(o.retry_after_ns, 0);
          refund(a, limit, s, now, cost);
          idleAt(a, limit, s);
        }
      }
    }
  }
}

TEST(LimitAllAlgorithms, RefundGivesBackWhatWasCharged) {
  const Limit limit{10, kSecond, 10};
  for (Algorithm a : kAll) {
    BucketState s;
    ASSERT_TRUE(charge(a, limit, s, 0, 7).allowed);
    EXPECT_FALSE(charge(a, limit, s, 0, 4).allowed);
    refund(a, limit, s, 0, 3);
    EXPECT_TRUE(charge(a, limit, s, 0, 6).allowed) << algorithmName(a);
    EXPECT_FALSE(charge(a, limit, s, 0, 1).allowed) << algorithmName(a);
  }
}

TEST(LimitAllAlgorithms, RefundNeverMakesABucketFullerThanFresh) {
  const Limit limit{10, kSecond, 10};
  for (Algorithm a : kAll) {
    BucketState s;
    ASSERT_TRUE(charge(a, limit, s, 0, 2).allowed);
    refund(a, limit, s, 0, 50);
    EXPECT_EQ(peek(a, limit, s, 0, 0).remaining, 10) << algorithmName(a);
    EXPECT_EQ(drain(a, limit, s, 0), 10) << algorithmName(a);
    // A refund on a fresh state changes nothing.
    BucketState fresh;
    refund(a, limit, fresh, 0, 5);
    EXPECT_EQ(peek(a, limit, fresh, 0, 0).remaining, 10) << algorithmName(a);
    // Refunding after a partial refill caps at full too.
    BucketState partly;
    ASSERT_EQ(drain(a, limit, partly, 0), 10);
    refund(a, limit, partly, 950 * kMs, 10);
    EXPECT_EQ(peek(a, limit, partly, 950 * kMs, 0).remaining, 10) << algorithmName(a);
    EXPECT_EQ(peek(a, limit, partly, 2 * kSecond, 0).remaining, 10) << algorithmName(a);
  }
}

TEST(LimitAllAlgorithms, PeekAnswersLikeChargeWithoutCharging) {
  const Limit limit{3, kSecond, 3};
  for (Algorithm a : kAll) {
    BucketState s;
    for (int i = 0; i < 5; ++i) {
      const BucketState before = s;
      const Outcome peeked = peek(a, limit, s, Nanos{i} * 100 * kMs, 1);
      EXPECT_EQ(s.count, before.count);
      EXPECT_EQ(s.stamp, before.stamp);
      const Outcome charged = charge(a, limit, s, Nanos{i} * 100 * kMs, 1);
      EXPECT_EQ(peeked.allowed, charged.allowed);
      EXPECT_EQ(peeked.remaining, charged.remaining);
      EXPECT_EQ(peeked.retry_after_ns, charged.retry_after_ns);
    }
  }
}

TEST(LimitAllAlgorithms, IdleAtIsWhenTheBucketHasRefilled) {
  const Limit limit{10, kSecond, 10};
  BucketState tb, gcra;
  charge(Algorithm::TokenBucket, limit, tb, 0, 3);
  charge(Algorithm::Gcra, limit, gcra, 0, 3);
  EXPECT_EQ(idleAt(Algorithm::TokenBucket, limit, tb), 300 * kMs);
  EXPECT_EQ(idleAt(Algorithm::Gcra, limit, gcra), 300 * kMs);
}

TEST(LimitAllAlgorithms, AStateWrittenUnderALargerLimitStaysUsableAfterItShrinks) {
  const Limit big{1000, kSecond, 1000};
  const Limit small{2, kSecond, 2};
  for (Algorithm a : kAll) {
    BucketState s;
    ASSERT_EQ(drain(a, big, s, 0, 700), 700);
    Outcome o = charge(a, small, s, 0, 1);
    EXPECT_FALSE(o.allowed) << algorithmName(a);
    EXPECT_GT(o.retry_after_ns, 0);
    EXPECT_LE(o.retry_after_ns, 2 * kSecond) << algorithmName(a);
    EXPECT_TRUE(charge(a, small, s, 10 * kSecond, 1).allowed) << algorithmName(a);
  }
}

}  // namespace
}  // namespace zetian::state
