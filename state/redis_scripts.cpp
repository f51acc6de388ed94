// The Lua sources of state/redis_scripts.h and the pure helpers around them.
//
// Each script is `local ALGO = '<name>'`, the shared prelude (arguments, clock, exact
// arithmetic, the write-with-TTL helper) and the algorithm's body. The bodies follow
// limit.cpp step by step, re-expressed in milliseconds: a comment on each names the
// limit.cpp function it mirrors. A change there must be made here too; the unit test
// (tests/unit/state/redis_scripts_test.cpp) catches a divergence.
//
// Traps, for whoever edits the Lua:
// - Every number is a double. Sums and products must stay below 2^53; any a*b/c goes
//   through muldiv(), and x % y through divmod() (Lua's % computes x - floor(x/y)*y,
//   which rounds for large x; math.fmod is exact).
// - Numbers passed to redis.call are formatted by Redis with %.17g, exact for integers
//   below 2^53; fmt() makes that explicit for the values written to the hash.
// - `false` becomes a nil reply and breaks the 4-integer array: reply 0 and 1.
// - A top-level `return redis.error_reply(...)` is the only way to answer an error
//   without a Lua stack trace in the message.
#include "state/redis_scripts.h"

#include <array>
#include <charconv>
#include <limits>

namespace zetian::state {
namespace {

constexpr std::string_view kPrelude = R"lua(
local M = 1000000
local TWO53 = 9007199254740992
local function fail(msg) return redis.error_reply('ERR zetian: ' .. msg) end

-- A decimal integer argument in lo..hi, or nil.
local function arg(i, lo, hi)
  local s = ARGV[i]
  if type(s) ~= 'string' or #s == 0 or #s > 16 or not string.find(s, '^%d+$') then return nil end
  local v = tonumber(s)
  if v < lo or v > hi then return nil end
  return v
end

-- floor(a / b) and a mod b for integers 0 <= a < 2^53, 0 < b < 2^53: fmod is exact, so
-- a - r is an exact multiple of b and the division is exact too.
local function divmod(a, b)
  local r = math.fmod(a, b)
  return (a - r) / b, r
end

-- floor(a * b / c) and (a * b) mod c, exactly, for integers 0 <= a, b < 2^53,
-- 0 < c < 2^53, when the quotient is below 2^53. A double product below 2^53 is exact
-- (a true product at or above 2^53 never rounds below it); otherwise a = qa*c + ra and
-- ra * b is long-multiplied bit by bit modulo c, keeping every partial sum below c.
local function muldiv(a, b, c)
  local p = a * b
  if p < TWO53 then return divmod(p, c) end
  local qa, ra = divmod(a, c)
  local q, r, rest, bit = 0, 0, b, 1
  while bit * 2 <= rest do bit = bit * 2 end
  while bit >= 1 do
    q = q * 2
    if r >= c - r then r = r - (c - r); q = q + 1 else r = r + r end
    if rest >= bit then
      rest = rest - bit
      if r >= c - ra then r = r - (c - ra); q = q + 1 else r = r + ra end
    end
    bit = bit / 2
  end
  return qa * b + q, r
end

local function fmt(v) return string.format('%.0f', v) end

local op = ARGV[1]
if op ~= 'charge' and op ~= 'refund' and op ~= 'peek' then return fail('op must be charge, refund or peek') end
local L = arg(2, 1, 4294967296)
if not L then return fail('limit must be an integer in 1..2^32') end
local P = arg(3, 1, 1099511627776)
if not P then return fail('period must be a whole number of milliseconds in 1..2^40') end
local B = arg(4, 0, 4294967296)
if not B then return fail('burst must be an integer in 0..2^32') end
local cost = arg(5, 0, TWO53)
if not cost then return fail('cost must be an integer in 0..2^53') end
-- Redis 4 replicates a script by its text unless told otherwise, and refuses writes
-- after TIME then; from Redis 5 effects are replicated anyway (7 ignores the call).
if redis.replicate_commands then redis.replicate_commands() end
local now
if ARGV[6] == nil or ARGV[6] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = arg(6, 0, 4398046511104)
  if not now then return fail('now must be milliseconds in 0..2^42') end
end
if now > 4398046511104 then return fail('the Redis clock is beyond 2^42 ms') end
if ALGO == 'token_bucket' or ALGO == 'gcra' then
  if B * P / L > 2 * 1099511627776 then return fail('burst * period / limit must be at most 2^40 ms') end
  local q, r = muldiv(B, P, L)
  if r > 0 then q = q + 1 end
  if q > 1099511627776 then return fail('burst * period / limit must be at most 2^40 ms') end
end

local key = KEYS[1]
local found = false   -- the hash's algorithm field, set by the body's HMGET
-- Writes the bucket, expiring at `expire` ms; a bucket already fresh-equivalent is
-- deleted. Another algorithm's fields are removed first.
local function save(expire, ...)
  if expire <= now then redis.call('DEL', key) return end
  if found and found ~= ALGO then redis.call('DEL', key) end
  local fields = {...}
  for i = 2, #fields, 2 do fields[i] = fmt(fields[i]) end
  redis.call('HSET', key, 'a', ALGO, unpack(fields))
  redis.call('PEXPIREAT', key, fmt(expire))
end
-- A charge that cannot ever pass still makes the key this algorithm's (fresh) bucket.
local function dropForeign()
  if op == 'charge' and found and found ~= ALGO then redis.call('DEL', key) end
end
)lua";

// limit.cpp TokenBucket: d = deficit, t = anchor (ms).
constexpr std::string_view kTokenBucket = R"lua(
local h = redis.call('HMGET', key, 'a', 'd', 't')
found = h[1]
local held = found == ALGO
if op == 'refund' and (not held or cost == 0) then return held and 1 or 0 end
local D, A = 0, now
if held then
  D, A = tonumber(h[2]), tonumber(h[3])
  if not (D and A) then return fail('the bucket is unreadable') end
  if D > B + L then D = B + L end
  if now > A then
    local q, r = muldiv(D, P, L)
    if r > 0 then q = q + 1 end
    local e = now - A
    if e >= q then
      D, A = 0, now
    else
      local periods = divmod(e, P)
      A = A + periods * P
      D = D - periods * L
    end
  end
end
local e = now - A
if e < 0 then e = 0 end
local W = B - D + muldiv(e, L, P)   -- whole tokens at now (may be negative)
local function write()
  local q, r = muldiv(D, P, L)
  if r > 0 then q = q + 1 end
  save(A + q, 'd', D, 't', A)
end
if op == 'refund' then
  if W - B + D + cost >= D then
    D = 0
    if now > A then A = now end
  else
    D = D - cost
  end
  write()
  return 1
end
if cost > B then dropForeign() return {0, math.max(W, 0), P, 0} end
if W >= cost then
  D = D + cost
  if op == 'charge' then write() end
  return {1, W - cost, 0, 0}
end
if op == 'charge' then write() end
local q, r = muldiv(cost - B + D, P, L)
local c, cr = muldiv(r, M, L)
if cr > 0 then c = c + 1 end
return {0, math.max(W, 0), q + A - now, c}
)lua";

// limit.cpp Gcra: the arrival time TAT = t ms + n ns + f/limit ns, 0 <= n < 1e6,
// 0 <= f < limit (the same stamp and fraction as BucketState, split at the ms). Inside,
// `ahead` = max(TAT - now, 0) is am ms + as / (1e6 * limit) ms.
constexpr std::string_view kGcra = R"lua(
local h = redis.call('HMGET', key, 'a', 't', 'n', 'f')
found = h[1]
local held = found == ALGO
if op == 'refund' and (not held or cost == 0) then return held and 1 or 0 end
local ML = M * L
local am, as = 0, 0
if held then
  local t, n, f = tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
  if not (t and n and f) or n >= M then return fail('the bucket is unreadable') end
  if f > L - 1 then f = L - 1 end
  if t >= now then am, as = t - now, n * L + f end
end
local function less(xm, xs, ym, ys) return xm < ym or (xm == ym and xs < ys) end
local function minus(xm, xs, ym, ys)
  local dm, ds = xm - ym, xs - ys
  if ds < 0 then ds = ds + ML; dm = dm - 1 end
  return dm, ds
end
-- Whole emission intervals in a non-negative span.
local function intervals(dm, ds)
  local q, r = muldiv(dm, L, P)
  return q + divmod(r + divmod(ds, M), P)
end
local cq, cr = muldiv(B, P, L)
cr = cr * M
local function available()
  if less(cq, cr, am, as) then return 0 end
  return intervals(minus(cq, cr, am, as))
end
local function write(xm, xs)
  local n, f = divmod(xs, L)
  local t = now + xm
  local expire = t
  if n > 0 or f > 0 then expire = t + 1 end
  save(expire, 't', t, 'n', n, 'f', f)
end
if op == 'refund' then
  if cost * P / L > am + 2 then
    am, as = 0, 0
  else
    local kq, kr = muldiv(cost, P, L)
    kr = kr * M
    if less(am, as, kq, kr) then am, as = 0, 0 else am, as = minus(am, as, kq, kr) end
  end
  write(am, as)
  return 1
end
if cost > B then dropForeign() return {0, available(), P, 0} end
local kq, kr = muldiv(cost, P, L)
local bm, bs = am + kq, as + kr * M
if bs >= ML then bs = bs - ML; bm = bm + 1 end
if not less(cq, cr, bm, bs) then
  if op == 'charge' then write(bm, bs) end
  return {1, intervals(minus(cq, cr, bm, bs)), 0, 0}
end
local remaining = available()
if op == 'charge' then write(am, as) end
local em, es = minus(bm, bs, cq, cr)
local c, rc = divmod(es, L)
if rc > 0 then c = c + 1 end
return {0, remaining, em, c}
)lua";

// limit.cpp SlidingWindow: p = previous window's count, c = current's, t = its start.
constexpr std::string_view kSlidingWindow = R"lua(
local h = redis.call('HMGET', key, 'a', 'p', 'c', 't')
found = h[1]
local held = found == ALGO
if op == 'refund' and (not held or cost == 0) then return held and 1 or 0 end
local win = now - math.fmod(now, P)
local prev, cur, start = 0, 0, win
if held then
  prev, cur, start = tonumber(h[2]), tonumber(h[3]), tonumber(h[4])
  if not (prev and cur and start) then return fail('the bucket is unreadable') end
  if win > start then
    if win - start == P then prev = cur else prev = 0 end
    cur = 0
    start = win
  end
end
local function write()
  local expire = start
  if cur > 0 then expire = start + 2 * P elseif prev > 0 then expire = start + P end
  save(expire, 'p', prev, 'c', cur, 't', start)
end
if op == 'refund' then
  local taken = math.min(cost, cur)
  cur = cur - taken
  prev = prev - math.min(cost - taken, prev)
  write()
  return 1
end
local el = now - start
if el < 0 then el = 0 elseif el > P then el = P end
local weighted = 0   -- ceil(prev * (P - el) / P)
if prev > 0 then
  local q, r = muldiv(prev, P - el, P)
  weighted = q
  if r > 0 then weighted = weighted + 1 end
end
local room = L - cur - weighted   -- floor of the room left, in events
if cost > L then dropForeign() return {0, math.max(room, 0), P, 0} end
if cost <= room then
  cur = cur + cost
  if op == 'charge' then write() end
  return {1, room - cost, 0, 0}
end
if op == 'charge' then write() end
local spare = L - cur - cost
local q, r, q2, edge
if spare >= 0 then
  q, r = muldiv(spare, P, prev)
  q2 = muldiv(r, M, prev)
  edge = start + P
else
  q, r = muldiv(L - cost, P, cur)
  q2 = muldiv(r, M, cur)
  edge = start + 2 * P
end
return {0, math.max(room, 0), edge - q - now, -q2}
)lua";

// limit.cpp FixedWindow: c = count in the window starting at t.
constexpr std::string_view kFixedWindow = R"lua(
local h = redis.call('HMGET', key, 'a', 'c', 't')
found = h[1]
local held = found == ALGO
if op == 'refund' and (not held or cost == 0) then return held and 1 or 0 end
local win = now - math.fmod(now, P)
local count, start = 0, win
if held then
  count, start = tonumber(h[2]), tonumber(h[3])
  if not (count and start) then return fail('the bucket is unreadable') end
  if win > start then count, start = 0, win end
end
local function write()
  local expire = start
  if count > 0 then expire = start + P end
  save(expire, 'c', count, 't', start)
end
if op == 'refund' then
  count = count - math.min(cost, count)
  write()
  return 1
end
if cost > L then dropForeign() return {0, math.max(L - count, 0), P, 0} end
if count + cost <= L then
  count = count + cost
  if op == 'charge' then write() end
  return {1, L - count, 0, 0}
end
if op == 'charge' then write() end
return {0, math.max(L - count, 0), start + P - now, 0}
)lua";

struct Scripts {
  std::array<std::string, 4> names;
  std::array<std::string, 4> sources;

  Scripts() {
    const std::array<std::string_view, 4> bodies{kTokenBucket, kGcra, kSlidingWindow, kFixedWindow};
    for (std::size_t i = 0; i < bodies.size(); ++i) {
      const std::string algo(algorithmName(static_cast<Algorithm>(i)));
      names[i] = "zetian_" + algo + "_v1";
      sources[i] = "local ALGO = '" + algo + "'\n" + std::string(kPrelude) + std::string(bodies[i]);
    }
  }
};

const Scripts& scripts() {
  static const Scripts all;
  return all;
}

bool usesBurst(Algorithm a) { return a == Algorithm::TokenBucket || a == Algorithm::Gcra; }

constexpr Nanos kNanosPerMs = 1'000'000;

}  // namespace

RedisScript redisScript(Algorithm algo) {
  const auto i = static_cast<std::size_t>(algo);
  const Scripts& all = scripts();
  if (i >= all.sources.size()) return {};
  return {all.names[i], all.sources[i]};
}

std::optional<std::string> redisDomainError(Algorithm algo, const Limit& limit) {
  if (limit.limit < 1 || limit.limit > kScriptMaxCount) return "limit must be 1 to 2^32 for a Redis rule";
  if (limit.burst > kScriptMaxCount) return "burst must be at most 2^32 for a Redis rule";
  if (limit.period_ns <= 0 || limit.period_ns % kNanosPerMs != 0 || limit.period_ns / kNanosPerMs > kScriptMaxPeriodMs)
    return "period must be a whole number of milliseconds, 1ms to 2^40 ms, for a Redis rule";
  if (usesBurst(algo)) {
    const unsigned __int128 product =
        static_cast<unsigned __int128>(limit.burst) * static_cast<unsigned __int128>(limit.period_ns / kNanosPerMs);
    const unsigned __int128 refill = (product + limit.limit - 1) / limit.limit;
    if (refill > static_cast<unsigned __int128>(kScriptMaxPeriodMs))
      return "burst * period / limit (the time to fill an empty bucket) must be at most 2^40 ms for a Redis rule";
  }
  return std::nullopt;
}

std::optional<std::vector<std::string>> redisScriptArgs(ScriptOp op, Algorithm algo, const Limit& limit,
                                                        std::uint64_t cost, std::optional<std::int64_t> now_ms,
                                                        std::string* error) {
  auto refuse = [&](std::string why) -> std::optional<std::vector<std::string>> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  if (static_cast<std::size_t>(algo) > static_cast<std::size_t>(Algorithm::FixedWindow))
    return refuse("unknown algorithm");
  if (auto why = redisDomainError(algo, limit)) return refuse(std::move(*why));
  if (cost > kScriptMaxCost) return refuse("cost must be at most 2^53 for a Redis rule");
  if (now_ms && (*now_ms < 0 || *now_ms > kScriptMaxNowMs)) return refuse("now must be 0 to 2^42 ms");
  std::vector<std::string> argv;
  argv.reserve(now_ms ? 6 : 5);
  switch (op) {
    case ScriptOp::Charge: argv.emplace_back("charge"); break;
    case ScriptOp::Refund: argv.emplace_back("refund"); break;
    case ScriptOp::Peek: argv.emplace_back("peek"); break;
  }
  if (argv.empty()) return refuse("unknown operation");
  argv.push_back(std::to_string(limit.limit));
  argv.push_back(std::to_string(limit.period_ns / kNanosPerMs));
  argv.push_back(std::to_string(limit.burst));
  argv.push_back(std::to_string(cost));
  if (now_ms) argv.push_back(std::to_string(*now_ms));
  return argv;
}

std::optional<Outcome> outcomeFromReply(std::span<const long long> integers) {
  if (integers.size() != 4) return std::nullopt;
  const long long allowed = integers[0], remaining = integers[1], retry_ms = integers[2], retry_ns = integers[3];
  if ((allowed != 0 && allowed != 1) || remaining < 0 || retry_ns < -kNanosPerMs || retry_ns > kNanosPerMs)
    return std::nullopt;
  const __int128 retry = static_cast<__int128>(retry_ms) * kNanosPerMs + retry_ns;
  constexpr Nanos kMax = std::numeric_limits<Nanos>::max(), kMin = std::numeric_limits<Nanos>::min();
  const Nanos saturated = retry > kMax ? kMax : retry < kMin ? kMin : static_cast<Nanos>(retry);
  return Outcome{allowed == 1, static_cast<double>(remaining), allowed == 1 ? 0 : saturated};
}

}  // namespace zetian::state
