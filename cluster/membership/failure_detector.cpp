#include "cluster/membership/failure_detector.h"

#include <algorithm>
#include <stdexcept>

namespace zetian::cluster::membership {

std::string_view statusName(PeerStatus status) {
  switch (status) {
    case PeerStatus::joining: return "joining";
    case PeerStatus::active: return "active";
    case PeerStatus::suspect: return "suspect";
    case PeerStatus::failed: return "failed";
    case PeerStatus::left: return "left";
    case PeerStatus::maintenance: return "maintenance";
  }
  return "unknown";
}

std::string_view clusterStateName(ClusterState state) {
  switch (state) {
    case ClusterState::forming: return "forming";
    case ClusterState::healthy: return "healthy";
    case ClusterState::degraded: return "degraded";
    case ClusterState::no_quorum: return "no_quorum";
  }
  return "unknown";
}

FailureDetector::FailureDetector(FailureDetectorConfig config) : config_(config) {
  if (config_.heartbeat_interval <= Millis{0} || config_.failure_threshold <= 0 ||
      config_.success_threshold <= 0 || config_.failure_detection_timeout <= Millis{0}) {
    throw std::invalid_argument(
        "failure detector: heartbeat_interval, failure_threshold, success_threshold and "
        "failure_detection_timeout must all be positive");
  }
}

void FailureDetector::moveTo(const PeerId& id, Peer& peer, PeerStatus to, Millis now,
                             std::vector<Transition>& out) {
  out.push_back(Transition{id, peer.status, to, now});
  peer.status = to;
  if (to == PeerStatus::suspect) peer.suspect_since = now;
  if (to != PeerStatus::suspect) {
    peer.last_indirect_ack.reset();
    peer.last_probe_request.reset();
  }
}

void FailureDetector::promoteIfEarned(const PeerId& id, Peer& peer, Millis now,
                                      std::vector<Transition>& out) const {
  const bool promotable = peer.status == PeerStatus::joining ||
                          peer.status == PeerStatus::suspect || peer.status == PeerStatus::failed;
  if (promotable && peer.heartbeat_streak >= config_.success_threshold) {
    moveTo(id, peer, PeerStatus::active, now, out);
  }
}

std::vector<Transition> FailureDetector::onHeartbeat(const PeerId& id, std::uint64_t incarnation,
                                                     Millis now) {
  std::vector<Transition> out;
  auto it = peers_.find(id);
  if (it == peers_.end()) {
    Peer& peer = peers_[id];
    peer.incarnation = incarnation;
    peer.last_heard = now;
    peer.heartbeat_streak = 1;
    out.push_back(Transition{id, std::nullopt, PeerStatus::joining, now});
    promoteIfEarned(id, peer, now, out);
    return out;
  }
  Peer& peer = it->second;
  if (incarnation < peer.incarnation) return out;  // stale: from before a restart
  if (peer.status == PeerStatus::left) {
    // A heartbeat of the incarnation that said goodbye may still be in flight.
    if (incarnation == peer.incarnation) return out;
    peer.incarnation = incarnation;
    peer.last_heard = now;
    peer.heartbeat_streak = 1;
    moveTo(id, peer, PeerStatus::joining, now, out);
    promoteIfEarned(id, peer, now, out);
    return out;
  }
  const bool restarted = incarnation > peer.incarnation;
  const bool consecutive = now - peer.last_heard < 2 * config_.heartbeat_interval;
  peer.heartbeat_streak = (!restarted && consecutive) ? peer.heartbeat_streak + 1 : 1;
  peer.incarnation = incarnation;
  peer.last_heard = std::max(peer.last_heard, now);
  promoteIfEarned(id, peer, now, out);
  return out;
}

std::vector<Transition> FailureDetector::onGoodbye(const PeerId& id, std::uint64_t incarnation,
                                                   Millis now) {
  std::vector<Transition> out;
  auto it = peers_.find(id);
  if (it == peers_.end()) return out;
  Peer& peer = it->second;
  if (incarnation < peer.incarnation || peer.status == PeerStatus::left) return out;
  peer.incarnation = incarnation;
  moveTo(id, peer, PeerStatus::left, now, out);
  return out;
}

std::vector<Transition> FailureDetector::onMaintenance(const PeerId& id, bool enabled, Millis now) {
  std::vector<Transition> out;
  auto it = peers_.find(id);
  if (it == peers_.end()) return out;
  Peer& peer = it->second;
  if (peer.status == PeerStatus::left) return out;
  if (enabled && peer.status != PeerStatus::maintenance) {
    moveTo(id, peer, PeerStatus::maintenance, now, out);
  } else if (!enabled && peer.status == PeerStatus::maintenance) {
    peer.heartbeat_streak = 0;
    moveTo(id, peer, PeerStatus::joining, now, out);
  }
  return out;
}

void FailureDetector::onIndirectAck(const PeerId& id, Millis now) {
  auto it = peers_.find(id);
  if (it == peers_.end() || it->second.status != PeerStatus::suspect) return;
  auto& ack = it->second.last_indirect_ack;
  ack = ack ? std::max(*ack, now) : now;
}

TickResult FailureDetector::tick(Millis now) {
  TickResult result;
  for (auto& [id, peer] : peers_) {
    if ((peer.status == PeerStatus::joining || peer.status == PeerStatus::active) &&
        now - peer.last_heard > suspicionWindow()) {
      peer.heartbeat_streak = 0;
      moveTo(id, peer, PeerStatus::suspect, now, result.transitions);
    }
    if (peer.status != PeerStatus::suspect) continue;
    // Measured from the last sign of life, not from the suspicion: an operator's
    // failure_detection_timeout is "this long without news means failed".
    Millis quiet_since = peer.last_heard;
    if (peer.last_indirect_ack) quiet_since = std::max(quiet_since, *peer.last_indirect_ack);
    if (now - quiet_since > config_.failure_detection_timeout) {
      moveTo(id, peer, PeerStatus::failed, now, result.transitions);
      continue;
    }
    if (!peer.last_probe_request || now - *peer.last_probe_request >= config_.heartbeat_interval) {
      peer.last_probe_request = now;
      result.probe_requests.push_back(id);
    }
  }
  return result;
}

std::optional<PeerStatus> FailureDetector::statusOf(const PeerId& id) const {
  auto it = peers_.find(id);
  if (it == peers_.end()) return std::nullopt;
  return it->second.status;
}

std::vector<PeerView> FailureDetector::peers() const {
  std::vector<PeerView> views;
  views.reserve(peers_.size());
  for (const auto& [id, peer] : peers_) {
    views.push_back(PeerView{id, peer.status, peer.incarnation, peer.last_heard});
  }
  return views;
}

ClusterState FailureDetector::clusterState() const {
  std::size_t members = 1;  // self
  std::size_t active = 1;
  bool troubled = false;
  for (const auto& [id, peer] : peers_) {
    if (peer.status == PeerStatus::left) continue;
    ++members;
    if (peer.status == PeerStatus::active) ++active;
    if (peer.status == PeerStatus::suspect || peer.status == PeerStatus::failed) troubled = true;
  }
  if (members < 2) return ClusterState::forming;
  if (2 * active <= members) return ClusterState::no_quorum;
  return troubled ? ClusterState::degraded : ClusterState::healthy;
}

}  // namespace zetian::cluster::membership
