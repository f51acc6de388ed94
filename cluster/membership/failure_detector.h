// Membership state machine and heartbeat failure detector for one node's view of its
// peers. Pure: no sockets, no clocks, no threads. Time is an argument of every input
// (`now`, which must not decrease between calls), and every state change comes back to
// the caller as a Transition, so a test can replay thousands of seeded histories.
//
// Per-peer states: joining, active, suspect, failed, left, maintenance.
//   - First heartbeat of an unknown peer -> joining. joining/suspect/failed -> active
//     after success_threshold consecutive heartbeats ("consecutive": no gap of two
//     whole intervals or more between them, so sender jitter does not reset the count).
//   - joining/active -> suspect when nothing was heard for more than
//     failure_threshold * heartbeat_interval (checked by tick). While a peer is
//     suspect, tick asks for an indirect probe about it once per heartbeat_interval.
//   - suspect -> failed when more than failure_detection_timeout has passed since the
//     later of its last heartbeat and its last indirect ack. Hence a peer cut off from
//     us but vouched for by others stays suspect; a dead peer is failed
//     failure_detection_timeout after its last heartbeat (plus the tick granularity),
//     and never before it was suspect. (If failure_detection_timeout is shorter than
//     the suspicion window, the peer goes suspect then failed in the same tick.)
//   - goodbye -> left. left is final for that incarnation: only a heartbeat with a
//     higher incarnation brings the peer back, as joining. Heartbeats and goodbyes
//     with a lower incarnation than the known one are stale and ignored.
//   - maintenance is set and cleared by the operator; it suspends failure detection.
//     Clearing it -> joining (the peer earns active again with fresh heartbeats).
// Every Transition is a real change (from != to); there are no silent changes.
//
// Cluster state, over self (always active) plus every peer not left:
//   forming   fewer than 2 members;
//   no_quorum active members are not a strict majority;
//   degraded  majority active, some member suspect or failed;
//   healthy   majority active, none suspect or failed (joining/maintenance allowed).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zetian::cluster::membership {

using Millis = std::chrono::milliseconds;
using PeerId = std::string;

enum class PeerStatus { joining, active, suspect, failed, left, maintenance };
enum class ClusterState { forming, healthy, degraded, no_quorum };

std::string_view statusName(PeerStatus status);
std::string_view clusterStateName(ClusterState state);

struct FailureDetectorConfig {
  Millis heartbeat_interval{1000};
  int failure_threshold = 3;  // missed heartbeats before suspect
  int success_threshold = 2;  // good heartbeats before joining/suspect/failed -> active
  Millis failure_detection_timeout{10000};  // suspect -> failed
};

struct Transition {
  PeerId peer;
  std::optional<PeerStatus> from;  // nullopt: the peer was unknown until now
  PeerStatus to;
  Millis at;
  bool operator==(const Transition&) const = default;
};

struct TickResult {
  std::vector<Transition> transitions;
  std::vector<PeerId> probe_requests;  // suspects to ask other members about
};

struct PeerView {
  PeerId peer;
  PeerStatus status;
  std::uint64_t incarnation;
  Millis last_heard;
};

class FailureDetector {
 public:
  // Throws std::invalid_argument unless every duration and threshold is positive.
  explicit FailureDetector(FailureDetectorConfig config);

  std::vector<Transition> onHeartbeat(const PeerId& peer, std::uint64_t incarnation, Millis now);
  std::vector<Transition> onGoodbye(const PeerId& peer, std::uint64_t incarnation, Millis now);
  std::vector<Transition> onMaintenance(const PeerId& peer, bool enabled, Millis now);
  // Another member reports it hears `peer`. Only counts while `peer` is suspect.
  void onIndirectAck(const PeerId& peer, Millis now);
  TickResult tick(Millis now);

  std::optional<PeerStatus> statusOf(const PeerId& peer) const;
  std::vector<PeerView> peers() const;  // sorted by id
  ClusterState clusterState() const;
  const FailureDetectorConfig& config() const { return config_; }

 private:
  struct Peer {
    PeerStatus status = PeerStatus::joining;
    std::uint64_t incarnation = 0;
    Millis last_heard{0};
    int heartbeat_streak = 0;
    Millis suspect_since{0};
    std::optional<Millis> last_indirect_ack;    // only while suspect
    std::optional<Millis> last_probe_request;   // only while suspect
  };

  Millis suspicionWindow() const { return config_.heartbeat_interval * config_.failure_threshold; }
  static void moveTo(const PeerId& id, Peer& peer, PeerStatus to, Millis now,
                     std::vector<Transition>& out);
  void promoteIfEarned(const PeerId& id, Peer& peer, Millis now, std::vector<Transition>& out) const;

  FailureDetectorConfig config_;
  std::map<PeerId, Peer> peers_;
};

}  // namespace zetian::cluster::membership
