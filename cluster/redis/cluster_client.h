// The limiter's Redis when Redis is a Redis Cluster ([redis] cluster = [...]), on the
// cluster thread.
//
// How it works:
// - One Client (client.h) per node it talks to: the same connect, AUTH, ROLE check,
//   SCRIPT LOAD, backoff and fail-at-once behaviour as one server, per master. The
//   ROLE check is what keeps items off replicas: a node that is not a master never
//   becomes ready, so nothing is sent to it.
// - The slot map (slot -> master) comes from CLUSTER SLOTS, asked of any ready
//   connection (a known master first, else the listed seeds). It is asked again after
//   a MOVED, when a master's connection goes down and then with backoff while it stays
//   down (a failover may promote a replica in its place), and after a failed load, with
//   backoff; one load at a time.
// - A stage's items are placed by the slot of their full key as sent (key_prefix
//   included, key_slot.h) and sent concurrently, one raw call (Client::callRaw) per
//   master. Each master reports each item's answer; once every item has its answer the
//   stage is settled by the same rule as one server's (settleCall, backend.h), and what
//   must be given back goes to each key's master.
// - MOVED <slot> <node>: the slot map takes the new owner for that slot at once (and is
//   reloaded in the background), and the item runs again there. ASK <slot> <node>: the
//   item runs again at that node behind ASKING, pipelined on that node's connection,
//   and the map is left as it is (the slot is only being migrated). Both within the
//   stage's deadline, at most kMaxRedirects times per item.
// - A master down: its items fail at once (Unreachable) as with one server, the
//   others' items run; the caller's fail_mode decides for the stage. Before the first
//   slot map, a call waits for it within its deadline while a seed is still trying its
//   first connection; once every seed has failed, calls fail at once.
//
// Why not one Client that knows about slots: the Client's connection code is the part
// a Sentinel follower changes too, and a cluster's per-master connections need nothing
// from it but a raw mode and a way to run CLUSTER SLOTS; keeping the slot logic here
// keeps each file one concept.
//
// Threads: as Backend. connections_ and the master list are changed on the loop thread
// only, under connections_mutex_, which status() and counters() take from other threads.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cluster/log_sink.h"
#include "cluster/loop.h"
#include "cluster/redis/backend.h"
#include "cluster/redis/client.h"

namespace zetian::cluster::redis {

struct ClusterOptions {
  struct Node {
    std::string host;
    std::uint16_t port = 0;
  };
  std::vector<Node> seeds;  // at least one
  // Every node's connection options; target is set per node (database 0).
  ClientOptions connection;
};

class ClusterClient : public Backend {
 public:
  static constexpr int kMaxRedirects = 5;

  ClusterClient(Loop& loop, ClusterOptions options, Scripts scripts, LogSink log,
                std::function<void(std::int64_t nanos)> on_latency = {});
  // Fails every stage still waiting with Closed and closes every connection.
  ~ClusterClient() override;
  ClusterClient(const ClusterClient&) = delete;
  ClusterClient& operator=(const ClusterClient&) = delete;

  void start() override;
  void call(std::vector<wire::LimitItem> items, Clock::time_point deadline, Done done) override;
  void refund(std::vector<wire::LimitItem> items) override;
  void peek(const wire::LimitItem& item, PeekDone done) override;
  void erase(const std::string& store_key, EraseDone done) override;
  void eraseAll(const std::string& store_key_prefix, EraseDone done) override;
  ClientStatus status() const override;
  ClientCounters counters() const override;

  // The master the slot map names for `slot` ("HOST:PORT"), empty when none. Loop thread.
  std::string masterOf(std::uint16_t slot) const;

 private:
  struct Stage;

  Client& connectionTo(const std::string& address);
  // peek() and erase(): the master of `store_key`'s slot ("" with *error set when none
  // is known), and after an error reply the MOVED target to run the command at once more
  // ("" when the error is no MOVED), the map updated.
  std::string masterForKey(const std::string& store_key, std::string* error) const;
  std::string movedTo(const std::string& error, const std::string& from);
  void run(const std::shared_ptr<Stage>& stage, const std::vector<std::size_t>& indices,
           const std::vector<std::string>& addresses, const std::vector<bool>& asking);
  void onReplies(const std::shared_ptr<Stage>& stage, const std::vector<std::size_t>& indices,
                 const std::string& from, std::vector<Client::ItemReply> replies);
  void finish(const std::shared_ptr<Stage>& stage);
  void wait(const std::shared_ptr<Stage>& stage);
  void runWaiting();
  void failWaiting(limits::FallbackReason reason);
  void requestSlotMap();
  void loadSlotMap();
  bool applySlotMap(const redisReply* reply, const std::string& from, std::string* error);
  void onSlotMapFailed(const std::string& why);
  void scheduleSlotMap();  // the next load after a backoff
  bool aMasterIsDown() const;
  void onConnectionsChanged();
  void retireUnused();
  bool seedsAllDown() const;
  void setSlot(std::uint16_t slot, const std::string& address);

  Loop& loop_;
  ClusterOptions options_;
  Scripts scripts_;
  LogSink log_;
  std::function<void(std::int64_t)> on_latency_;
  bool started_ = false;
  bool closing_ = false;

  // The slot map: slot -> index into nodes_ (-1: no master known). nodes_ only grows.
  std::vector<std::int32_t> slots_;
  std::vector<std::string> nodes_;
  bool map_loaded_ = false;
  bool map_loading_ = false;
  bool map_wanted_ = false;  // a load is due (after the one in flight, or once a connection is ready)
  std::string preferred_;    // the node to ask first: the last MOVED's target
  std::chrono::milliseconds map_backoff_{0};
  Timer map_timer_;        // the next load after a failure
  Timer changed_timer_;    // onConnectionsChanged, off the connection's own call stack
  Timer retire_timer_;     // connections no longer used are closed once their calls are over
  std::map<std::string, LinkState> last_states_;  // of the masters' connections, to see them go down
  std::vector<std::shared_ptr<Stage>> waiting_;   // stages waiting for the first slot map
  bool logged_map_down_ = false;

  // Guards the members below for other threads (status(), counters()); the loop thread
  // reads them without it, since only it writes them.
  mutable std::mutex connections_mutex_;
  std::map<std::string, std::unique_ptr<Client>> connections_;  // by "HOST:PORT"
  std::vector<std::string> masters_;  // of the current map, sorted
  std::string map_error_;             // the first load's failure; cleared once one succeeds
  ClientCounters own_;                // calls, redirects, map loads, map errors
  ClientCounters retired_;            // of connections closed since start
};

}  // namespace zetian::cluster::redis
