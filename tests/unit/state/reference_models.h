// Reference models of the four algorithms, written from their textbook definitions
// and independently of state/limit.cpp: exact rationals, event logs, and binary
// search instead of closed forms for retry_after and remaining. They are slow and
// simple on purpose; the randomized tests hold the real code to them.
//
// Times passed to a model never decrease (the models do not define going back).
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <optional>
#include <vector>

#include "state/limit.h"

namespace zetian::state::reference {

using Int = __int128;

// An exact fraction with a positive denominator, always reduced.
struct Rational {
  Int num = 0;
  Int den = 1;

  Rational() = default;
  Rational(Int n, Int d = 1) : num(n), den(d) {  // NOLINT: implicit from integers on purpose
    if (den < 0) {
      num = -num;
      den = -den;
    }
    Int g = gcd(num < 0 ? -num : num, den);
    if (g > 1) {
      num /= g;
      den /= g;
    }
  }
  static Int gcd(Int a, Int b) {
    while (b != 0) {
      Int t = a % b;
      a = b;
      b = t;
    }
    return a == 0 ? 1 : a;
  }
  friend Rational operator+(Rational a, Rational b) { return {a.num * b.den + b.num * a.den, a.den * b.den}; }
  friend Rational operator-(Rational a, Rational b) { return {a.num * b.den - b.num * a.den, a.den * b.den}; }
  friend Rational operator*(Rational a, Rational b) { return {a.num * b.num, a.den * b.den}; }
  friend Rational operator/(Rational a, Rational b) { return {a.num * b.den, a.den * b.num}; }
  friend bool operator<(Rational a, Rational b) { return a.num * b.den < b.num * a.den; }
  friend bool operator<=(Rational a, Rational b) { return !(b < a); }
  friend bool operator==(Rational a, Rational b) { return a.num == b.num && a.den == b.den; }
  Int floor() const { return num >= 0 ? num / den : -((-num + den - 1) / den); }
  Int ceil() const { return -Rational(-num, den).floor(); }
};

inline Rational minR(Rational a, Rational b) { return b < a ? b : a; }
inline Rational maxR(Rational a, Rational b) { return a < b ? b : a; }

// The common driver: a model answers wouldAllow(now, cost) without changing itself;
// charge() derives remaining and retry_after from it by search.
template <class Model>
Outcome chargeBySearch(Model& m, const Limit& limit, Nanos now, std::uint64_t cost) {
  Outcome out;
  m.advance(now);
  out.allowed = m.wouldAllow(now, cost);
  if (out.allowed) m.take(now, cost);
  // remaining: the largest c with wouldAllow(now, c); wouldAllow is monotone in c.
  std::uint64_t lo = 0, hi = m.capacity() + 1;
  if (!m.wouldAllow(now, 0)) {
    out.remaining = 0;
  } else {
    while (hi - lo > 1) {
      std::uint64_t mid = lo + (hi - lo) / 2;
      (m.wouldAllow(now, mid) ? lo : hi) = mid;
    }
    out.remaining = static_cast<double>(lo);
  }
  if (!out.allowed) {
    if (cost > m.capacity()) {
      out.retry_after_ns = limit.period_ns;
    } else {
      // Smallest wait after which cost fits. An empty bucket refills completely in
      // ceil(capacity / limit) periods, and a window in two.
      const Nanos enough = static_cast<Nanos>(m.capacity() / limit.limit + 3) * limit.period_ns;
      Nanos lo_wait = 0, hi_wait = enough;
      while (hi_wait - lo_wait > 1) {
        Nanos mid = lo_wait + (hi_wait - lo_wait) / 2;
        (m.wouldAllow(now + mid, cost) ? hi_wait : lo_wait) = mid;
      }
      out.retry_after_ns = hi_wait;
    }
  }
  return out;
}

// Token bucket: a level in [0, burst] that rises by limit/period per nanosecond.
struct TokenBucketModel {
  Limit limit;
  std::optional<Rational> tokens;  // nullopt: never touched (full)
  Nanos last = 0;

  std::uint64_t capacity() const { return limit.burst; }
  Rational tokensAt(Nanos now) const {
    if (!tokens) return Rational(limit.burst);
    Rational refill = Rational(Int{now - last} * limit.limit, limit.period_ns);
    return minR(Rational(limit.burst), *tokens + refill);
  }
  void advance(Nanos now) {
    tokens = tokensAt(now);
    last = now;
  }
  bool wouldAllow(Nanos now, std::uint64_t cost) const { return Rational(Int{cost}) <= tokensAt(now); }
  void take(Nanos now, std::uint64_t cost) { tokens = tokensAt(now) - Rational(Int{cost}); }
  void refund(Nanos now, std::uint64_t cost) {
    advance(now);
    tokens = minR(Rational(limit.burst), *tokens + Rational(Int{cost}));
  }
};

// GCRA: a theoretical arrival time; each admitted unit pushes it by T = period/limit.
struct GcraModel {
  Limit limit;
  std::optional<Rational> tat;

  std::uint64_t capacity() const { return limit.burst; }
  Rational interval() const { return Rational(limit.period_ns, Int{limit.limit}); }
  Rational tatAt(Nanos now) const { return tat ? maxR(*tat, Rational(now)) : Rational(now); }
  void advance(Nanos) {}
  bool wouldAllow(Nanos now, std::uint64_t cost) const {
    Rational next = tatAt(now) + Rational(Int{cost}) * interval();
    return next - Rational(now) <= Rational(Int{limit.burst}) * interval();
  }
  void take(Nanos now, std::uint64_t cost) { tat = tatAt(now) + Rational(Int{cost}) * interval(); }
  void refund(Nanos now, std::uint64_t cost) {
    if (tat) tat = maxR(Rational(now), *tat - Rational(Int{cost}) * interval());
  }
};

// A log of admitted events, shared by the two window models.
struct EventLog {
  struct Event {
    Nanos at;
    std::uint64_t cost;
  };
  std::vector<Event> events;

  static Int windowOf(Nanos t, Nanos period) {
    Int q = Int{t} / period;
    if (Int{t} % period != 0 && t < 0) --q;
    return q;
  }
  Int sumInWindow(Int window, Nanos period) const {
    Int sum = 0;
    for (const Event& e : events)
      if (windowOf(e.at, period) == window) sum += e.cost;
    return sum;
  }
  void forgetBefore(Int window, Nanos period) {
    std::erase_if(events, [&](const Event& e) { return windowOf(e.at, period) < window; });
  }
};

// Fixed window: admitted costs in the aligned window holding `now`.
struct FixedWindowModel {
  Limit limit;
  EventLog log;

  std::uint64_t capacity() const { return limit.limit; }
  void advance(Nanos now) { log.forgetBefore(EventLog::windowOf(now, limit.period_ns), limit.period_ns); }
  bool wouldAllow(Nanos now, std::uint64_t cost) const {
    return log.sumInWindow(EventLog::windowOf(now, limit.period_ns), limit.period_ns) + cost <= Int{limit.limit};
  }
  void take(Nanos now, std::uint64_t cost) { log.events.push_back({now, cost}); }
  void refund(Nanos, std::uint64_t) {
    if (!log.events.empty()) log.events.pop_back();
  }
};

// Sliding window: previous aligned window weighted by how much of it the sliding
// window [now - period, now) still covers, plus the current aligned window.
struct SlidingWindowModel {
  Limit limit;
  EventLog log;

  std::uint64_t capacity() const { return limit.limit; }
  void advance(Nanos now) { log.forgetBefore(EventLog::windowOf(now, limit.period_ns) - 1, limit.period_ns); }
  Rational weighted(Nanos now) const {
    const Nanos p = limit.period_ns;
    const Int window = EventLog::windowOf(now, p);
    const Int start = window * p;
    Rational previous_share(Int{p} - (Int{now} - start), p);
    return Rational(log.sumInWindow(window - 1, p)) * previous_share + Rational(log.sumInWindow(window, p));
  }
  bool wouldAllow(Nanos now, std::uint64_t cost) const {
    return weighted(now) + Rational(Int{cost}) <= Rational(Int{limit.limit});
  }
  void take(Nanos now, std::uint64_t cost) { log.events.push_back({now, cost}); }
  void refund(Nanos, std::uint64_t) {
    if (!log.events.empty()) log.events.pop_back();
  }
};

}  // namespace zetian::state::reference
