// Checks of a store = "redis" rule from milter threads (issue 9), in one process: one
// engine (no cluster) whose one rule (per client IP, limit far above the run, so every
// check is charged) lives in the Redis at --url, which the caller starts.
//
//   closed  as fast as possible from --threads threads: checks per second one node gets
//           from Redis (the client pipelines what the threads send in one loop turn).
//   paced   open loop at --rate: check i is due at t0 + i / rate; latency from the due
//           time to the end of the call (a check delayed behind a late one counts its
//           wait), and the call alone beside it.
//
// Beside the rate and the latencies it prints where the CPU went over the run: this
// process (getrusage: user, system, context switches) and its cluster thread per check,
// and, read from the server's INFO before and after (TCP or Unix URLs without a
// password), Redis's CPU per check, the EVALSHAs per read (how deep the pipelining
// was) and the time Redis spent inside EVALSHA per call. On a small machine that
// shares its CPUs with Redis these say which side ran out.
//
// A benchmark, not a test (not registered with CTest). Figures: docs/BENCHMARKS.md
// ("Redis store (issue 9)"):
//
//   redis-server --port 6390 --save '' --appendonly no --daemonize yes
//   build/tests/bench/redis_check closed --url redis://127.0.0.1:6390/0 --threads 16 --seconds 10
//   build/tests/bench/redis_check paced --url redis://127.0.0.1:6390/0 --rate 10000 --seconds 10
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "plugin/engine.h"

namespace {

using zetian::plugin::Engine;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string mode;
  std::string url;
  int threads = 16;
  double seconds = 10;
  double rate = 10000;
  int keys = 1000;
};

[[noreturn]] void usage(const char* why) {
  std::cerr << "redis_check: " << why << "\n"
            << "usage: redis_check closed|paced --url redis://HOST:PORT/DB [--threads N] [--seconds S] [--rate N]"
               " [--keys N]\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage("no mode");
  Options o;
  o.mode = argv[1];
  if (o.mode != "closed" && o.mode != "paced") usage("the mode is closed or paced");
  for (int i = 2; i < argc; i += 2) {
    if (i + 1 >= argc) usage("missing value");
    const std::string a = argv[i], v = argv[i + 1];
    try {
      if (a == "--url") o.url = v;
      else if (a == "--threads") o.threads = std::stoi(v);
      else if (a == "--seconds") o.seconds = std::stod(v);
      else if (a == "--rate") o.rate = std::stod(v);
      else if (a == "--keys") o.keys = std::stoi(v);
      else usage(("unknown option " + a).c_str());
    } catch (const std::logic_error&) {
      usage(("bad value for " + a).c_str());
    }
  }
  if (o.url.empty()) usage("--url is required (start a redis-server first)");
  if (o.threads < 1 || o.seconds <= 0 || o.rate <= 0 || o.keys < 1) usage("values must be positive");
  return o;
}

std::string metricsOf(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return "";
  }
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (::write(fd, req.data(), req.size()) < 0) {
    ::close(fd);
    return "";
  }
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, std::size_t(n));
  ::close(fd);
  return out;
}

double metric(const std::string& text, const std::string& series) {
  const auto at = text.find("\n" + series + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
}

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// CPU seconds (user + system) of this process's threads named `name`.
double threadsCpu(const std::string& name) {
  double ticks = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(entry.path() / "comm");
    std::string c;
    std::getline(comm, c);
    if (c != name) continue;
    std::ifstream f(entry.path() / "stat");
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    std::istringstream rest(text.substr(text.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
    }
  }
  return ticks / double(sysconf(_SC_CLK_TCK));
}

struct Usage {
  double user = 0, sys = 0;
  long voluntary = 0, involuntary = 0;
};

Usage usage() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return {double(u.ru_utime.tv_sec) + double(u.ru_utime.tv_usec) / 1e6,
          double(u.ru_stime.tv_sec) + double(u.ru_stime.tv_usec) / 1e6, u.ru_nvcsw, u.ru_nivcsw};
}

// The server's `INFO all`, as field -> value ("cmdstat_evalsha" -> "calls=...,usec=..."),
// or empty when the URL is not one this reads or the server does not answer. A
// blocking side channel on a connection of its own, outside the measured interval.
std::map<std::string, std::string> redisInfo(const std::string& url) {
  int fd = -1;
  if (url.rfind("unix:", 0) == 0) {
    const std::string path = url.substr(5, url.find('?') == std::string::npos ? std::string::npos : url.find('?') - 5);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    if (path.size() >= sizeof a.sun_path) return {};
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
    fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fd = (::close(fd), -1);
  } else if (url.rfind("redis://", 0) == 0) {
    const std::string rest = url.substr(8);
    const auto colon = rest.find(':'), slash = rest.find('/');
    if (colon == std::string::npos || rest.substr(0, colon) != "127.0.0.1") return {};  // loopback only
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    try {
      a.sin_port = htons(std::uint16_t(std::stoi(rest.substr(colon + 1, slash - colon - 1))));
    } catch (const std::logic_error&) {
      return {};
    }
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fd = (::close(fd), -1);
  }
  if (fd < 0) return {};
  const std::string req = "*2\r\n$4\r\nINFO\r\n$3\r\nall\r\n";
  std::string in;
  if (::write(fd, req.data(), req.size()) == ssize_t(req.size())) {
    // A bulk string: "$<length>\r\n<text>\r\n".
    char buf[65536];
    std::size_t want = std::string::npos;
    for (ssize_t n; (want == std::string::npos || in.size() < want) && (n = ::read(fd, buf, sizeof buf)) > 0;) {
      in.append(buf, std::size_t(n));
      const auto eol = in.find("\r\n");
      if (want == std::string::npos && eol != std::string::npos) {
        if (in[0] != '$') break;
        want = eol + 2 + std::stoul(in.substr(1, eol - 1)) + 2;
      }
    }
  }
  ::close(fd);
  std::map<std::string, std::string> info;
  std::istringstream lines(in);
  for (std::string line; std::getline(lines, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (colon != std::string::npos && line[0] != '#' && line[0] != '$')
      info[line.substr(0, colon)] = line.substr(colon + 1);
  }
  return info;
}

double infoNumber(const std::map<std::string, std::string>& info, const std::string& field) {
  const auto it = info.find(field);
  return it == info.end() ? 0 : std::strtod(it->second.c_str(), nullptr);
}

// A value inside a commandstats line: "calls=12,usec=345,..." -> usec.
double infoStat(const std::map<std::string, std::string>& info, const std::string& cmd, const std::string& key) {
  const auto it = info.find("cmdstat_" + cmd);
  if (it == info.end()) return 0;
  const auto at = ("," + it->second).find("," + key + "=");
  return at == std::string::npos ? 0 : std::strtod(it->second.c_str() + at + key.size() + 1, nullptr);
}

double pct(std::vector<std::int64_t>& v, double p) {
  if (v.empty()) return 0;
  const std::size_t k = std::min(v.size() - 1, std::size_t(p / 100.0 * double(v.size())));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(k), v.end());
  return double(v[k]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  char pattern[] = "/tmp/zt-redis-bench-XXXXXX";
  if (!mkdtemp(pattern)) return 1;
  const std::string dir = pattern;
  const std::string health = dir + "/health.sock";
  {
    std::ofstream f(dir + "/zetian.toml");
    f << "[node]\nid = \"bench\"\nstate_dir = \"" << dir << "/state\"\n"
      << "[log]\nlevel = \"warn\"\ntarget = \"file\"\nfile = \"" << dir << "/log\"\n"
      << "[health]\nsocket = \"" << health << "\"\n"
      << "[redis]\nurl = \"" << o.url << "\"\ntimeout = \"1s\"\nkey_prefix = \"bench:\"\n"
      << "[ratelimit]\nexempt = []\n"
      << "[[ratelimit.rule]]\nname = \"per-ip\"\nkey = \"client_ip\"\nlimit = 1000000000\nperiod = \"1h\"\n"
      << "store = \"redis\"\n";
  }
  zetian::plugin::Errors errors;
  auto engine = Engine::open(dir + "/zetian.toml", {}, &errors);
  if (!engine || !engine->start(&errors)) {
    std::cerr << "redis_check: " << (errors.empty() ? "the engine did not start" : errors.front()) << "\n";
    return 1;
  }
  const auto ready_until = Clock::now() + std::chrono::seconds(10);
  while (metric(metricsOf(health), "zetian_redis_up") != 1) {
    if (Clock::now() > ready_until) {
      std::cerr << "redis_check: Redis at " << o.url << " is not up (is redis-server running?)\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<std::string> ips;
  for (int i = 0; i < o.keys; ++i) ips.push_back("10." + std::to_string(i / 65536 % 256) + "." +
                                                 std::to_string(i / 256 % 256) + "." + std::to_string(i % 256));
  struct Worker {
    std::vector<std::int64_t> latency, service;
    std::uint64_t done = 0, not_continue = 0;
  };
  std::vector<Worker> workers(std::size_t(o.threads));
  const auto check = [&](Worker& w, std::size_t i) {
    zetian_verdict v;
    auto s = engine->openSession(ips[i % ips.size()].c_str(), nullptr);
    const int action = engine->check(*s, zetian::conf::Stage::Mail, "<a@example.org>", &v);
    engine->closeSession(std::move(s));
    if (action != ZETIAN_CONTINUE) ++w.not_continue;
  };
  const std::string before = metricsOf(health);
  const auto redis_before = redisInfo(o.url);
  const std::string load_before = loadavg();
  const Usage usage_before = usage();
  const double loop_before = threadsCpu("zetian-cluster");
  const auto t0 = Clock::now() + std::chrono::milliseconds(20);
  const auto stop = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  const std::uint64_t total = std::uint64_t(o.rate * o.seconds);
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    threads.emplace_back([&, t] {
      Worker& w = workers[std::size_t(t)];
      if (o.mode == "closed") {
        while (Clock::now() < t0) std::this_thread::yield();
        for (std::size_t i = std::size_t(t);; i += std::size_t(o.threads)) {
          const auto start = Clock::now();
          if (start >= stop) break;
          check(w, i);
          w.latency.push_back((Clock::now() - start).count());
          ++w.done;
        }
        return;
      }
      for (std::uint64_t i = std::uint64_t(t); i < total; i += std::uint64_t(o.threads)) {
        const auto due = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(double(i) / o.rate));
        if (Clock::now() < due) std::this_thread::sleep_until(due);
        const auto start = Clock::now();
        check(w, i);
        const auto end = Clock::now();
        w.latency.push_back((end - due).count());
        w.service.push_back((end - start).count());
        ++w.done;
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  const double loop_cpu = threadsCpu("zetian-cluster") - loop_before;
  const Usage usage_after = usage();
  const std::string load_after = loadavg();
  const auto redis_after = redisInfo(o.url);
  const std::string after = metricsOf(health);
  std::vector<std::int64_t> lat, svc;
  std::uint64_t done = 0, not_continue = 0;
  for (auto& w : workers) {
    lat.insert(lat.end(), w.latency.begin(), w.latency.end());
    svc.insert(svc.end(), w.service.begin(), w.service.end());
    done += w.done;
    not_continue += w.not_continue;
  }
  const double scripts = metric(after, "zetian_redis_scripts_total") - metric(before, "zetian_redis_scripts_total");
  const double fallbacks = metric(after, "zetian_fallbacks_total{rule=\"per-ip\",reason=\"unreachable\"}") +
                           metric(after, "zetian_fallbacks_total{rule=\"per-ip\",reason=\"timeout\"}");
  std::printf("mode=%s threads=%d url=%s checks=%llu seconds=%.2f achieved=%.0f/s not_continue=%llu"
              " redis_scripts=%.0f fallbacks=%.0f\n",
              o.mode.c_str(), o.threads, o.url.c_str(), (unsigned long long)done, elapsed, double(done) / elapsed,
              (unsigned long long)not_continue, scripts, fallbacks);
  const char* what = o.mode == "paced" ? "latency from due time" : "latency per call";
  std::printf("%s (us): p50=%.1f p90=%.1f p99=%.1f p99.9=%.1f\n", what, pct(lat, 50), pct(lat, 90), pct(lat, 99),
              pct(lat, 99.9));
  if (o.mode == "paced") {
    std::printf("service time, the call alone (us): p50=%.1f p90=%.1f p99=%.1f p99.9=%.1f\n", pct(svc, 50),
                pct(svc, 90), pct(svc, 99), pct(svc, 99.9));
  }
  const double checks = double(std::max<std::uint64_t>(done, 1));
  const double per = 1e6 / checks;
  std::printf("load before %s, after %s\n", load_before.c_str(), load_after.c_str());
  std::printf("this process: user %.2f s, system %.2f s, %.1f us CPU per check (cluster thread %.2f s, %.1f us per"
              " check); context switches %.2f voluntary, %.2f involuntary per check\n",
              usage_after.user - usage_before.user, usage_after.sys - usage_before.sys,
              per * (usage_after.user - usage_before.user + usage_after.sys - usage_before.sys), loop_cpu,
              per * loop_cpu, double(usage_after.voluntary - usage_before.voluntary) / checks,
              double(usage_after.involuntary - usage_before.involuntary) / checks);
  if (redis_before.empty() || redis_after.empty()) {
    std::printf("redis-server: INFO not read (only loopback TCP or unix: URLs without a password are)\n");
  } else {
    const auto delta = [&](const std::string& f) { return infoNumber(redis_after, f) - infoNumber(redis_before, f); };
    const double cpu = delta("used_cpu_user") + delta("used_cpu_sys");
    const double evalsha = infoStat(redis_after, "evalsha", "calls") - infoStat(redis_before, "evalsha", "calls");
    const double usec = infoStat(redis_after, "evalsha", "usec") - infoStat(redis_before, "evalsha", "usec");
    const double reads = delta("total_reads_processed");
    std::printf("redis-server: CPU %.2f s (%.0f%% of one CPU), %.1f us per check; EVALSHA %.0f, %.1f per read"
                " (%.0f reads), %.2f us inside each\n",
                cpu, 100 * cpu / elapsed, per * cpu, evalsha, reads > 0 ? evalsha / reads : 0, reads,
                evalsha > 0 ? usec / evalsha : 0);
  }
  engine.reset();
  std::filesystem::remove_all(dir);
  return 0;
}
