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
#include <optional>
#include <string>
#include <string_view>

#include "state/key_hash.h"
#include "state/limit.h"

namespace zetian::state {

struct StoreStats {
  std::uint64_t keys = 0;
  std::uint64_t evictions = 0;   // live (not yet refilled) keys dropped because of max_keys
  std::uint64_t expirations = 0; // idle keys dropped, by expireIdle() or to make room
  std::uint64_t bytes = 0;       // entries with their keys (as allocated) and the hash arrays
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

  // Forget a key (an admin reset). Returns whether it was held.
  bool erase(std::string_view key);

  // Forget every key starting with `prefix`. Returns how many.
  std::size_t erasePrefix(std::string_view prefix);

  // Visit every key starting with `prefix` with a copy of its state. Takes each shard
  // lock in turn; the callback must not call back into the store.
  void forEach(std::string_view prefix,
               const std::function<void(std::string_view key, const BucketState& state)>& visit) const;

  // Drop keys whose bucket has been idle (full again) since before `now`.
  std::size_t expireIdle(Nanos now);

  StoreStats stats() const;
  std::size_t maxKeys() const { return max_keys_; }
  // The shards in use: shard_count, clamped to [1, min(max_keys, 65536)].
  std::size_t shardCount() const { return shard_count_; }

 private:
  struct Memory;
  struct Shard;
  std::uint64_t hashOf(std::string_view key) const;
  Shard& shardFor(std::uint64_t hash) const;

  std::size_t max_keys_;
  std::size_t shard_count_;
  HashKey hash_key_;  // random per store, immutable
  std::unique_ptr<Memory> memory_;  // before shards_: destroyed after them
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace zetian::state
