// ClusterNode's bookkeeping, shared by node.cpp (membership: heartbeats, probes,
// gossip, events, views) and node_links.cpp (listener, discovery, dialing, the life of
// links). Private to those two files.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cluster/node.h"
#include "cluster/transport/peer_link.h"

namespace zetian::cluster {

using Clock = std::chrono::steady_clock;

struct ClusterNode::Link {
  std::unique_ptr<transport::PeerLink> link;
  std::string dialed;   // the endpoint we dialed ("" for an accepted link)
  std::string peer_id;  // once established
  transport::HandshakeSlots::Id handshake_slot = 0;  // accepted and in its handshake; 0: none
};

struct ClusterNode::Peer {
  std::string address;
  std::string region;
  std::uint64_t incarnation = 0;
  Link* link = nullptr;  // the chosen established link, if any
  Clock::time_point last_heard{};
  std::int64_t last_seen_unix_ms = 0;
  NodeLoad load;
  std::optional<std::uint32_t> keys_owned;  // from its last heartbeat
  bool said_goodbye = false;  // do not redial this incarnation
  bool was_failed = false;    // for node_recovered
  // Dialing
  bool dialing = false;
  // Its link closed while our dial to it was under way (crossing dials): it stays in
  // the view until that dial ends, and calls to it wait (limits::PeerDirectory::linkComing).
  bool link_coming = false;
  Clock::time_point next_dial{};
  std::chrono::milliseconds backoff{0};
};

struct ClusterNode::Seed {
  std::string text;  // as configured
  std::vector<std::string> endpoints;  // resolved, numeric
  Clock::time_point next_resolve{};
  bool resolving = false;
  std::map<std::string, Clock::time_point> next_dial;  // per endpoint
  std::map<std::string, std::chrono::milliseconds> backoff;
};

}  // namespace zetian::cluster
