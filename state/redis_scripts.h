// The four rate-limit algorithms as Redis Lua scripts: data for the Redis client, no I/O.
//
// Each script checks and charges in one step inside Redis (a script runs atomically),
// so a burst of calls from many nodes never sees the same tokens twice. The scripts
// give the same answers as state/limit.h, bit for bit, inside the domain below (the
// unit test runs thousands of random sequences through both and compares).
//
// One script per algorithm, taking the operation (charge, refund, peek) as its first
// argument: the three share all of the state reading and normalising code, which is
// the part that must mirror limit.cpp exactly, and the client loads and tracks four
// SHAs instead of twelve.
//
// ## Calling a script (Redis 4.0 or later: HSET with several fields)
//   EVALSHA <sha of redisScript(algo).source> 1 <key> <redisScriptArgs(...)...>
// Load each source once with SCRIPT LOAD (the reply is its SHA1); an EVALSHA answered
// with an error starting "NOSCRIPT" means Redis lost its script cache (restart,
// SCRIPT FLUSH, failover to a fresh replica): load again and resend.
//
// KEYS[1] is the bucket's key: `key_prefix + store key`. Store keys contain a NUL
// byte; Redis keys are binary-safe, so pass the key with its length (redisCommandArgv),
// never through a format string. One bucket is one Redis key (a hash), so a Redis
// Cluster needs no hash tags: the key's slot is the bucket's slot.
//
// ARGV (all decimal integers, built by redisScriptArgs):
//   1 op      "charge" | "refund" | "peek"
//   2 limit   3 period in ms   4 burst   5 cost
//   6 now in ms since the Unix epoch: only for tests. Absent, the script reads Redis
//     `TIME` (node clocks do not matter). The TTL is set with PEXPIREAT on the same
//     time scale, so an explicit `now` in the past makes the key vanish at once.
//
// ## Replies
//   charge, peek: an array of 4 integers {allowed 0|1, remaining, retry_ms, retry_ns};
//     retry_after = retry_ms * 1e6 + retry_ns nanoseconds (retry_ns lies in
//     [-1e6, 1e6]). outcomeFromReply() turns it into a state::Outcome.
//   refund: the integer 1 if a bucket of this algorithm was held (and given back), else 0.
//   Out of domain or an unreadable bucket: an error reply "ERR zetian: ...".
//
// ## Exactness: why milliseconds, and the domain
// Lua numbers in Redis are doubles, exact for integers below 2^53 only; limit.cpp
// works in int64 nanoseconds and 128-bit products. The scripts keep time in whole
// milliseconds (TIME truncated; now ~ 2^41 ms, exact), keep the one quantity with
// sub-millisecond precision (a GCRA arrival time) as milliseconds plus a remainder,
// and compute every product a*b/c through an exact mul-div (a double product when it
// stays below 2^53, a bit-by-bit long multiplication modulo c otherwise). Inside
//   now:     whole milliseconds, 0 <= now <= 2^42 ms (until the year 2109)
//   limit:   1 .. 2^32 (the configuration allows up to 1e9)
//   burst:   0 .. 2^32
//   period:  whole milliseconds, 1 ms .. 2^40 ms (the configuration takes whole ms)
//   token_bucket, gcra: ceil(burst * period / limit) <= 2^40 ms (the time an empty
//            bucket takes to fill)
//   cost:    0 .. 2^53
// every intermediate is an exact integer below 2^53 and a script answers exactly what
// state::charge / state::refund answer for now_ns = now * 1e6 and the same Limit,
// when the key holds what the script last wrote. Outside the domain the script and
// redisScriptArgs refuse the call with an error; nothing is clamped or rounded.
//
// ## Bucket lifetime (TTL) and another algorithm's bucket
// After a write the key expires (PEXPIREAT) at idleAt() rounded up to the next
// millisecond: the first instant from which the bucket is indistinguishable from a fresh
// one, at least 1 ms ahead. A write that leaves the bucket already fresh-equivalent
// deletes the key instead, as the local store keeps no entry for it.
// A key written by another algorithm is treated as the local store does
// (state/bucket_store.cpp): a charge starts from a fresh bucket and replaces it, a
// refund leaves it alone (returns 0), a peek answers as for a fresh bucket. A key
// written under another limit or period is read under the new one, like limit.h.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "state/limit.h"

namespace zetian::state {

enum class ScriptOp : std::uint8_t { Charge, Refund, Peek };

struct RedisScript {
  std::string_view name;    // stable, for logs and metrics: "zetian_token_bucket_v1"
  std::string_view source;  // the Lua text for SCRIPT LOAD / EVAL
};

// The script of one algorithm. The views live for the whole program.
RedisScript redisScript(Algorithm algo);

// Domain bounds (see above).
inline constexpr std::int64_t kScriptMaxNowMs = std::int64_t{1} << 42;
inline constexpr std::uint64_t kScriptMaxCount = std::uint64_t{1} << 32;
inline constexpr std::int64_t kScriptMaxPeriodMs = std::int64_t{1} << 40;
inline constexpr std::uint64_t kScriptMaxCost = std::uint64_t{1} << 53;

// Why a rule with this algorithm and limit cannot run in Redis exactly, or nullopt when
// it can. Meant for configuration time: a rule outside the domain should be refused
// there, with this text, rather than fail on every check.
std::optional<std::string> redisDomainError(Algorithm algo, const Limit& limit);

// The ARGV of a call (after KEYS), or nullopt with *error set when the limit, cost or
// explicit now_ms lies outside the domain.
std::optional<std::vector<std::string>> redisScriptArgs(ScriptOp op, Algorithm algo, const Limit& limit,
                                                        std::uint64_t cost, std::optional<std::int64_t> now_ms,
                                                        std::string* error);

// The Outcome of a charge or peek reply's four integers, or nullopt if they are not a
// well-formed reply (wrong count, allowed not 0/1, negative remaining, retry_ns out of
// range). retry_after_ns saturates at the largest Nanos, as limit.cpp does.
std::optional<Outcome> outcomeFromReply(std::span<const long long> integers);

}  // namespace zetian::state
