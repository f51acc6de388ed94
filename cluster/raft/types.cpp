#include "cluster/raft/types.h"

#include <cstdio>

namespace zetian::cluster::raft {

std::string_view entryTypeName(EntryType type) {
  switch (type) {
    case EntryType::normal: return "normal";
    case EntryType::no_op: return "no-op";
    case EntryType::config: return "config";
  }
  return "unknown";
}

std::string_view messageTypeName(MessageType type) {
  switch (type) {
    case MessageType::vote: return "vote";
    case MessageType::vote_response: return "vote-response";
    case MessageType::pre_vote: return "pre-vote";
    case MessageType::pre_vote_response: return "pre-vote-response";
    case MessageType::append: return "append";
    case MessageType::append_response: return "append-response";
    case MessageType::heartbeat: return "heartbeat";
    case MessageType::heartbeat_response: return "heartbeat-response";
    case MessageType::timeout_now: return "timeout-now";
    case MessageType::read_index: return "read-index";
    case MessageType::read_index_response: return "read-index-response";
    case MessageType::snapshot: return "snapshot";
  }
  return "unknown";
}

std::string_view roleName(Role role) {
  switch (role) {
    case Role::follower: return "follower";
    case Role::pre_candidate: return "pre-candidate";
    case Role::candidate: return "candidate";
    case Role::leader: return "leader";
  }
  return "unknown";
}

namespace {

// Entry data is arbitrary bytes: printable ASCII as is, the rest escaped, so a trace
// line stays one line and a scenario file stays plain text.
std::string quoted(std::string_view bytes) {
  std::string out = "\"";
  for (unsigned char c : bytes) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  out += '"';
  return out;
}

}  // namespace

std::string describe(const Entry& entry) {
  std::string out = std::to_string(entry.term) + "/" + std::to_string(entry.index) + " " +
                    std::string(entryTypeName(entry.type));
  if (entry.type != EntryType::no_op) out += " " + quoted(entry.data);
  return out;
}

namespace {
std::string ids(const std::vector<NodeId>& nodes) {
  std::string out = "[";
  for (std::size_t i = 0; i < nodes.size(); ++i) out += (i > 0 ? " " : "") + std::to_string(nodes[i]);
  return out + "]";
}
}  // namespace

std::string describe(const Snapshot& s) {
  std::string out = "snap=" + std::to_string(s.term) + "/" + std::to_string(s.index) + " voters=" + ids(s.voters);
  if (!s.learners.empty()) out += " learners=" + ids(s.learners);
  if (!s.removed.empty()) out += " removed=" + ids(s.removed);
  return out + " data=" + quoted(s.data);
}

std::string describe(const Message& m) {
  std::string out = std::to_string(m.from) + "->" + std::to_string(m.to) + " " +
                    std::string(messageTypeName(m.type)) + " term=" + std::to_string(m.term);
  switch (m.type) {
    case MessageType::vote:
    case MessageType::pre_vote:
      out += " log=" + std::to_string(m.log_term) + "/" + std::to_string(m.index);
      if (m.transfer) out += " transfer";
      break;
    case MessageType::append: {
      out += " log=" + std::to_string(m.log_term) + "/" + std::to_string(m.index) +
             " commit=" + std::to_string(m.commit);
      if (!m.entries.empty()) {
        out += " entries=[";
        for (std::size_t i = 0; i < m.entries.size(); ++i) {
          if (i > 0) out += ", ";
          out += describe(m.entries[i]);
        }
        out += "]";
      }
      break;
    }
    case MessageType::append_response:
      out += " index=" + std::to_string(m.index);
      if (m.reject) {
        out += " hint=" + std::to_string(m.log_term) + "/" + std::to_string(m.reject_hint);
      }
      break;
    case MessageType::heartbeat:
      out += " commit=" + std::to_string(m.commit);
      if (m.index > 0) out += " read=" + std::to_string(m.index);
      break;
    case MessageType::heartbeat_response:
      if (m.index > 0) out += " read=" + std::to_string(m.index);
      break;
    case MessageType::read_index:
      out += " context=" + quoted(m.context);
      break;
    case MessageType::read_index_response:
      out += " index=" + std::to_string(m.index) + " context=" + quoted(m.context);
      break;
    case MessageType::snapshot:
      if (m.snapshot) out += " " + describe(*m.snapshot);
      break;
    case MessageType::vote_response:
    case MessageType::pre_vote_response:
    case MessageType::timeout_now:
      break;
  }
  if (m.reject) out += " rejected";
  return out;
}

}  // namespace zetian::cluster::raft
