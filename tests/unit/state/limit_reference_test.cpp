// The algorithms against the reference models over thousands of seeded random event
// sequences: same decision, same `remaining`, same `retry_after_ns`, at every step.
//
// No tolerance is needed: limit.cpp and the models are both exact (integers and
// rationals), and the parameters below are chosen to hit exact boundaries often
// (small periods, periods that limit divides, waits of exactly period/limit).
#include <gtest/gtest.h>

#include <random>
#include <sstream>
#include <string>

#include "state/limit.h"
#include "tests/unit/state/reference_models.h"

namespace zetian::state {
namespace {

constexpr int kSequences = 2000;
constexpr int kStepsPerSequence = 120;

struct Step {
  Nanos now;
  std::uint64_t cost;
  bool refund_if_allowed;
};

struct Scenario {
  Limit limit;
  std::vector<Step> steps;
};

template <class T>
T pick(std::mt19937_64& rng, std::initializer_list<T> choices) {
  return *(choices.begin() + std::uniform_int_distribution<std::size_t>(0, choices.size() - 1)(rng));
}

std::uint64_t uniform(std::mt19937_64& rng, std::uint64_t lo, std::uint64_t hi) {
  return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
}

Scenario randomScenario(std::mt19937_64& rng, bool uses_burst) {
  Scenario s;
  switch (uniform(rng, 0, 3)) {
    case 0: s.limit.limit = pick<std::uint64_t>(rng, {1, 2, 3, 7, 10}); break;
    case 1: s.limit.limit = uniform(rng, 1, 20); break;
    case 2: s.limit.limit = uniform(rng, 1, 60); break;
    default: s.limit.limit = pick<std::uint64_t>(rng, {100, 1000, 997}); break;
  }
  switch (uniform(rng, 0, 3)) {
    case 0: s.limit.period_ns = pick<Nanos>(rng, {1, 2, 3, 7, 10, 60, 100, 997}); break;
    case 1: s.limit.period_ns = pick<Nanos>(rng, {1'000, 1'000'000, kNanosPerSecond, 3600 * kNanosPerSecond}); break;
    case 2: s.limit.period_ns = static_cast<Nanos>(s.limit.limit * uniform(rng, 1, 1000)); break;  // T is whole
    default: s.limit.period_ns = static_cast<Nanos>(uniform(rng, 1, kNanosPerSecond)); break;
  }
  s.limit.burst = uses_burst ? uniform(rng, 1, 2 * s.limit.limit + 2) : uniform(rng, 0, 100);
  const std::uint64_t capacity = uses_burst ? s.limit.burst : s.limit.limit;
  const Nanos p = s.limit.period_ns;
  const Nanos interval = std::max<Nanos>(1, p / static_cast<Nanos>(s.limit.limit));

  Nanos now = pick<Nanos>(rng, {0, -5 * p, static_cast<Nanos>(uniform(rng, 0, 1'000'000'000'000'000))});
  if (uniform(rng, 0, 4) == 0) now = -static_cast<Nanos>(uniform(rng, 0, 1'000'000'000'000));
  for (int i = 0; i < kStepsPerSequence; ++i) {
    switch (uniform(rng, 0, 19)) {
      case 0: case 1: case 2: case 3: case 4: break;  // same instant
      case 5: case 6: case 7: case 8: now += static_cast<Nanos>(uniform(rng, 0, interval)); break;
      case 9: case 10: now += interval; break;  // exactly one emission interval
      case 11: case 12: case 13: case 14: now += static_cast<Nanos>(uniform(rng, 0, p)); break;
      case 15: now += p; break;
      case 16: case 17: now += static_cast<Nanos>(uniform(rng, 0, 3 * p)); break;
      default: now += static_cast<Nanos>(uniform(rng, 0, 10 * p * static_cast<Nanos>(capacity / s.limit.limit + 1)));
    }
    std::uint64_t cost = 1;
    switch (uniform(rng, 0, 19)) {
      case 0: cost = 0; break;
      case 1: cost = capacity + uniform(rng, 1, 3); break;  // can never fit
      case 2: case 3: case 4: case 5: case 6: case 7: cost = uniform(rng, 0, capacity); break;
      default: break;
    }
    s.steps.push_back({now, cost, uniform(rng, 0, 9) == 0});
  }
  return s;
}

std::string describe(const Scenario& s, std::size_t step, const Outcome& got, const Outcome& want) {
  std::ostringstream out;
  out << "limit=" << s.limit.limit << " period=" << s.limit.period_ns << " burst=" << s.limit.burst << " step=" << step
      << " now=" << s.steps[step].now << " cost=" << s.steps[step].cost << "\n  got:  allowed=" << got.allowed
      << " remaining=" << got.remaining << " retry=" << got.retry_after_ns << "\n  want: allowed=" << want.allowed
      << " remaining=" << want.remaining << " retry=" << want.retry_after_ns;
  return out.str();
}

template <class Model>
void checkAgainstModel(Algorithm algo, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const bool uses_burst = algo == Algorithm::TokenBucket || algo == Algorithm::Gcra;
  std::uint64_t allowed = 0, denied = 0;
  for (int n = 0; n < kSequences; ++n) {
    const Scenario s = randomScenario(rng, uses_burst);
    Model model{s.limit, {}};
    BucketState state;
    for (std::size_t i = 0; i < s.steps.size(); ++i) {
      const Step& step = s.steps[i];
      const Outcome got = charge(algo, s.limit, state, step.now, step.cost);
      const Outcome want = reference::chargeBySearch(model, s.limit, step.now, step.cost);
      const bool same = got.allowed == want.allowed && got.remaining == want.remaining &&
                        (got.allowed || got.retry_after_ns == want.retry_after_ns);
      ASSERT_TRUE(same) << algorithmName(algo) << " sequence " << n << " " << describe(s, i, got, want);
      (got.allowed ? allowed : denied)++;
      if (got.allowed && step.refund_if_allowed) {
        refund(algo, s.limit, state, step.now, step.cost);
        model.refund(step.now, step.cost);
      }
    }
  }
  // The generator must exercise both answers, or the comparison proves little.
  EXPECT_GT(allowed, kSequences * kStepsPerSequence / 10);
  EXPECT_GT(denied, kSequences * kStepsPerSequence / 10);
}

TEST(LimitReference, TokenBucketMatchesRationalModelOnRandomSequences) {
  checkAgainstModel<reference::TokenBucketModel>(Algorithm::TokenBucket, 1);
}

TEST(LimitReference, GcraMatchesTheoreticalArrivalTimeModelOnRandomSequences) {
  checkAgainstModel<reference::GcraModel>(Algorithm::Gcra, 2);
}

TEST(LimitReference, GcraAlsoMatchesTokenBucketModelOnRandomSequences) {
  checkAgainstModel<reference::TokenBucketModel>(Algorithm::Gcra, 3);
}

TEST(LimitReference, FixedWindowMatchesEventLogModelOnRandomSequences) {
  checkAgainstModel<reference::FixedWindowModel>(Algorithm::FixedWindow, 4);
}

TEST(LimitReference, SlidingWindowMatchesEventLogModelOnRandomSequences) {
  checkAgainstModel<reference::SlidingWindowModel>(Algorithm::SlidingWindow, 5);
}

// retry_after is tight: after a denial, `cost` fits at now + retry_after and not one
// nanosecond earlier (unless it can never fit).
TEST(LimitReference, RetryAfterIsExactlyTheWaitUntilCostFits) {
  std::mt19937_64 rng(6);
  for (Algorithm algo : {Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow, Algorithm::FixedWindow}) {
    const bool uses_burst = algo == Algorithm::TokenBucket || algo == Algorithm::Gcra;
    for (int n = 0; n < kSequences / 4; ++n) {
      const Scenario s = randomScenario(rng, uses_burst);
      const std::uint64_t capacity = uses_burst ? s.limit.burst : s.limit.limit;
      BucketState state;
      for (const Step& step : s.steps) {
        const Outcome o = charge(algo, s.limit, state, step.now, step.cost);
        if (o.allowed || step.cost > capacity) continue;
        ASSERT_GT(o.retry_after_ns, 0);
        EXPECT_TRUE(peek(algo, s.limit, state, step.now + o.retry_after_ns, step.cost).allowed)
            << algorithmName(algo);
        EXPECT_FALSE(peek(algo, s.limit, state, step.now + o.retry_after_ns - 1, step.cost).allowed)
            << algorithmName(algo);
      }
    }
  }
}

// idleAt is tight too: from idleAt on the state answers exactly like a fresh one, and
// just before it, it does not.
TEST(LimitReference, IdleAtIsTheFirstInstantTheStateEqualsAFreshOne) {
  std::mt19937_64 rng(7);
  for (Algorithm algo : {Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow, Algorithm::FixedWindow}) {
    const bool uses_burst = algo == Algorithm::TokenBucket || algo == Algorithm::Gcra;
    for (int n = 0; n < kSequences / 4; ++n) {
      const Scenario s = randomScenario(rng, uses_burst);
      BucketState state;
      for (const Step& step : s.steps) {
        charge(algo, s.limit, state, step.now, step.cost);
        const Nanos idle = idleAt(algo, s.limit, state);
        if (idle <= step.now) {
          EXPECT_EQ(peek(algo, s.limit, state, step.now, 0).remaining, peek(algo, s.limit, {}, step.now, 0).remaining);
          continue;
        }
        for (Nanos t : {idle, idle + 1, idle + s.limit.period_ns}) {
          const Outcome aged = peek(algo, s.limit, state, t, 0);
          const Outcome fresh = peek(algo, s.limit, {}, t, 0);
          ASSERT_EQ(aged.remaining, fresh.remaining) << algorithmName(algo) << " at idleAt+" << (t - idle);
        }
        EXPECT_LT(peek(algo, s.limit, state, idle - 1, 0).remaining, peek(algo, s.limit, {}, idle - 1, 0).remaining)
            << algorithmName(algo);
      }
    }
  }
}

}  // namespace
}  // namespace zetian::state
