// How long one expiry call holds the cluster thread: the engine's housekeeping tick
// calls it on the loop, so its longest call is a stall of every heartbeat, link and
// health request behind it. Fills N keys (default 1,000,000, as many as max_keys)
// shaped like the engine's, then times:
// - the full sweep, expireIdle() (what the tick called before), on live keys (a scan
//   that drops nothing) and on idle keys (a scan that drops all);
// - expireIdleStep() with each budget of slots per call, over one full pass each way:
//   the longest call, the median call and the calls a pass takes.
//
// Each call is timed twice: wall time (what the loop waits, including any preemption
// by other processes) and the thread's CPU time (the work itself, which a loaded
// machine does not inflate).
//
// Then one admin listing page (BucketStore::list with the engine's bounds), which
// also runs on the loop: a 1000-key page, and a page for a rule no key matches
// (the bounded scan).
//
//   expiry_stall [N] [SLOTS_PER_CALL...]     (default budgets: 4096 8192 16384 65536)
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "state/bucket_store.h"

namespace {

using namespace zetian;
using Clock = std::chrono::steady_clock;

constexpr state::Nanos kSecond = state::kNanosPerSecond;
// Charged once at t=0: idle (full again) at 36 s, so "live" before that, "idle" after.
const state::Limit kLimit{100, 3600 * kSecond, 100};
constexpr state::Nanos kLive = kSecond;
constexpr state::Nanos kIdle = 3600 * kSecond;

std::string engineKey(std::size_t i) { return std::string("sender\0u", 8) + std::to_string(i) + "@example.net"; }

void fill(state::BucketStore& store, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) store.charge(engineKey(i), state::Algorithm::TokenBucket, kLimit, 0, 1);
}

double micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

double threadCpuMicros() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e6 + double(ts.tv_nsec) / 1e3;
}

// One call's wall and CPU time.
struct Timing {
  double wall_us;
  double cpu_us;
};

template <typename Fn>
Timing timed(Fn fn) {
  const auto start = Clock::now();
  const double cpu_start = threadCpuMicros();
  fn();
  return Timing{micros(Clock::now() - start), threadCpuMicros() - cpu_start};
}

struct PassFigures {
  double max_us = 0;  // wall
  double median_us = 0;
  double max_cpu_us = 0;
  double median_cpu_us = 0;
  std::size_t calls = 0;
  std::size_t expired = 0;
};

PassFigures stepPass(state::BucketStore& store, state::Nanos now, std::size_t slots) {
  std::vector<double> wall;
  std::vector<double> cpu;
  PassFigures f;
  bool complete = false;
  while (!complete) {
    state::ExpiryProgress p;
    const Timing t = timed([&] { p = store.expireIdleStep(now, slots); });
    wall.push_back(t.wall_us);
    cpu.push_back(t.cpu_us);
    f.expired += p.expired;
    complete = p.pass_complete;
  }
  std::sort(wall.begin(), wall.end());
  std::sort(cpu.begin(), cpu.end());
  f.max_us = wall.back();
  f.median_us = wall[wall.size() / 2];
  f.max_cpu_us = cpu.back();
  f.median_cpu_us = cpu[cpu.size() / 2];
  f.calls = wall.size();
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 1'000'000;
  std::vector<std::size_t> budgets;
  for (int i = 2; i < argc; ++i) budgets.push_back(std::strtoull(argv[i], nullptr, 10));
  if (budgets.empty()) budgets = {4096, 8192, 16384, 65536};

  state::BucketStore store(n);
  fill(store, n);
  std::printf("keys=%zu shards=%zu slots=%llu\n", static_cast<std::size_t>(store.stats().keys), store.shardCount(),
              static_cast<unsigned long long>(store.slotCount()));

  // Before: one call walks the whole table.
  Timing full_live{0, 0};
  for (int i = 0; i < 5; ++i) {
    const Timing t = timed([&] { store.expireIdle(kLive); });
    full_live.wall_us = std::max(full_live.wall_us, t.wall_us);
    full_live.cpu_us = std::max(full_live.cpu_us, t.cpu_us);
  }
  std::printf("full sweep, live keys (drops none): longest of 5 calls %.0f us wall, %.0f us cpu\n",
              full_live.wall_us, full_live.cpu_us);
  {
    std::size_t dropped = 0;
    const Timing t = timed([&] { dropped = store.expireIdle(kIdle); });
    std::printf("full sweep, idle keys (drops %zu): one call %.0f us wall, %.0f us cpu\n", dropped, t.wall_us,
                t.cpu_us);
  }

  // After: bounded steps.
  for (const std::size_t slots : budgets) {
    fill(store, n);
    const PassFigures live = stepPass(store, kLive, slots);
    const PassFigures idle = stepPass(store, kIdle, slots);
    for (const auto& [name, f] : {std::pair{"live", live}, std::pair{"idle", idle}}) {
      std::printf(
          "step %zu slots/call, %s pass (drops %zu): %zu calls; longest %.0f us wall, %.0f us cpu; "
          "median %.0f us wall, %.0f us cpu\n",
          slots, name, f.expired, f.calls, f.max_us, f.max_cpu_us, f.median_us, f.median_cpu_us);
    }
  }
  fill(store, n);
  for (const auto& [name, prefix] : {std::pair{"1000 keys, any rule", std::string()},
                                     std::pair{"a rule no key matches", std::string("nomatch\0", 8)}}) {
    state::ListPage page;
    Timing longest{0, 0};
    state::ListCursor cursor;
    for (int i = 0; i < 5; ++i) {
      const Timing t = timed([&] { page = store.list(prefix, cursor, state::ListLimits{1000}); });
      longest.wall_us = std::max(longest.wall_us, t.wall_us);
      longest.cpu_us = std::max(longest.cpu_us, t.cpu_us);
      if (!page.next) break;
      cursor = *page.next;
    }
    std::printf("list page (%s): %zu entries, longest of 5 pages %.0f us wall, %.0f us cpu\n", name,
                page.entries.size(), longest.wall_us, longest.cpu_us);
  }
  return 0;
}
