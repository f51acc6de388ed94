// The replicated state machine of issue 10: what the committed Raft log means. Pure and
// deterministic: every node that applies the same entries in the same order holds the
// same state, byte for byte (encode()), whatever its own configuration file says.
//
// A normal entry's data is one of:
//   - a policy document (conf/policy_document.h, magic "ZPOL"): the next policy version;
//   - a member name (magic "ZMEM"): which node.id a Raft id stands for, so /health and
//     zetianctl can speak of members by name;
//   - empty: nothing (a driver may commit one to learn the commit index).
// Anything else is skipped as malformed: an entry is in the log for good, so refusing
// it must not stop the node, and every node skips it alike.
//
// A policy document is applied only when its version is exactly the current one + 1
// (so a proposal made against an older policy cannot silently undo a newer one: the
// proposer's base_version travels as the document's version - 1), and only when
// conf::loadPolicy accepts its text alone. The text is judged without the node's own
// settings (no node_has_redis): an entry must mean the same on every node; whether this
// node can enforce it is the engine's business once it is applied.
//
//   ZMEM: ["ZMEM"][format u8 = 1][raft_id u64][name length u8][name]
//   ZPST: ["ZPST"][format u8 = 1][document length u32][document (ZPOL) or nothing]
//         [history count u32] per item: [version u64][time_unix_ms u64][index u64]
//                                       [text_bytes u64][proposer length u8][proposer]
//         [name count u32] per name:   [raft_id u64][recorded at index u64]
//                                       [name length u8][name]
// Integers are little-endian, as in the policy document. The snapshot's storage record
// has its own length and CRC, so ZPST has none; restore() refuses anything encode()
// would not write, including states no sequence of apply() calls can reach (a history
// that is not the current version's newest, a name recorded at a policy's index). It
// does not run the loader over the current policy's text again: a later build with a
// stricter loader must still start from its snapshot, and the engine, which loads the
// text itself, then keeps its previous policy and says why.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "cluster/raft/policy_service.h"
#include "cluster/raft/types.h"
#include "conf/policy_document.h"

namespace zetian::cluster::raft {

// Raft id -> node.id, as one normal entry.
struct MemberName {
  NodeId raft_id = kNoNode;
  std::string node_id;  // 1..64 characters of A-Z a-z 0-9 _ . - ([node] id)
  bool operator==(const MemberName&) const = default;
};

// Throws std::invalid_argument for raft_id kNoNode or a name that is not a node id.
std::string encodeMemberName(const MemberName& name);
// nullopt unless `bytes` are exactly what encodeMemberName writes for some name.
std::optional<MemberName> decodeMemberName(std::string_view bytes);

// Applied versions kept for GET /policy/history; older ones are forgotten.
inline constexpr std::size_t kMaxHistory = 1000;

enum class ApplyKind : std::uint8_t {
  none,             // no-op and config entries, or an empty normal entry: nothing to do
  policy_applied,   // a new policy version is in force
  policy_conflict,  // a policy entry whose version is not current + 1: skipped
  policy_invalid,   // a policy entry loadPolicy refuses (text alone, no node options): skipped
  member_named,     // a member name recorded
  malformed,        // a normal entry that is none of the above: skipped, error says why
};

std::string_view applyKindName(ApplyKind kind);

struct ApplyResult {
  ApplyKind kind = ApplyKind::none;
  // policy_applied, policy_conflict, policy_invalid: the entry's document version.
  std::uint64_t version = 0;
  // policy_conflict, policy_invalid, malformed: why it was skipped, for the proposer.
  std::string error;
  bool operator==(const ApplyResult&) const = default;
};

class PolicyState {
 public:
  // Entries must come in log order, each index once; an index at or below the last
  // applied one is a caller bug (std::logic_error, and nothing changes). Every other
  // entry advances appliedIndex(), whatever it held.
  ApplyResult apply(const Entry& entry);

  Index appliedIndex() const { return applied_; }
  const std::optional<conf::PolicyDocument>& current() const { return current_; }
  std::uint64_t version() const { return current_ ? current_->version : 0; }  // 0 before the first policy
  // Oldest first; the newest kMaxHistory versions, so the last is current().
  const std::deque<PolicyHistoryItem>& history() const { return history_; }

  // Names: raft id -> node.id, as recorded (a later record for the same id replaces
  // its name). A name may be recorded for several ids (a node removed and rejoined
  // under a new Raft id): idOf gives the one recorded last.
  std::optional<std::string> nameOf(NodeId id) const;
  std::optional<NodeId> idOf(std::string_view node_id) const;
  const std::map<NodeId, std::string>& names() const { return names_; }

  // The whole state but the applied index (the snapshot carries that) as bytes, and
  // back. restore() gives nullopt and says why in *error (when error is not null) for
  // anything encode() would not write for a state applied up to `applied`.
  std::string encode() const;
  static std::optional<PolicyState> restore(std::string_view bytes, Index applied, std::string* error);

 private:
  ApplyResult applyPolicy(std::string_view data, Index index);
  ApplyResult applyName(std::string_view data, Index index);

  Index applied_ = 0;
  std::optional<conf::PolicyDocument> current_;
  std::deque<PolicyHistoryItem> history_;
  std::map<NodeId, std::string> names_;
  // The index each name was recorded at: orders the records for idOf().
  std::map<NodeId, Index> named_at_;
};

}  // namespace zetian::cluster::raft
