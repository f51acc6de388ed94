// Cluster-scope check latency and owner throughput (issue 8), in one process: 2 or 3
// engines (Engine::open from config files, cluster on 127.0.0.1, seeded with each
// other), each with the same rule, so that a check made on one engine for a key another
// engine owns travels over a real loopback node link.
//
//   paced   open loop: check number i is due at t0 + i / rate, spread over --threads
//           threads; latency is measured from the due time to the end of the call, so
//           a check that waited for a late thread or a busy cluster thread counts its
//           wait (no coordinated omission). The time inside the call alone is reported
//           beside it ("service").
//   closed  as fast as possible from --threads threads: checks per second served.
//
// Keys: client IPs whose store key ("RULE\0IP") the chosen owner engine owns in the
// placement view (cluster::placement::ownerOf), so every check is remote; with
// --scope node every check is local, for comparison. The rule's limit is far above the
// run, so every check is charged and none is denied. --consistency passes through to
// the rule; with fast, the checks decided from b1's lease (no round trip) are counted
// from its metrics (zetian_lease_tokens_consumed_total) and reported as a share.
//
// Warm-up (--warmup S, not measured): paced mode runs the same schedule at the same
// rate for S seconds first, so that fast-mode leases form and are sized for the
// measured load (a lease follows the demand of the last sync_interval; a closed-loop
// warm-up would size it for a different rate); closed mode checks as fast as it can.
//
// A benchmark, not a test: it is not registered with CTest. Figures and commands:
// docs/BENCHMARKS.md ("Cluster-scope checks").
//
//   build/tests/bench/cluster_check paced --rate 10000 --seconds 10
//   build/tests/bench/cluster_check closed --threads 8 --seconds 5 --from 2
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cluster/placement/hrw.h"
#include "plugin/engine.h"

namespace {

using zetian::plugin::Engine;
using Clock = std::chrono::steady_clock;
constexpr const char* kRule = "per-ip";

struct Options {
  std::string mode;  // paced | closed
  int nodes = 3;
  double rate = 1000;
  double seconds = 10;
  int threads = 0;   // 0: 4 for paced, 8 for closed
  int from = 1;      // closed: how many non-owner engines drive checks at once (1 or 2)
  std::string scope = "cluster";
  std::string consistency = "exact";
  int keys = 1000;   // distinct client IPs
  double warmup = 1;
  std::string sync_interval;  // [cluster] sync_interval; empty: the default
};

[[noreturn]] void usage(const char* why) {
  std::cerr << "cluster_check: " << why << "\n"
            << "usage: cluster_check paced|closed [--nodes 2|3] [--rate N] [--seconds S] [--threads N]\n"
               "         [--from 1|2] [--scope cluster|node] [--consistency exact|fast] [--keys N]\n"
               "         [--warmup S] [--sync-interval DURATION]\n";
  std::exit(2);
}

Options parse(int argc, char** argv) {
  if (argc < 2) usage("no mode");
  Options o;
  o.mode = argv[1];
  if (o.mode != "paced" && o.mode != "closed") usage("the mode is paced or closed");
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + a).c_str());
    std::string v = argv[++i];
    try {
      if (a == "--nodes") o.nodes = std::stoi(v);
      else if (a == "--rate") o.rate = std::stod(v);
      else if (a == "--seconds") o.seconds = std::stod(v);
      else if (a == "--threads") o.threads = std::stoi(v);
      else if (a == "--from") o.from = std::stoi(v);
      else if (a == "--scope") o.scope = v;
      else if (a == "--consistency") o.consistency = v;
      else if (a == "--keys") o.keys = std::stoi(v);
      else if (a == "--warmup") o.warmup = std::stod(v);
      else if (a == "--sync-interval") o.sync_interval = v;
      else usage(("unknown option " + a).c_str());
    } catch (const std::logic_error&) {
      usage(("bad value for " + a + ": " + v).c_str());
    }
  }
  if (o.nodes < 2 || o.nodes > 3) usage("--nodes is 2 or 3");
  if (o.rate <= 0 || o.seconds <= 0 || o.keys < 1 || o.threads < 0 || o.warmup < 0) usage("values must be positive");
  if (o.from < 1 || o.from > o.nodes - 1) usage("--from is 1 .. nodes - 1");
  if (o.scope != "cluster" && o.scope != "node") usage("--scope is cluster or node");
  if (o.consistency != "exact" && o.consistency != "fast") usage("--consistency is exact or fast");
  if (o.threads == 0) o.threads = o.mode == "paced" ? 4 : 8;
  return o;
}

int freePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) std::abort();
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string loadavg() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  f >> a >> b >> c;
  return a + " " + b + " " + c;
}

// GET /metrics over the engine's health socket (the metrics are rendered on its cluster
// thread, which is where they must be read).
std::string metricsOf(const std::string& socket_path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, socket_path.c_str(), sizeof a.sun_path - 1);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) close(fd);
    return "";
  }
  const std::string req = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (write(fd, req.data(), req.size()) != ssize_t(req.size())) {
    close(fd);
    return "";
  }
  std::string out;
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, std::size_t(n));
  close(fd);
  return out;
}

// The sum of every sample of metric `name` (all label sets).
double metricSum(const std::string& text, const std::string& name) {
  double sum = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : '\0';
    if (next != ' ' && next != '{') continue;
    sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

struct Node {
  std::string id;
  std::string dir;
  std::string health;
  std::unique_ptr<Engine> engine;
  std::vector<int> loop_tids;  // the engine's cluster thread(s) ("zetian-cluster")
};

// Thread ids of this process named `name`.
std::vector<int> threadsNamed(const std::string& name) {
  std::vector<int> tids;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(entry.path() / "comm");
    std::string c;
    std::getline(comm, c);
    if (c == name) tids.push_back(std::stoi(entry.path().filename().string()));
  }
  return tids;
}

// CPU seconds (user + system) a thread of this process has used.
double threadCpu(int tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);  // utime, stime
  }
  return ticks / double(sysconf(_SC_CLK_TCK));
}

double loopCpu(const Node& n) {
  double sum = 0;
  for (int tid : n.loop_tids) sum += threadCpu(tid);
  return sum;
}

std::vector<Node> startCluster(const Options& o, const std::string& root) {
  std::vector<Node> nodes(std::size_t(o.nodes));
  std::vector<int> ports;
  for (int i = 0; i < o.nodes; ++i) ports.push_back(freePort());
  for (int i = 0; i < o.nodes; ++i) {
    Node& n = nodes[std::size_t(i)];
    n.id = "b" + std::to_string(i + 1);
    n.dir = root + "/" + n.id;
    n.health = n.dir + "/health.sock";
    std::filesystem::create_directories(n.dir);
    std::string seeds;
    for (int j = 0; j < o.nodes; ++j) {
      if (j == i) continue;
      seeds += std::string(seeds.empty() ? "" : ", ") + "\"127.0.0.1:" + std::to_string(ports[std::size_t(j)]) + "\"";
    }
    const std::string path = n.dir + "/zetian.toml";
    std::ofstream(path) << "[node]\nid = \"" << n.id << "\"\nstate_dir = \"" << n.dir << "\"\n"
                        << "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n"
                        << "[health]\nsocket = \"" << n.health << "\"\n"
                        << "[ratelimit]\nexempt = []\n"
                        << "[[ratelimit.rule]]\nname = \"" << kRule << "\"\nkey = \"client_ip\"\n"
                        << "limit = 1000000000\nperiod = \"1h\"\nscope = \"" << o.scope << "\"\n"
                        << "consistency = \"" << o.consistency << "\"\n"
                        << "[cluster]\nenabled = true\nbind = \"127.0.0.1:" << ports[std::size_t(i)] << "\"\n"
                        << "seeds = [" << seeds << "]\n"
                        << "shared_secret = \"bench-secret-0123456789abcdef\"\n"
                        << "heartbeat_interval = \"200ms\"\nfailure_detection_timeout = \"2s\"\n";
    if (!o.sync_interval.empty()) std::ofstream(path, std::ios::app) << "sync_interval = \"" << o.sync_interval << "\"\n";
    zetian::plugin::Errors errors;
    n.engine = Engine::open(path, {}, &errors);
    if (!n.engine || !n.engine->start(&errors)) {
      std::cerr << "cluster_check: engine " << n.id << " did not start:";
      for (const auto& e : errors) std::cerr << " " << e;
      std::cerr << "\n";
      std::exit(1);
    }
    // The cluster threads that appeared with this engine are its own.
    for (int tid : threadsNamed("zetian-cluster")) {
      bool known = false;
      for (const auto& other : nodes) known |= std::find(other.loop_tids.begin(), other.loop_tids.end(), tid) != other.loop_tids.end();
      if (!known) n.loop_tids.push_back(tid);
    }
  }
  // Every engine must list every member as a candidate owner before keys are placed.
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  for (;;) {
    bool all = true;
    for (auto& n : nodes) {
      auto v = n.engine->view();
      if (!v || v->members.size() != nodes.size()) all = false;
    }
    if (all) break;
    if (Clock::now() > deadline) {
      std::cerr << "cluster_check: the engines did not all see each other within 30 s\n";
      std::exit(1);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return nodes;
}

// `count` client IPs whose key the engine `owner` owns in `from`'s view (any IP for
// scope node).
std::vector<std::string> keysOwnedBy(const Options& o, const Engine& from, const std::string& owner) {
  auto view = from.view();
  std::vector<std::string> ips;
  for (std::uint32_t n = 1; int(ips.size()) < o.keys; ++n) {
    std::string ip = "10." + std::to_string(n >> 16 & 0xff) + "." + std::to_string(n >> 8 & 0xff) + "." +
                     std::to_string(n & 0xff);
    std::string key = std::string(kRule) + '\0' + ip;
    if (o.scope == "node" || zetian::cluster::placement::ownerOf(key, view->members) == owner) ips.push_back(ip);
  }
  return ips;
}

struct Worker {
  Engine* engine = nullptr;
  std::vector<std::unique_ptr<zetian::plugin::Session>> sessions;
  std::vector<std::int64_t> latency;  // ns, from the due time (paced) or the call's start
  std::vector<std::int64_t> service;  // ns, the call alone
  std::uint64_t done = 0;
  std::uint64_t not_continue = 0;
  Clock::time_point last_end{};
};

double pct(std::vector<std::int64_t>& v, double p) {
  if (v.empty()) return 0;
  return double(v[std::size_t(p * double(v.size() - 1))]) / 1000.0;
}

int check(Worker& w, std::size_t i) {
  auto& s = *w.sessions[i % w.sessions.size()];
  w.engine->resetMessage(s);
  zetian_verdict v;
  return w.engine->check(s, zetian::conf::Stage::Mail, "<bench@example.org>", &v);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  // Sleeps end within a microsecond or so of the due time instead of the default 50 us
  // timer slack, which the open-loop figures would otherwise count as latency.
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  char tmpl[] = "/tmp/zetian-cluster-check-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  const std::string root = tmpl;
  std::vector<Node> nodes = startCluster(o, root);

  // b2 owns every key; b1 (and b3 with --from 2) check them.
  const std::string owner = nodes[1].id;
  std::vector<Engine*> drivers{nodes[0].engine.get()};
  if (o.from == 2) drivers.push_back(nodes[2].engine.get());
  const auto ips = keysOwnedBy(o, *nodes[0].engine, owner);

  std::vector<Worker> workers(std::size_t(o.threads));
  for (int t = 0; t < o.threads; ++t) {
    Worker& w = workers[std::size_t(t)];
    w.engine = drivers[std::size_t(t) % drivers.size()];
    // Each thread its own sessions (a session is used by one thread at a time), spread
    // over all the keys.
    for (std::size_t k = std::size_t(t); k < ips.size(); k += std::size_t(o.threads)) {
      w.sessions.push_back(w.engine->openSession(ips[k].c_str(), nullptr));
    }
    if (w.sessions.empty()) w.sessions.push_back(w.engine->openSession(ips[0].c_str(), nullptr));
    const auto paced = std::size_t(o.rate * o.seconds / o.threads + 16);
    w.latency.reserve(o.mode == "paced" ? paced : std::size_t(1) << 20);
    w.service.reserve(o.mode == "paced" ? paced : 0);
  }
  // Warm-up: links, sessions, buckets, fast-mode leases; not measured. Paced mode
  // warms up on the measured schedule (see the top of the file).
  const auto warmup_start = Clock::now();
  {
    const auto w0 = warmup_start + std::chrono::milliseconds(20);
    const auto until = w0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.warmup));
    const bool paced = o.mode == "paced";
    const std::uint64_t count = std::uint64_t(o.rate * o.warmup);
    std::vector<std::thread> ts;
    for (int t = 0; t < o.threads; ++t) {
      ts.emplace_back([&o, &workers, t, w0, until, paced, count] {
        Worker& w = workers[std::size_t(t)];
        if (!paced) {
          for (std::size_t i = 0; Clock::now() < until; ++i) check(w, i);
          return;
        }
        for (std::uint64_t i = std::uint64_t(t); i < count; i += std::uint64_t(o.threads)) {
          const auto due = w0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(double(i) / o.rate));
          if (Clock::now() < due) std::this_thread::sleep_until(due);
          check(w, i / std::uint64_t(o.threads));
        }
      });
    }
    for (auto& t : ts) t.join();
  }
  const double warmup_checks_lease = [&] {
    const std::string m = metricsOf(nodes[0].health);
    return metricSum(m, "zetian_lease_tokens_consumed_total");
  }();

  std::vector<std::string> before;
  for (auto& n : nodes) before.push_back(metricsOf(n.health));
  const std::string load_before = loadavg();
  std::vector<double> loop_cpu_before;
  for (auto& n : nodes) loop_cpu_before.push_back(loopCpu(n));
  const auto t0 = Clock::now() + std::chrono::milliseconds(20);
  const auto stop = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  const std::uint64_t total = o.mode == "paced" ? std::uint64_t(o.rate * o.seconds) : 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    threads.emplace_back([&, t] {
      Worker& w = workers[std::size_t(t)];
      if (o.mode == "paced") {
        for (std::uint64_t i = std::uint64_t(t); i < total; i += std::uint64_t(o.threads)) {
          const auto due = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(double(i) / o.rate));
          if (Clock::now() < due) std::this_thread::sleep_until(due);
          const auto start = Clock::now();
          if (check(w, i / std::uint64_t(o.threads)) != ZETIAN_CONTINUE) ++w.not_continue;
          const auto end = Clock::now();
          w.latency.push_back((end - due).count());
          w.service.push_back((end - start).count());
          w.last_end = end;
          ++w.done;
        }
      } else {
        while (Clock::now() < t0) std::this_thread::yield();
        for (std::size_t i = 0;; ++i) {
          const auto start = Clock::now();
          if (start >= stop) break;
          if (check(w, i) != ZETIAN_CONTINUE) ++w.not_continue;
          const auto end = Clock::now();
          if (w.latency.size() < w.latency.capacity()) w.latency.push_back((end - start).count());
          w.last_end = end;
          ++w.done;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const std::string load_after = loadavg();
  std::vector<double> loop_cpu;
  for (std::size_t i = 0; i < nodes.size(); ++i) loop_cpu.push_back(loopCpu(nodes[i]) - loop_cpu_before[i]);

  std::vector<std::int64_t> lat, svc;
  std::uint64_t done = 0, not_continue = 0;
  Clock::time_point last = t0;
  for (auto& w : workers) {
    lat.insert(lat.end(), w.latency.begin(), w.latency.end());
    svc.insert(svc.end(), w.service.begin(), w.service.end());
    done += w.done;
    not_continue += w.not_continue;
    last = std::max(last, w.last_end);
  }
  std::sort(lat.begin(), lat.end());
  std::sort(svc.begin(), svc.end());
  const double elapsed = std::chrono::duration<double>(last - t0).count();

  std::vector<std::string> after;
  for (auto& n : nodes) after.push_back(metricsOf(n.health));
  auto delta = [&](std::size_t node, const char* name) {
    return metricSum(after[node], name) - metricSum(before[node], name);
  };
  double sent = 0, frames = 0, fallbacks = 0;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    sent += delta(i, "zetian_limit_calls_sent_total");
    frames += delta(i, "zetian_limit_frames_sent_total");
    fallbacks += delta(i, "zetian_fallbacks_total");
  }
  const double served = delta(1, "zetian_limit_calls_served_total");
  double leased = 0, granted = 0, returned = 0, dropped = 0;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    leased += delta(i, "zetian_lease_tokens_consumed_total");
    granted += delta(i, "zetian_lease_tokens_granted_total");
    returned += delta(i, "zetian_lease_tokens_returned_total");
    dropped += delta(i, "zetian_lease_tokens_dropped_total");
  }
  double leases_held = 0;
  for (std::size_t i = 0; i < nodes.size(); ++i) leases_held += metricSum(after[i], "zetian_leases");

  std::printf("mode=%s scope=%s consistency=%s nodes=%d drivers=%zu threads=%d keys=%zu", o.mode.c_str(),
              o.scope.c_str(), o.consistency.c_str(), o.nodes, drivers.size(), o.threads, ips.size());
  if (o.mode == "paced") std::printf(" target_rate=%.0f/s", o.rate);
  std::printf("\nchecks=%llu seconds=%.2f achieved=%.0f/s not_continue=%llu fallbacks=%.0f\n",
              static_cast<unsigned long long>(done), elapsed, double(done) / elapsed,
              static_cast<unsigned long long>(not_continue), fallbacks);
  std::printf("remote calls sent=%.0f frames=%.0f (%.2f calls/frame) served by owner %s=%.0f\n", sent, frames,
              frames > 0 ? sent / frames : 0.0, owner.c_str(), served);
  if (o.consistency == "fast") {
    std::printf("fast mode: decided from a lease=%.0f of %llu checks (%.1f%%; %.0f during the %.1f s warm-up); "
                "tokens granted=%.0f returned=%.0f dropped=%.0f; leases held at the end=%.0f\n",
                leased, static_cast<unsigned long long>(done), done > 0 ? 100.0 * leased / double(done) : 0.0,
                warmup_checks_lease, o.warmup, granted, returned, dropped, leases_held);
  }
  const char* what = o.mode == "paced" ? "latency from due time" : "latency per call";
  std::printf("%s (us): p50=%.1f p90=%.1f p99=%.1f p99.9=%.1f max=%.1f\n", what, pct(lat, 0.5), pct(lat, 0.9),
              pct(lat, 0.99), pct(lat, 0.999), lat.empty() ? 0.0 : double(lat.back()) / 1000.0);
  if (o.mode == "paced") {
    std::printf("service time, the call alone (us): p50=%.1f p90=%.1f p99=%.1f p99.9=%.1f max=%.1f\n", pct(svc, 0.5),
                pct(svc, 0.9), pct(svc, 0.99), pct(svc, 0.999), svc.empty() ? 0.0 : double(svc.back()) / 1000.0);
  }
  std::printf("cluster thread CPU over the run (s):");
  for (std::size_t i = 0; i < nodes.size(); ++i) std::printf(" %s=%.2f", nodes[i].id.c_str(), loop_cpu[i]);
  if (served > 0) {
    // What one owner's cluster thread would serve with a CPU to itself.
    std::printf("; owner %s: %.1f us of its cluster thread per check served (%.0f checks/s per CPU)",
                owner.c_str(), 1e6 * loop_cpu[1] / served, served / std::max(loop_cpu[1], 1e-9));
  }
  std::printf("\n");
  std::printf("loadavg before: %s  after: %s\n", load_before.c_str(), load_after.c_str());

  for (auto& w : workers) {
    for (auto& s : w.sessions) w.engine->closeSession(std::move(s));
  }
  for (auto& n : nodes) n.engine->shutdown();
  nodes.clear();
  std::filesystem::remove_all(root);
  return fallbacks > 0 && o.scope == "cluster" ? 3 : 0;
}
