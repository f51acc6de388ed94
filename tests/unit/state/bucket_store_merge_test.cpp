// BucketStore::merge() and assign(): state arriving from other nodes (replication,
// hand-off) under the store's invariants: the more consumed view wins a merge, a fresh
// result is not stored, an algorithm change replaces, max_keys holds, and concurrent
// charges and merges never hand out the same tokens twice.
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "state/bucket_store.h"

namespace zetian::state {
namespace {

using namespace std::string_literals;

constexpr Nanos kSecond = kNanosPerSecond;
const Limit kTenPerSecond{10, kSecond, 10};
constexpr Algorithm kAll[] = {Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow,
                              Algorithm::FixedWindow};

std::string key(int i) { return "rule\0"s + std::to_string(i); }

// A state with `n` units charged at `now`.
BucketState used(Algorithm algo, const Limit& limit, Nanos now, int n) {
  BucketState s;
  for (int i = 0; i < n; ++i) charge(algo, limit, s, now, 1);
  return s;
}

double remainingOf(const BucketStore& store, std::string_view k, Algorithm algo, const Limit& limit, Nanos now) {
  const auto o = store.peek(k, algo, limit, now, 0);
  return o ? o->remaining : static_cast<double>(limit.limit);
}

TEST(BucketStoreMerge, AnAbsentKeyTakesTheIncomingState) {
  for (Algorithm algo : kAll) {
    BucketStore store(100, 4);
    const BucketState incoming = used(algo, kTenPerSecond, 5 * kSecond, 4);
    EXPECT_TRUE(store.merge("k", algo, kTenPerSecond, incoming, 5 * kSecond)) << algorithmName(algo);
    const auto held = store.find("k");
    ASSERT_TRUE(held) << algorithmName(algo);
    EXPECT_EQ(held->algorithm, algo);
    EXPECT_EQ(held->state.count, incoming.count);
    EXPECT_EQ(held->state.stamp, incoming.stamp);
    EXPECT_EQ(remainingOf(store, "k", algo, kTenPerSecond, 5 * kSecond), 6) << algorithmName(algo);
  }
}

TEST(BucketStoreMerge, AHeldKeyKeepsTheMoreConsumedView) {
  for (Algorithm algo : kAll) {
    BucketStore store(100, 4);
    const Nanos now = 5 * kSecond;
    for (int i = 0; i < 7; ++i) store.charge("heavy-held", algo, kTenPerSecond, now, 1);
    for (int i = 0; i < 2; ++i) store.charge("light-held", algo, kTenPerSecond, now, 1);
    EXPECT_TRUE(store.merge("heavy-held", algo, kTenPerSecond, used(algo, kTenPerSecond, now, 2), now));
    EXPECT_TRUE(store.merge("light-held", algo, kTenPerSecond, used(algo, kTenPerSecond, now, 7), now));
    EXPECT_EQ(remainingOf(store, "heavy-held", algo, kTenPerSecond, now), 3) << algorithmName(algo);
    EXPECT_EQ(remainingOf(store, "light-held", algo, kTenPerSecond, now), 3) << algorithmName(algo);
    // The merged state is the one that is charged next.
    EXPECT_EQ(store.charge("light-held", algo, kTenPerSecond, now, 3).allowed, true);
    EXPECT_EQ(store.charge("light-held", algo, kTenPerSecond, now, 1).allowed, false);
  }
}

TEST(BucketStoreMerge, AssignReplacesEvenWithALighterState) {
  for (Algorithm algo : kAll) {
    BucketStore store(100, 4);
    const Nanos now = 5 * kSecond;
    for (int i = 0; i < 9; ++i) store.charge("k", algo, kTenPerSecond, now, 1);
    EXPECT_TRUE(store.assign("k", algo, kTenPerSecond, used(algo, kTenPerSecond, now, 1), now));
    EXPECT_EQ(remainingOf(store, "k", algo, kTenPerSecond, now), 9) << algorithmName(algo);
    EXPECT_TRUE(store.assign("absent", algo, kTenPerSecond, used(algo, kTenPerSecond, now, 5), now));
    EXPECT_EQ(remainingOf(store, "absent", algo, kTenPerSecond, now), 5) << algorithmName(algo);
  }
}

// A fresh result (a fresh state, or one that has refilled by `now`) is not stored, and
// one replacing a held key drops it, counted as an expiration.
TEST(BucketStoreMerge, AFreshResultIsNotStored) {
  for (Algorithm algo : kAll) {
    BucketStore store(100, 4);
    const Nanos now = 50 * kSecond;
    const BucketState refilled = used(algo, kTenPerSecond, kSecond, 10);  // idle long before `now`
    EXPECT_FALSE(store.merge("a", algo, kTenPerSecond, BucketState{}, now)) << algorithmName(algo);
    EXPECT_FALSE(store.assign("a", algo, kTenPerSecond, BucketState{}, now)) << algorithmName(algo);
    EXPECT_FALSE(store.merge("a", algo, kTenPerSecond, refilled, now)) << algorithmName(algo);
    EXPECT_FALSE(store.assign("a", algo, kTenPerSecond, refilled, now)) << algorithmName(algo);
    EXPECT_EQ(store.stats().keys, 0u);

    store.charge("held", algo, kTenPerSecond, now, 3);
    // Merging a fresh view keeps the held, more consumed one.
    EXPECT_TRUE(store.merge("held", algo, kTenPerSecond, BucketState{}, now)) << algorithmName(algo);
    EXPECT_EQ(store.stats().keys, 1u);
    // Assigning a fresh one forgets the key.
    EXPECT_FALSE(store.assign("held", algo, kTenPerSecond, refilled, now)) << algorithmName(algo);
    EXPECT_FALSE(store.find("held"));
    EXPECT_EQ(store.stats().keys, 0u);
    EXPECT_EQ(store.stats().expirations, 1u);
    EXPECT_EQ(store.stats().evictions, 0u);
    // A held key that has refilled by `now` merges to fresh: dropped too.
    store.charge("stale", algo, kTenPerSecond, kSecond, 4);
    EXPECT_FALSE(store.merge("stale", algo, kTenPerSecond, refilled, now)) << algorithmName(algo);
    EXPECT_EQ(store.stats().keys, 0u);
    EXPECT_EQ(store.stats().expirations, 2u);
  }
}

// A key held under another algorithm (the rule changed algorithm) is replaced by the
// incoming state, even a lighter one.
TEST(BucketStoreMerge, AnAlgorithmChangeTakesTheIncomingState) {
  BucketStore store(100, 4);
  const Nanos now = 5 * kSecond;
  for (int i = 0; i < 10; ++i) store.charge("k", Algorithm::FixedWindow, kTenPerSecond, now, 1);
  const BucketState incoming = used(Algorithm::TokenBucket, kTenPerSecond, now, 2);
  EXPECT_TRUE(store.merge("k", Algorithm::TokenBucket, kTenPerSecond, incoming, now));
  const auto held = store.find("k");
  ASSERT_TRUE(held);
  EXPECT_EQ(held->algorithm, Algorithm::TokenBucket);
  EXPECT_EQ(held->state.count, incoming.count);
  EXPECT_EQ(remainingOf(store, "k", Algorithm::TokenBucket, kTenPerSecond, now), 8);
  // A fresh state of the new algorithm forgets the old one.
  EXPECT_FALSE(store.merge("k", Algorithm::Gcra, kTenPerSecond, BucketState{}, now));
  EXPECT_FALSE(store.find("k"));
}

// Merged keys count against max_keys like charged ones: the least recently used key
// makes room (an eviction if it was live), and a merge makes its key the most recent.
TEST(BucketStoreMerge, MergesRespectMaxKeysAndTheLruOrder) {
  BucketStore store(4, 1);
  const Nanos now = 5 * kSecond;
  const BucketState live = used(Algorithm::TokenBucket, kTenPerSecond, now, 3);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(store.merge(key(i), Algorithm::TokenBucket, kTenPerSecond, live, now));
  // key(0) is the least recent; merging into it makes key(1) the least recent.
  ASSERT_TRUE(store.merge(key(0), Algorithm::TokenBucket, kTenPerSecond, live, now));
  ASSERT_TRUE(store.assign(key(4), Algorithm::TokenBucket, kTenPerSecond, live, now));
  EXPECT_TRUE(store.find(key(0)));
  EXPECT_FALSE(store.find(key(1)));
  for (int i = 5; i < 10; ++i) {
    ASSERT_TRUE(store.assign(key(i), Algorithm::TokenBucket, kTenPerSecond, live, now));
    EXPECT_LE(store.stats().keys, 4u);
  }
  const StoreStats stats = store.stats();
  EXPECT_EQ(stats.keys, 4u);
  EXPECT_EQ(stats.evictions, 6u);
  EXPECT_EQ(stats.expirations, 0u);
  for (int i = 6; i < 10; ++i) EXPECT_TRUE(store.find(key(i))) << i;
}

// Charges and merges of stale copies racing on the same keys: a merge never gives back
// tokens that were charged since its copy was taken (the held view is the more consumed
// one), so exactly the bucket's capacity is admitted per key. TSan checks the locking.
TEST(BucketStoreMerge, ConcurrentChargesAndMergesNeverAdmitMoreThanTheBucketHolds) {
  constexpr int kThreads = 8;
  constexpr int kKeys = 4;
  constexpr int kAttemptsPerThread = 6'000;
  const Limit limit{2000, 3600 * kSecond, 2000};
  const Nanos now = kSecond;  // no refill during the test
  for (Algorithm algo : kAll) {
    BucketStore store(1000, 4);
    std::atomic<int> admitted{0};
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        start.arrive_and_wait();
        int mine = 0;
        std::vector<BucketState> copies(kKeys);
        for (int i = 0; i < kAttemptsPerThread; ++i) {
          const std::string k = key((i + t) % kKeys);
          const int slot = (i + t) % kKeys;
          if (i % 3 == 0) {
            if (const auto held = store.find(k)) copies[slot] = held->state;
          } else if (i % 3 == 1) {
            store.merge(k, algo, limit, copies[slot], now);
          } else {
            mine += store.charge(k, algo, limit, now, 1).allowed;
          }
        }
        admitted += mine;
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(admitted.load(), kKeys * 2000) << algorithmName(algo);
    for (int i = 0; i < kKeys; ++i) EXPECT_EQ(remainingOf(store, key(i), algo, limit, now), 0) << algorithmName(algo);
  }
}

}  // namespace
}  // namespace zetian::state
