#include "cluster/limits/lease.h"

#include <algorithm>
#include <deque>
#include <functional>
#include <limits>
#include <list>
#include <mutex>
#include <random>
#include <unordered_map>
#include <utility>

namespace zetian::cluster::limits {

namespace {

constexpr std::uint64_t kMaxU64 = std::numeric_limits<std::uint64_t>::max();

std::uint64_t addSaturating(std::uint64_t a, std::uint64_t b) { return b > kMaxU64 - a ? kMaxU64 : a + b; }

// A whole number of tokens from an Outcome's `remaining` (already whole, as a double).
std::uint64_t wholeTokens(double remaining) {
  if (!(remaining > 0)) return 0;
  if (remaining >= static_cast<double>(state::kMaxCount)) return state::kMaxCount;
  return static_cast<std::uint64_t>(remaining);
}

// Time differences that cannot overflow: `now` comes from the caller and a clock that
// went backwards only makes a lease look recently used.
Nanos elapsed(Nanos now, Nanos since) {
  if (now <= since) return 0;
  const auto diff = static_cast<std::uint64_t>(now) - static_cast<std::uint64_t>(since);
  return diff > static_cast<std::uint64_t>(std::numeric_limits<Nanos>::max()) ? std::numeric_limits<Nanos>::max()
                                                                              : static_cast<Nanos>(diff);
}

// A grant that fails this many times in a row to charge what the bucket showed has lost
// to other charges each time; it gives up (0 tokens) and the node asks again later.
constexpr int kGrantAttempts = 4;

}  // namespace

std::uint64_t leaseCapacity(state::Algorithm algo, const state::Limit& limit) {
  if (limit.limit == 0 || limit.period_ns <= 0) return 0;
  const bool bucket = algo == state::Algorithm::TokenBucket || algo == state::Algorithm::Gcra;
  return std::min(bucket ? limit.burst : limit.limit, state::kMaxCount);
}

std::uint64_t maxLease(std::uint64_t capacity, std::size_t members) {
  const std::uint64_t shares = 2 * static_cast<std::uint64_t>(std::max<std::size_t>(members, 1));
  return std::max<std::uint64_t>(1, capacity / shares);
}

std::uint64_t leaseWant(std::uint64_t demand, Nanos over, Nanos sync_interval, std::uint64_t max_lease) {
  const std::uint64_t cap = std::max<std::uint64_t>(max_lease, 1);
  const Nanos sync = std::max<Nanos>(sync_interval, 1);
  const Nanos window = std::max(over, sync);
  // demand is capped so that 2 × demand × sync stays below 2^128; the cap is far above
  // any max_lease, so the clamp below gives the same answer.
  const unsigned __int128 numerator =
      static_cast<unsigned __int128>(2 * std::min<std::uint64_t>(demand, std::uint64_t{1} << 62)) *
      static_cast<std::uint64_t>(sync);
  const unsigned __int128 want = (numerator + static_cast<std::uint64_t>(window) - 1) / static_cast<std::uint64_t>(window);
  if (want < 1) return 1;
  return want >= cap ? cap : static_cast<std::uint64_t>(want);
}

std::uint64_t grantFrom(state::BucketStore& store, std::string_view key, state::Algorithm algo,
                        const state::Limit& limit, std::uint64_t want, Nanos now) {
  if (want == 0) return 0;
  const std::optional<state::Outcome> held = store.peek(key, algo, limit, now, 0);
  std::uint64_t available =
      wholeTokens(held ? held->remaining : state::peek(algo, limit, state::BucketState{}, now, 0).remaining);
  std::uint64_t ask = std::min(want, available);
  for (int attempt = 0; attempt < kGrantAttempts && ask > 0; ++attempt) {
    const state::Outcome outcome = store.charge(key, algo, limit, now, ask);
    if (outcome.allowed) return ask;
    // Someone charged in between: take what is left now, and always less than before so
    // that the attempts make progress.
    ask = std::min(ask - 1, wholeTokens(outcome.remaining));
  }
  return 0;
}

struct LeaseTable::Entry {
  std::string key;
  std::string owner;                // who charged `tokens`
  std::uint64_t tokens = 0;         // unused
  std::uint64_t max_lease = 1;      // the bound at the last grant or ask
  Nanos last_use = 0;               // last check (allowed or not), or the grant that created it
  Nanos window_start = 0;           // demand is counted from here
  std::uint64_t demand = 0;         // units checked since window_start
  Nanos asked_at = 0;               // when the awaited top-up was asked
  bool awaiting = false;            // a top-up is on its way
};

namespace {
struct KeyHasher {
  state::HashKey key;
  std::size_t operator()(std::string_view text) const { return state::sipHash13(key, text); }
};
}  // namespace

struct LeaseTable::Shard {
  using Lru = std::list<Entry>;  // front: most recently used
  std::mutex mu;
  // All below guarded by mu. The index's keys view the Entry::key of their list node
  // (list nodes never move, so the views stay valid until the node is erased).
  Lru lru;
  std::unordered_map<std::string_view, Lru::iterator, KeyHasher, std::equal_to<>> index;
  std::deque<LeaseReturn> queued;   // returns waiting for the next due(); at most per_shard
  LeaseStats counters;              // every field but leases and tokens_held

  Lru::iterator find(std::string_view key) {
    auto it = index.find(key);
    return it == index.end() ? lru.end() : it->second;
  }
  void touch(Lru::iterator it) { lru.splice(lru.begin(), lru, it); }
  void erase(Lru::iterator it) {
    index.erase(std::string_view{it->key});
    lru.erase(it);
  }
  void queue(std::string owner, std::string key, std::uint64_t tokens, std::size_t bound) {
    if (tokens == 0) return;
    if (queued.size() >= bound) {
      // The oldest queued return is given up: its tokens stay charged at the owner until
      // they refill (under-admission, never more).
      counters.dropped = addSaturating(counters.dropped, queued.front().tokens);
      counters.returned -= std::min(counters.returned, queued.front().tokens);
      queued.pop_front();
    }
    counters.returned = addSaturating(counters.returned, tokens);
    queued.push_back(LeaseReturn{std::move(key), std::move(owner), tokens});
  }
  // Adds tokens to a lease, up to its max_lease; the surplus (two grants that crossed,
  // a cost given back after a top-up, a max_lease that shrank) is queued for return, so
  // that no lease ever holds more than max_lease.
  void fill(Entry& e, std::uint64_t tokens, std::size_t bound) {
    const std::uint64_t total = addSaturating(e.tokens, tokens);
    const std::uint64_t kept = std::min(total, e.max_lease);
    queue(e.owner, e.key, total - kept, bound);
    e.tokens = kept;
  }
  // A new entry at the front; a full shard first evicts its least recently used one.
  Lru::iterator insert(std::string_view key, std::string_view owner, Nanos now, std::size_t bound) {
    if (index.size() >= bound && !lru.empty()) {
      auto victim = std::prev(lru.end());
      ++counters.evicted;
      index.erase(std::string_view{victim->key});  // before the key is moved out
      queue(std::move(victim->owner), std::move(victim->key), victim->tokens, bound);
      lru.erase(victim);
    }
    lru.push_front(Entry{});
    auto it = lru.begin();
    it->key.assign(key);
    it->owner.assign(owner);
    it->last_use = now;
    it->window_start = now;
    index.emplace(std::string_view{it->key}, it);
    return it;
  }
};

LeaseTable::LeaseTable(std::size_t max_entries, std::size_t shard_count)
    : max_entries_(std::max<std::size_t>(max_entries, 1)),
      shard_count_(std::clamp<std::size_t>(shard_count, 1, max_entries_)),
      per_shard_((max_entries_ + shard_count_ - 1) / shard_count_) {
  std::random_device random;
  hash_key_.k0 = (std::uint64_t{random()} << 32) ^ random();
  hash_key_.k1 = (std::uint64_t{random()} << 32) ^ random();
  shards_ = std::make_unique<Shard[]>(shard_count_);
  for (std::size_t i = 0; i < shard_count_; ++i)
    shards_[i].index = decltype(Shard::index)(16, KeyHasher{hash_key_});
}

LeaseTable::~LeaseTable() = default;

LeaseTable::Shard& LeaseTable::shardFor(std::string_view key) const {
  // The high half picks the shard; the map inside uses the whole hash modulo a prime.
  return shards_[(state::sipHash13(hash_key_, key) >> 32) % shard_count_];
}

bool LeaseTable::tryConsume(std::string_view key, std::uint64_t cost, Nanos now) {
  Shard& shard = shardFor(key);
  std::lock_guard lock(shard.mu);
  auto it = shard.find(key);
  if (it == shard.lru.end()) return false;
  it->demand = addSaturating(it->demand, cost);
  it->last_use = std::max(it->last_use, now);
  shard.touch(it);
  if (it->tokens < cost) return false;
  it->tokens -= cost;
  shard.counters.consumed = addSaturating(shard.counters.consumed, cost);
  return true;
}

void LeaseTable::giveBack(std::string_view key, std::uint64_t cost) {
  Shard& shard = shardFor(key);
  std::lock_guard lock(shard.mu);
  auto it = shard.find(key);
  if (it == shard.lru.end()) return;
  shard.counters.consumed -= std::min(shard.counters.consumed, cost);
  shard.fill(*it, cost, per_shard_);
}

std::uint64_t LeaseTable::topUpWant(std::string_view key, std::string_view owner, std::uint64_t cost, Nanos now,
                                    Nanos sync_interval, std::uint64_t max_lease) {
  const Nanos sync = std::max<Nanos>(sync_interval, 1);
  Shard& shard = shardFor(key);
  std::lock_guard lock(shard.mu);
  auto it = shard.find(key);
  if (it == shard.lru.end()) {
    // A first miss only starts counting (tryConsume() did not count it: no lease). The
    // key earns a lease with a second check within one sync_interval; a key checked
    // less often would have its lease returned unused before the next check, a grant
    // and a return for nothing.
    it = shard.insert(key, owner, now, per_shard_);
    it->demand = cost;
    it->max_lease = std::max<std::uint64_t>(max_lease, 1);
    return 0;
  } else {
    if (it->owner != owner) {
      // The key moved: what the old owner charged goes back to it.
      shard.queue(std::exchange(it->owner, std::string{owner}), it->key, std::exchange(it->tokens, 0), per_shard_);
      it->awaiting = false;
    }
    if (it->awaiting && elapsed(now, it->asked_at) < sync) return 0;
  }
  it->max_lease = std::max<std::uint64_t>(max_lease, 1);
  const std::uint64_t want = leaseWant(it->demand, elapsed(now, it->window_start), sync, it->max_lease);
  if (want <= it->tokens) return 0;
  it->awaiting = true;
  it->asked_at = now;
  return want - it->tokens;
}

void LeaseTable::grant(std::string_view key, std::string_view owner, std::uint64_t tokens, std::uint64_t max_lease,
                       Nanos now) {
  Shard& shard = shardFor(key);
  std::lock_guard lock(shard.mu);
  auto it = shard.find(key);
  if (it == shard.lru.end()) {
    if (tokens == 0) return;
    // A fresh lease counts as used now: it is returned one sync_interval later if no
    // check comes.
    it = shard.insert(key, owner, now, per_shard_);
  } else if (it->owner != owner) {
    shard.queue(std::exchange(it->owner, std::string{owner}), it->key, std::exchange(it->tokens, 0), per_shard_);
  }
  it->max_lease = std::max<std::uint64_t>(max_lease, 1);
  it->awaiting = false;
  shard.counters.granted = addSaturating(shard.counters.granted, tokens);
  shard.fill(*it, tokens, per_shard_);
}

LeaseDue LeaseTable::due(Nanos now, Nanos sync_interval) {
  constexpr Nanos kIdleIntervals = 2;
  const Nanos sync = std::max<Nanos>(sync_interval, 1);
  LeaseDue out;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    for (LeaseReturn& queued : shard.queued) out.returns.push_back(std::move(queued));
    shard.queued.clear();
    for (auto it = shard.lru.begin(); it != shard.lru.end();) {
      Entry& e = *it;
      // Idle for two sync_intervals, not one: a key checked about once per interval
      // would otherwise lose its lease just before each check and pay a round trip.
      if (elapsed(now, e.last_use) >= kIdleIntervals * sync) {
        if (e.tokens > 0) {
          shard.counters.returned = addSaturating(shard.counters.returned, e.tokens);
          out.returns.push_back(LeaseReturn{e.key, e.owner, e.tokens});
        }
        auto next = std::next(it);
        shard.erase(it);
        it = next;
        continue;
      }
      const Nanos window = elapsed(now, e.window_start);
      if (window >= sync) {
        const std::uint64_t want = leaseWant(e.demand, window, sync, e.max_lease);
        e.window_start = now;
        e.demand = 0;
        if (e.tokens > want) {
          const std::uint64_t excess = e.tokens - want;
          e.tokens = want;
          shard.counters.returned = addSaturating(shard.counters.returned, excess);
          out.returns.push_back(LeaseReturn{e.key, e.owner, excess});
        } else if (e.tokens < want && !(e.awaiting && elapsed(now, e.asked_at) < sync)) {
          e.awaiting = true;
          e.asked_at = now;
          out.top_ups.push_back(LeaseTopUp{e.key, e.owner, want - e.tokens});
        }
      }
      ++it;
    }
  }
  return out;
}

std::vector<LeaseReturn> LeaseTable::dropOwner(std::string_view owner, OwnerFate fate) {
  std::vector<LeaseReturn> out;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    auto keep = std::remove_if(shard.queued.begin(), shard.queued.end(), [&](LeaseReturn& r) {
      if (r.owner != owner) return false;
      if (fate == OwnerFate::Moved) {
        out.push_back(std::move(r));
      } else {
        shard.counters.dropped = addSaturating(shard.counters.dropped, r.tokens);
        shard.counters.returned -= std::min(shard.counters.returned, r.tokens);
      }
      return true;
    });
    shard.queued.erase(keep, shard.queued.end());
    for (auto it = shard.lru.begin(); it != shard.lru.end();) {
      if (it->owner != owner) {
        ++it;
        continue;
      }
      if (it->tokens > 0) {
        if (fate == OwnerFate::Moved) {
          shard.counters.returned = addSaturating(shard.counters.returned, it->tokens);
          out.push_back(LeaseReturn{it->key, it->owner, it->tokens});
        } else {
          shard.counters.dropped = addSaturating(shard.counters.dropped, it->tokens);
        }
      }
      auto next = std::next(it);
      shard.erase(it);
      it = next;
    }
  }
  return out;
}

LeaseStats LeaseTable::stats() const {
  LeaseStats total;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    total.leases += shard.lru.size();
    for (const Entry& e : shard.lru) total.tokens_held = addSaturating(total.tokens_held, e.tokens);
    total.consumed = addSaturating(total.consumed, shard.counters.consumed);
    total.granted = addSaturating(total.granted, shard.counters.granted);
    total.returned = addSaturating(total.returned, shard.counters.returned);
    total.dropped = addSaturating(total.dropped, shard.counters.dropped);
    total.evicted = addSaturating(total.evicted, shard.counters.evicted);
  }
  return total;
}

}  // namespace zetian::cluster::limits
