// What the engine needs of "Redis", whatever stands behind it: one server (Client,
// cluster/redis/client.h) or a Redis Cluster (ClusterClient, cluster/redis/cluster_client.h).
// The engine holds a Backend and never knows which; limiter.h builds the right one from
// [redis].
//
// Also here: the call rule both apply to a stage's items once each has its answer
// (settleCall), so the rule is written once. Its input is what Redis did: every item
// ran (pipelined on one connection, or concurrently on several masters), and each was
// charged or denied on its own; the rule turns that into what the caller sees, the
// same as an owner's sequential evaluation (cluster/limits/evaluate.h).
//
// Threads: every method runs on the loop thread, except status() and counters(), which
// any thread may call.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cluster/limits/service.h"
#include "cluster/wire/codec.h"
#include "state/limit.h"

namespace zetian::cluster::redis {

enum class LinkState : std::uint8_t { Connecting, Ready, Down };
std::string_view nameOf(LinkState state);

// Errors by kind, as in zetian_redis_errors_total{kind}.
enum class ErrorKind : std::uint8_t {
  Connect,    // could not connect, or the connection closed
  Auth,       // AUTH or SELECT refused
  Timeout,    // no answer by the call's deadline
  NoScript,   // the server had lost the scripts (reloaded)
  Reply,      // an error reply to a script (READONLY, OOM, a script error...)
  Protocol,   // a reply the scripts never give
};
inline constexpr std::size_t kErrorKinds = 6;
std::string_view nameOf(ErrorKind kind);

struct ClientStatus {
  // One server: describe(target), with the resolved address once known. A cluster: its
  // masters' HOST:PORT, comma-separated (the seeds until the slot map is known).
  std::string address;
  LinkState state = LinkState::Connecting;
  // From ROLE at connect ("master", "slave"...), empty before; "cluster" for a cluster.
  std::string role;
  std::string last_error;  // empty when none since the last Ready
  bool ever_ready = false;
};

struct ClientCounters {
  std::uint64_t calls = 0;        // stages sent to Redis
  std::uint64_t items = 0;        // script runs for them (refunds included)
  std::uint64_t late_answers = 0; // answers after their call's deadline (charges given back)
  std::uint64_t connects = 0;     // connections that became Ready
  std::uint64_t script_loads = 0; // SCRIPT LOAD runs
  std::array<std::uint64_t, kErrorKinds> errors{};
  // A Redis Cluster only (0 for one server).
  std::uint64_t moved = 0;           // MOVED answers followed (the slot map refreshed)
  std::uint64_t asked = 0;           // ASK answers followed (ASKING, then the item again)
  std::uint64_t slot_map_loads = 0;  // CLUSTER SLOTS answers applied
};

class Backend {
 public:
  using Clock = std::chrono::steady_clock;
  using Done = limits::LimitService::Done;
  using PeekDone = std::function<void(std::optional<state::Outcome> outcome, std::string error)>;
  using EraseDone = std::function<void(long long erased, std::string error)>;

  virtual ~Backend() = default;

  virtual void start() = 0;  // connect (in the background)

  // One stage's items; `done` runs exactly once, on the loop thread (inline when the
  // call fails at once). Every item is charged, or the call fails (`failed`) and
  // nothing it charged stands.
  virtual void call(std::vector<wire::LimitItem> items, Clock::time_point deadline, Done done) = 0;
  // Give back charges (no answer awaited; lost if Redis is down: they refill).
  virtual void refund(std::vector<wire::LimitItem> items) = 0;

  // For the admin endpoints. `done` runs exactly once on the loop thread: with the
  // answer, or with an error text (Redis down, an error reply). peek(): what a charge
  // of `item` would answer, or nullopt when Redis holds no bucket for its key.
  // erase(): DEL of the item's key; the number of keys deleted.
  virtual void peek(const wire::LimitItem& item, PeekDone done) = 0;
  virtual void erase(const std::string& store_key, EraseDone done) = 0;
  // Every key whose store key starts with `store_key_prefix` (SCAN, then UNLINK of each;
  // on every master of a Redis Cluster): the number deleted, or an error with the
  // number deleted before it. Keys created while it runs may be left.
  virtual void eraseAll(const std::string& store_key_prefix, EraseDone done) = 0;

  virtual ClientStatus status() const = 0;      // any thread
  virtual ClientCounters counters() const = 0;  // any thread
};

// A stage's verdict once every item has run. `outcomes[i]`: item i's answer (Charged or
// Denied), nullopt when it has none; `failed`: the call failed (an item could not run,
// or the answers came too late). Returns what the caller gets, and the indices of the
// items whose charge must be given back:
// - failed: the call fails, and every Charged item goes back;
// - otherwise items are read in order, and the first blocking denial stops the call:
//   the charges before it are given back (Returned), and those after it (they ran all
//   the same) are given back too and reported NotEvaluated, as are later denials.
struct Settled {
  limits::CallResult result;
  std::vector<std::size_t> give_back;
};
Settled settleCall(const std::vector<wire::LimitItem>& items,
                   const std::vector<std::optional<wire::LimitOutcome>>& outcomes,
                   std::optional<limits::FallbackReason> failed);

}  // namespace zetian::cluster::redis
