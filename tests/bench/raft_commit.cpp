// Commit latency of the Raft path alone (issue 10): three ClusterNodes, each on its own
// cluster thread, linked over loopback TCP in one process, each with its raft folder
// under DIR (fsync is real on a disk; on /dev/shm it costs nothing). A policy change is
// proposed ROUNDS times, one after another, on the leader or on a follower, and timed
// from proposePolicy() to its answer: committed by a majority and applied by the
// replicated state of the node asked. What the HTTP socket, the loader's check and the
// engine's rule swap add on top is measured end to end by raft_commit_latency.py.
//
//   raft_commit DIR [ROUNDS]     e.g.  raft_commit /var/tmp 500;  raft_commit /dev/shm 500
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "cluster/loop.h"
#include "cluster/node.h"
#include "cluster/raft/policy_service.h"

using namespace std::chrono_literals;
namespace zc = zetian::cluster;

namespace {

struct BenchNode {
  std::string id;
  std::unique_ptr<zc::Loop> loop = std::make_unique<zc::Loop>();
  std::unique_ptr<zc::ClusterNode> node;
  std::string endpoint;

  BenchNode(std::string node_id, const std::string& dir, const std::vector<std::string>& seeds) : id(std::move(node_id)) {
    loop->start();
    zc::NodeOptions o;
    o.node_id = id;
    o.state_dir = dir;
    o.bind = "127.0.0.1:0";
    o.secret = "bench-secret-0123456789abcdef0123";
    o.seeds = seeds;
    o.detector.heartbeat_interval = 200ms;
    o.detector.failure_detection_timeout = 2000ms;
    zc::raft::DriverOptions r;
    r.node_id = id;
    r.dir = dir + "/raft";
    r.bootstrap_expect = 3;
    r.election_timeout = 1000ms;
    r.seed_policy_text = "[ratelimit]\n";
    o.raft = r;
    auto started = loop->call(
        [&] {
          node = std::make_unique<zc::ClusterNode>(*loop, o, nullptr, [] { return zc::NodeLoad{}; });
          std::string error;
          if (!node->start(&error)) return error;
          endpoint = node->advertise();
          return std::string();
        },
        10s);
    if (!started || !started->empty()) {
      std::fprintf(stderr, "node %s did not start: %s\n", id.c_str(), started ? started->c_str() : "timeout");
      std::exit(1);
    }
  }
  ~BenchNode() {
    std::promise<void> left;
    if (loop->post([&] {
          node->leave([&] {
            node.reset();
            left.set_value();
          });
        })) {
      left.get_future().wait();
    }
    loop->stop();
  }
  zc::raft::RaftStatus status() { return *loop->call([&] { return node->policy()->status(); }, 10s); }
  int propose(const std::string& text) {
    auto promise = std::make_shared<std::promise<int>>();
    auto future = promise->get_future();
    loop->post([&, text, promise] {
      node->policy()->proposePolicy(text, std::nullopt, 10000, [promise](zc::raft::PolicyResult r) {
        promise->set_value(r.status);
      });
    });
    return future.get();
  }
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  return v[k];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: raft_commit DIR [ROUNDS]\n");
    return 2;
  }
  const std::filesystem::path base = std::filesystem::path(argv[1]) / ("raft_commit." + std::to_string(::getpid()));
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 200;
  std::filesystem::create_directories(base);
  {
    std::vector<std::unique_ptr<BenchNode>> nodes;
    for (const char* id : {"a", "b", "c"}) {
      std::filesystem::create_directories(base / id);
      std::vector<std::string> seeds;
      if (!nodes.empty()) seeds.push_back(nodes.front()->endpoint);
      nodes.push_back(std::make_unique<BenchNode>(id, (base / id).string(), seeds));
    }
    BenchNode* leader = nullptr;
    BenchNode* follower = nullptr;
    for (int i = 0; i < 1000 && (!leader || !follower); ++i) {
      std::this_thread::sleep_for(20ms);  // polling for the cluster to form
      leader = follower = nullptr;
      for (auto& n : nodes) {
        auto s = n->status();
        if (s.voters != 3) {
          leader = follower = nullptr;
          break;
        }
        (s.role == "leader" ? leader : follower) = n.get();
      }
    }
    if (!leader || !follower) {
      std::fprintf(stderr, "no 3-voter cluster formed\n");
      return 1;
    }
    std::printf("raft_commit %s: %d changes each way, 3 nodes on loopback\n", argv[1], rounds);
    std::printf("%-12s %8s %8s %8s %8s\n", "asked on", "p50 ms", "p90 ms", "p99 ms", "max ms");
    for (BenchNode* asked : {leader, follower}) {
      std::vector<double> ms;
      for (int i = 0; i < rounds; ++i) {
        const std::string text = "[ratelimit]\n\n[[ratelimit.rule]]\nname = \"r\"\nkey = \"client_ip\"\nlimit = " +
                                 std::to_string(i + 1) + "\nperiod = \"1m\"\n";
        const auto start = std::chrono::steady_clock::now();
        const int status = asked->propose(text);
        const auto end = std::chrono::steady_clock::now();
        if (status != 200) {
          std::fprintf(stderr, "change %d answered %d\n", i, status);
          return 1;
        }
        ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
      }
      std::printf("%-12s %8.3f %8.3f %8.3f %8.3f\n", asked == leader ? "leader" : "follower", percentile(ms, 0.5),
                  percentile(ms, 0.9), percentile(ms, 0.99), *std::max_element(ms.begin(), ms.end()));
    }
  }
  std::filesystem::remove_all(base);
  return 0;
}
