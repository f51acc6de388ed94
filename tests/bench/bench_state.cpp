// Benchmarks of the limiter: the pure algorithms, and charge() on a store that holds
// 1,000,000 keys (the default ratelimit.max_keys), from one and two threads.
// Figures and the commands that produced them: docs/BENCHMARKS.md, "Limiter store".
#include <benchmark/benchmark.h>
#include <sys/prctl.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "state/bucket_store.h"
#include "state/key_hash.h"
#include "state/limit.h"
#include "tests/bench/baseline_store.h"

namespace zetian::state {
namespace {

constexpr std::int64_t kStoreKeys = 1'000'000;
constexpr std::size_t kSampleKeys = 1 << 20;  // a power of two: index by masking
const Limit kLimit{100, 3600 * kNanosPerSecond, 100};

// Keys shaped like the engine's: rule name, NUL, an address (about 26 bytes). The
// engine builds each key just before it charges, so the benchmarks do the same in a
// reused buffer (cheap, and in cache) rather than reading it from a 1M-entry table.
void formatKey(std::string& out, std::size_t i) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, i).ptr;
  out.assign("sender\0u", 8);
  out.append(digits, end);
  out.append("@example.net");
}

template <class Store>
void fill(Store& store, std::size_t keys) {
  std::string key;
  for (std::size_t i = 0; i < keys; ++i) {
    formatKey(key, i);
    store.charge(key, Algorithm::TokenBucket, kLimit, 0, 1);
  }
}

// A fixed random sequence of key indices, so that the loop does not time an RNG.
const std::vector<std::uint32_t>& randomIndices() {
  static const std::vector<std::uint32_t> order = [] {
    std::mt19937_64 rng(42);
    std::vector<std::uint32_t> o(kSampleKeys);
    for (auto& i : o) i = static_cast<std::uint32_t>(rng());
    return o;
  }();
  return order;
}

// Charging only at one instant would empty every bucket; time advances by a second
// per 1,000 charges instead, so most calls are admitted as in normal operation.
Nanos clockFor(std::uint64_t i) { return static_cast<Nanos>(i) * (kNanosPerSecond / 1000); }

// Filled once per size, on first use, outside any timed loop. Stores are immovable,
// hence the unique_ptr.
template <class Store>
Store& filledStore(std::size_t keys) {
  static std::mutex mu;
  static std::map<std::size_t, std::unique_ptr<Store>> stores;
  std::lock_guard lock(mu);
  auto& store = stores[keys];
  if (!store) {
    store = std::make_unique<Store>(keys, 64);
    fill(*store, keys);
  }
  return *store;
}

void BM_Algorithm(benchmark::State& state) {
  const auto algo = static_cast<Algorithm>(state.range(0));
  const Limit limit{1000, kNanosPerSecond, 50};
  BucketState bucket;
  Nanos now = 0;
  std::uint64_t allowed = 0;
  for (auto _ : state) {
    now += 700'000;  // slightly faster than the rate: a mix of admits and denials
    const Outcome o = charge(algo, limit, bucket, now, 1);
    allowed += o.allowed;
    benchmark::DoNotOptimize(o);
  }
  state.SetLabel(std::string(algorithmName(algo)));
  state.counters["admitted"] = benchmark::Counter(double(allowed) / double(state.iterations()));
}
BENCHMARK(BM_Algorithm)->DenseRange(0, 3);

void BM_SipHash13(benchmark::State& state) {
  const HashKey key{0x0123456789abcdefULL, 0xfedcba9876543210ULL};
  std::string k;
  formatKey(k, 123456);
  for (auto _ : state) benchmark::DoNotOptimize(sipHash13(key, k));
}
BENCHMARK(BM_SipHash13);

// charge() on a random key among range(0) held keys; per thread, its own slice of
// the random sequence.
void BM_StoreCharge(benchmark::State& state) {
  const auto keys = static_cast<std::size_t>(state.range(0));
  BucketStore& store = filledStore<BucketStore>(keys);
  const auto& order = randomIndices();
  std::string key;
  std::uint64_t i = static_cast<std::uint64_t>(state.thread_index()) * (kSampleKeys / 2);
  for (auto _ : state) {
    formatKey(key, order[i & (kSampleKeys - 1)] % keys);
    const Outcome o = store.charge(key, Algorithm::TokenBucket, kLimit, clockFor(i), 1);
    benchmark::DoNotOptimize(o);
    ++i;
  }
  if (state.thread_index() == 0) state.counters["keys"] = double(store.stats().keys);
}
BENCHMARK(BM_StoreCharge)->Arg(10'000)->Arg(kStoreKeys)->Threads(1)->Threads(2)->UseRealTime();

// The same on the std::list + std::unordered_map layout (baseline_store.h).
void BM_BaselineStoreCharge(benchmark::State& state) {
  const auto keys = static_cast<std::size_t>(state.range(0));
  bench::BaselineStore& store = filledStore<bench::BaselineStore>(keys);
  const auto& order = randomIndices();
  std::string key;
  std::uint64_t i = static_cast<std::uint64_t>(state.thread_index()) * (kSampleKeys / 2);
  for (auto _ : state) {
    formatKey(key, order[i & (kSampleKeys - 1)] % keys);
    const Outcome o = store.charge(key, Algorithm::TokenBucket, kLimit, clockFor(i), 1);
    benchmark::DoNotOptimize(o);
    ++i;
  }
}
BENCHMARK(BM_BaselineStoreCharge)->Arg(kStoreKeys)->Threads(1)->Threads(2)->UseRealTime();

// Per-call latency percentiles of charge() with 1M keys: each call timed on its own
// with steady_clock (adds about 20 ns per call; the mean from BM_StoreCharge has no
// such overhead). Reported as counters p50_ns, p90_ns, p99_ns, p999_ns.
void BM_StoreChargeLatency(benchmark::State& state) {
  const auto keys = static_cast<std::size_t>(state.range(0));
  BucketStore& store = filledStore<BucketStore>(keys);
  const auto& order = randomIndices();
  std::string key;
  std::vector<std::int64_t> samples;
  samples.reserve(1 << 22);
  std::uint64_t i = static_cast<std::uint64_t>(state.thread_index()) * (kSampleKeys / 2) + 12345;
  for (auto _ : state) {
    formatKey(key, order[i & (kSampleKeys - 1)] % keys);
    const auto t0 = std::chrono::steady_clock::now();
    const Outcome o = store.charge(key, Algorithm::TokenBucket, kLimit, clockFor(i), 1);
    const auto t1 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(o);
    if (samples.size() < samples.capacity()) samples.push_back((t1 - t0).count());
    ++i;
  }
  if (samples.empty()) return;
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) { return double(samples[std::size_t(q * double(samples.size() - 1))]); };
  state.counters["p50_ns"] = benchmark::Counter(at(0.50), benchmark::Counter::kAvgThreads);
  state.counters["p90_ns"] = benchmark::Counter(at(0.90), benchmark::Counter::kAvgThreads);
  state.counters["p99_ns"] = benchmark::Counter(at(0.99), benchmark::Counter::kAvgThreads);
  state.counters["p999_ns"] = benchmark::Counter(at(0.999), benchmark::Counter::kAvgThreads);
}
BENCHMARK(BM_StoreChargeLatency)->Arg(kStoreKeys)->Threads(1)->Threads(2)->UseRealTime();

// merge() of a replicated state (2 tokens used just now) into a random key among
// range(0) held keys: the replica's side of replication, per key. A lookup under the
// shard lock plus mergeBuckets(), which peeks at both views.
void BM_StoreMerge(benchmark::State& state) {
  const auto keys = static_cast<std::size_t>(state.range(0));
  BucketStore& store = filledStore<BucketStore>(keys);
  const auto& order = randomIndices();
  std::string key;
  std::uint64_t i = static_cast<std::uint64_t>(state.thread_index()) * (kSampleKeys / 2) + 777;
  for (auto _ : state) {
    formatKey(key, order[i & (kSampleKeys - 1)] % keys);
    const Nanos now = clockFor(i);
    const BucketState incoming{0, 2, now, true};
    benchmark::DoNotOptimize(store.merge(key, Algorithm::TokenBucket, kLimit, incoming, now));
    ++i;
  }
  if (state.thread_index() == 0) state.counters["keys"] = double(store.stats().keys);
}
BENCHMARK(BM_StoreMerge)->Arg(10'000)->Arg(kStoreKeys)->Threads(1)->Threads(2)->UseRealTime();

// A full expireIdle() pass over 1M keys of which none is idle: the cost of the
// periodic sweep, spread over 64 shards and released every 256 buckets.
void BM_ExpireIdleScan1M(benchmark::State& state) {
  BucketStore& store = filledStore<BucketStore>(kStoreKeys);
  for (auto _ : state) benchmark::DoNotOptimize(store.expireIdle(0));
  state.counters["keys"] = double(store.stats().keys);
}
BENCHMARK(BM_ExpireIdleScan1M)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace zetian::state

// `--thp=off` disables transparent huge pages for this process (prctl), to measure
// what the store's huge-page mappings are worth; other flags go to Google Benchmark.
int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--thp=off") {
      ::prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
