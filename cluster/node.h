// This node's membership in the cluster: the listener for other nodes, one
// authenticated link per peer, discovery, heartbeats, the failure detector's view,
// gossip of the member list, events. Everything runs on the cluster thread (Loop);
// every public method checks it, and aborts elsewhere (Loop::checkThisThread).
//
// How the mesh forms: a node dials its seeds (or what DNS or multicast discovery
// found); after the handshake both sides know each other's id, address and
// incarnation; each side then sends its member list, and every node dials the members
// it has no link to. Both ends of a pair may dial at once: when two links to the same
// peer are established, both ends keep the one opened by the node with the smaller id
// and close the other, so they agree without talking about it.
//
// Who a peer is: its node id. A link from a known id with a higher incarnation is
// that node restarted: it replaces the old entry (and address) if the old link is
// gone or silent; if the old one is still alive, two live nodes claim the id, and the
// newcomer is refused and logged. Members in /health come only from links that passed
// the handshake (a refused node is never listed); gossip only tells whom to dial.
//
// Admission: an accepted connection holds one of max_pending_links handshake slots
// until its handshake ends (transport/handshake_slots.h: strangers are capped per address
// and give way oldest first; a member's address always gets a slot). The incarnation is
// kept in state_dir so that it only grows (incarnation.h). Refusal log lines have one
// budget per kind (RefusalBudget), so a stranger's noise never hides a member's.
//
// Failure detection: heartbeats over each link feed membership::FailureDetector; for a
// suspect, the node asks the other members (ProbeRequest) whether they still hear it,
// and their "yes" keeps it from being declared failed.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "cluster/accept_guard.h"
#include "cluster/limits/service.h"
#include "cluster/log_sink.h"
#include "cluster/loop.h"
#include "cluster/membership/failure_detector.h"
#include "cluster/placement/view.h"
#include "cluster/raft/driver.h"
#include "cluster/trace_log.h"
#include "cluster/transport/handshake_slots.h"
#include "cluster/transport/peer_link.h"
#include "conf/config.h"
#include "state/bucket_store.h"

struct event;
struct evconnlistener;
struct sockaddr;

namespace zetian::cluster {

class EventHook;
namespace transport {
class TlsContext;
}
namespace discovery {
class Resolver;
class MulticastDiscovery;
}

struct NodeLoad {
  std::uint32_t sessions = 0;
  double messages_per_s = 0;
};

struct NodeOptions {
  std::string node_id;
  std::string state_dir;  // node.state_dir: the incarnation is kept there (incarnation.h)
  std::string bind = "0.0.0.0:7946";
  std::string advertise;  // "" or a wildcard address: this host's first non-loopback address
  std::string region;
  std::string cluster_id = "zetian";
  std::string secret;
  conf::Discovery discovery = conf::Discovery::Seeds;
  std::vector<std::string> seeds;
  std::string dns_name;
  std::string multicast_group;
  membership::FailureDetectorConfig detector;
  std::chrono::milliseconds join_timeout{30000};
  std::optional<conf::ClusterTls> tls;
  std::string events_exec;
  transport::LinkLimits link_limits;
  std::size_t max_pending_links = 64;  // links still in their handshake
  std::size_t max_pending_per_address = 8;  // of those, from one source address
  // The node's bucket store, for the keys it owns (limits/service.h); none: this node
  // neither asks nor answers for cluster-scope rules. `now` is the limiter's clock.
  state::BucketStore* store = nullptr;
  std::function<state::Nanos()> now;
  // What this node announces in its Hello (wire::kCap*). Tests lower it to play an
  // older node; without a store the node has no limiter to offer.
  std::uint64_t capabilities = wire::kOwnCapabilities;
  // Replication of the keys this node owns (limits/service.h).
  std::size_t replication_factor = 2;
  std::chrono::milliseconds replication_interval{250};
  std::chrono::milliseconds check_timeout{200};  // [cluster] check_timeout
  limits::ChangeLog* changes = nullptr;  // the engine's own charges as owner
  // The replicated policy (raft/driver.h); none: this node runs no Raft (tests of the
  // links alone). With it the node announces kCapRaft.
  std::optional<raft::DriverOptions> raft;
  // Whether lines of `kind` are wanted now ([log] heartbeats or sync, and level debug:
  // both can change while running). Unset: never.
  std::function<bool(TraceKind)> trace;
};

NodeOptions nodeOptionsFrom(const conf::Config& config);

struct MemberInfo {
  std::string id;
  std::string address;
  std::string region;
  std::string status;  // joining, active, suspect, failed, left, maintenance
  bool self = false;
  std::int64_t last_seen_unix_ms = 0;
  NodeLoad load;
  std::uint64_t incarnation = 0;
  // Cluster-scope keys it owns: counted by itself over the keys it holds, and sent in
  // its heartbeats; nullopt when unknown (no limiter, or no heartbeat yet).
  std::optional<std::uint64_t> keys_owned;
};

struct ClusterCounters {
  std::uint64_t links_established = 0;
  std::uint64_t links_closed = 0;       // established links that closed
  // Handshakes that failed (wrong secret, other CA...), by nameOf(RefusalKind); the
  // metrics show them by kind only, so there is no total to keep beside them.
  std::map<std::string, std::uint64_t> links_refused_by_kind;
  // Connections closed for want of a handshake slot, refused as a duplicate node id,
  // or arriving while leaving, by reason: per_source_limit, table_full, evicted,
  // duplicate_node_id, leaving.
  std::map<std::string, std::uint64_t> links_rejected_by_reason;
  std::uint64_t bytes_sent = 0;         // closed links only; add the live ones
  std::uint64_t bytes_received = 0;
  std::map<std::string, std::uint64_t> events;  // node_joined, node_failed, ...
  // The listener's AcceptGuard: failed accept() calls, and pending connections closed
  // unheard to keep the backlog moving. Those of a guard already gone (after leave());
  // counters() adds the live guard's.
  std::uint64_t accept_errors = 0;
  std::uint64_t connections_shed = 0;
};

class ClusterNode final : public transport::PeerLink::Owner, public limits::PeerDirectory, public raft::RaftHost {
 public:
  ClusterNode(Loop& loop, NodeOptions options, LogSink log, std::function<NodeLoad()> load);
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // Listen, start discovery and timers. False with *error saying what to do.
  bool start(std::string* error);
  // Drain: heartbeats say so, and peers show this node as `maintenance`; off again:
  // they see it joining, then active.
  void setMaintenance(bool enabled);
  // Graceful leave: a Goodbye to every peer, a short flush, then `done` (on the loop
  // thread). The node does nothing more afterwards.
  void leave(std::function<void()> done);

  std::vector<MemberInfo> members() const;  // self first, then peers by id
  membership::ClusterState state() const;
  std::size_t size() const;  // members not left, self included
  ClusterCounters counters() const;
  const std::string& advertise() const { return advertise_; }
  std::uint16_t boundPort() const;

  // The rate-limit service (nullptr without a store, or after leave()).
  limits::LimitService* limits() { return limits_.get(); }
  // The replicated policy (nullptr without NodeOptions::raft). It outlives leave():
  // the policy in force stays readable, and changes are refused.
  raft::PolicyService* policy() { return raft_.get(); }
  // Called on the loop thread with every new placement view (membership changed), and
  // at once with the current one. Set before start().
  void setViewListener(std::function<void(std::shared_ptr<const placement::View>)> listener);
  // Called on the loop thread with the peers whose hand-off this node awaits, each time
  // that set changes (limits/service.h, "Settling"). Set before start().
  void setSettlingListener(std::function<void(std::shared_ptr<const std::vector<std::string>>)> listener);

  // limits::PeerDirectory
  std::optional<std::uint64_t> peerCapabilities(const std::string& peer) const override;
  bool sendToPeer(const std::string& peer, const wire::Message& message) override;
  bool linkComing(const std::string& peer) const override;

  // raft::RaftHost
  std::vector<std::string> raftPeers() const override;
  bool sendRaft(const std::string& peer, const wire::Message& message) override;
  void raftEvent(const std::string& name, std::vector<std::pair<std::string, std::string>> extra) override;

 private:
  struct Link;
  struct Peer;
  struct Seed;

  // Aborts with a message naming the caller unless on the loop thread, in every build.
  void assertLoopThread(CallSite where = CallSite::current()) const;
  void guardListener();
  // Reads, advances and stores the incarnation in state_dir (incarnation.h); start() only.
  bool takeIncarnation(std::string* error);
  static void onTickCb(int fd, short what, void* arg);
  static void onHeartbeatCb(int fd, short what, void* arg);
  static void onReapCb(int fd, short what, void* arg);
  static void onLeaveTimerCb(int fd, short what, void* arg);
  void onAccept(int fd, const sockaddr* addr, int socklen);
  void onTick();
  void onHeartbeat();
  void dial(const std::string& endpoint, const std::string& expected_id);
  void maintainDials(std::chrono::steady_clock::time_point now);
  void resolveSeeds();
  void scheduleReap();
  void dropLink(Link* link);
  bool isOwnEndpoint(const std::string& endpoint) const;

  // PeerLink::Owner
  void onLinkEstablished(transport::PeerLink& link) override;
  void onLinkMessage(transport::PeerLink& link, const wire::Message& message) override;
  void onLinkClosed(transport::PeerLink& link, const std::string& reason, bool refused) override;
  void onLinkWritable(transport::PeerLink& link) override;

  void adopt(Link* link);
  void handleHeartbeat(Peer& peer, const wire::Heartbeat& heartbeat);
  void handleMemberList(const wire::MemberList& list);
  void handleProbeRequest(Link& link, const wire::ProbeRequest& request);
  void applyTransitions(const std::vector<membership::Transition>& transitions);
  // `extra`: further ZETIAN_* variables for the hook, also shown in the log line.
  void emit(const std::string& name, const std::string& node_id,
            std::vector<std::pair<std::string, std::string>> extra = {});
  void gossip();
  wire::MemberList memberList() const;
  membership::Millis sinceStart() const;
  membership::ClusterState currentState() const;
  Link* findLink(const transport::PeerLink& link);
  void logLine(conf::LogLevel level, const std::string& line) const;
  // Counts a refusal in its kind's log budget and logs a pending summary; true when
  // the caller may log the refusal's own line (build it only then: strangers can make
  // us refuse as fast as they connect).
  bool mayLogRefusal(RefusalKind kind);
  // Whether a trace line of `kind` is wanted and its budget allows it (a pending
  // summary is logged first); build the line only then.
  bool mayTrace(TraceKind kind);
  // A sync trace line for `message` when it is one and may be logged.
  void traceSync(std::string_view direction, const std::string& peer, const wire::Message& message);
  void reject(const std::string& reason);
  bool isMemberAddress(const std::string& source) const;
  // Call after any peer's address or a seed's resolved endpoints change.
  void rebuildMemberAddresses();
  // Builds the placement view and hands it to the listener when it differs from the
  // last one published.
  void publishView();
  // Keeps state_dir/members current (member_cache.h) when the known members change.
  void saveMemberCache();

  Loop& loop_;
  NodeOptions options_;
  LogSink log_;
  std::function<NodeLoad()> load_;
  const std::chrono::steady_clock::time_point started_at_ = std::chrono::steady_clock::now();
  std::uint64_t incarnation_ = 0;  // set by start(), before the listener opens
  std::string advertise_;
  std::vector<std::string> own_endpoints_;  // addresses that reach this very node

  // All below: loop thread only.
  membership::FailureDetector detector_;
  std::unique_ptr<transport::TlsContext> tls_;
  std::unique_ptr<EventHook> hook_;
  std::unique_ptr<discovery::Resolver> resolver_;
  std::unique_ptr<discovery::MulticastDiscovery> multicast_;
  evconnlistener* listener_ = nullptr;
  std::unique_ptr<AcceptGuard> accept_guard_;  // listener_'s callbacks; reset before it is freed
  event* tick_ = nullptr;
  event* heartbeat_ = nullptr;
  event* reap_ = nullptr;
  event* leave_timer_ = nullptr;  // while leaving: polls until the goodbyes are written
  std::function<void()> leave_done_;
  std::chrono::steady_clock::time_point leave_deadline_{};
  std::vector<std::unique_ptr<Link>> links_;
  std::vector<std::unique_ptr<Link>> graveyard_;  // closed links, freed outside their callbacks
  std::map<std::string, Peer> peers_;
  std::vector<Seed> seeds_;
  // The host part (as sourceAddress() gives it) of every peer's and resolved seed's
  // address, kept current by rebuildMemberAddresses(): an accepted connection is
  // looked up here, so a flood of strangers costs no parsing per connection.
  std::unordered_set<std::string> member_addresses_;
  std::map<std::uint64_t, std::string> probes_;  // request id -> target
  std::uint64_t next_probe_id_ = 1;
  std::uint64_t heartbeat_sequence_ = 0;
  std::uint64_t heartbeats_sent_ = 0;
  membership::ClusterState last_state_ = membership::ClusterState::forming;
  bool joined_ = false;  // self: active once a peer is active or join_timeout passed
  bool leaving_ = false;
  bool maintenance_ = false;
  ClusterCounters counters_;
  RefusalBudget refusals_;
  TraceBudget trace_budget_{kTraceLinesPerWindow, kTraceWindow};  // loop thread only
  transport::HandshakeSlots handshake_slots_;  // accepted links in their handshake
  std::unique_ptr<limits::LimitService> limits_;
  std::unique_ptr<raft::RaftDriver> raft_;
  std::function<void(std::shared_ptr<const placement::View>)> view_listener_;
  std::function<void(std::shared_ptr<const std::vector<std::string>>)> settling_listener_;
  std::shared_ptr<const placement::View> view_;  // the last one published
  std::string member_cache_text_;  // as last written
  bool member_cache_error_logged_ = false;
};

}  // namespace zetian::cluster
