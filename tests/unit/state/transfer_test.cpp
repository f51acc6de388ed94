// Bucket state carried between nodes whose clocks differ (state/transfer.h): the
// translated state never admits more than the sender's at the corresponding moment,
// token_bucket and gcra translate exactly, the windows keep their counts less than one
// period longer, nothing overflows at the ends of the clock, and merging keeps the
// more consumed view.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "state/limit.h"
#include "state/transfer.h"

namespace zetian::state {
namespace {

constexpr Nanos kMs = 1'000'000;
constexpr Nanos kSecond = kNanosPerSecond;
constexpr Nanos kMinute = 60 * kSecond;
constexpr Nanos kDay = 24 * 60 * kMinute;
constexpr Nanos kNanosMax = std::numeric_limits<Nanos>::max();
constexpr Nanos kNanosMin = std::numeric_limits<Nanos>::min();

constexpr Algorithm kAll[] = {Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow,
                              Algorithm::FixedWindow};

bool isContinuous(Algorithm a) { return a == Algorithm::TokenBucket || a == Algorithm::Gcra; }

// Receiver clock minus sender clock: -days, -minutes, 0, +minutes, +days, each also with
// a part that is not a multiple of any period used here (so the windows' grids differ).
const std::vector<Nanos> kOffsets = {
    -3 * kDay, -3 * kDay - 317 * kMs - 11, -7 * kMinute, -7 * kMinute - 1, 0, 1, 333 * kMs + 7,
    7 * kMinute, 7 * kMinute + 450 * kMs, 3 * kDay, 3 * kDay + kSecond - 1,
};

// The sender's state after a random history of charges and refunds ending at `sender_now`.
BucketState randomHistory(std::mt19937_64& rng, Algorithm algo, const Limit& limit, Nanos sender_now) {
  BucketState s;
  const Nanos span = 3 * limit.period_ns;
  const int steps = static_cast<int>(rng() % 40);
  std::vector<Nanos> times;
  for (int i = 0; i < steps; ++i) times.push_back(sender_now - static_cast<Nanos>(rng() % static_cast<std::uint64_t>(span + 1)));
  std::sort(times.begin(), times.end());
  for (const Nanos t : times) {
    const std::uint64_t cost = rng() % 4;
    if (rng() % 8 == 0)
      refund(algo, limit, s, t, cost);
    else
      charge(algo, limit, s, t, cost);
  }
  return s;
}

// Receiver moments to check after a transfer at receiver_now: random ones over four
// periods, and both clocks' window boundaries and the states' idle times, each +-1 ns.
std::vector<Nanos> momentsToCheck(std::mt19937_64& rng, const Limit& limit, Nanos receiver_now, Nanos offset,
                                  Nanos sender_idle, Nanos receiver_idle, int random_count = 60) {
  const Nanos period = limit.period_ns;
  const Nanos end = receiver_now + 4 * period;
  std::vector<Nanos> moments{receiver_now};
  for (int i = 0; i < random_count; ++i)
    moments.push_back(receiver_now + static_cast<Nanos>(rng() % static_cast<std::uint64_t>(4 * period)));
  auto around = [&](Nanos t) {
    for (Nanos dt : {Nanos{-1}, Nanos{0}, Nanos{1}})
      if (t + dt >= receiver_now && t + dt <= end) moments.push_back(t + dt);
  };
  // Multiples of the period on the receiver's grid, and on the sender's (shifted by offset).
  const Nanos first = receiver_now - ((receiver_now % period) + period) % period;
  for (Nanos k = first; k <= end; k += period) around(k);
  const Nanos sender_grid = first + (((offset % period) + period) % period);
  for (Nanos k = sender_grid - period; k <= end; k += period) around(k);
  if (sender_idle > kNanosMin) around(sender_idle + offset);
  if (receiver_idle > kNanosMin) around(receiver_idle);
  return moments;
}

struct Case {
  Algorithm algo;
  Limit limit;
  Nanos sender_now;
  Nanos offset;
};

// The core property: the carried-over state admits, at every receiver moment checked,
// nothing the sender's state would not admit at the corresponding sender moment, and
// exactly the same for token_bucket and gcra.
void checkTransfer(std::mt19937_64& rng, const Case& c, const BucketState& sender) {
  SCOPED_TRACE(testing::Message() << algorithmName(c.algo) << " limit=" << c.limit.limit << "/"
                                  << c.limit.period_ns << "ns burst=" << c.limit.burst
                                  << " sender_now=" << c.sender_now << " offset=" << c.offset << " state={"
                                  << sender.level << "," << sender.count << "," << sender.stamp << ","
                                  << sender.initialised << "}");
  const Nanos receiver_now = c.sender_now + c.offset;
  const PortableBucket wire = toPortable(c.algo, sender, c.sender_now);
  EXPECT_EQ(wire.algorithm, c.algo);
  const BucketState receiver = fromPortable(wire, c.limit, receiver_now);
  const std::uint64_t capacity = isContinuous(c.algo) ? c.limit.burst : c.limit.limit;
  for (const Nanos r : momentsToCheck(rng, c.limit, receiver_now, c.offset, idleAt(c.algo, c.limit, sender),
                                      idleAt(c.algo, c.limit, receiver))) {
    const Nanos s = r - c.offset;
    // What could be charged right now (a charge of 0 reports it without consuming).
    ASSERT_LE(peek(c.algo, c.limit, receiver, r, 0).remaining, peek(c.algo, c.limit, sender, s, 0).remaining)
        << "r=" << r;
    for (std::uint64_t cost = 1; cost <= capacity + 1; ++cost) {
      const Outcome there = peek(c.algo, c.limit, sender, s, cost);
      const Outcome here = peek(c.algo, c.limit, receiver, r, cost);
      if (isContinuous(c.algo)) {
        ASSERT_EQ(here.allowed, there.allowed) << "r=" << r << " cost=" << cost;
        ASSERT_EQ(here.remaining, there.remaining) << "r=" << r << " cost=" << cost;
        ASSERT_EQ(here.retry_after_ns, there.retry_after_ns) << "r=" << r << " cost=" << cost;
      } else {
        ASSERT_TRUE(!here.allowed || there.allowed) << "admits more at r=" << r << " cost=" << cost;
      }
    }
  }
  if (!isContinuous(c.algo) && sender.initialised) {
    // Held longer, but by less than one period.
    const Nanos sender_idle = idleAt(c.algo, c.limit, sender) + c.offset;
    const Nanos receiver_idle = idleAt(c.algo, c.limit, receiver);
    EXPECT_GE(receiver_idle, sender_idle);
    EXPECT_LT(receiver_idle, sender_idle + c.limit.period_ns);
    EXPECT_EQ(peek(c.algo, c.limit, receiver, sender_idle + c.limit.period_ns, 1).remaining,
              static_cast<double>(c.limit.limit - 1));
  }
}

TEST(Transfer, EveryAlgorithmAtEveryClockOffsetAdmitsNoMoreThanTheSender) {
  std::mt19937_64 rng(20261130);
  const Limit limits[] = {{10, kSecond, 20}, {3, kSecond, 5}, {7, 7919 * kMs + 13, 7}, {1, kMinute, 1}};
  for (Algorithm algo : kAll) {
    for (const Limit& limit : limits) {
      for (Nanos offset : kOffsets) {
        for (int round = 0; round < 4; ++round) {
          const Nanos sender_now = 5 * kDay + static_cast<Nanos>(rng() % (3 * kSecond));
          const BucketState sender = randomHistory(rng, algo, limit, sender_now);
          checkTransfer(rng, {algo, limit, sender_now, offset}, sender);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// After a transfer, the continuous algorithms keep deciding identically under the
// same later charges and refunds (the states stay translations of each other).
TEST(Transfer, BucketsKeepDecidingIdenticallyUnderTheSameLaterCharges) {
  std::mt19937_64 rng(7);
  const Limit limit{10, kSecond, 15};
  for (Algorithm algo : {Algorithm::TokenBucket, Algorithm::Gcra}) {
    for (Nanos offset : kOffsets) {
      const Nanos sender_now = 2 * kDay + 123'456'789;
      BucketState sender = randomHistory(rng, algo, limit, sender_now);
      BucketState receiver = fromPortable(toPortable(algo, sender, sender_now), limit, sender_now + offset);
      Nanos s = sender_now;
      for (int i = 0; i < 300; ++i) {
        s += static_cast<Nanos>(rng() % (kSecond / 4));
        const std::uint64_t cost = rng() % 5;
        if (rng() % 6 == 0) {
          refund(algo, limit, sender, s, cost);
          refund(algo, limit, receiver, s + offset, cost);
          continue;
        }
        const Outcome there = charge(algo, limit, sender, s, cost);
        const Outcome here = charge(algo, limit, receiver, s + offset, cost);
        ASSERT_EQ(here.allowed, there.allowed) << algorithmName(algo) << " offset=" << offset << " step " << i;
        ASSERT_EQ(here.remaining, there.remaining) << algorithmName(algo) << " step " << i;
        ASSERT_EQ(here.retry_after_ns, there.retry_after_ns) << algorithmName(algo) << " step " << i;
      }
    }
  }
}

TEST(Transfer, AFreshBucketTravelsAsAFreshOne) {
  for (Algorithm algo : kAll) {
    const PortableBucket wire = toPortable(algo, BucketState{}, 12345);
    EXPECT_EQ(wire.algorithm, algo);
    EXPECT_FALSE(wire.initialised);
    EXPECT_EQ(wire.stamp_age_ns, 0);
    const BucketState back = fromPortable(wire, {10, kSecond, 10}, -kDay);
    EXPECT_FALSE(back.initialised);
    EXPECT_EQ(back.count, 0u);
    EXPECT_EQ(back.stamp, 0);
  }
}

TEST(Transfer, AgesAreRelativeToTheSendersClock) {
  const BucketState s{0, 3, 1000, true};
  EXPECT_EQ(toPortable(Algorithm::TokenBucket, s, 1500).stamp_age_ns, 500);
  EXPECT_EQ(toPortable(Algorithm::Gcra, s, 400).stamp_age_ns, -600);  // a TAT ahead
  const BucketState back = fromPortable(toPortable(Algorithm::Gcra, s, 400), {10, kSecond, 10}, 7 * kDay);
  EXPECT_EQ(back.stamp, 7 * kDay + 600);
  EXPECT_EQ(back.count, 3u);
}

// A worked example of the windows' rounding: the sender's window [0 s, 1 s) holds 10;
// the receiver's clock is 0.3 s ahead, so that window is [0.3 s, 1.3 s) there, which is
// not on the receiver's grid. It is rounded up to [1 s, 2 s): full until 2 s, where the
// sender's became free at 1.3 s receiver time, 0.7 s later (never earlier).
TEST(Transfer, AFixedWindowIsRoundedUpToTheReceiversNextWindow) {
  const Limit limit{10, kSecond, 0};
  BucketState sender;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(charge(Algorithm::FixedWindow, limit, sender, 200 * kMs, 1).allowed);
  const Nanos offset = 300 * kMs;
  const BucketState receiver =
      fromPortable(toPortable(Algorithm::FixedWindow, sender, 500 * kMs), limit, 500 * kMs + offset);
  EXPECT_EQ(receiver.stamp, kSecond);
  EXPECT_EQ(receiver.count, 10u);
  EXPECT_FALSE(peek(Algorithm::FixedWindow, limit, receiver, 1300 * kMs, 1).allowed);
  EXPECT_FALSE(peek(Algorithm::FixedWindow, limit, receiver, 2 * kSecond - 1, 1).allowed);
  EXPECT_TRUE(peek(Algorithm::FixedWindow, limit, receiver, 2 * kSecond, 1).allowed);
  // On a grid that matches (offset a whole number of periods) nothing is rounded.
  const BucketState aligned =
      fromPortable(toPortable(Algorithm::FixedWindow, sender, 500 * kMs), limit, 500 * kMs + 3 * kSecond);
  EXPECT_EQ(aligned.stamp, 3 * kSecond);
}

TEST(Transfer, ASlidingWindowKeepsBothCountsAndStartsDecayingLater) {
  const Limit limit{10, kSecond, 0};
  BucketState sender;
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(charge(Algorithm::SlidingWindow, limit, sender, 100 * kMs, 1).allowed);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(charge(Algorithm::SlidingWindow, limit, sender, 1100 * kMs, 1).allowed);
  ASSERT_EQ(sender.level, 6);
  ASSERT_EQ(sender.count, 3u);
  const BucketState receiver =
      fromPortable(toPortable(Algorithm::SlidingWindow, sender, 1200 * kMs), limit, 1200 * kMs - 250 * kMs);
  EXPECT_EQ(receiver.level, 6);
  EXPECT_EQ(receiver.count, 3u);
  EXPECT_EQ(receiver.stamp, kSecond);  // the sender's 1 s is 0.75 s here, rounded up
}

TEST(Transfer, AgesSaturateAtTheEndsOfTheClock) {
  const BucketState past{0, 1, kNanosMin, true};
  EXPECT_EQ(toPortable(Algorithm::TokenBucket, past, kNanosMax).stamp_age_ns, kNanosMax);
  const BucketState ahead{0, 1, kNanosMax, true};
  EXPECT_EQ(toPortable(Algorithm::Gcra, ahead, kNanosMin).stamp_age_ns, kNanosMin);
  EXPECT_EQ(toPortable(Algorithm::Gcra, ahead, kNanosMax).stamp_age_ns, 0);
  const Limit limit{10, kSecond, 10};
  for (Algorithm algo : kAll) {
    PortableBucket wire{algo, 2, 3, kNanosMin, true};  // as far ahead as can be
    BucketState s = fromPortable(wire, limit, kNanosMax);
    EXPECT_EQ(s.stamp, kNanosMax) << algorithmName(algo);
    charge(algo, limit, s, kNanosMax, 1);
    wire.stamp_age_ns = kNanosMax;  // as far behind as can be
    s = fromPortable(wire, limit, kNanosMin);
    EXPECT_GE(s.stamp, kNanosMin) << algorithmName(algo);
    EXPECT_LT(s.stamp, kNanosMin + limit.period_ns) << algorithmName(algo);
    charge(algo, limit, s, kNanosMin, 1);
    wire.stamp_age_ns = kNanosMin;
    s = fromPortable(wire, limit, -2);  // -2 + 2^63: the last stamp but one
    EXPECT_EQ(s.stamp, isContinuous(algo) ? kNanosMax - 1 : kNanosMax) << algorithmName(algo);
  }
}

// A window that would start beyond the receiver's clock range sits at its end: the
// counts hold for every moment the clock can reach, as they would on the sender.
TEST(Transfer, AWindowBeyondTheClocksEndHoldsItsCountsForever) {
  const Limit limit{10, 7 * kSecond, 0};
  for (Algorithm algo : {Algorithm::FixedWindow, Algorithm::SlidingWindow}) {
    const BucketState s = fromPortable(PortableBucket{algo, 4, 10, -3 * kSecond, true}, limit, kNanosMax - kSecond);
    EXPECT_EQ(s.stamp, kNanosMax) << algorithmName(algo);
    for (Nanos t : {kNanosMax - kSecond, kNanosMax - 1, kNanosMax})
      EXPECT_FALSE(peek(algo, limit, s, t, 1).allowed) << algorithmName(algo) << " at " << t;
  }
}

// Clocks near opposite ends of the range, ages that still fit: translation stays exact
// for the buckets and conservative for the windows.
TEST(Transfer, ClocksAtOppositeEndsOfTheRange) {
  std::mt19937_64 rng(99);
  const Limit limit{5, kSecond, 8};
  for (Algorithm algo : kAll) {
    for (const auto& [sender_now, receiver_now] :
         {std::pair{kNanosMax - 5 * kSecond, kNanosMin + 3 * kSecond + 17},
          std::pair{kNanosMin + 4 * kSecond + 1, kNanosMax - 6 * kSecond}}) {
      const BucketState sender = randomHistory(rng, algo, limit, sender_now);
      // The offset does not fit in Nanos: compare moment by moment with ages instead.
      const BucketState receiver = fromPortable(toPortable(algo, sender, sender_now), limit, receiver_now);
      for (Nanos age = 0; age < 4 * kSecond; age += 37 * kMs + 1) {
        for (std::uint64_t cost = 1; cost <= 9; ++cost) {
          const Outcome there = peek(algo, limit, sender, sender_now + age, cost);
          const Outcome here = peek(algo, limit, receiver, receiver_now + age, cost);
          if (isContinuous(algo)) {
            ASSERT_EQ(here.allowed, there.allowed) << algorithmName(algo) << " age=" << age;
            ASSERT_EQ(here.retry_after_ns, there.retry_after_ns) << algorithmName(algo) << " age=" << age;
          } else {
            ASSERT_TRUE(!here.allowed || there.allowed) << algorithmName(algo) << " age=" << age;
          }
        }
      }
    }
  }
}

// A stamp further in the past than an age can say arrives later than it was: for a
// bucket so slow that it has not refilled even then, that means fewer tokens, never more.
TEST(Transfer, AnAgeTooLargeToCarryErrsTowardsFewerTokens) {
  const Limit slow{1, Nanos{1} << 62, 4};  // one token per 146 years
  {
    const Algorithm algo = Algorithm::TokenBucket;
    BucketState sender;
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(charge(algo, slow, sender, kNanosMin + 10, 1).allowed);
    const Nanos sender_now = kNanosMax - 10;  // 2^64 - 20 ns later: 3.99 tokens back
    const PortableBucket wire = toPortable(algo, sender, sender_now);
    EXPECT_EQ(wire.stamp_age_ns, kNanosMax);
    const BucketState receiver = fromPortable(wire, slow, 0);
    EXPECT_LE(peek(algo, slow, receiver, 0, 1).remaining, peek(algo, slow, sender, sender_now, 1).remaining);
    for (std::uint64_t cost = 1; cost <= 4; ++cost)
      EXPECT_TRUE(!peek(algo, slow, receiver, 0, cost).allowed || peek(algo, slow, sender, sender_now, cost).allowed);
  }
}

TEST(Transfer, AnUnusableLimitTranslatesWithoutAligning) {
  const PortableBucket wire{Algorithm::FixedWindow, 0, 4, 300, true};
  EXPECT_EQ(fromPortable(wire, {0, kSecond, 0}, 1000).stamp, 700);
  EXPECT_EQ(fromPortable(wire, {10, 0, 0}, 1000).stamp, 700);
  EXPECT_EQ(fromPortable(wire, {10, -5, 0}, 1000).stamp, 700);
}

// Random parameters, histories, clocks and offsets (also offsets that are no round
// number of anything), fixed seeds; a failure names its seed.
TEST(Transfer, RandomisedTransfersNeverAdmitMore) {
  for (std::uint64_t seed = 1; seed <= 3000; ++seed) {
    std::mt19937_64 rng(seed);
    const Algorithm algo = kAll[rng() % 4];
    Limit limit;
    limit.limit = 1 + rng() % 12;
    limit.period_ns = 1 + static_cast<Nanos>(rng() % (2 * kSecond));
    limit.burst = rng() % 14;
    const Nanos sender_now = static_cast<Nanos>(rng() % (30 * kDay)) - 10 * kDay;
    Nanos offset = 0;
    switch (rng() % 4) {
      case 0: offset = static_cast<Nanos>(rng() % (2 * limit.period_ns + 1)) - limit.period_ns; break;
      case 1: offset = static_cast<Nanos>(rng() % (20 * kMinute)) - 10 * kMinute; break;
      case 2: offset = static_cast<Nanos>(rng() % (60 * kDay)) - 30 * kDay; break;
      default: offset = static_cast<Nanos>(rng() % 3) * limit.period_ns; break;
    }
    const BucketState sender = randomHistory(rng, algo, limit, sender_now);
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    checkTransfer(rng, {algo, limit, sender_now, offset}, sender);
    if (HasFatalFailure()) return;
  }
}

// ---- merging ---------------------------------------------------------------------

BucketState drained(Algorithm algo, const Limit& limit, Nanos now, int n) {
  BucketState s;
  for (int i = 0; i < n; ++i) charge(algo, limit, s, now, 1);
  return s;
}

bool same(const BucketState& a, const BucketState& b) {
  return a.level == b.level && a.count == b.count && a.stamp == b.stamp && a.initialised == b.initialised;
}

TEST(Merge, PicksTheMoreConsumedViewWhicheverSideItIsOn) {
  const Limit limit{10, kSecond, 10};
  for (Algorithm algo : kAll) {
    const BucketState light = drained(algo, limit, 5 * kSecond, 3);
    const BucketState heavy = drained(algo, limit, 5 * kSecond, 7);
    EXPECT_TRUE(same(mergeBuckets(algo, limit, light, heavy, 5 * kSecond), heavy)) << algorithmName(algo);
    EXPECT_TRUE(same(mergeBuckets(algo, limit, heavy, light, 5 * kSecond), heavy)) << algorithmName(algo);
    EXPECT_TRUE(same(mergeBuckets(algo, limit, BucketState{}, light, 5 * kSecond), light)) << algorithmName(algo);
    EXPECT_TRUE(same(mergeBuckets(algo, limit, light, BucketState{}, 5 * kSecond), light)) << algorithmName(algo);
  }
}

// Consumed is judged at `now`, not by the raw counts: a view that was heavier once but
// has refilled since loses to a lighter but more recent one.
TEST(Merge, JudgesConsumptionAtNow) {
  const Limit limit{10, kSecond, 10};
  for (Algorithm algo : {Algorithm::TokenBucket, Algorithm::Gcra}) {
    const BucketState old_heavy = drained(algo, limit, 0, 10);             // 9.5 tokens at 0.95 s
    const BucketState recent_light = drained(algo, limit, 900 * kMs, 2);  // 8.5 tokens at 0.95 s
    EXPECT_TRUE(same(mergeBuckets(algo, limit, old_heavy, recent_light, 950 * kMs), recent_light))
        << algorithmName(algo);
    EXPECT_TRUE(same(mergeBuckets(algo, limit, recent_light, old_heavy, 950 * kMs), recent_light))
        << algorithmName(algo);
  }
  // A full window that has passed against a few units in the current one.
  const BucketState old_window = drained(Algorithm::FixedWindow, limit, 100 * kMs, 10);
  const BucketState new_window = drained(Algorithm::FixedWindow, limit, 1100 * kMs, 2);
  EXPECT_TRUE(same(mergeBuckets(Algorithm::FixedWindow, limit, old_window, new_window, 1500 * kMs), new_window));
  EXPECT_TRUE(same(mergeBuckets(Algorithm::FixedWindow, limit, old_window, new_window, 500 * kMs), old_window));
}

// Equal remaining now: the view that recovers later wins. Sliding window: 10 in the
// previous window, half past -> weight 5; 5 in the current window -> also 5, but those
// weigh fully for the rest of the window and then decay over the next.
TEST(Merge, OnATieTheViewThatRecoversLaterWins) {
  const Limit limit{10, kSecond, 10};
  BucketState previous_heavy;
  for (int i = 0; i < 10; ++i) charge(Algorithm::SlidingWindow, limit, previous_heavy, 100 * kMs, 1);
  BucketState current_heavy;
  for (int i = 0; i < 5; ++i) charge(Algorithm::SlidingWindow, limit, current_heavy, 1200 * kMs, 1);
  const Nanos now = 1500 * kMs;
  ASSERT_EQ(peek(Algorithm::SlidingWindow, limit, previous_heavy, now, 1).remaining,
            peek(Algorithm::SlidingWindow, limit, current_heavy, now, 1).remaining);
  EXPECT_TRUE(same(mergeBuckets(Algorithm::SlidingWindow, limit, previous_heavy, current_heavy, now), current_heavy));
  EXPECT_TRUE(same(mergeBuckets(Algorithm::SlidingWindow, limit, current_heavy, previous_heavy, now), current_heavy));
  // Fixed windows: the same count, one window rounded further ahead (a transfer).
  BucketState here;
  for (int i = 0; i < 4; ++i) charge(Algorithm::FixedWindow, limit, here, 200 * kMs, 1);
  BucketState ahead = here;
  ahead.stamp += kSecond;
  EXPECT_TRUE(same(mergeBuckets(Algorithm::FixedWindow, limit, here, ahead, 300 * kMs), ahead));
  EXPECT_TRUE(same(mergeBuckets(Algorithm::FixedWindow, limit, ahead, here, 300 * kMs), ahead));
  // A full tie keeps what is held.
  EXPECT_TRUE(same(mergeBuckets(Algorithm::FixedWindow, limit, here, here, 300 * kMs), here));
}

TEST(Merge, RandomisedMergesAreTheMoreConsumedOfTheTwo) {
  for (std::uint64_t seed = 1; seed <= 500; ++seed) {
    SCOPED_TRACE(testing::Message() << "seed " << seed);
    std::mt19937_64 rng(seed);
    const Algorithm algo = kAll[rng() % 4];
    const Limit limit{1 + rng() % 10, 1 + static_cast<Nanos>(rng() % kSecond), rng() % 12};
    const Nanos now = static_cast<Nanos>(rng() % (10 * kSecond));
    const BucketState a = randomHistory(rng, algo, limit, now - static_cast<Nanos>(rng() % kSecond));
    const BucketState b = randomHistory(rng, algo, limit, now - static_cast<Nanos>(rng() % kSecond));
    const BucketState m = mergeBuckets(algo, limit, a, b, now);
    ASSERT_TRUE(same(m, a) || same(m, b));
    const double ra = peek(algo, limit, a, now, 1).remaining;
    const double rb = peek(algo, limit, b, now, 1).remaining;
    const double rm = peek(algo, limit, m, now, 1).remaining;
    ASSERT_EQ(rm, std::min(ra, rb));
    if (ra == rb) {
      ASSERT_EQ(idleAt(algo, limit, m), std::max(idleAt(algo, limit, a), idleAt(algo, limit, b)));
    }
    // Symmetric in what it admits: the order of the views does not matter.
    const BucketState m2 = mergeBuckets(algo, limit, b, a, now);
    ASSERT_EQ(peek(algo, limit, m2, now, 1).remaining, rm);
    ASSERT_EQ(idleAt(algo, limit, m2), idleAt(algo, limit, m));
  }
}

}  // namespace
}  // namespace zetian::state
