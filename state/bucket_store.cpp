// The sharded bucket store.
//
// Layout, chosen for memory per key and for cache/TLB misses per charge (both measured
// in docs/BENCHMARKS.md, against a std::list + std::unordered_map layout):
// - One slot per key: a 64-byte Entry header followed by the key bytes, carved from
//   huge-page chunks by the shard's Slab (slab.h). The entry is its own hash-chain node
//   and its own LRU node (intrusive links): no std::string, no map node, no list node.
// - Each shard has a power-of-two array of chain heads, sized once for the shard's
//   capacity (load factor <= 1, so it never rehashes), and a circular doubly linked
//   LRU list through a sentinel (sentinel.next = most recent). All the shards' arrays
//   share one zero-filled huge-page mapping; its pages become resident as they are
//   first touched.
// - The hash is not stored: chains are short, and a chain walk compares lengths before
//   bytes. Eviction recomputes the victim's hash to find its chain.
// Shards pick the high 32 bits of the hash, buckets the low bits, so the two are
// independent.
//
// Locking: every Shard member is guarded by Shard::mu, except `hash_key` (a copy of
// the store's) and the bucket array's address and size, which are set before the store
// is shared and never change. One charge() takes one shard lock. Sweeps (expireIdle,
// erasePrefix), list() and expireIdleStep() release the lock every kSweepBatch
// buckets, so a scan never stalls the milter threads of that shard for long; forEach
// holds it for a whole shard.
//
// Slots are numbered across shards (shard * bucket_count + bucket; every shard has the
// same bucket_count): the expiry cursor and list cursors are such numbers.
#include "state/bucket_store.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <random>
#include <stdexcept>

#include "state/key_hash.h"
#include "state/slab.h"
#include "state/transfer.h"

namespace zetian::state {
namespace {

constexpr std::size_t kSweepBatch = 256;
constexpr std::size_t kMaxShards = std::size_t{1} << 16;
// Beyond 2^25 chain heads (256 MiB of table), chains grow longer instead.
constexpr std::size_t kMaxTableSlots = std::size_t{1} << 25;

struct LruLink {
  LruLink* prev = this;
  LruLink* next = this;

  void unlink() {
    prev->next = next;
    next->prev = prev;
  }
  void insertAfter(LruLink* at) {
    prev = at;
    next = at->next;
    at->next->prev = this;
    at->next = this;
  }
};

// The key bytes follow the header in the same allocation.
struct Entry : LruLink {
  Entry* chain_next = nullptr;
  double level = 0;
  std::uint64_t count = 0;
  Nanos stamp = 0;
  Nanos idle_at = 0;  // idleAt() of the state, as of the last change
  std::uint32_t key_len = 0;
  Algorithm algo = Algorithm::TokenBucket;
  bool initialised = false;

  static Entry* create(Slab& slab, std::string_view key) {
    if (key.size() > std::numeric_limits<std::uint32_t>::max()) throw std::length_error("bucket store key too long");
    Entry* e = new (slab.allocate(sizeof(Entry) + key.size())) Entry;
    e->key_len = static_cast<std::uint32_t>(key.size());
    if (!key.empty()) std::memcpy(e + 1, key.data(), key.size());
    return e;
  }
  static void destroy(Slab& slab, Entry* e) {
    const std::size_t bytes = sizeof(Entry) + e->key_len;
    e->~Entry();
    slab.release(e, bytes);
  }

  std::string_view key() const { return {reinterpret_cast<const char*>(this + 1), key_len}; }
  BucketState state() const { return BucketState{level, count, stamp, initialised}; }
  // The state `algo` sees: a bucket written by another algorithm (the rule changed
  // algorithm in a policy update) means nothing to it, so it starts fresh.
  BucketState stateFor(Algorithm a) const { return a == algo ? state() : BucketState{}; }
  void assign(Algorithm a, const BucketState& s, Nanos idle) {
    algo = a;
    level = s.level;
    count = s.count;
    stamp = s.stamp;
    initialised = s.initialised;
    idle_at = idle;
  }
};
static_assert(sizeof(Entry) == 64, "an entry header should stay one cache line");

std::size_t entryBytes(const Entry& e) { return Slab::footprint(sizeof(Entry) + e.key_len); }

// Chain heads per shard: a power of two >= the shard's capacity, within the cap.
std::size_t tableSlots(std::size_t capacity, std::size_t shards) {
  const std::size_t wanted = std::bit_ceil(std::max<std::size_t>(capacity, 8));
  return std::min(wanted, std::bit_floor(std::max<std::size_t>(kMaxTableSlots / shards, 8)));
}

// Slab blocks: big enough to amortise the ChunkSource lock, small enough that a small
// store does not reserve much per shard.
std::size_t blockBytes(std::size_t capacity) {
  return std::clamp<std::size_t>(std::bit_ceil(std::min<std::size_t>(capacity, 4096) * 96), 4096, 65536);
}

}  // namespace

// The memory shared by all shards; outlives them (declared before shards_).
struct BucketStore::Memory {
  HugePageMapping table;  // every shard's chain heads, zero-filled (null pointers)
  ChunkSource chunks;
  Memory(std::size_t table_bytes, std::size_t block_bytes) : table(table_bytes), chunks(block_bytes) {}
};

struct alignas(64) BucketStore::Shard {
  mutable std::mutex mu;
  HashKey hash_key;               // immutable after construction
  Entry** buckets = nullptr;      // chain heads, in Memory::table; address immutable
  std::size_t bucket_count = 0;   // a power of two; immutable
  Slab slab;
  LruLink lru;                    // sentinel: lru.next most recent, lru.prev least recent
  std::size_t size = 0;
  std::size_t capacity = 1;
  std::uint64_t bytes = 0;        // entries and key bytes, not the bucket array
  std::uint64_t evictions = 0;
  std::uint64_t expirations = 0;

  ~Shard() {
    for (std::size_t i = 0; i < bucket_count; ++i) {
      for (Entry* e = buckets[i]; e;) {
        Entry* next = e->chain_next;
        Entry::destroy(slab, e);
        e = next;
      }
    }
  }

  std::uint64_t hashOf(std::string_view key) const { return sipHash13(hash_key, key); }
  Entry*& head(std::uint64_t hash) { return buckets[hash & (bucket_count - 1)]; }

  // The link that points at the entry for `key` (null if none): lets the caller unlink.
  Entry** findLink(std::uint64_t hash, std::string_view key) {
    Entry** link = &head(hash);
    while (*link && (*link)->key() != key) link = &(*link)->chain_next;
    return link;
  }
  Entry* find(std::uint64_t hash, std::string_view key) { return *findLink(hash, key); }

  void touch(Entry* e) {
    if (lru.next == e) return;
    e->unlink();
    e->insertAfter(&lru);
  }

  // Unlinks `e` (which `link` points at) from its chain and the LRU list and frees it.
  void drop(Entry** link) {
    Entry* e = *link;
    *link = e->chain_next;
    e->unlink();
    bytes -= entryBytes(*e);
    --size;
    Entry::destroy(slab, e);
  }

  // Makes room for one entry by dropping the least recently used one. A bucket that
  // has refilled anyway counts as an expiration: only live state lost to the memory
  // bound counts as an eviction.
  void evictLeastRecent(Nanos now) {
    Entry* victim = static_cast<Entry*>(lru.prev);
    if (victim->idle_at <= now)
      ++expirations;
    else
      ++evictions;
    Entry** link = &head(hashOf(victim->key()));
    while (*link != victim) link = &(*link)->chain_next;
    drop(link);
  }

  void insert(std::uint64_t hash, std::string_view key, Algorithm algo, const BucketState& s, Nanos idle,
              Nanos now) {
    if (size >= capacity) evictLeastRecent(now);
    Entry* e = Entry::create(slab, key);
    e->assign(algo, s, idle);
    Entry*& h = head(hash);
    e->chain_next = h;
    h = e;
    e->insertAfter(&lru);
    bytes += entryBytes(*e);
    ++size;
  }

  // Drops every entry for which `doomed` holds, kSweepBatch buckets per lock hold.
  // An entry never changes bucket, so resuming at the next index misses nothing that
  // was there when the sweep started.
  template <class Predicate>
  std::size_t sweep(const Predicate& doomed) {
    std::size_t dropped = 0;
    for (std::size_t begin = 0; begin < bucket_count; begin += kSweepBatch) {
      std::lock_guard lock(mu);
      const std::size_t end = std::min(begin + kSweepBatch, bucket_count);
      for (std::size_t i = begin; i < end; ++i) {
        Entry** link = &buckets[i];
        while (*link) {
          if (doomed(**link)) {
            drop(link);
            ++dropped;
          } else {
            link = &(*link)->chain_next;
          }
        }
      }
    }
    return dropped;
  }
};

BucketStore::BucketStore(std::size_t max_keys, std::size_t shard_count) : max_keys_(max_keys) {
  // Never more shards than keys: each shard holds at least one, and the total bound
  // ceil(max_keys / shards) * shards stays below max_keys + shards.
  const std::size_t keys = std::max<std::size_t>(max_keys, 1);
  shard_count_ = std::clamp<std::size_t>(shard_count, 1, std::min(keys, kMaxShards));
  const std::size_t per_shard = keys / shard_count_ + (keys % shard_count_ != 0);
  const std::size_t slots = tableSlots(per_shard, shard_count_);
  memory_ = std::make_unique<Memory>(shard_count_ * slots * sizeof(Entry*), blockBytes(per_shard));
  shards_ = std::make_unique<Shard[]>(shard_count_);
  std::random_device random;
  hash_key_.k0 = (std::uint64_t{random()} << 32) ^ random();
  hash_key_.k1 = (std::uint64_t{random()} << 32) ^ random();
  // Fresh anonymous memory reads as zero bytes, which is a null Entry* on every
  // platform this builds for: the chain heads start empty without touching a page.
  Entry** table = static_cast<Entry**>(memory_->table.data());
  for (std::size_t i = 0; i < shard_count_; ++i) {
    Shard& shard = shards_[i];
    shard.hash_key = hash_key_;
    shard.capacity = per_shard;
    shard.buckets = table + i * slots;
    shard.bucket_count = slots;
    shard.slab.useSource(memory_->chunks);
  }
}

BucketStore::~BucketStore() = default;

std::uint64_t BucketStore::hashOf(std::string_view key) const { return sipHash13(hash_key_, key); }

BucketStore::Shard& BucketStore::shardFor(std::uint64_t hash) const {
  return shards_[((hash >> 32) * shard_count_) >> 32];
}

Outcome BucketStore::charge(std::string_view key, Algorithm algo, const Limit& limit, Nanos now, std::uint64_t cost) {
  const std::uint64_t hash = hashOf(key);
  Shard& shard = shardFor(hash);
  // The chain head's address is fixed: start fetching it while taking the lock.
  __builtin_prefetch(&shard.head(hash));
  std::lock_guard lock(shard.mu);
  if (Entry* e = shard.find(hash, key)) {
    // The LRU neighbours are needed after the algorithm runs: fetch them meanwhile.
    __builtin_prefetch(e->prev, 1);
    __builtin_prefetch(e->next, 1);
    BucketState s = e->stateFor(algo);
    const Outcome outcome = state::charge(algo, limit, s, now, cost);
    e->assign(algo, s, idleAt(algo, limit, s));
    shard.touch(e);
    return outcome;
  }
  BucketState s;
  const Outcome outcome = state::charge(algo, limit, s, now, cost);
  // A bucket that is still full after the call (a denial, a zero cost) needs no entry.
  const Nanos idle = idleAt(algo, limit, s);
  if (idle > now) shard.insert(hash, key, algo, s, idle, now);
  return outcome;
}

void BucketStore::refund(std::string_view key, Algorithm algo, const Limit& limit, Nanos now, std::uint64_t cost) {
  const std::uint64_t hash = hashOf(key);
  Shard& shard = shardFor(hash);
  std::lock_guard lock(shard.mu);
  Entry* e = shard.find(hash, key);
  if (!e || e->algo != algo) return;
  BucketState s = e->state();
  state::refund(algo, limit, s, now, cost);
  e->assign(algo, s, idleAt(algo, limit, s));
}

std::optional<Outcome> BucketStore::peek(std::string_view key, Algorithm algo, const Limit& limit, Nanos now,
                                         std::uint64_t cost) const {
  const std::uint64_t hash = hashOf(key);
  Shard& shard = shardFor(hash);
  BucketState s;
  {
    std::lock_guard lock(shard.mu);
    const Entry* e = shard.find(hash, key);
    if (!e || e->algo != algo) return std::nullopt;
    s = e->state();
  }
  return state::peek(algo, limit, s, now, cost);
}

bool BucketStore::store(std::string_view key, Algorithm algo, const Limit& limit, const BucketState& incoming,
                        Nanos now, bool with_held) {
  const std::uint64_t hash = hashOf(key);
  Shard& shard = shardFor(hash);
  std::lock_guard lock(shard.mu);
  Entry** link = shard.findLink(hash, key);
  Entry* e = *link;
  const BucketState result =
      with_held && e && e->algo == algo ? mergeBuckets(algo, limit, e->state(), incoming, now) : incoming;
  const Nanos idle = idleAt(algo, limit, result);
  if (idle <= now) {
    if (!e) return false;
    shard.drop(link);
    ++shard.expirations;
    return false;
  }
  if (e) {
    e->assign(algo, result, idle);
    shard.touch(e);
  } else {
    shard.insert(hash, key, algo, result, idle, now);
  }
  return true;
}

bool BucketStore::merge(std::string_view key, Algorithm algo, const Limit& limit, const BucketState& incoming,
                        Nanos now) {
  return store(key, algo, limit, incoming, now, true);
}

bool BucketStore::assign(std::string_view key, Algorithm algo, const Limit& limit, const BucketState& state,
                         Nanos now) {
  return store(key, algo, limit, state, now, false);
}

bool BucketStore::erase(std::string_view key) {
  const std::uint64_t hash = hashOf(key);
  Shard& shard = shardFor(hash);
  std::lock_guard lock(shard.mu);
  Entry** link = shard.findLink(hash, key);
  if (!*link) return false;
  shard.drop(link);
  return true;
}

std::size_t BucketStore::erasePrefix(std::string_view prefix) {
  std::size_t erased = 0;
  for (std::size_t i = 0; i < shard_count_; ++i)
    erased += shards_[i].sweep([prefix](const Entry& e) { return e.key().starts_with(prefix); });
  return erased;
}

void BucketStore::forEach(std::string_view prefix,
                          const std::function<void(std::string_view key, const BucketState& state)>& visit) const {
  for (std::size_t i = 0; i < shard_count_; ++i) {
    Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    for (std::size_t b = 0; b < shard.bucket_count; ++b) {
      for (const Entry* e = shard.buckets[b]; e; e = e->chain_next) {
        if (e->key().starts_with(prefix)) visit(e->key(), e->state());
      }
    }
  }
}

std::string ListCursor::token() const {
  std::string out = std::to_string(slot);
  if (after) {
    static constexpr char kHex[] = "0123456789abcdef";
    out.push_back('-');
    for (const char c : *after) {
      out.push_back(kHex[static_cast<unsigned char>(c) >> 4]);
      out.push_back(kHex[static_cast<unsigned char>(c) & 0xf]);
    }
  }
  return out;
}

std::optional<ListCursor> ListCursor::parse(std::string_view text) {
  const std::size_t dash = text.find('-');
  const std::string_view number = text.substr(0, dash);
  if (number.empty() || number.size() > 19) return std::nullopt;
  ListCursor cursor;
  for (const char c : number) {
    if (c < '0' || c > '9') return std::nullopt;
    cursor.slot = cursor.slot * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (dash == std::string_view::npos) return cursor;
  const std::string_view hex = text.substr(dash + 1);
  if (hex.size() % 2 != 0) return std::nullopt;
  const auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string key;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = nibble(hex[i]);
    const int lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    key.push_back(static_cast<char>((hi << 4) | lo));
  }
  cursor.after = std::move(key);
  return cursor;
}

std::optional<HeldBucket> BucketStore::find(std::string_view key) const {
  const std::uint64_t hash = hashOf(key);
  Shard& shard = shardFor(hash);
  std::lock_guard lock(shard.mu);
  const Entry* e = shard.find(hash, key);
  if (!e) return std::nullopt;
  return HeldBucket{e->algo, e->state()};
}

std::uint64_t BucketStore::slotCount() const {
  return std::uint64_t{shard_count_} * shards_[0].bucket_count;
}

ListPage BucketStore::list(std::string_view prefix, const ListCursor& from, const ListLimits& limits) const {
  ListPage page;
  const std::uint64_t total = slotCount();
  const std::size_t per_shard = shards_[0].bucket_count;
  std::uint64_t slot = from.slot;
  std::optional<std::string> after = from.after;
  std::size_t visited = 0;
  std::size_t examined = 0;
  std::vector<const Entry*> in_slot;
  const std::size_t max_entries = std::max<std::size_t>(limits.max_entries, 1);
  const std::size_t max_slots = std::max<std::size_t>(limits.max_slots, 1);
  const std::size_t max_examined = std::max<std::size_t>(limits.max_examined, 1);
  while (slot < total) {
    Shard& shard = shards_[slot / per_shard];
    std::lock_guard lock(shard.mu);
    if (shard.size == 0) {
      // Nothing here now: the rest of the shard is one step.
      slot = (slot / per_shard + 1) * per_shard;
      after.reset();
      if (++visited >= max_slots && slot < total) page.next = ListCursor{slot, std::nullopt};
      if (page.next) return page;
      continue;
    }
    const std::size_t batch_end = std::min<std::size_t>(slot % per_shard + kSweepBatch, per_shard);
    for (std::size_t b = slot % per_shard; b < batch_end; ++b, ++slot) {
      if (visited++ >= max_slots || examined >= max_examined) {
        page.next = ListCursor{slot, std::nullopt};
        return page;
      }
      in_slot.clear();
      for (const Entry* e = shard.buckets[b]; e; e = e->chain_next) {
        ++examined;
        if (e->key().starts_with(prefix) && (!after || e->key() > *after)) in_slot.push_back(e);
      }
      after.reset();
      std::sort(in_slot.begin(), in_slot.end(), [](const Entry* x, const Entry* y) { return x->key() < y->key(); });
      for (std::size_t i = 0; i < in_slot.size(); ++i) {
        const Entry* e = in_slot[i];
        page.entries.emplace_back(std::string(e->key()), HeldBucket{e->algo, e->state()});
        if (page.entries.size() < max_entries) continue;
        if (i + 1 < in_slot.size()) {
          page.next = ListCursor{slot, std::string(e->key())};
        } else if (slot + 1 < total) {
          page.next = ListCursor{slot + 1, std::nullopt};
        }
        return page;
      }
    }
  }
  return page;
}

ExpiryProgress BucketStore::expireIdleStep(Nanos now, std::size_t max_slots) {
  std::lock_guard cursor_lock(expiry_mu_);
  ExpiryProgress progress;
  const std::uint64_t total = slotCount();
  const std::size_t per_shard = shards_[0].bucket_count;
  if (expiry_cursor_ >= total) expiry_cursor_ = 0;
  max_slots = std::max<std::size_t>(max_slots, 1);
  while (progress.slots_visited < max_slots) {
    Shard& shard = shards_[expiry_cursor_ / per_shard];
    std::lock_guard lock(shard.mu);
    std::size_t b = expiry_cursor_ % per_shard;
    if (shard.size == 0) {
      // An empty shard has nothing to expire: skip its table, which is sized for
      // max_keys (an idle node would otherwise walk millions of empty slots).
      expiry_cursor_ += per_shard - b;
      ++progress.slots_visited;
    } else {
      const std::size_t end = std::min<std::size_t>({b + kSweepBatch, per_shard, b + (max_slots - progress.slots_visited)});
      std::size_t dropped = 0;
      for (; b < end; ++b) {
        Entry** link = &shard.buckets[b];
        while (*link) {
          if ((*link)->idle_at <= now) {
            shard.drop(link);
            ++dropped;
          } else {
            link = &(*link)->chain_next;
          }
        }
      }
      progress.slots_visited += end - expiry_cursor_ % per_shard;
      expiry_cursor_ += end - expiry_cursor_ % per_shard;
      shard.expirations += dropped;
      progress.expired += dropped;
    }
    if (expiry_cursor_ >= total) {
      expiry_cursor_ = 0;
      progress.pass_complete = true;
      break;
    }
  }
  return progress;
}

std::size_t BucketStore::expireIdle(Nanos now) {
  std::size_t expired = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    Shard& shard = shards_[i];
    {
      // An empty shard has nothing to expire: skip its table, which is sized for
      // max_keys (an idle node would otherwise scan millions of empty slots a second).
      std::lock_guard lock(shard.mu);
      if (shard.size == 0) continue;
    }
    const std::size_t n = shard.sweep([now](const Entry& e) { return e.idle_at <= now; });
    std::lock_guard lock(shard.mu);
    shard.expirations += n;
    expired += n;
  }
  return expired;
}

StoreStats BucketStore::stats() const {
  StoreStats total;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    const Shard& shard = shards_[i];
    std::lock_guard lock(shard.mu);
    total.keys += shard.size;
    total.evictions += shard.evictions;
    total.expirations += shard.expirations;
    total.bytes += shard.bytes + shard.bucket_count * sizeof(Entry*);
  }
  return total;
}

}  // namespace zetian::state
