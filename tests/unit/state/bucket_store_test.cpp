#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "state/bucket_store.h"

namespace zetian::state {
namespace {

using namespace std::string_literals;

constexpr Nanos kSecond = kNanosPerSecond;
const Limit kTenPerSecond{10, kSecond, 10};

std::string key(int i) { return "rule\0"s + std::to_string(i); }

std::set<std::string> keysOf(const BucketStore& store, std::string_view prefix = {}) {
  std::set<std::string> keys;
  store.forEach(prefix, [&](std::string_view k, const BucketState&) { keys.emplace(k); });
  return keys;
}

// The race this store exists to prevent: many sessions charging one key at the same
// instant must together get exactly the bucket's tokens, never more. A store that
// looked first and charged afterwards (peek, then an unconditional charge) would hand
// the last tokens to several threads.
TEST(BucketStore, ConcurrentChargesOnOneKeyNeverAdmitMoreThanTheBucketHolds) {
  constexpr int kThreads = 8;
  constexpr int kAttemptsPerThread = 20'000;
  for (Algorithm algo : {Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow, Algorithm::FixedWindow}) {
    BucketStore store(1000, 4);
    const Limit limit{5000, 3600 * kSecond, 5000};
    std::atomic<int> admitted{0};
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        int mine = 0;
        for (int i = 0; i < kAttemptsPerThread; ++i) mine += store.charge("hot", algo, limit, kSecond, 1).allowed;
        admitted += mine;
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(admitted.load(), 5000) << algorithmName(algo);
    EXPECT_EQ(store.stats().keys, 1u);
  }
}

// The same under refill and refunds: at every moment the admitted count stays within
// what a single-threaded bucket would allow over the same span.
TEST(BucketStore, ConcurrentChargesAndRefundsStayWithinTheRate) {
  constexpr int kThreads = 8;
  BucketStore store(1000, 4);
  const Limit limit{100, kSecond, 50};
  std::atomic<Nanos> clock{0};
  std::atomic<long> net_admitted{0};
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < 20'000; ++i) {
        const Nanos now = clock.fetch_add(50'000);  // 2 s in all, shared and increasing
        if (store.charge("k", Algorithm::TokenBucket, limit, now, 1).allowed) {
          ++net_admitted;
          if ((i + t) % 3 == 0) {
            store.refund("k", Algorithm::TokenBucket, limit, now, 1);
            --net_admitted;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = double(clock.load()) / kSecond;
  EXPECT_LE(net_admitted.load(), 50 + long(100 * seconds) + 1);
  EXPECT_GE(net_admitted.load(), long(100 * seconds) - 50);
}

TEST(BucketStore, ChargeFollowsTheAlgorithmPerKey) {
  BucketStore store(100, 1);  // one shard of 100: with 64 shards of 2, keys that hash together (random seed) evict
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(store.charge("a", Algorithm::TokenBucket, kTenPerSecond, 0, 1).allowed);
  Outcome o = store.charge("a", Algorithm::TokenBucket, kTenPerSecond, 0, 1);
  EXPECT_FALSE(o.allowed);
  EXPECT_EQ(o.retry_after_ns, kSecond / 10);
  EXPECT_TRUE(store.charge("b", Algorithm::TokenBucket, kTenPerSecond, 0, 1).allowed);  // keys are independent
  EXPECT_TRUE(store.charge("a", Algorithm::TokenBucket, kTenPerSecond, kSecond / 10, 1).allowed);
}

TEST(BucketStore, KeysAreArbitraryBytes) {
  BucketStore store(100, 1);  // one shard of 100: with 64 shards of 2, keys that hash together (random seed) evict
  const std::string with_nul = "r\0x"s, other = "r\0y"s, binary = "\xff\x00\x80"s;
  for (const std::string& k : {with_nul, other, binary, ""s})
    EXPECT_TRUE(store.charge(k, Algorithm::FixedWindow, {1, kSecond, 0}, 0, 1).allowed);
  for (const std::string& k : {with_nul, other, binary, ""s})
    EXPECT_FALSE(store.charge(k, Algorithm::FixedWindow, {1, kSecond, 0}, 0, 1).allowed);
  EXPECT_EQ(keysOf(store), (std::set<std::string>{with_nul, other, binary, ""}));
  EXPECT_EQ(keysOf(store, "r\0"s), (std::set<std::string>{with_nul, other}));
  const std::string long_key(100'000, 'k');
  EXPECT_TRUE(store.charge(long_key, Algorithm::FixedWindow, {1, kSecond, 0}, 0, 1).allowed);
  EXPECT_FALSE(store.charge(long_key, Algorithm::FixedWindow, {1, kSecond, 0}, 0, 1).allowed);
}

TEST(BucketStore, EvictsTheLeastRecentlyUsedKeyAtTheBound) {
  BucketStore store(3, 1);
  const Nanos now = 0;
  for (int i : {1, 2, 3}) store.charge(key(i), Algorithm::TokenBucket, kTenPerSecond, now, 1);
  store.charge(key(1), Algorithm::TokenBucket, kTenPerSecond, now, 1);  // 1 is now the most recent
  store.charge(key(4), Algorithm::TokenBucket, kTenPerSecond, now, 1);  // drops 2
  EXPECT_EQ(keysOf(store), (std::set<std::string>{key(1), key(3), key(4)}));
  store.refund(key(3), Algorithm::TokenBucket, kTenPerSecond, now, 0);   // refunds do not count as use
  EXPECT_TRUE(store.peek(key(3), Algorithm::TokenBucket, kTenPerSecond, now, 1));  // nor do peeks
  store.charge(key(5), Algorithm::TokenBucket, kTenPerSecond, now, 1);  // drops 3
  EXPECT_EQ(keysOf(store), (std::set<std::string>{key(1), key(4), key(5)}));
  StoreStats s = store.stats();
  EXPECT_EQ(s.keys, 3u);
  EXPECT_EQ(s.evictions, 2u);
  EXPECT_EQ(s.expirations, 0u);
  // An evicted key comes back fresh: its state is lost (the price of the bound).
  EXPECT_EQ(store.charge(key(2), Algorithm::TokenBucket, kTenPerSecond, now, 1).remaining, 9);
}

TEST(BucketStore, EachShardHoldsAtMostItsShareOfMaxKeys) {
  BucketStore store(100, 8);  // ceil(100 / 8) = 13 per shard
  for (int i = 0; i < 5000; ++i) store.charge(key(i), Algorithm::Gcra, kTenPerSecond, 0, 1);
  StoreStats s = store.stats();
  EXPECT_LE(s.keys, 8u * 13u);
  EXPECT_GE(s.keys, 90u);  // 5000 random keys fill every shard
  EXPECT_EQ(s.evictions, 5000u - s.keys);
  EXPECT_GT(s.bytes, s.keys * 64);
}

TEST(BucketStore, ShardCountIsClampedToTheKeyBound) {
  EXPECT_EQ(BucketStore(10, 64).shardCount(), 10u);
  EXPECT_EQ(BucketStore(0, 64).shardCount(), 1u);
  EXPECT_EQ(BucketStore(100, 0).shardCount(), 1u);
  BucketStore tiny(0, 64);
  EXPECT_TRUE(tiny.charge("a", Algorithm::TokenBucket, kTenPerSecond, 0, 1).allowed);
  EXPECT_TRUE(tiny.charge("b", Algorithm::TokenBucket, kTenPerSecond, 0, 1).allowed);
  EXPECT_EQ(tiny.stats().keys, 1u);
}

TEST(BucketStore, MakingRoomWithAnIdleKeyCountsAsExpirationNotEviction) {
  BucketStore store(2, 1);
  store.charge(key(1), Algorithm::TokenBucket, kTenPerSecond, 0, 1);       // idle from 100 ms
  store.charge(key(2), Algorithm::TokenBucket, kTenPerSecond, kSecond, 1);
  store.charge(key(3), Algorithm::TokenBucket, kTenPerSecond, kSecond, 1);  // drops 1, already refilled
  StoreStats s = store.stats();
  EXPECT_EQ(s.expirations, 1u);
  EXPECT_EQ(s.evictions, 0u);
}

TEST(BucketStore, ExpireIdleDropsExactlyTheKeysThatHaveRefilled) {
  BucketStore store(1000, 4);
  // Key i is charged i tokens at time 0: it is full again at i * 100 ms.
  for (int i = 1; i <= 10; ++i) store.charge(key(i), Algorithm::TokenBucket, kTenPerSecond, 0, i);
  EXPECT_EQ(store.expireIdle(300 * kSecond / 1000 - 1), 2u);  // keys 1 and 2
  EXPECT_EQ(store.expireIdle(300 * kSecond / 1000), 1u);      // key 3, exactly at its idleAt
  EXPECT_EQ(store.stats().keys, 7u);
  EXPECT_FALSE(keysOf(store).contains(key(3)));
  EXPECT_TRUE(keysOf(store).contains(key(4)));
  EXPECT_EQ(store.expireIdle(10 * kSecond), 7u);
  StoreStats s = store.stats();
  EXPECT_EQ(s.keys, 0u);
  EXPECT_EQ(s.expirations, 10u);
  EXPECT_EQ(s.evictions, 0u);
}

TEST(BucketStore, ExpireIdleHandlesEveryAlgorithmAndLargeShards) {
  BucketStore store(100'000, 2);
  const Algorithm algos[] = {Algorithm::TokenBucket, Algorithm::Gcra, Algorithm::SlidingWindow,
                             Algorithm::FixedWindow};
  for (int i = 0; i < 20'000; ++i) store.charge(key(i), algos[i % 4], kTenPerSecond, 0, 1);
  EXPECT_EQ(store.expireIdle(kSecond / 2), 10'000u);  // token bucket and gcra: idle at 100 ms
  EXPECT_EQ(store.expireIdle(kSecond), 5000u);      // fixed window: at the end of [0, 1 s)
  EXPECT_EQ(store.expireIdle(2 * kSecond - 1), 0u);
  EXPECT_EQ(store.expireIdle(2 * kSecond), 5000u);  // sliding window: once [0, 1 s) slid out
  EXPECT_EQ(store.stats().keys, 0u);
}

TEST(BucketStore, RepeatedBoundedExpiryStepsFreeEveryIdleKeyAndNeverALiveOne) {
  // 40,000 keys in 8 shards (room for 80,000, so none is evicted): half idle at
  // 100 ms, half live for an hour.
  BucketStore store(80'000, 8);
  const Limit slow{10, 3600 * kSecond, 10};
  for (int i = 0; i < 20'000; ++i) {
    store.charge(key(i), Algorithm::TokenBucket, kTenPerSecond, 0, 1);            // idle at 100 ms
    store.charge("live\0"s + std::to_string(i), Algorithm::TokenBucket, slow, 0, 1);  // idle at 360 s
  }
  ASSERT_EQ(store.stats().keys, 40'000u);
  constexpr std::size_t kSlotsPerCall = 1000;
  const std::uint64_t calls_per_pass = (store.slotCount() + kSlotsPerCall - 1) / kSlotsPerCall;
  std::size_t expired = 0;
  std::uint64_t calls = 0;
  bool complete = false;
  while (!complete) {
    const ExpiryProgress p = store.expireIdleStep(kSecond, kSlotsPerCall);
    EXPECT_LE(p.slots_visited, kSlotsPerCall);
    expired += p.expired;
    complete = p.pass_complete;
    ASSERT_LE(++calls, calls_per_pass) << "a pass took more calls than slotCount / max_slots";
  }
  EXPECT_EQ(expired, 20'000u);
  StoreStats s = store.stats();
  EXPECT_EQ(s.keys, 20'000u);
  EXPECT_EQ(s.expirations, 20'000u);
  for (int i = 0; i < 20'000; i += 997) {
    EXPECT_FALSE(store.find(key(i))) << i;
    EXPECT_TRUE(store.find("live\0"s + std::to_string(i))) << i;
  }
  // The next pass finds nothing more to drop until the live keys refill.
  std::size_t again = 0;
  do {
    const ExpiryProgress p = store.expireIdleStep(kSecond, kSlotsPerCall);
    again += p.expired;
    complete = p.pass_complete;
  } while (!complete);
  EXPECT_EQ(again, 0u);
  do {
    const ExpiryProgress p = store.expireIdleStep(3600 * kSecond, kSlotsPerCall);
    again += p.expired;
    complete = p.pass_complete;
  } while (!complete);
  EXPECT_EQ(again, 20'000u);
  EXPECT_EQ(store.stats().keys, 0u);
}

TEST(BucketStore, AnExpiryStepOnAnEmptyStoreSkipsWholeShards) {
  BucketStore store(1'000'000, 64);
  // 64 empty shards: one step of 64 "slots" is a whole pass, whatever max_keys is.
  const ExpiryProgress p = store.expireIdleStep(0, 64);
  EXPECT_TRUE(p.pass_complete);
  EXPECT_EQ(p.slots_visited, 64u);
}

TEST(BucketStore, AnExpiryStepResumesWhereThePreviousOneStopped) {
  BucketStore store(4096, 1);
  for (int i = 0; i < 3000; ++i) store.charge(key(i), Algorithm::TokenBucket, kTenPerSecond, 0, 1);
  // Keys charged while a pass is under way, behind the cursor, wait for the next pass;
  // none is visited twice in one pass.
  std::size_t expired = 0;
  ExpiryProgress p = store.expireIdleStep(kSecond, 100);
  expired += p.expired;
  EXPECT_EQ(p.slots_visited, 100u);
  EXPECT_FALSE(p.pass_complete);
  while (!p.pass_complete) {
    p = store.expireIdleStep(kSecond, 100);
    expired += p.expired;
  }
  EXPECT_EQ(expired, 3000u);
}

TEST(BucketStore, FindReturnsOneKeysStateAndAlgorithm) {
  BucketStore store(1000, 16);
  store.charge(key(1), Algorithm::Gcra, kTenPerSecond, 0, 3);
  const auto held = store.find(key(1));
  ASSERT_TRUE(held);
  EXPECT_EQ(held->algorithm, Algorithm::Gcra);
  EXPECT_TRUE(held->state.initialised);
  EXPECT_FALSE(store.find(key(2)));
  EXPECT_FALSE(store.find("rule"));  // a prefix is not a key
  store.erase(key(1));
  EXPECT_FALSE(store.find(key(1)));
}

// Pages through everything with `page_size` entries and `max_slots` per page.
std::vector<std::string> listAll(const BucketStore& store, std::string_view prefix, std::size_t page_size,
                                 std::size_t max_slots, std::size_t* pages = nullptr) {
  std::vector<std::string> keys;
  ListCursor cursor;
  std::size_t n = 0;
  while (true) {
    const ListPage page = store.list(prefix, cursor, ListLimits{page_size, max_slots, 1 << 20});
    EXPECT_LE(page.entries.size(), page_size);
    for (const auto& [k, held] : page.entries) keys.push_back(k);
    ++n;
    if (!page.next) break;
    // Every cursor survives the trip through its text form.
    const auto parsed = ListCursor::parse(page.next->token());
    EXPECT_TRUE(parsed);
    if (!parsed) break;
    cursor = *parsed;
    if (n > 1'000'000) break;
  }
  if (pages != nullptr) *pages = n;
  return keys;
}

TEST(BucketStore, ListPagesThroughEveryMatchingKeyOnceWithBoundedPages) {
  BucketStore store(20'000, 16);
  for (int i = 0; i < 5000; ++i) {
    store.charge(key(i), Algorithm::TokenBucket, kTenPerSecond, 0, 1);
    store.charge("other\0"s + std::to_string(i), Algorithm::TokenBucket, kTenPerSecond, 0, 1);
  }
  for (const std::size_t page_size : {std::size_t{1}, std::size_t{7}, std::size_t{100}, std::size_t{1000}}) {
    std::size_t pages = 0;
    const std::vector<std::string> keys = listAll(store, "rule\0"s, page_size, 4096, &pages);
    const std::set<std::string> unique(keys.begin(), keys.end());
    EXPECT_EQ(keys.size(), 5000u) << page_size;
    EXPECT_EQ(unique.size(), 5000u) << page_size << ": a key was listed twice";
    for (const std::string& k : keys) EXPECT_TRUE(k.starts_with("rule\0"s));
    EXPECT_GE(pages, 5000 / page_size);
  }
  // With few matches, pages stay bounded by the slots visited, not by max_keys.
  store.charge("rare\0"s + "x", Algorithm::TokenBucket, kTenPerSecond, 0, 1);
  ListPage page = store.list("rare\0"s, ListCursor{}, ListLimits{100, 64, 1 << 20});
  EXPECT_TRUE(page.next) << "64 slots cannot cover a 16-shard table";
  // Nor can 100 examined keys cover 10,001.
  page = store.list("rare\0"s, ListCursor{}, ListLimits{100, 1 << 20, 100});
  EXPECT_TRUE(page.next);
  std::size_t pages = 0;
  EXPECT_EQ(listAll(store, "rare\0"s, 100, 64, &pages), std::vector<std::string>{"rare\0"s + "x"});
  EXPECT_GE(pages, store.slotCount() / 64 / 2);
}

TEST(BucketStore, ListCursorsRoundTripAndRefuseGarbage) {
  ListCursor c{42, "a\0\xff"s};
  EXPECT_EQ(c.token(), "42-6100ff");
  const auto back = ListCursor::parse(c.token());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->slot, 42u);
  EXPECT_EQ(back->after, "a\0\xff"s);
  EXPECT_EQ(ListCursor::parse("7")->after, std::nullopt);
  for (const char* bad : {"", "-", "x", "7-0", "7-zz", "7-AB", "-61", "99999999999999999999", "1 2"}) {
    EXPECT_FALSE(ListCursor::parse(bad)) << bad;
  }
  EXPECT_EQ(ListCursor::parse("7-")->after, "");  // the empty key
}

TEST(BucketStore, ListWithAKeyAfterWhichNothingRemainsEnds) {
  BucketStore store(100, 1);
  store.charge("k", Algorithm::TokenBucket, kTenPerSecond, 0, 1);
  const ListPage all = store.list("", ListCursor{}, ListLimits{10, 1000, 1000});
  ASSERT_EQ(all.entries.size(), 1u);
  EXPECT_FALSE(all.next);
  // Past the end of the table: an empty last page.
  const ListPage past = store.list("", ListCursor{store.slotCount() + 5, std::nullopt}, ListLimits{10, 1000, 1000});
  EXPECT_TRUE(past.entries.empty());
  EXPECT_FALSE(past.next);
}

TEST(BucketStore, AFullBucketIsNotStored) {
  BucketStore store(100);
  EXPECT_TRUE(store.charge("zero", Algorithm::TokenBucket, kTenPerSecond, 0, 0).allowed);
  EXPECT_FALSE(store.charge("huge", Algorithm::TokenBucket, kTenPerSecond, 0, 11).allowed);
  EXPECT_FALSE(store.charge("off", Algorithm::TokenBucket, {0, kSecond, 10}, 0, 1).allowed);
  EXPECT_EQ(store.stats().keys, 0u);
}

TEST(BucketStore, EraseAndErasePrefix) {
  BucketStore store(1000);
  for (int i = 0; i < 50; ++i) {
    store.charge("ip\0"s + std::to_string(i), Algorithm::TokenBucket, kTenPerSecond, 0, 1);
    store.charge("sender\0"s + std::to_string(i), Algorithm::TokenBucket, kTenPerSecond, 0, 1);
  }
  EXPECT_TRUE(store.erase("ip\0"s + "7"));
  EXPECT_FALSE(store.erase("ip\0"s + "7"));
  EXPECT_FALSE(store.erase("ip"));
  EXPECT_EQ(store.erasePrefix("ip\0"s), 49u);
  EXPECT_EQ(store.erasePrefix("ip\0"s), 0u);
  EXPECT_EQ(store.stats().keys, 50u);
  EXPECT_EQ(keysOf(store, "sender\0"s).size(), 50u);
  EXPECT_EQ(store.erasePrefix(""), 50u);
  EXPECT_EQ(store.stats().keys, 0u);
  EXPECT_EQ(store.stats().evictions, 0u);
  // An erased key starts over full.
  EXPECT_EQ(store.charge("sender\0"s + "3", Algorithm::TokenBucket, kTenPerSecond, 0, 1).remaining, 9);
}

TEST(BucketStore, ForEachVisitsMatchingKeysWithTheirState) {
  BucketStore store(1000, 16);
  for (int i = 0; i < 300; ++i) store.charge(key(i), Algorithm::FixedWindow, {100, kSecond, 0}, 0, 1 + i % 5);
  store.charge("other", Algorithm::FixedWindow, {100, kSecond, 0}, 0, 1);
  std::map<std::string, std::uint64_t> seen;
  store.forEach("rule\0"s, [&](std::string_view k, const BucketState& s) { seen[std::string(k)] = s.count; });
  ASSERT_EQ(seen.size(), 300u);
  for (int i = 0; i < 300; ++i) EXPECT_EQ(seen[key(i)], 1u + i % 5);
  EXPECT_EQ(keysOf(store).size(), 301u);
}

TEST(BucketStore, PeekReportsWithoutCharging) {
  BucketStore store(100);
  EXPECT_FALSE(store.peek("k", Algorithm::Gcra, kTenPerSecond, 0, 1));  // not held: full
  store.charge("k", Algorithm::Gcra, kTenPerSecond, 0, 4);
  for (int i = 0; i < 3; ++i) {
    auto o = store.peek("k", Algorithm::Gcra, kTenPerSecond, 0, 6);
    ASSERT_TRUE(o);
    EXPECT_TRUE(o->allowed);
    EXPECT_EQ(o->remaining, 0);
  }
  EXPECT_FALSE(store.peek("k", Algorithm::Gcra, kTenPerSecond, 0, 7)->allowed);
}

TEST(BucketStore, RefundGivesTokensBackAndIgnoresUnknownKeys) {
  BucketStore store(100);
  for (int i = 0; i < 10; ++i) store.charge("k", Algorithm::SlidingWindow, kTenPerSecond, 0, 1);
  EXPECT_FALSE(store.charge("k", Algorithm::SlidingWindow, kTenPerSecond, 0, 1).allowed);
  store.refund("k", Algorithm::SlidingWindow, kTenPerSecond, 0, 2);
  store.refund("unknown", Algorithm::SlidingWindow, kTenPerSecond, 0, 2);
  EXPECT_EQ(store.stats().keys, 1u);
  EXPECT_TRUE(store.charge("k", Algorithm::SlidingWindow, kTenPerSecond, 0, 2).allowed);
  EXPECT_FALSE(store.charge("k", Algorithm::SlidingWindow, kTenPerSecond, 0, 1).allowed);
}

TEST(BucketStore, ChangingAKeysAlgorithmStartsItFresh) {
  BucketStore store(100);
  for (int i = 0; i < 10; ++i) store.charge("k", Algorithm::FixedWindow, kTenPerSecond, 0, 1);
  EXPECT_FALSE(store.peek("k", Algorithm::TokenBucket, kTenPerSecond, 0, 1));
  store.refund("k", Algorithm::TokenBucket, kTenPerSecond, 0, 5);  // not its state: ignored
  EXPECT_EQ(store.charge("k", Algorithm::TokenBucket, kTenPerSecond, 0, 1).remaining, 9);
  EXPECT_EQ(store.stats().keys, 1u);
}

// The store is the pure algorithm plus a map: random operations on both agree.
TEST(BucketStore, AgreesWithThePureAlgorithmsOnRandomOperations) {
  std::mt19937_64 rng(11);
  BucketStore store(1'000'000, 8);
  std::map<std::string, BucketState> model;
  const Limit limit{7, 1000, 9};
  Nanos now = 0;
  for (int i = 0; i < 200'000; ++i) {
    now += static_cast<Nanos>(rng() % 100);
    const std::string k = key(static_cast<int>(rng() % 500));
    const std::uint64_t cost = rng() % 4;
    const Algorithm algo = Algorithm::TokenBucket;
    switch (rng() % 10) {
      case 0: {
        store.refund(k, algo, limit, now, cost);
        auto it = model.find(k);
        if (it != model.end()) refund(algo, limit, it->second, now, cost);
        break;
      }
      case 1:
        // The store may not hold a key the model has: one whose bucket stayed full.
        store.erase(k);
        model.erase(k);
        break;
      default: {
        const Outcome got = store.charge(k, algo, limit, now, cost);
        const Outcome want = charge(algo, limit, model[k], now, cost);
        ASSERT_EQ(got.allowed, want.allowed) << i;
        ASSERT_EQ(got.remaining, want.remaining) << i;
        ASSERT_EQ(got.retry_after_ns, want.retry_after_ns) << i;
      }
    }
    if (i % 10'000 == 0) store.expireIdle(now);
  }
}

}  // namespace
}  // namespace zetian::state
