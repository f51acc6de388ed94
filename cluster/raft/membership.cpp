#include "cluster/raft/membership.h"

#include <charconv>

namespace zetian::cluster::raft {

namespace {

std::string_view changeName(ChangeType type) {
  switch (type) {
    case ChangeType::add_voter: return "add-voter";
    case ChangeType::add_learner: return "add-learner";
    case ChangeType::promote: return "promote";
    case ChangeType::remove: return "remove";
  }
  return "unknown";
}

}  // namespace

std::string encodeConfChange(const ConfChange& change) {
  return std::string(changeName(change.type)) + " " + std::to_string(change.node);
}

std::optional<ConfChange> decodeConfChange(std::string_view data) {
  const auto space = data.find(' ');
  if (space == std::string_view::npos) return std::nullopt;
  const std::string_view name = data.substr(0, space);
  const std::string_view number = data.substr(space + 1);
  ConfChange change;
  bool known = false;
  for (ChangeType type : {ChangeType::add_voter, ChangeType::add_learner, ChangeType::promote, ChangeType::remove}) {
    if (name == changeName(type)) {
      change.type = type;
      known = true;
    }
  }
  if (!known || number.empty() || number.front() == '0') return std::nullopt;
  const auto [end, error] = std::from_chars(number.data(), number.data() + number.size(), change.node);
  if (error != std::errc() || end != number.data() + number.size()) return std::nullopt;
  return change;
}

std::string Membership::check(const ConfChange& c) const {
  const std::string node = "node " + std::to_string(c.node);
  if (c.node == kNoNode) return "node id 0 is reserved";
  if (removed.contains(c.node)) return node + " was removed; a node id is never reused";
  switch (c.type) {
    case ChangeType::add_voter:
      if (isVoter(c.node)) return node + " is already a voter";
      return "";
    case ChangeType::add_learner:
      if (isMember(c.node)) return node + " is already a member";
      return "";
    case ChangeType::promote:
      if (!isLearner(c.node)) return node + " is not a learner";
      return "";
    case ChangeType::remove:
      if (!isMember(c.node)) return node + " is not a member";
      if (isVoter(c.node) && voters.size() == 1) return node + " is the last voter";
      return "";
  }
  return "unknown change";
}

void Membership::apply(const ConfChange& c) {
  if (!check(c).empty()) return;
  switch (c.type) {
    case ChangeType::add_voter:
    case ChangeType::promote:
      learners.erase(c.node);
      voters.insert(c.node);
      break;
    case ChangeType::add_learner:
      learners.insert(c.node);
      break;
    case ChangeType::remove:
      voters.erase(c.node);
      learners.erase(c.node);
      removed.insert(c.node);
      break;
  }
}

}  // namespace zetian::cluster::raft
