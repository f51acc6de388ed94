// Which node a raft folder belongs to, and the Raft id it speaks for: the text of the
// folder's `identity` file (storage.h keeps it beside the log). Pure.
//
//   zetian-raft-identity 1
//   node_id mx1
//   raft_id 3f2a0c9d11e87b45
//
// A Raft id is drawn at random when the folder is first used, never derived from the
// node id: a Raft id is never reused (membership.h), so a node whose folder was
// emptied must come back as a new member.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cluster/raft/types.h"

namespace zetian::cluster::raft {

// A node outside any cluster still runs a core (to receive the snapshot that makes it
// a member), and a core needs a voter: this id, which drawRaftId() never gives, stands
// for "the cluster this node will be told of" (driver.h).
inline constexpr NodeId kOutsideVoter = ~NodeId{0};

struct Identity {
  std::string node_id;
  NodeId raft_id = kNoNode;
};

std::string encodeIdentity(const Identity& identity);
// nullopt with *error set unless `text` is what encodeIdentity writes, with a Raft id
// that is neither kNoNode nor kOutsideVoter.
std::optional<Identity> decodeIdentity(std::string_view text, std::string* error);
// Random, never kNoNode or kOutsideVoter.
NodeId drawRaftId();
// 16 hex digits, as the identity file and "raft:<hex>" member names spell an id.
std::string hexId(NodeId id);

}  // namespace zetian::cluster::raft
