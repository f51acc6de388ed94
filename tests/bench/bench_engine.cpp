// Engine decision latency: one MAIL FROM check through the whole engine path
// (policy snapshot, exemptions, key extraction, store charge, metrics), with the
// store already holding 1M keys. Target: median <= 1 us.
//
//   build/tests/bench/bench_engine --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "plugin/engine.h"

namespace {

using zetian::plugin::Engine;

constexpr int kKeys = 1'000'000;

std::string ipv4(std::uint32_t n) {
  return std::to_string(10 + (n >> 24 & 0x7f)) + "." + std::to_string(n >> 16 & 0xff) + "." +
         std::to_string(n >> 8 & 0xff) + "." + std::to_string(n & 0xff);
}

Engine& engineWithMillionKeys() {
  static std::unique_ptr<Engine> engine = [] {
    std::string dir = std::filesystem::temp_directory_path() / ("zetian-bench-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    std::string path = dir + "/zetian.toml";
    std::ofstream(path) << R"(
[log]
level = "error"
target = "stderr"
[ratelimit]
exempt = []
max_keys = 2000000
[[ratelimit.rule]]
name = "per-client-ip"
key = "client_ip"
limit = 1000000
period = "1h"
)";
    zetian::plugin::Errors errors;
    auto e = Engine::open(path, {}, &errors);
    std::filesystem::remove_all(dir);
    if (!e) std::abort();
    for (std::uint32_t i = 0; i < kKeys; ++i) {
      auto s = e->openSession(ipv4(i).c_str(), nullptr);
      zetian_verdict v;
      e->check(*s, zetian::conf::Stage::Mail, "<a@example.org>", &v);
      e->closeSession(std::move(s));
    }
    return e;
  }();
  return *engine;
}

void BM_EngineMailCheckWithMillionKeys(benchmark::State& state) {
  Engine& engine = engineWithMillionKeys();
  std::mt19937 rng(42 + state.thread_index());
  std::vector<std::unique_ptr<zetian::plugin::Session>> sessions;
  for (int i = 0; i < 1024; ++i) sessions.push_back(engine.openSession(ipv4(rng() % kKeys).c_str(), nullptr));
  std::size_t i = 0;
  zetian_verdict v;
  for (auto _ : state) {
    auto& s = *sessions[i++ & 1023];
    benchmark::DoNotOptimize(engine.check(s, zetian::conf::Stage::Mail, "<sender@example.org>", &v));
  }
  for (auto& s : sessions) engine.closeSession(std::move(s));
}
BENCHMARK(BM_EngineMailCheckWithMillionKeys)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
