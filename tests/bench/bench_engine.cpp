// Engine decision latency: one MAIL FROM check through the whole engine path
// (policy snapshot, exemptions, key extraction, store charge, metrics), with the
// store already holding 1M keys. Target: median <= 1 us.
//
//   build/tests/bench/bench_engine --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
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

// Real traffic has few sessions open at once (their memory stays in cache) but
// clients spread over the whole key space (each check meets a cold bucket). So: a
// small pool of sessions, each given a random client of the 1M before each check
// (copying a precomputed address, as openSession would have done once).
constexpr int kSessions = 256;

struct Client {
  zetian::conf::IpAddress ip;
  std::string text;
};

const std::vector<Client>& clients() {
  static const std::vector<Client> all = [] {
    std::vector<Client> v(kKeys);
    for (std::uint32_t i = 0; i < kKeys; ++i) {
      v[i].text = ipv4(i);
      v[i].ip = *zetian::conf::IpAddress::parse(v[i].text);
    }
    return v;
  }();
  return all;
}

std::vector<std::unique_ptr<zetian::plugin::Session>> openSessions(Engine& engine) {
  std::vector<std::unique_ptr<zetian::plugin::Session>> sessions;
  for (int i = 0; i < kSessions; ++i) sessions.push_back(engine.openSession("192.0.2.1", nullptr));
  return sessions;
}

zetian::plugin::Session& nextSession(std::vector<std::unique_ptr<zetian::plugin::Session>>& sessions,
                                     std::mt19937& rng) {
  auto& s = *sessions[rng() % kSessions];
  const Client& c = clients()[rng() % kKeys];
  s.facts.client_ip = c.ip;
  s.facts.client_ip_text = c.text;
  return s;
}

void BM_EngineMailCheckWithMillionKeys(benchmark::State& state) {
  Engine& engine = engineWithMillionKeys();
  clients();
  auto sessions = openSessions(engine);
  std::mt19937 rng(7 + state.thread_index());
  zetian_verdict v;
  for (auto _ : state) {
    auto& s = nextSession(sessions, rng);
    benchmark::DoNotOptimize(engine.check(s, zetian::conf::Stage::Mail, "<sender@example.org>", &v));
  }
  for (auto& s : sessions) engine.closeSession(std::move(s));
}
BENCHMARK(BM_EngineMailCheckWithMillionKeys)->Threads(1)->Threads(2)->UseRealTime();

// The same, each call timed alone: the median and tail of one decision's latency
// (steady_clock's own ~20 ns included).
void BM_EngineMailCheckLatency(benchmark::State& state) {
  Engine& engine = engineWithMillionKeys();
  clients();
  auto sessions = openSessions(engine);
  std::mt19937 rng(11 + state.thread_index());
  std::vector<std::int64_t> samples;
  samples.reserve(1 << 22);
  zetian_verdict v;
  for (auto _ : state) {
    auto& s = nextSession(sessions, rng);
    auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(engine.check(s, zetian::conf::Stage::Mail, "<sender@example.org>", &v));
    auto t1 = std::chrono::steady_clock::now();
    if (samples.size() < samples.capacity()) samples.push_back((t1 - t0).count());
  }
  std::sort(samples.begin(), samples.end());
  auto pct = [&](double p) { return samples.empty() ? 0.0 : double(samples[std::size_t(p * (samples.size() - 1))]); };
  state.counters["p50_ns"] = pct(0.50);
  state.counters["p90_ns"] = pct(0.90);
  state.counters["p99_ns"] = pct(0.99);
  state.counters["p999_ns"] = pct(0.999);
  for (auto& s : sessions) engine.closeSession(std::move(s));
}
BENCHMARK(BM_EngineMailCheckLatency)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
