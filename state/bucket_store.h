// The node's in-memory rate-limit state: a sharded hash map from key to bucket.
//
// Many libmilter threads call into it at once. Each shard has its own mutex and its
// own LRU list; a key always lives in the same shard (hash of the key), so one
// charge() takes exactly one lock and never blocks on other shards.
//
// Memory is bounded by `max_keys`: each shard holds at most ceil(max_keys / shards)
// entries and drops its least recently used one to make room. Idle keys (buckets
// that have refilled completely) are dropped by expireIdle(), called periodically.
// A key is stored only once its bucket differs from a fresh one, and a key charged
// with another algorithm than the one that wrote it starts fresh (a policy change).
// Keys are arbitrary bytes, hashed with a per-store random SipHash key (keys come
// from SMTP clients; see key_hash.h). The hash table is sized for max_keys at
// construction (8 to 16 bytes per key of address space, resident as it is touched);
// entries live in huge-page slab chunks (slab.h), about 104 bytes for a 26-byte key.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "state/key_hash.h"
#include "state/limit.h"

namespace zetian::state {

struct StoreStats {
  std::uint64_t keys = 0;
  std::uint64_t evictions = 0;   // live (not yet refilled) keys dropped because of max_keys
  std::uint64_t expirations = 0; // idle keys dropped, by expireIdle() or to make room
  std::uint64_t bytes = 0;       // entries with their keys (as allocated) and the hash arrays
};

// A bucket as the store holds it: the state and the algorithm that wrote it.
struct HeldBucket {
  Algorithm algorithm = Algorithm::TokenBucket;
  BucketState state;
};

// Where a paged listing resumes. The order is that of the hash slots (shard by shard,
// slot by slot) and, inside one slot, of the key bytes; it is stable for as long as
// the store lives (the hash key is per store). A key added behind the cursor while a
// listing pages through is missed, one dropped is not shown; none is shown twice.
struct ListCursor {
  std::uint64_t slot = 0;
  std::optional<std::string> after;  // resume in `slot` past this key; none: from its start

  // Text for a URL: "SLOT" or "SLOT-HEXKEY" (lower-case hex).
  std::string token() const;
  // nullopt if `text` is not a token() (the caller answers with an error).
  static std::optional<ListCursor> parse(std::string_view text);
};

// What one list() call may do: it stops at whichever bound it reaches first.
struct ListLimits {
  std::size_t max_entries = 100;     // keys returned
  std::size_t max_slots = 1 << 18;   // hash slots visited (empty ones cost a pointer read)
  std::size_t max_examined = 8192;   // keys looked at, matching or not (each a cache miss)
};

struct ListPage {
  std::vector<std::pair<std::string, HeldBucket>> entries;
  std::optional<ListCursor> next;  // where the next page starts; nullopt: the listing is complete
};

struct ExpiryProgress {
  std::size_t expired = 0;        // keys dropped by this call
  std::size_t slots_visited = 0;  // hash slots looked at (an empty shard counts as one)
  bool pass_complete = false;     // this call reached the end of the table (the next starts over)
};

class BucketStore {
 public:
  explicit BucketStore(std::size_t max_keys, std::size_t shard_count = 64);
  ~BucketStore();
  BucketStore(const BucketStore&) = delete;
  BucketStore& operator=(const BucketStore&) = delete;

  // Atomically check and charge `cost` on the bucket for `key`, creating it if needed.
  Outcome charge(std::string_view key, Algorithm algo, const Limit& limit, Nanos now, std::uint64_t cost);

  // Undo an earlier successful charge of `cost` (no-op if the key is gone).
  void refund(std::string_view key, Algorithm algo, const Limit& limit, Nanos now, std::uint64_t cost);

  // What charge(cost) would answer, without changing the bucket; nullopt if the key
  // is not held (it is then full).
  std::optional<Outcome> peek(std::string_view key, Algorithm algo, const Limit& limit, Nanos now,
                              std::uint64_t cost) const;

  // Replace or merge a key's state with one from another node (replication, hand-off),
  // under the shard lock: the held state and `incoming` are merged with mergeBuckets()
  // (transfer.h: the more consumed at `now` wins; a held state of another algorithm is
  // replaced, a policy change); the idle time is recomputed; a result equal to a fresh
  // bucket (idle at `now`) is not stored, and a held key whose result is fresh is dropped
  // (counted as an expiration). Storing a new key may evict the shard's least recently
  // used one, as charge() does; a merged key becomes the most recently used. Returns
  // whether the key is held afterwards.
  bool merge(std::string_view key, Algorithm algo, const Limit& limit, const BucketState& incoming, Nanos now);

  // Replace unconditionally (a hand-off from the authoritative owner): same rules otherwise.
  bool assign(std::string_view key, Algorithm algo, const Limit& limit, const BucketState& state, Nanos now);

  // Forget a key (an admin reset). Returns whether it was held.
  bool erase(std::string_view key);

  // Forget every key starting with `prefix`. Returns how many.
  std::size_t erasePrefix(std::string_view prefix);

  // Visit every key starting with `prefix` with a copy of its state. Takes each shard
  // lock in turn; the callback must not call back into the store. Its cost grows with
  // max_keys: not for the loop thread (find() and list() are).
  void forEach(std::string_view prefix,
               const std::function<void(std::string_view key, const BucketState& state)>& visit) const;

  // One key, from its own shard under that shard's lock: O(1). nullopt if not held.
  std::optional<HeldBucket> find(std::string_view key) const;

  // Keys starting with `prefix`, from `from` on, within `limits` (so a page costs
  // the same whatever max_keys is, even when few keys match); `next` says where to go
  // on. A page may hold fewer entries than asked, even none, and still have a `next`.
  // Holds one shard lock at a time, for at most a small batch of slots.
  ListPage list(std::string_view prefix, const ListCursor& from, const ListLimits& limits) const;

  // Incremental expiry: drops idle keys (buckets full again since before `now`) in the
  // next `max_slots` hash slots after where the previous call stopped, wrapping at the
  // end of the table. Cost per call is bounded by max_slots (plus the keys in those
  // slots), never by max_keys; one full pass takes ceil(slotCount() / max_slots) calls,
  // so with one call per tick an idle key is freed at most idle time + that many ticks
  // after it went idle. A shard holding no key is skipped as one slot. Calls are
  // serialised (one cursor).
  ExpiryProgress expireIdleStep(Nanos now, std::size_t max_slots);

  // Drops every idle key in one full pass over the table: cost grows with max_keys;
  // for tests and tools, not for the loop thread (use expireIdleStep there).
  std::size_t expireIdle(Nanos now);

  // The hash slots of all shards: what a full expiry pass or an unfiltered listing
  // visits.
  std::uint64_t slotCount() const;

  StoreStats stats() const;
  std::size_t maxKeys() const { return max_keys_; }
  // The shards in use: shard_count, clamped to [1, min(max_keys, 65536)].
  std::size_t shardCount() const { return shard_count_; }

 private:
  struct Memory;
  struct Shard;
  std::uint64_t hashOf(std::string_view key) const;
  Shard& shardFor(std::uint64_t hash) const;
  // merge() (with_held) and assign().
  bool store(std::string_view key, Algorithm algo, const Limit& limit, const BucketState& incoming, Nanos now,
             bool with_held);

  std::size_t max_keys_;
  std::size_t shard_count_;
  HashKey hash_key_;  // random per store, immutable
  std::unique_ptr<Memory> memory_;  // before shards_: destroyed after them
  std::unique_ptr<Shard[]> shards_;
  mutable std::mutex expiry_mu_;    // guards expiry_cursor_
  std::uint64_t expiry_cursor_ = 0;  // the next slot expireIdleStep() visits
};

}  // namespace zetian::state
