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
// Replication. The keys this node charged as owner (served calls, and the engine's own
// charges reported through the ChangeLog) are remembered with their placement. Every
// replication_interval the state of those changed since the last round goes, batched,
// to their replicas (the next replication_factor - 1 members by HRW score), which merge
// it into their own store (the more-consumed view wins, state/transfer.h), so that when
// an owner fails its first replica, now the owner, already holds the state: what is
// lost is at most what the owner granted since its last round.
//
// Settling. A node that becomes the owner of keys another node held until now (it
// joined, or came back) may be asked about them before their state arrives. Each peer
// that announced kCapHandoffDone ends its hand-off walk towards this node with a marker
// (a Handoff BucketSync with last = true). Until that marker, or until check_timeout / 2
// after the peer appeared in this node's view, a call for a key this node owns, holds
// no state for, and whose previous owner (the next member by HRW score) is that peer,
// waits here; it is answered as soon as the key's state or the marker arrives. The
// engine does the same for this node's own checks of such keys (call() with this
// node as the owner). Without this wait the new owner would start such a key from
// zero: the limit would be admitted again.
//
// Forwarding. Views differ for a while after a change: a requester that has not seen
// the new owner yet still asks the old one, which has handed the key off. The old
// owner then passes the call on to the owner in its own view and relays the answer
// (one hop at most: a forwarded call is never forwarded again), so no charge lands on
// a copy that is no longer counted. It answers itself when the call's keys have
// different owners in its view, or when that owner cannot be asked.
//
// Hand-off. When the view changes (a member joins, fails, leaves, drains or returns),
// this node walks the keys it knows, in bounded steps per loop turn: a key it owned and
// no longer owns is sent at once to its new owner, which merges it (and replicates it
// onward at its next round); a key it still owns whose replica set changed is sent to
// the new replicas at the next round. Events rebalancing_started / rebalancing_completed
// (with the number of keys handed off) mark a walk that moved keys. Bucket state
// travels as ages relative to the sender's clock, never as a timestamp.
//
// Threads: every method runs on the loop thread and checks it (aborts elsewhere).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <unordered_set>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cluster/limits/change_log.h"
#include "cluster/limits/evaluate.h"
#include "cluster/placement/view.h"
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
  // The peer's link closed while this node's own dial to it was under way (two nodes
  // that dialed each other at once: one link is dropped): a link is about to come back,
  // and calls to the peer wait for it (until their deadline) instead of failing.
  virtual bool linkComing(const std::string& /*peer*/) const { return false; }

 protected:
  ~PeerDirectory() = default;
};

struct ReplicationOptions {
  std::string self;  // this node's id
  std::size_t factor = 2;  // the owner and factor - 1 replicas
  std::chrono::milliseconds interval{250};
  ChangeLog* changes = nullptr;  // the engine's charges as owner; may be null
  // rebalancing_started / rebalancing_completed with the keys handed off.
  std::function<void(const std::string& event, std::uint64_t keys)> emit;
  // A forwarded call's deadline; a new owner waits at most half of it for a peer's
  // hand-off (see Settling).
  std::chrono::milliseconds check_timeout{200};
  // The peers whose hand-off this node awaits, each time that set changes (sorted).
  std::function<void(std::shared_ptr<const std::vector<std::string>>)> on_unsettled;
};

struct ServiceCounters {
  std::uint64_t calls_sent = 0;       // calls this node made to owners
  std::uint64_t frames_sent = 0;      // LimitRequest frames carrying them
  std::uint64_t calls_served = 0;     // calls answered as owner
  std::uint64_t late_replies = 0;     // answers that came after their deadline (refunded)
  std::uint64_t unmatched_replies = 0;  // answers to no call we know (forgotten, or a peer bug)
  std::uint64_t refunds_sent = 0;       // items given back to owners
  std::uint64_t buckets_replicated = 0; // bucket states sent to replicas
  std::uint64_t buckets_handed_off = 0; // bucket states sent to new owners
  std::uint64_t buckets_received = 0;   // bucket states merged from other nodes
  std::uint64_t rebalances = 0;         // walks that moved keys
  std::uint64_t calls_held = 0;         // calls that waited for a hand-off (settling)
  std::uint64_t calls_forwarded = 0;    // calls passed on to their keys' new owner
  std::uint64_t keys_known = 0;         // keys remembered for replication (a gauge)
};

class LimitService {
 public:
  using Clock = std::chrono::steady_clock;
  using Done = std::function<void(CallResult)>;

  LimitService(Loop& loop, PeerDirectory& peers, state::BucketStore& store, std::function<state::Nanos()> now,
               ReplicationOptions replication = {});
  // Fails every pending call with Closed.
  ~LimitService();
  LimitService(const LimitService&) = delete;
  LimitService& operator=(const LimitService&) = delete;

  // `owner` may be this node itself: for a key whose hand-off is still awaited (see
  // Settling); the call is then evaluated here, once settled.
  void call(const std::string& owner, std::vector<wire::LimitItem> items, Clock::time_point deadline, Done done,
            bool forwarded = false);
  // Give back charges to `owner` (a later rule of the same stage denied, elsewhere): no
  // answer is awaited; if the link is down the charge stays (it refills with time).
  void refund(const std::string& owner, std::vector<wire::LimitItem> items);

  // From ClusterNode, for messages on an established link from `peer`.
  void onRequest(const std::string& peer, const wire::LimitRequest& request);
  void onReply(const std::string& peer, const wire::LimitReply& reply);
  void onSync(const std::string& peer, const wire::BucketSync& sync);
  // The peer's link closed: its pending calls fail now.
  void onPeerDown(const std::string& peer);
  // A link to the peer is established: calls that waited for it (linkComing) go out.
  void onPeerUp(const std::string& peer);
  // A new placement view (ClusterNode::publishView), in two steps. beforeView() comes
  // before the checking threads see the view: the peers whose hand-off this node must
  // await are published first, so that no check decides a key this node has just come
  // to own before it knows to wait. onView() comes after them: it starts the hand-off
  // walk, which must see every charge they made under the old view.
  void beforeView(const placement::View& view);
  void onView(std::shared_ptr<const placement::View> view);
  // The peer restarted (a new incarnation) without leaving the view, so with an empty
  // store: every key it owns that this node holds is handed to it, as on a view change.
  void onPeerRestarted(const std::string& peer);
  // Runs a hand-off walk under way to its end now, however many keys (leaving: there is
  // no later turn of the loop for this service).
  void finishWalk();

  std::size_t pending() const;
  // The keys this node owns among those it holds, as of the last complete sweep over
  // them (one sweep step per replication round): an owner holds every key it owns
  // that is not full, so this is the number of live keys it answers for.
  std::uint64_t keysOwned() const;
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

  struct KeyMeta {
    std::string placement;
    state::Algorithm algorithm = state::Algorithm::TokenBucket;
    state::Limit limit;
  };
  void finish(std::uint64_t id, CallResult result);
  void remember(const std::string& key, std::string_view placement, state::Algorithm algorithm,
                const state::Limit& limit, bool changed);
  std::vector<placement::NodeId> placementOf(const std::string& key, const KeyMeta& meta,
                                             const placement::View& view) const;
  void onReplicationTick();
  void walkStep(bool bounded = true);
  void takeChanges();  // the ChangeLog into keys_, marked changed
  // Appends a key's state to the frame for `peer`, sending full frames.
  void stage(const std::string& peer, const std::string& key, const KeyMeta& meta, wire::SyncReason reason,
             state::Nanos now);
  void sendStaged();
  void queue(const std::string& owner, wire::LimitCall call);
  void flush();
  void armDeadline();
  void onDeadline();
  // Settling (see the top of this file).
  bool mustSettle(const wire::LimitCall& call) const;
  // The owner, in this node's view, of every key of a call that this node does not own;
  // nullopt when this node owns one of them, they have different owners, or the call
  // was forwarded already.
  std::optional<std::string> forwardTo(const wire::LimitCall& call) const;
  void forward(const std::string& from, const std::string& owner, const wire::LimitCall& call);
  wire::LimitAnswer serve(const wire::LimitCall& call, state::Nanos now);
  void releaseParked(bool all = false);
  void armSettle();
  void onSettleTimer();
  void publishUnsettled();
  void sendHandoffDone();
  void noteNewcomers(const placement::View* before, const placement::View& after);

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
  // Calls waiting for a link that is coming back (PeerDirectory::linkComing), per owner.
  std::unordered_map<std::string, std::vector<wire::LimitCall>> awaiting_link_;
  bool flush_posted_ = false;
  Timer flush_timer_;
  // Refunds carry ids of their own (this bit set): no one waits for their answers.
  static constexpr std::uint64_t kRefundIdBit = wire::kRefundCallBit;
  std::uint64_t next_refund_id_ = kRefundIdBit;
  // Ids of calls that timed out, with their owner, so that a late answer is refunded
  // (bounded: the oldest are forgotten first).
  std::unordered_map<std::uint64_t, Pending> expired_;
  std::deque<std::uint64_t> expired_order_;
  ServiceCounters counters_;

  // Replication and hand-off.
  ReplicationOptions replication_;
  std::map<std::string, KeyMeta> keys_;        // keys this node charged or was given
  std::unordered_set<std::string> changed_;    // of those, changed since the last round
  std::shared_ptr<const placement::View> view_;
  Timer replication_timer_;
  // The walk after a view change: from `walk_from_` to `view_`, resuming after
  // `walk_cursor_`.
  std::shared_ptr<const placement::View> walk_from_;
  std::optional<std::string> walk_cursor_;
  bool walking_ = false;
  std::unordered_set<std::string> restarted_;  // peers the walk also hands their keys to
  Timer flush_walk_;  // the walk's next step
  std::uint64_t walk_moved_ = 0;
  std::optional<std::string> prune_cursor_;  // the slow sweep of keys the store forgot
  std::uint64_t sweep_owned_ = 0;  // keys owned, counted by the sweep under way
  std::uint64_t keys_owned_ = 0;   // as of the last complete sweep
  std::map<std::string, std::vector<wire::SyncedBucket>> staged_[2];  // per reason, per peer
  std::uint64_t sync_sequence_ = 0;

  // Settling: peers whose hand-off marker this node awaits, until when; the calls
  // waiting for them (`from` empty: this node's own check, answered through `done`).
  struct Parked {
    std::string from;
    wire::LimitCall call;
    Done done;
  };
  std::map<std::string, Clock::time_point> unsettled_;
  std::set<std::string> settled_;  // markers received since this node became a candidate
  std::optional<Clock::time_point> self_since_;  // when this node became a candidate
  std::chrono::milliseconds settle_timeout_;     // check_timeout / 2
  std::deque<Parked> parked_;
  Timer settle_timer_;
  // Peers that get this node's marker when its walk ends.
  std::set<std::string> handoff_due_;
};

}  // namespace zetian::cluster::limits
