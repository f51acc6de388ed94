// A real Redis Cluster for a test: N masters (RedisServer, redis_server.h, each with
// `--cluster-enabled yes` on its own port and bus port, in the test's folder), slots
// spread evenly, ready once every node's CLUSTER INFO says cluster_state:ok with every
// node and slot known (polled with a deadline). Coverage is not required
// (`cluster-require-full-coverage no`): a test that kills a master expects the others
// to go on serving their slots.
//
// It also moves a slot the way `redis-cli --cluster reshard` does, one step at a time
// (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE), so a test can run checks between steps.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <memory>
#include <string>
#include <vector>

#include "tests/unit/cluster/redis_server.h"

namespace zetian::cluster::testing {

class RedisCluster {
 public:
  // `replica_of`: one replica for each master index listed; node(masters + k) is the
  // replica of master replica_of[k].
  explicit RedisCluster(std::string dir, std::size_t masters = 3, std::vector<std::size_t> replica_of = {})
      : dir_(std::move(dir)), masters_(masters), replica_of_(std::move(replica_of)) {
    nodes_.resize(masters + replica_of_.size());
    buses_.resize(nodes_.size());
    for (std::size_t i = 0; i < nodes_.size(); ++i) makeNode(i);
  }

  // Starts the servers, makes them one cluster and waits until every node knows every
  // node and every slot. Throws on failure (with where to look).
  //
  // The cluster is formed by hand, as `redis-cli --cluster create` does it (a range of
  // slots per node, distinct config epochs, MEET), without its one-second sleeps while
  // waiting for the nodes to join. What remains is Redis's own: a master reports
  // cluster_state:ok no sooner than 2 s after it started (CLUSTER_WRITABLE_DELAY).
  void start(std::chrono::milliseconds deadline = std::chrono::seconds(30)) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      // A port found free can be taken before the server binds it (another process's
      // outgoing connection): then the node gets new ports.
      for (int attempt = 1;; ++attempt) {
        try {
          nodes_[i]->start();
          break;
        } catch (const std::runtime_error&) {
          if (attempt == 3) throw;
          makeNode(i);
        }
      }
    }
    const std::size_t n = nodes_.size();
    for (std::size_t i = 0; i < masters_; ++i) {
      const std::size_t first = 16384 * i / masters_;
      const std::size_t last = 16384 * (i + 1) / masters_ - 1;
      expectOk(nodes_[i]->command("CLUSTER ADDSLOTSRANGE " + std::to_string(first) + " " + std::to_string(last)));
      expectOk(nodes_[i]->command("CLUSTER SET-CONFIG-EPOCH " + std::to_string(i + 1)));
    }
    // Every node meets every other: learning the third node through gossip alone takes
    // seconds (a node pings one random peer a second).
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t j = 0; j < n; ++j) {
        if (i == j) continue;
        expectOk(nodes_[i]->command("CLUSTER MEET 127.0.0.1 " + std::to_string(nodes_[j]->port()) + " " +
                                    std::to_string(buses_[j])));
      }
    }
    const std::string known = "cluster_known_nodes:" + std::to_string(n) + "\r\n";
    auto everyoneKnowsEveryone = [&] {
      for (auto& node : nodes_) {
        if (node->command("CLUSTER INFO").find(known) == std::string::npos) return false;
      }
      return true;
    };
    while (!everyoneKnowsEveryone()) {
      if (std::chrono::steady_clock::now() > until) throw std::runtime_error("the Redis Cluster nodes did not meet");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling with a deadline
    }
    for (std::size_t k = 0; k < replica_of_.size(); ++k) {
      // Refused ("Unknown node") until the MEET handshake has taught it the master's id.
      const std::string replicate = "CLUSTER REPLICATE " + id(replica_of_[k]);
      while (nodes_[masters_ + k]->command(replicate).rfind("+OK", 0) != 0) {
        if (std::chrono::steady_clock::now() > until) throw std::runtime_error("CLUSTER REPLICATE kept failing");
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling with a deadline
      }
    }
    while (std::chrono::steady_clock::now() < until) {
      bool ok = true;
      for (std::size_t k = 0; k < replica_of_.size(); ++k) {
        ok = ok && nodes_[masters_ + k]->command("INFO replication").find("master_link_status:up") != std::string::npos;
      }
      for (auto& node : nodes_) {
        const std::string info = node->command("CLUSTER INFO");
        ok = ok && info.find("cluster_state:ok") != std::string::npos &&
             info.find("cluster_slots_assigned:16384") != std::string::npos && info.find(known) != std::string::npos;
      }
      if (ok) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling with a deadline
    }
    throw std::runtime_error("the Redis Cluster did not form within the deadline; see the logs in " + dir_);
  }

  std::size_t size() const { return nodes_.size(); }
  RedisServer& node(std::size_t i) { return *nodes_.at(i); }
  std::string address(std::size_t i) const { return "127.0.0.1:" + std::to_string(nodes_.at(i)->port()); }

  std::string id(std::size_t i) const {
    std::string reply = nodes_.at(i)->command("CLUSTER MYID");  // "$40\r\n<id>\r\n"
    const auto start = reply.find("\r\n");
    if (start == std::string::npos) throw std::runtime_error("CLUSTER MYID: no answer");
    return reply.substr(start + 2, 40);
  }

  // The node that serves `slot` as the first running node sees it, by index; -1 when
  // none. (CLUSTER NODES of a few nodes fits in one read of command().)
  int ownerOf(std::uint16_t slot) const {
    for (const auto& asked : nodes_) {
      if (!asked->running()) continue;
      const std::string nodes = asked->command("CLUSTER NODES");
      std::size_t at = 0;
      while (at < nodes.size()) {
        std::size_t end = nodes.find('\n', at);
        if (end == std::string::npos) end = nodes.size();
        const std::string line = nodes.substr(at, end - at);
        at = end + 1;
        if (!servesSlot(line, slot)) continue;
        for (std::size_t i = 0; i < nodes_.size(); ++i) {
          if (line.find(" 127.0.0.1:" + std::to_string(nodes_[i]->port()) + "@") != std::string::npos) return int(i);
        }
      }
      return -1;
    }
    return -1;
  }

  // The four steps of moving `slot` from node `from` to node `to` (keys: those in it).
  void beginMigration(std::uint16_t slot, std::size_t from, std::size_t to) {
    expectOk(node(to).command("CLUSTER SETSLOT " + std::to_string(slot) + " IMPORTING " + id(from)));
    expectOk(node(from).command("CLUSTER SETSLOT " + std::to_string(slot) + " MIGRATING " + id(to)));
  }
  void migrateKeys(std::size_t from, std::size_t to, const std::vector<std::string>& keys) {
    std::string line = "MIGRATE 127.0.0.1 " + std::to_string(node(to).port()) + " \"\" 0 5000 KEYS";
    for (const auto& k : keys) line += " " + k;
    const std::string reply = node(from).command(line);
    if (reply.rfind("+OK", 0) != 0 && reply.rfind("+NOKEY", 0) != 0) {
      throw std::runtime_error("MIGRATE failed: " + reply);
    }
  }
  void endMigration(std::uint16_t slot, std::size_t from, std::size_t to) {
    const std::string set = "CLUSTER SETSLOT " + std::to_string(slot) + " NODE " + id(to);
    expectOk(node(to).command(set));
    expectOk(node(from).command(set));
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (i != from && i != to && nodes_[i]->running()) expectOk(node(i).command(set));
    }
  }

 private:
  void makeNode(std::size_t i) {
    std::uint16_t port = freeTcpPort();
    std::uint16_t bus = freeTcpPort();
    auto taken = [&](std::uint16_t p) {
      for (std::size_t j = 0; j < nodes_.size(); ++j) {
        if (j != i && nodes_[j] && (nodes_[j]->port() == p || buses_[j] == p)) return true;
      }
      return false;
    };
    while (taken(port)) port = freeTcpPort();
    while (bus == port || taken(bus)) bus = freeTcpPort();
    buses_[i] = bus;
    nodes_[i] = std::make_unique<RedisServer>(
        dir_,
        std::vector<std::string>{"--cluster-enabled", "yes", "--cluster-config-file",
                                 "nodes-" + std::to_string(port) + ".conf", "--cluster-port", std::to_string(bus),
                                 "--cluster-require-full-coverage", "no", "--cluster-node-timeout", "1000",
                                 "--appendonly", "no"},
        port);
  }
  static void expectOk(const std::string& reply) {
    if (reply.rfind("+OK", 0) != 0) throw std::runtime_error("expected +OK, got " + reply);
  }
  static bool servesSlot(const std::string& line, std::uint16_t slot) {
    // Fields 9.. are slots or ranges ("0-5460", "7", "[7->-id]" while migrating).
    std::size_t pos = 0;
    for (int field = 0; field < 8 && pos != std::string::npos; ++field) pos = line.find(' ', pos + 1);
    while (pos != std::string::npos) {
      const std::size_t start = pos + 1;
      pos = line.find(' ', start);
      const std::string token = line.substr(start, pos == std::string::npos ? std::string::npos : pos - start);
      if (token.empty() || token[0] == '[') continue;
      const auto dash = token.find('-');
      const long first = std::strtol(token.c_str(), nullptr, 10);
      const long last = dash == std::string::npos ? first : std::strtol(token.c_str() + dash + 1, nullptr, 10);
      if (slot >= first && slot <= last) return true;
    }
    return false;
  }

  std::string dir_;
  std::vector<std::unique_ptr<RedisServer>> nodes_;
  std::vector<std::uint16_t> buses_;  // each node's cluster bus port
  std::size_t masters_;
  std::vector<std::size_t> replica_of_;
};

}  // namespace zetian::cluster::testing
