// Clock translation and merging of bucket state; the rules are in transfer.h.
//
// All clock arithmetic is done in __int128 and saturated into Nanos at the end: a
// difference of two Nanos needs 65 bits, and UBSan (in CI) would flag any int64
// overflow.
#include "state/transfer.h"

#include <algorithm>
#include <limits>

namespace zetian::state {
namespace {

using Int = __int128;

constexpr Nanos kNanosMin = std::numeric_limits<Nanos>::min();
constexpr Nanos kNanosMax = std::numeric_limits<Nanos>::max();

Nanos saturate(Int v) {
  if (v > Int{kNanosMax}) return kNanosMax;
  if (v < Int{kNanosMin}) return kNanosMin;
  return static_cast<Nanos>(v);
}

Int ceilDiv(Int a, Int b) {
  Int q = a / b;
  if (a % b != 0 && a > 0) ++q;
  return q;
}

bool isWindow(Algorithm a) { return a == Algorithm::SlidingWindow || a == Algorithm::FixedWindow; }

// The first window start on the local grid at or after `stamp` (both window algorithms
// read a state whose stamp lies ahead of now as a window not yet begun, holding its
// counts until stamp + period, so a later start only keeps the counts longer). Starts
// that lie beyond the clock's range become its last value: the clock never reaches the
// window's end either way, so the state reads the same at every reachable moment.
Nanos alignUp(Int stamp, Nanos period) {
  const Int start = ceilDiv(std::max<Int>(stamp, kNanosMin), period) * period;
  return saturate(start);
}

}  // namespace

PortableBucket toPortable(Algorithm algo, const BucketState& state, Nanos sender_now) {
  PortableBucket bucket;
  bucket.algorithm = algo;
  if (!state.initialised) return bucket;
  bucket.level = state.level;
  bucket.count = state.count;
  bucket.stamp_age_ns = saturate(Int{sender_now} - state.stamp);
  bucket.initialised = true;
  return bucket;
}

BucketState fromPortable(const PortableBucket& bucket, const Limit& limit, Nanos receiver_now) {
  if (!bucket.initialised) return BucketState{};
  BucketState state;
  state.level = bucket.level;
  state.count = bucket.count;
  state.initialised = true;
  const Int stamp = Int{receiver_now} - bucket.stamp_age_ns;
  if (isWindow(bucket.algorithm) && limit.limit > 0 && limit.period_ns > 0)
    state.stamp = alignUp(stamp, limit.period_ns);
  else
    state.stamp = saturate(stamp);
  return state;
}

BucketState mergeBuckets(Algorithm algo, const Limit& limit, const BucketState& held, const BucketState& incoming,
                         Nanos now) {
  const double held_remaining = peek(algo, limit, held, now, 1).remaining;
  const double incoming_remaining = peek(algo, limit, incoming, now, 1).remaining;
  if (incoming_remaining < held_remaining) return incoming;
  if (incoming_remaining > held_remaining) return held;
  return idleAt(algo, limit, incoming) > idleAt(algo, limit, held) ? incoming : held;
}

}  // namespace zetian::state
