// The rate-limit service between nodes, on the cluster thread: this node asking key
// owners to check and charge (requester side), and answering other nodes for the keys
// it owns (owner side).
//
// Requester side. call() takes one SMTP stage's items for one owner and a deadline, and
// calls `done` exactly once, on the cluster thread: with the owner's outcomes, or with
// the reason it could not get them (the engine then applies [ratelimit] fail_mode).
// A call fails at once, without waiting for a timeout it can predict, when the owner has
// no established link or did not announce the limiter capability in its Hello; every
// pending call to a peer fails at once when its link closes; the others fail at their
// deadline. All calls made to one owner in one loop turn travel in one LimitRequest
// frame, on the link's control queue (never refused by bulk backpressure). A reply that
// comes after its call's deadline is not lost: what it charged is refunded to the owner,
// since the requester has already decided without it.
//
// Owner side. A LimitRequest is evaluated call by call on this node's bucket store
// (evaluate.h) and answered with one LimitReply frame. The owner does not second-guess
// the requester's placement: during a membership change two nodes may briefly disagree
// on a key's owner, and answering is better than failing the message.
//
// Threads: every method runs on the loop thread and checks it (aborts elsewhere).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cluster/limits/evaluate.h"
#include "cluster/loop.h"
#include "cluster/wire/codec.h"
#include "state/bucket_store.h"

namespace zetian::cluster::limits {

// Why a call got no answer from its owner. Spelled as in zetian_fallbacks_total{reason}.
enum class FallbackReason : std::uint8_t {
  Timeout,      // no answer within check_timeout
  Unreachable,  // no established link to the owner, or it closed while the call waited
  Unsupported,  // the owner did not announce the limiter capability
  Refused,      // the owner would not evaluate the call
  NoQuorum,     // the cluster has no quorum (decided by the engine, before any call)
  Closed,       // this node is shutting down
  Overloaded,   // the cluster thread's mailbox was full
};
inline constexpr std::size_t kFallbackReasons = 7;
std::string_view nameOf(FallbackReason reason);

struct CallResult {
  std::optional<FallbackReason> failed;  // set: no outcomes
  std::vector<wire::LimitOutcome> outcomes;  // one per item, when not failed
};

// What the service needs of the node's links (implemented by ClusterNode).
class PeerDirectory {
 public:
  // The capabilities the peer announced, or nullopt when it has no established link.
  virtual std::optional<std::uint64_t> peerCapabilities(const std::string& peer) const = 0;
  // Queues `message` on the peer's link (control priority). False: no established link.
  virtual bool sendToPeer(const std::string& peer, const wire::Message& message) = 0;

 protected:
  ~PeerDirectory() = default;
};

struct ServiceCounters {
  std::uint64_t calls_sent = 0;       // calls this node made to owners
  std::uint64_t frames_sent = 0;      // LimitRequest frames carrying them
  std::uint64_t calls_served = 0;     // calls answered as owner
  std::uint64_t late_replies = 0;     // answers that came after their deadline (refunded)
  std::uint64_t unmatched_replies = 0;  // answers to no call we know (forgotten, or a peer bug)
  std::uint64_t refunds_sent = 0;       // items given back to owners
};

class LimitService {
 public:
  using Clock = std::chrono::steady_clock;
  using Done = std::function<void(CallResult)>;

  LimitService(Loop& loop, PeerDirectory& peers, state::BucketStore& store, std::function<state::Nanos()> now);
  // Fails every pending call with Closed.
  ~LimitService();
  LimitService(const LimitService&) = delete;
  LimitService& operator=(const LimitService&) = delete;

  void call(const std::string& owner, std::vector<wire::LimitItem> items, Clock::time_point deadline, Done done);
  // Give back charges to `owner` (a later rule of the same stage denied, elsewhere): no
  // answer is awaited; if the link is down the charge stays (it refills with time).
  void refund(const std::string& owner, std::vector<wire::LimitItem> items);

  // From ClusterNode, for messages on an established link from `peer`.
  void onRequest(const std::string& peer, const wire::LimitRequest& request);
  void onReply(const std::string& peer, const wire::LimitReply& reply);
  // The peer's link closed: its pending calls fail now.
  void onPeerDown(const std::string& peer);

  std::size_t pending() const;
  ServiceCounters counters() const;

 private:
  struct Pending {
    std::string owner;
    std::vector<wire::LimitItem> items;  // kept to refund a late answer
    Clock::time_point deadline;
    Done done;
  };
  struct Outgoing {
    std::vector<wire::LimitCall> calls;
    std::size_t items = 0;
  };

  void finish(std::uint64_t id, CallResult result);
  void queue(const std::string& owner, wire::LimitCall call);
  void flush();
  void armDeadline();
  void onDeadline();

  Loop& loop_;
  PeerDirectory& peers_;
  state::BucketStore& store_;
  std::function<state::Nanos()> now_;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, Pending> pending_;
  // Ids by deadline. Deadlines come in nearly increasing order (now + check_timeout), so
  // a FIFO holds them; the timer is armed for the earliest still pending.
  std::deque<std::pair<Clock::time_point, std::uint64_t>> deadlines_;
  Timer deadline_timer_;
  Clock::time_point deadline_armed_for_{};
  // Calls waiting for the end of this loop turn, per owner.
  std::unordered_map<std::string, Outgoing> outgoing_;
  bool flush_posted_ = false;
  Timer flush_timer_;
  // Refunds carry ids of their own (this bit set): no one waits for their answers.
  static constexpr std::uint64_t kRefundIdBit = std::uint64_t{1} << 63;
  std::uint64_t next_refund_id_ = kRefundIdBit;
  // Ids of calls that timed out, with their owner, so that a late answer is refunded
  // (bounded: the oldest are forgotten first).
  std::unordered_map<std::uint64_t, Pending> expired_;
  std::deque<std::uint64_t> expired_order_;
  ServiceCounters counters_;
};

}  // namespace zetian::cluster::limits
