// The four rate-limit algorithms, in exact integer arithmetic.
//
// Why integers: a bucket refills by limit/period tokens per nanosecond, which is
// rarely a representable double. Floating-point state drifts, so "one token comes back
// after exactly period/limit" fails by 1e-16 and two nodes replaying the same calls can
// disagree. Here every quantity is a rational with a fixed denominator (period for
// tokens, limit for time), kept as integers and compared in 128-bit arithmetic:
// decisions are exact and retry_after is tight (allowed at now + retry_after, denied one
// nanosecond earlier).
//
// Range: limit and burst are clamped to kMaxCount = 2^53 and cost is checked against
// them first, so every product below stays under 2^120 (a Nanos difference is < 2^64,
// a period < 2^63): no intermediate can overflow an __int128.
//
// Time going backwards never creates tokens: token_bucket and the windows treat a `now`
// before their stamp as no time elapsed; for gcra the TAT simply lies further ahead
// (fewer tokens). Either way the bucket refills only once the clock is past the point
// it had reached, so a detour into the past gains nothing.
#include "state/limit.h"

#include <algorithm>
#include <array>
#include <limits>

namespace zetian::state {
namespace {

using Int = __int128;

constexpr Nanos kNanosMin = std::numeric_limits<Nanos>::min();
constexpr Nanos kNanosMax = std::numeric_limits<Nanos>::max();

constexpr std::array<std::string_view, 4> kNames{"token_bucket", "gcra", "sliding_window", "fixed_window"};

Nanos saturate(Int v) {
  if (v > Int{kNanosMax}) return kNanosMax;
  if (v < Int{kNanosMin}) return kNanosMin;
  return static_cast<Nanos>(v);
}

// Floor and ceiling of a / b for b > 0 (C++ division truncates toward zero).
Int floorDiv(Int a, Int b) {
  Int q = a / b;
  if (a % b != 0 && a < 0) --q;
  return q;
}
Int ceilDiv(Int a, Int b) {
  Int q = a / b;
  if (a % b != 0 && a > 0) ++q;
  return q;
}

// A Limit made safe for arithmetic.
struct Params {
  Int limit;   // events per period, 1..kMaxCount
  Int period;  // nanoseconds, > 0
  Int burst;   // capacity of token_bucket/gcra, 0..kMaxCount
};

std::optional<Params> usable(const Limit& l) {
  if (l.limit == 0 || l.period_ns <= 0) return std::nullopt;
  return Params{Int{std::min(l.limit, kMaxCount)}, Int{l.period_ns}, Int{std::min(l.burst, kMaxCount)}};
}

// The answer for a request that can never be granted under this limit.
Outcome never(const Limit& l, double remaining) {
  return Outcome{false, remaining, std::max<Nanos>(l.period_ns, 0)};
}

double asCount(Int v) { return static_cast<double>(std::max<Int>(v, 0)); }

// ---- token_bucket -------------------------------------------------------------------
// tokens(t) = burst - deficit + (t - anchor) * limit / period, at most burst, where
// 0 <= t - anchor < period after normalisation. Moving the anchor by a whole period adds
// exactly `limit` tokens, so re-anchoring is exact; a full bucket re-anchors at `now`.
struct TokenBucket {
  Int deficit;
  Nanos anchor;

  static TokenBucket at(const Params& p, const BucketState& s, Nanos now) {
    if (!s.initialised) return {0, now};
    TokenBucket b{std::min<Int>(s.count, p.burst + p.limit), s.stamp};
    if (now > b.anchor) {
      const Int elapsed = Int{now} - b.anchor;
      if (elapsed * p.limit >= b.deficit * p.period) return {0, now};
      const Int periods = elapsed / p.period;
      b.anchor = static_cast<Nanos>(b.anchor + periods * p.period);
      b.deficit -= periods * p.limit;
    }
    return b;
  }
  // Tokens available at `now`, times period.
  Int scaledTokens(const Params& p, Nanos now) const {
    const Int elapsed = std::max<Int>(Int{now} - anchor, 0);
    return (p.burst - deficit) * p.period + elapsed * p.limit;
  }
  void store(BucketState& s) const {
    s.level = 0;
    s.count = static_cast<std::uint64_t>(deficit);
    s.stamp = anchor;
    s.initialised = true;
  }
};

Outcome chargeTokenBucket(const Params& p, BucketState& s, Nanos now, Int cost) {
  TokenBucket b = TokenBucket::at(p, s, now);
  Int tokens = b.scaledTokens(p, now);
  if (tokens >= cost * p.period) {
    b.deficit += cost;
    b.store(s);
    return Outcome{true, asCount((tokens - cost * p.period) / p.period), 0};
  }
  b.store(s);
  // The elapsed time since the anchor at which tokens reach cost.
  const Int needed = ceilDiv((cost - p.burst + b.deficit) * p.period, p.limit);
  return Outcome{false, asCount(tokens / p.period), saturate(Int{b.anchor} + needed - now)};
}

void refundTokenBucket(const Params& p, BucketState& s, Nanos now, Int cost) {
  TokenBucket b = TokenBucket::at(p, s, now);
  if (b.scaledTokens(p, now) + cost * p.period >= p.burst * p.period)
    b = {0, std::max(now, b.anchor)};
  else
    b.deficit -= cost;
  b.store(s);
}

Nanos idleTokenBucket(const Params& p, const BucketState& s) {
  const Int deficit = std::min<Int>(s.count, p.burst + p.limit);
  return saturate(Int{s.stamp} + ceilDiv(deficit * p.period, p.limit));
}

// ---- gcra ----------------------------------------------------------------------------
// TAT = stamp + frac / limit. Everything is compared in units of 1/limit ns, where the
// emission interval T = period / limit is exactly `period` units.
struct Gcra {
  Int ahead;  // max(TAT - now, 0) in 1/limit ns; above burst * T only if time went back

  static Gcra at(const Params& p, const BucketState& s, Nanos now) {
    if (!s.initialised) return {0};
    const Int frac = std::min<Int>(s.count, p.limit - 1);
    return {std::max<Int>((Int{s.stamp} - now) * p.limit + frac, 0)};
  }
  void store(const Params& p, BucketState& s, Nanos now) const {
    const Int whole = floorDiv(ahead, p.limit);
    const Int stamp = Int{now} + whole;
    s.level = 0;
    if (stamp > kNanosMax) {
      s.stamp = kNanosMax;
      s.count = 0;
    } else {
      s.stamp = static_cast<Nanos>(stamp);
      s.count = static_cast<std::uint64_t>(ahead - whole * p.limit);
    }
    s.initialised = true;
  }
};

Outcome chargeGcra(const Params& p, BucketState& s, Nanos now, Int cost) {
  Gcra g = Gcra::at(p, s, now);
  const Int capacity = p.burst * p.period;
  const Int after = g.ahead + cost * p.period;
  if (after <= capacity) {
    g.ahead = after;
    g.store(p, s, now);
    return Outcome{true, asCount((capacity - after) / p.period), 0};
  }
  g.store(p, s, now);
  return Outcome{false, asCount((capacity - g.ahead) / p.period), saturate(ceilDiv(after - capacity, p.limit))};
}

void refundGcra(const Params& p, BucketState& s, Nanos now, Int cost) {
  Gcra g = Gcra::at(p, s, now);
  g.ahead = std::max<Int>(g.ahead - cost * p.period, 0);
  g.store(p, s, now);
}

Nanos idleGcra(const BucketState& s) {
  return s.count > 0 && s.stamp < kNanosMax ? s.stamp + 1 : s.stamp;
}

// ---- windows -------------------------------------------------------------------------
// Saturates only for `now` within a period of the most negative Nanos.
Nanos windowStart(const Params& p, Nanos now) { return saturate(floorDiv(now, p.period) * p.period); }

// The previous window's count, stored in a double; always a whole number <= 2^54.
Int previousCount(const BucketState& s) {
  if (!(s.level > 0)) return 0;  // also catches NaN
  return static_cast<Int>(std::min(s.level, 0x1p54));
}

struct SlidingWindow {
  Int previous;
  Int current;
  Nanos start;

  static SlidingWindow at(const Params& p, const BucketState& s, Nanos now) {
    const Nanos window = windowStart(p, now);
    if (!s.initialised) return {0, 0, window};
    SlidingWindow w{previousCount(s), s.count, s.stamp};
    if (window > w.start) {
      w.previous = Int{window} - w.start == p.period ? w.current : 0;
      w.current = 0;
      w.start = window;
    }
    return w;
  }
  // previous * (period - elapsed) + current * period: the weighted count, times period.
  Int scaledCount(const Params& p, Nanos now) const {
    const Int elapsed = std::clamp<Int>(Int{now} - start, 0, p.period);
    return previous * (p.period - elapsed) + current * p.period;
  }
  void store(BucketState& s) const {
    s.level = static_cast<double>(previous);
    s.count = static_cast<std::uint64_t>(current);
    s.stamp = start;
    s.initialised = true;
  }
};

Outcome chargeSlidingWindow(const Params& p, BucketState& s, Nanos now, Int cost) {
  SlidingWindow w = SlidingWindow::at(p, s, now);
  const Int room = p.limit * p.period - w.scaledCount(p, now);
  if (cost * p.period <= room) {
    w.current += cost;
    w.store(s);
    return Outcome{true, asCount(floorDiv(room, p.period) - cost), 0};
  }
  w.store(s);
  // The weighted count only falls with time. If cost fits once the previous window has
  // slid out (current + cost <= limit), it fits within this window; otherwise in the
  // next one, where this window's count becomes the previous one.
  Int wait_until;  // an absolute time
  const Int spare = p.limit - w.current - cost;
  if (spare >= 0) {
    wait_until = Int{w.start} + p.period - floorDiv(spare * p.period, w.previous);
  } else {
    wait_until = Int{w.start} + 2 * p.period - floorDiv((p.limit - cost) * p.period, w.current);
  }
  return Outcome{false, asCount(floorDiv(room, p.period)), saturate(wait_until - now)};
}

void refundSlidingWindow(const Params& p, BucketState& s, Nanos now, Int cost) {
  SlidingWindow w = SlidingWindow::at(p, s, now);
  const Int from_current = std::min(cost, w.current);
  w.current -= from_current;
  w.previous -= std::min(cost - from_current, w.previous);
  w.store(s);
}

Nanos idleSlidingWindow(const Params& p, const BucketState& s) {
  if (s.count > 0) return saturate(Int{s.stamp} + 2 * p.period);
  if (previousCount(s) > 0) return saturate(Int{s.stamp} + p.period);
  return s.stamp;
}

struct FixedWindow {
  Int count;
  Nanos start;

  static FixedWindow at(const Params& p, const BucketState& s, Nanos now) {
    const Nanos window = windowStart(p, now);
    if (!s.initialised || window > s.stamp) return {0, window};
    return {s.count, s.stamp};
  }
  void store(BucketState& s) const {
    s.level = 0;
    s.count = static_cast<std::uint64_t>(count);
    s.stamp = start;
    s.initialised = true;
  }
};

Outcome chargeFixedWindow(const Params& p, BucketState& s, Nanos now, Int cost) {
  FixedWindow w = FixedWindow::at(p, s, now);
  if (w.count + cost <= p.limit) {
    w.count += cost;
    w.store(s);
    return Outcome{true, asCount(p.limit - w.count), 0};
  }
  w.store(s);
  return Outcome{false, asCount(p.limit - w.count), saturate(Int{w.start} + p.period - now)};
}

void refundFixedWindow(const Params& p, BucketState& s, Nanos now, Int cost) {
  FixedWindow w = FixedWindow::at(p, s, now);
  w.count -= std::min(cost, w.count);
  w.store(s);
}

Nanos idleFixedWindow(const Params& p, const BucketState& s) {
  return s.count > 0 ? saturate(Int{s.stamp} + p.period) : s.stamp;
}

bool usesBurst(Algorithm a) { return a == Algorithm::TokenBucket || a == Algorithm::Gcra; }

}  // namespace

std::string_view algorithmName(Algorithm a) {
  const auto index = static_cast<std::size_t>(a);
  return index < kNames.size() ? kNames[index] : std::string_view{"unknown"};
}

std::optional<Algorithm> parseAlgorithm(std::string_view name) {
  for (std::size_t i = 0; i < kNames.size(); ++i)
    if (kNames[i] == name) return static_cast<Algorithm>(i);
  return std::nullopt;
}

Outcome charge(Algorithm algo, const Limit& limit, BucketState& state, Nanos now, std::uint64_t cost) {
  const auto p = usable(limit);
  if (!p) return never(limit, 0);
  const Int capacity = usesBurst(algo) ? p->burst : p->limit;
  if (Int{cost} > capacity) {
    BucketState copy = state;
    Outcome o = charge(algo, limit, copy, now, 0);  // for `remaining`
    return never(limit, o.remaining);
  }
  switch (algo) {
    case Algorithm::TokenBucket: return chargeTokenBucket(*p, state, now, cost);
    case Algorithm::Gcra: return chargeGcra(*p, state, now, cost);
    case Algorithm::SlidingWindow: return chargeSlidingWindow(*p, state, now, cost);
    case Algorithm::FixedWindow: return chargeFixedWindow(*p, state, now, cost);
  }
  return never(limit, 0);
}

void refund(Algorithm algo, const Limit& limit, BucketState& state, Nanos now, std::uint64_t cost) {
  const auto p = usable(limit);
  if (!p || !state.initialised || cost == 0) return;
  const Int amount = std::min<Int>(cost, Int{kMaxCount} * 4);
  switch (algo) {
    case Algorithm::TokenBucket: return refundTokenBucket(*p, state, now, amount);
    case Algorithm::Gcra: return refundGcra(*p, state, now, amount);
    case Algorithm::SlidingWindow: return refundSlidingWindow(*p, state, now, amount);
    case Algorithm::FixedWindow: return refundFixedWindow(*p, state, now, amount);
  }
}

Outcome peek(Algorithm algo, const Limit& limit, const BucketState& state, Nanos now, std::uint64_t cost) {
  BucketState copy = state;
  return charge(algo, limit, copy, now, cost);
}

Nanos idleAt(Algorithm algo, const Limit& limit, const BucketState& state) {
  const auto p = usable(limit);
  if (!state.initialised) return kNanosMin;
  if (!p) return state.stamp;  // nothing is ever admitted: the content does not matter
  switch (algo) {
    case Algorithm::TokenBucket: return idleTokenBucket(*p, state);
    case Algorithm::Gcra: return idleGcra(state);
    case Algorithm::SlidingWindow: return idleSlidingWindow(*p, state);
    case Algorithm::FixedWindow: return idleFixedWindow(*p, state);
  }
  return state.stamp;
}

}  // namespace zetian::state
