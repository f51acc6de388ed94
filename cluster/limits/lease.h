// Leases for `consistency = "fast"`: a node decides locally for a key owned elsewhere,
// from tokens the owner has already charged to its authoritative bucket on that node's
// behalf. Pure: no sockets, no clocks, no threads of its own; time is an argument.
//
// The protocol (the cluster thread drives it; this file is its state and arithmetic):
//   - A milter thread checking a fast-mode key owned by another node calls
//     LeaseTable::tryConsume(). Enough tokens in the lease: allowed, no round trip.
//     Otherwise the check goes to the owner as an exact check (an empty lease never
//     denies by itself), and the top-up that topUpWant() computes rides the same call.
//     A key earns a lease with its second miss within one sync_interval: a node that
//     checks a key less often would return the lease unused before the next check.
//   - The owner grants with grantFrom(): a partial charge of its bucket, as many tokens as
//     the bucket holds up to what was asked. Leased tokens are therefore already counted
//     in the authoritative bucket: a lease never creates tokens, it only moves the moment
//     they are charged earlier than the decision that uses them.
//   - Every sync_interval, due() lists per lease either a top-up (the lease is in use and
//     holds less than one sync_interval of demand, ×2) or a return of unused tokens (the
//     lease saw no check for two sync_intervals, or holds more than its demand now
//     needs). Returned tokens are refunded to the owner's bucket. dropOwner() ends the
//     leases of an owner that changed (returned) or failed (dropped: they were charged
//     there and the new owner's copy may not know it).
//
// Sizing: want = clamp(ceil(rate × sync_interval × 2), 1, max_lease), with rate the
// node's demand (every unit checked, allowed or not) over the last window of at least
// one sync_interval, and max_lease = max(1, capacity / (2 × members)) (capacity: burst
// for token_bucket/gcra, limit for the windows). The factor 2 covers a sync that comes
// late or demand that grows within the window; max_lease keeps the leases of all nodes
// together to about half the capacity at most, so unused leased tokens cannot starve
// the others of more than about half the bucket.
//
// The bound (docs/limiter.md, "Fast mode (leases)"). Let A(I) be the most the rule's
// bucket can admit over an interval I in exact mode (token_bucket, gcra:
// burst + limit × |I| / period; windows: limit per window I touches).
//   (1) No owner failure: every token a node consumes from a lease was charged to the
//       owner's bucket before, and every unused one goes back. Over the life of a key
//       (from a fresh bucket, or any moment no lease is outstanding), admitted ≤ A(I):
//       fast never admits more than exact. Over an interval starting at a moment `a`
//       when leases are outstanding, admitted ≤ A(I) + the tokens held in leases at `a`
//       (≤ Σ over nodes of max_lease, and in practice about 2 × sync_interval of demand,
//       since due() trims every lease to its demand).
//   (2) Owner failure: the new owner serves the key from the replica's copy, which lacks
//       what the old owner charged since its last replication of the key. Per failure f,
//       the overshoot C(f) is at most those charges: the tokens it leased out since then
//       (≤ Σ over nodes of their largest lease when a node gets at most one grant per
//       replication_interval, which sync_interval ≥ replication_interval gives in steady
//       state) plus the exact checks it admitted since then (exact mode's own bound).
//       Nodes drop, not return, the leases of a failed owner: the table cannot tell the
//       tokens charged before that replication (in the new owner's copy) from those
//       charged after (not in it). Returning them would stay within C(f) too (a refund
//       of a lost charge gives back at most that charge), but dropping admits less and
//       sends nothing to a new owner that never granted the lease.
//   Under-admission: tokens idle in one node's lease are missing from the bucket that the
//   others draw from until they are returned (at most two sync_intervals later), so a
//   node can be denied early by at most the leases outstanding.
//
// Design choices, and why:
//   - A lease is a count of tokens, not a slice of time: the owner's bucket keeps one
//     algorithm and one state, replication and hand-off need nothing new, and the four
//     algorithms lease the same way (grantFrom charges through BucketStore::charge).
//   - due() trims a lease down to its current want (returning the excess) instead of only
//     topping up: a lease sized for yesterday's burst would otherwise sit on up to
//     max_lease tokens for as long as a trickle of checks keeps it alive, which is what
//     term (1)'s "tokens held at `a`" would then be.
//   - giveBack() (a later rule denied the message) puts a lease-consumed cost back into
//     the lease, not to the owner: the owner's charge for it stands, and the next check
//     here uses it. If the lease is gone by then, the cost is lost (under-admission).
//   - No lease holds more than its max_lease: a surplus (two grants that crossed, a cost
//     given back after a top-up, a max_lease that shrank with a membership change) is
//     returned at once. This keeps the bound's "tokens held in leases" a hard bound.
//   - Evicted leases (memory bound), the old owner's tokens when a grant comes from a new
//     owner, and surpluses are queued and come out of the next due(): every return
//     leaves through one place, on the cluster thread.
//   - A grant is accepted from any owner the caller passes; the caller discards grants
//     from an owner it already passed to dropOwner() as failed.
//
// Threads: tryConsume(), giveBack() and topUpWant() come from many milter threads at
// once; grant(), due() and dropOwner() from the cluster thread. Every method is safe
// from any thread: the table is split in shards, each guarded by its own mutex, and a
// key always lives in the same shard (SipHash with a per-table random key: keys come
// from SMTP clients). Memory is bounded by max_entries (per shard ceil(max / shards));
// a full shard drops its least recently used lease, whose tokens are returned. Returns
// waiting for due() are bounded the same way per shard; beyond that the oldest is given
// up (counted as dropped: its tokens stay charged at the owner, under-admission only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "state/bucket_store.h"
#include "state/key_hash.h"
#include "state/limit.h"

namespace zetian::cluster::limits {

using state::Nanos;

// What one bucket can hold: burst for token_bucket/gcra, limit for the windows (each
// capped at kMaxCount); 0 for a limit that admits nothing (limit 0, period <= 0).
std::uint64_t leaseCapacity(state::Algorithm algo, const state::Limit& limit);

// The largest lease one node holds: max(1, capacity / (2 × members)), members >= 1.
std::uint64_t maxLease(std::uint64_t capacity, std::size_t members);

// Tokens for one sync_interval of demand, twice: clamp(ceil(2 × demand × sync_interval /
// window), 1, max(1, max_lease)) with window = max(over, sync_interval), so a demand seen
// over less than one sync_interval counts as if it were the whole interval's (no
// division by a tiny window). Exact integer arithmetic.
std::uint64_t leaseWant(std::uint64_t demand, Nanos over, Nanos sync_interval, std::uint64_t max_lease);

// Owner side: charge up to `want` tokens of `key`'s bucket for a lease, as many as it
// holds at `now`. A concurrent charge can take tokens between the look and the charge;
// then it retries with what is left (a few times, each smaller). Returns the tokens
// charged, 0 if none (the bucket is empty, want is 0, or the limit admits nothing).
std::uint64_t grantFrom(state::BucketStore& store, std::string_view key, state::Algorithm algo,
                        const state::Limit& limit, std::uint64_t want, Nanos now);

// Tokens to ask `owner` for, for the lease of `key`.
struct LeaseTopUp {
  std::string key;
  std::string owner;
  std::uint64_t want = 0;  // tokens to add to what the lease holds (> 0)
  bool operator==(const LeaseTopUp&) const = default;
};

// Unused tokens to give back (refund) to `owner`, which charged them for this lease.
struct LeaseReturn {
  std::string key;
  std::string owner;
  std::uint64_t tokens = 0;  // > 0
  bool operator==(const LeaseReturn&) const = default;
};

struct LeaseDue {
  std::vector<LeaseTopUp> top_ups;
  std::vector<LeaseReturn> returns;
};

enum class OwnerFate : std::uint8_t {
  Moved,   // the owner lives and hands its keys over: unused tokens are returned
  Failed,  // the owner is gone: its leases are dropped
};

struct LeaseStats {
  std::uint64_t leases = 0;          // keys with a lease (or a top-up awaited)
  std::uint64_t tokens_held = 0;     // unused tokens in all leases
  std::uint64_t consumed = 0;        // tokens consumed from leases (net of giveBack)
  std::uint64_t granted = 0;         // tokens received in grants
  std::uint64_t returned = 0;        // tokens handed out by due() and dropOwner() to return
  std::uint64_t dropped = 0;         // tokens dropped with a failed owner's leases
  std::uint64_t evicted = 0;         // leases dropped for max_entries (their tokens returned)
};

class LeaseTable {
 public:
  explicit LeaseTable(std::size_t max_entries, std::size_t shard_count = 16);
  ~LeaseTable();
  LeaseTable(const LeaseTable&) = delete;
  LeaseTable& operator=(const LeaseTable&) = delete;

  // Takes `cost` from the lease of `key` if it holds that many: true means allowed,
  // decided here. False (no lease, or too few tokens; nothing is taken): ask the owner.
  // Either way `cost` counts as demand for the lease's size, and the lease as in use.
  bool tryConsume(std::string_view key, std::uint64_t cost, Nanos now);

  // Puts back `cost` that tryConsume() took (a later rule denied the message). No-op
  // when the lease is gone; what would take the lease over its max_lease is queued for
  // return to the owner.
  void giveBack(std::string_view key, std::uint64_t cost);

  // The top-up to send with the exact check of `cost` that tryConsume() could not serve:
  // tokens to ask `owner` for, then marked as awaited. 0: nothing to ask, because
  //   - the key had no lease: this first miss leaves a placeholder that counts `cost` as
  //     demand, and the next miss within one sync_interval asks (a key checked less
  //     often than that would return its lease unused before using it);
  //   - a top-up from the same owner is awaited since less than one sync_interval (so
  //     concurrent misses ask once);
  //   - the lease already holds its want (the cost was larger than the lease).
  // If the lease is of another owner (the key moved), its tokens are queued for return
  // to that one and the top-up is asked of `owner`.
  std::uint64_t topUpWant(std::string_view key, std::string_view owner, std::uint64_t cost, Nanos now,
                          Nanos sync_interval, std::uint64_t max_lease);

  // `owner` charged `tokens` for this node's lease of `key` (0: it had none). Adds them,
  // up to max_lease (the current bound for the key, maxLease(), kept for due()); the
  // surplus is queued for return, and so are tokens the lease held of another owner.
  void grant(std::string_view key, std::string_view owner, std::uint64_t tokens, std::uint64_t max_lease,
             Nanos now);

  // What to send now: top-ups of leases in use whose last sizing is at least one
  // sync_interval old, returns of leases idle for two sync_intervals (removed), of the
  // excess over the current want (kept, trimmed), and of everything queued since the
  // last call (evictions, owner changes). Visits every lease: call it a few times per
  // sync_interval, not per check. sync_interval <= 0 is treated as 1 ns.
  LeaseDue due(Nanos now, Nanos sync_interval);

  // `owner` no longer owns the keys it leased (Moved) or is gone (Failed): its leases
  // end. Moved: returns their unused tokens. Failed: drops them (counted in `dropped`)
  // and returns nothing, also forgetting returns to it still queued.
  std::vector<LeaseReturn> dropOwner(std::string_view owner, OwnerFate fate);

  LeaseStats stats() const;
  std::size_t maxEntries() const { return max_entries_; }

 private:
  struct Entry;
  struct Shard;
  Shard& shardFor(std::string_view key) const;

  std::size_t max_entries_;
  std::size_t shard_count_;
  std::size_t per_shard_;
  state::HashKey hash_key_;  // random per table, immutable
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace zetian::cluster::limits
