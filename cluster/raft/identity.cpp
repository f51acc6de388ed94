#include "cluster/raft/identity.h"

#include <cstdio>
#include <random>
#include <sstream>

namespace zetian::cluster::raft {

std::string hexId(NodeId id) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(id));
  return buf;
}

std::string encodeIdentity(const Identity& identity) {
  return "zetian-raft-identity 1\nnode_id " + identity.node_id + "\nraft_id " + hexId(identity.raft_id) + "\n";
}

std::optional<Identity> decodeIdentity(std::string_view text, std::string* error) {
  std::istringstream in{std::string(text)};
  std::string magic, version, key1, node_id, key2, raft_hex, rest;
  if (!(in >> magic >> version >> key1 >> node_id >> key2 >> raft_hex) || (in >> rest) ||
      magic != "zetian-raft-identity" || version != "1" || key1 != "node_id" || key2 != "raft_id" ||
      raft_hex.size() != 16 || raft_hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
    *error = "not an identity file this version writes";
    return std::nullopt;
  }
  Identity identity{node_id, std::stoull(raft_hex, nullptr, 16)};
  if (identity.raft_id == kNoNode || identity.raft_id == kOutsideVoter) {
    *error = "raft_id " + raft_hex + " is reserved";
    return std::nullopt;
  }
  return identity;
}

NodeId drawRaftId() {
  std::random_device device;
  for (;;) {
    const NodeId id = (static_cast<NodeId>(device()) << 32) | device();
    if (id != kNoNode && id != kOutsideVoter) return id;
  }
}

}  // namespace zetian::cluster::raft
