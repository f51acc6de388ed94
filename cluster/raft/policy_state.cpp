// The replicated policy's state machine; the entry formats and the rules are in
// policy_state.h.
#include "cluster/raft/policy_state.h"

#include <algorithm>
#include <set>
#include <stdexcept>
#include <utility>

#include "conf/parse.h"
#include "conf/policy.h"
#include "conf/policy_document.h"
#include "state/little_endian.h"

namespace zetian::cluster::raft {
namespace {

constexpr std::string_view kMemberMagic = "ZMEM";
constexpr std::string_view kStateMagic = "ZPST";
constexpr std::string_view kPolicyMagic = "ZPOL";
constexpr std::uint8_t kFormat = 1;
// An invalid policy's refusal carries this many of the loader's errors; the proposer
// checked the text with the same loader first, so more is rarely useful.
constexpr std::size_t kMaxErrorLines = 10;
// The smallest history item and name in ZPST, so a count is checked against the bytes
// left before anything is reserved.
constexpr std::size_t kMinHistoryItemBytes = 4 * 8 + 1 + 1;
constexpr std::size_t kMinNameBytes = 8 + 8 + 1 + 1;

using state::le::putU32;
using state::le::putU64;
using state::le::putU8;
using state::le::Reader;

bool isNodeId(std::string_view s) { return conf::isNodeIdText(s); }

struct NameDecode {
  std::optional<MemberName> name;
  std::string error;
};

NameDecode decodeName(std::string_view bytes) {
  NameDecode d;
  Reader in(bytes);
  const auto magic = in.take(kMemberMagic.size());
  const auto format = in.u(1);
  const auto raft_id = in.u(8);
  const auto name = in.shortString();
  if (!magic || *magic != kMemberMagic) {
    d.error = "not a member name: it does not start with \"ZMEM\"";
  } else if (!format || *format != kFormat) {
    d.error = format ? "not a member name: format " + std::to_string(*format) + ", this build reads format 1"
                     : "not a member name: cut short";
  } else if (!raft_id || !name) {
    d.error = "not a member name: cut short";
  } else if (in.left() != 0) {
    d.error = "not a member name: " + std::to_string(in.left()) + " bytes after the name";
  } else if (*raft_id == kNoNode) {
    d.error = "not a member name: raft id 0";
  } else if (!isNodeId(*name)) {
    d.error = "not a member name: a name that is not a node id (1 to 64 characters from A-Z a-z 0-9 _ . -)";
  } else {
    d.name = MemberName{*raft_id, std::string(*name)};
  }
  return d;
}

std::string invalidPolicyError(const std::vector<conf::ConfigError>& errors) {
  std::string out;
  const std::size_t shown = std::min(errors.size(), kMaxErrorLines);
  for (std::size_t i = 0; i < shown; ++i) {
    if (i != 0) out += '\n';
    out += errors[i].format();
  }
  if (errors.size() > shown) out += "\n(and " + std::to_string(errors.size() - shown) + " more errors)";
  return out;
}

std::optional<PolicyState> refuse(std::string* error, std::string why) {
  if (error) *error = "not a policy state: " + std::move(why);
  return std::nullopt;
}

}  // namespace

std::string encodeMemberName(const MemberName& name) {
  if (name.raft_id == kNoNode) throw std::invalid_argument("encodeMemberName: raft id 0");
  if (!isNodeId(name.node_id)) {
    throw std::invalid_argument("encodeMemberName: a name that is not a node id (1 to 64 characters from A-Z a-z 0-9 _ . -)");
  }
  std::string out(kMemberMagic);
  putU8(out, kFormat);
  putU64(out, name.raft_id);
  putU8(out, static_cast<std::uint8_t>(name.node_id.size()));
  out += name.node_id;
  return out;
}

std::optional<MemberName> decodeMemberName(std::string_view bytes) { return decodeName(bytes).name; }

std::string_view applyKindName(ApplyKind kind) {
  switch (kind) {
    case ApplyKind::none: return "none";
    case ApplyKind::policy_applied: return "policy_applied";
    case ApplyKind::policy_conflict: return "policy_conflict";
    case ApplyKind::policy_invalid: return "policy_invalid";
    case ApplyKind::member_named: return "member_named";
    case ApplyKind::malformed: return "malformed";
  }
  return "unknown";
}

ApplyResult PolicyState::apply(const Entry& entry) {
  if (entry.index <= applied_) {
    throw std::logic_error("PolicyState::apply: entry " + std::to_string(entry.index) + " at or below the applied index " +
                           std::to_string(applied_));
  }
  ApplyResult result;
  if (entry.type == EntryType::normal && !entry.data.empty()) {
    const std::string_view data = entry.data;
    if (data.starts_with(kPolicyMagic)) {
      result = applyPolicy(data, entry.index);
    } else if (data.starts_with(kMemberMagic)) {
      result = applyName(data, entry.index);
    } else {
      result.kind = ApplyKind::malformed;
      result.error = "an entry of " + std::to_string(data.size()) +
                     " bytes that is neither a policy document (\"ZPOL\") nor a member name (\"ZMEM\")";
    }
  }
  applied_ = entry.index;
  return result;
}

ApplyResult PolicyState::applyPolicy(std::string_view data, Index index) {
  ApplyResult result;
  conf::PolicyDocumentDecode decoded = conf::decodePolicyDocument(data);
  if (!decoded.document) {
    result.kind = ApplyKind::malformed;
    result.error = std::move(decoded.error);
    return result;
  }
  conf::PolicyDocument& doc = *decoded.document;
  result.version = doc.version;
  if (doc.version != version() + 1) {
    result.kind = ApplyKind::policy_conflict;
    result.error = "version " + std::to_string(doc.version) + " proposed, " + std::to_string(version()) + " is current";
    return result;
  }
  const conf::PolicyLoadResult loaded = conf::loadPolicy(doc.text, "<policy version " + std::to_string(doc.version) + ">");
  if (!loaded.ok()) {
    result.kind = ApplyKind::policy_invalid;
    result.error = invalidPolicyError(loaded.errors);
    return result;
  }
  history_.push_back(PolicyHistoryItem{doc.version, doc.proposer, doc.time_unix_ms, index, doc.text.size()});
  while (history_.size() > kMaxHistory) history_.pop_front();
  current_ = std::move(doc);
  result.kind = ApplyKind::policy_applied;
  return result;
}

ApplyResult PolicyState::applyName(std::string_view data, Index index) {
  ApplyResult result;
  NameDecode decoded = decodeName(data);
  if (!decoded.name) {
    result.kind = ApplyKind::malformed;
    result.error = std::move(decoded.error);
    return result;
  }
  names_[decoded.name->raft_id] = std::move(decoded.name->node_id);
  named_at_[decoded.name->raft_id] = index;
  result.kind = ApplyKind::member_named;
  return result;
}

std::optional<std::string> PolicyState::nameOf(NodeId id) const {
  const auto it = names_.find(id);
  if (it == names_.end()) return std::nullopt;
  return it->second;
}

std::optional<NodeId> PolicyState::idOf(std::string_view node_id) const {
  std::optional<NodeId> newest;
  Index newest_at = 0;
  for (const auto& [id, name] : names_) {
    const Index at = named_at_.at(id);
    if (name == node_id && at > newest_at) {
      newest = id;
      newest_at = at;
    }
  }
  return newest;
}

std::string PolicyState::encode() const {
  std::string out(kStateMagic);
  putU8(out, kFormat);
  const std::string document = current_ ? conf::encodePolicyDocument(*current_) : std::string();
  putU32(out, static_cast<std::uint32_t>(document.size()));
  out += document;
  putU32(out, static_cast<std::uint32_t>(history_.size()));
  for (const PolicyHistoryItem& item : history_) {
    putU64(out, item.version);
    putU64(out, item.time_unix_ms);
    putU64(out, item.index);
    putU64(out, item.text_bytes);
    putU8(out, static_cast<std::uint8_t>(item.proposer.size()));
    out += item.proposer;
  }
  putU32(out, static_cast<std::uint32_t>(names_.size()));
  for (const auto& [id, name] : names_) {
    putU64(out, id);
    putU64(out, named_at_.at(id));
    putU8(out, static_cast<std::uint8_t>(name.size()));
    out += name;
  }
  return out;
}

std::optional<PolicyState> PolicyState::restore(std::string_view bytes, Index applied, std::string* error) {
  Reader in(bytes);
  const auto magic = in.take(kStateMagic.size());
  if (!magic) return refuse(error, std::to_string(bytes.size()) + " bytes, too short for a header");
  if (*magic != kStateMagic) return refuse(error, "it does not start with \"ZPST\"");
  const auto format = in.u(1);
  if (!format) return refuse(error, "cut short in its header");
  if (*format != kFormat) return refuse(error, "format " + std::to_string(*format) + ", this build reads format 1");

  PolicyState state;
  state.applied_ = applied;
  const auto document_size = in.u(4);
  if (!document_size) return refuse(error, "cut short in its header");
  const auto document = in.take(static_cast<std::size_t>(*document_size));
  if (!document) return refuse(error, "the policy document is cut short");
  if (!document->empty()) {
    conf::PolicyDocumentDecode decoded = conf::decodePolicyDocument(*document);
    if (!decoded.document) return refuse(error, "its current policy is " + decoded.error);
    state.current_ = std::move(decoded.document);
  }
  const std::uint64_t version = state.version();

  // Every version from 1 on was applied once and recorded, so the history is exactly
  // the newest min(version, kMaxHistory) versions, in order, the last one current.
  const auto history_count = in.u(4);
  if (!history_count) return refuse(error, "cut short before the history");
  const std::uint64_t expected_history = std::min<std::uint64_t>(version, kMaxHistory);
  if (*history_count != expected_history) {
    return refuse(error, std::to_string(*history_count) + " history items for policy version " +
                             std::to_string(version) + " (expected " + std::to_string(expected_history) + ")");
  }
  if (*history_count * kMinHistoryItemBytes > in.left()) return refuse(error, "the history is cut short");
  std::set<Index> used_indexes;
  for (std::uint64_t i = 0; i < *history_count; ++i) {
    const auto item_version = in.u(8);
    const auto time = in.u(8);
    const auto index = in.u(8);
    const auto text_bytes = in.u(8);
    const auto proposer = in.shortString();
    if (!item_version || !time || !index || !text_bytes || !proposer) return refuse(error, "the history is cut short");
    const std::string at = "history item " + std::to_string(i + 1) + ": ";
    if (*item_version != version - *history_count + 1 + i) {
      return refuse(error, at + "version " + std::to_string(*item_version) + " out of sequence");
    }
    if (*index == 0 || *index > applied || (!state.history_.empty() && *index <= state.history_.back().index)) {
      return refuse(error, at + "log index " + std::to_string(*index) + " out of order or past the applied index " +
                               std::to_string(applied));
    }
    if (*text_bytes > conf::kMaxConfigBytes) return refuse(error, at + "a text larger than the loader's limit");
    if (!isNodeId(*proposer)) return refuse(error, at + "a proposer that is not a node id");
    state.history_.push_back(PolicyHistoryItem{*item_version, std::string(*proposer), *time, *index, *text_bytes});
    used_indexes.insert(*index);
  }
  if (state.current_) {
    const PolicyHistoryItem& last = state.history_.back();
    if (last.proposer != state.current_->proposer || last.time_unix_ms != state.current_->time_unix_ms ||
        last.text_bytes != state.current_->text.size()) {
      return refuse(error, "the newest history item is not the current policy");
    }
  }

  const auto name_count = in.u(4);
  if (!name_count) return refuse(error, "cut short before the names");
  if (*name_count * kMinNameBytes > in.left()) return refuse(error, "the names are cut short");
  for (std::uint64_t i = 0; i < *name_count; ++i) {
    const auto id = in.u(8);
    const auto index = in.u(8);
    const auto name = in.shortString();
    if (!id || !index || !name) return refuse(error, "the names are cut short");
    const std::string at = "name " + std::to_string(i + 1) + ": ";
    if (*id == kNoNode || (!state.names_.empty() && *id <= state.names_.rbegin()->first)) {
      return refuse(error, at + "raft id " + std::to_string(*id) + " is 0 or out of order");
    }
    // Each entry records one thing: a name at a policy's index (or another name's) was
    // never applied.
    if (*index == 0 || *index > applied || !used_indexes.insert(*index).second) {
      return refuse(error, at + "log index " + std::to_string(*index) +
                               " is 0, past the applied index or holds another record");
    }
    if (!isNodeId(*name)) return refuse(error, at + "not a node id");
    state.names_.emplace(*id, std::string(*name));
    state.named_at_.emplace(*id, *index);
  }
  if (in.left() != 0) return refuse(error, std::to_string(in.left()) + " bytes after the names");
  return state;
}

}  // namespace zetian::cluster::raft
