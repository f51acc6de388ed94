// Rate-limit algorithms as pure functions of (state, limit, now, cost).
//
// Every algorithm keeps its state in the same small POD so that the bucket store
// can hold any of them without virtual dispatch. Time is an argument (nanoseconds on
// a monotonic clock chosen by the caller); nothing here reads a clock.
//
// charge() is the only way to consume: it checks and charges in one step, so two
// callers that serialise on the same state can never both see the same tokens.
#pragma once

#include <cstdint>
#include <string_view>
#include <optional>

namespace zetian::state {

enum class Algorithm : std::uint8_t { TokenBucket, Gcra, SlidingWindow, FixedWindow };

std::string_view algorithmName(Algorithm a);
std::optional<Algorithm> parseAlgorithm(std::string_view name);

using Nanos = std::int64_t;
constexpr Nanos kNanosPerSecond = 1'000'000'000;

// `limit` events per `period`, with room for `burst` at once. For the window
// algorithms burst is ignored: the window holds `limit`.
struct Limit {
  std::uint64_t limit = 0;
  Nanos period_ns = 0;
  std::uint64_t burst = 0;
};

// Opaque to callers: read a bucket through peek(), not through these fields. Every
// algorithm keeps exact integer state (no rounding drift, identical decisions on every
// node that replays the same calls); the fields mean:
//   token_bucket:   count = whole tokens missing at `stamp` (the refill anchor; tokens
//                   keep flowing in continuously after it), level unused
//   gcra:           theoretical arrival time TAT = stamp + count / limit nanoseconds
//                   (count is the fractional part, 0 <= count < limit), level unused
//   sliding_window: level = count in previous window, count = count in current window,
//                   stamp = start of current window
//   fixed_window:   count = count in current window, stamp = start of current window
// A zero-initialised state is a fresh, full bucket for every algorithm. Copying the
// four fields verbatim (replication) preserves the bucket exactly.
struct BucketState {
  double level = 0;
  std::uint64_t count = 0;
  Nanos stamp = 0;
  bool initialised = false;
};

struct Outcome {
  bool allowed = false;
  // The largest cost that could still be charged right now, after this call (a whole
  // number: fractional refill is rounded down).
  double remaining = 0;
  Nanos retry_after_ns = 0;  // when denied: how long until `cost` would be allowed
};

// Limits with limit == 0 or period_ns <= 0 deny everything (retry_after = period, or
// 0 when the period is not positive). A cost above what the bucket can ever hold (burst
// for token_bucket/gcra, limit for the windows) is denied with retry_after = period.
// limit and burst above kMaxCount (2^53) are treated as kMaxCount.
inline constexpr std::uint64_t kMaxCount = std::uint64_t{1} << 53;

// Check and charge `cost` in one step. When denied the state is not charged (it may
// be normalised: the same bucket, re-expressed at `now`).
Outcome charge(Algorithm algo, const Limit& limit, BucketState& state, Nanos now, std::uint64_t cost);

// Give back `cost` charged earlier (a later rule denied the same message).
void refund(Algorithm algo, const Limit& limit, BucketState& state, Nanos now, std::uint64_t cost);

// What charge(cost) would answer, without changing anything.
Outcome peek(Algorithm algo, const Limit& limit, const BucketState& state, Nanos now, std::uint64_t cost);

// The time from which the state is indistinguishable from a fresh one: the store
// may forget the key then.
Nanos idleAt(Algorithm algo, const Limit& limit, const BucketState& state);

}  // namespace zetian::state
