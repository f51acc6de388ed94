// libFuzzer target for the replicated policy's state machine (cluster/raft/policy_state.h):
// a snapshot's bytes given to restore(), then committed entries given to apply(). Nothing
// may crash, read out of bounds or let an exception out, and:
//   - restore() accepts only what encode() writes (an accepted state encodes to the input)
//     and says why it refuses;
//   - apply() advances the applied index; only policy_applied changes the policy, by
//     exactly one version; the history is the newest min(version, kMaxHistory) versions;
//     a recorded name maps both ways; an error comes with the skipped kinds and no other;
//   - after every entry, the state's snapshot restores to the same state;
//   - an entry at an index already applied throws std::logic_error and changes nothing.
//
// Input: [u8 applied][u32 LE snapshot length][snapshot bytes] then entries, each
// [u8 kind][u16 LE length][data]: kind % 3 is the entry type (normal, no-op, config) and
// bit 7 skips an index before the entry. A snapshot length beyond the input takes the rest.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "cluster/raft/policy_state.h"

namespace raft = zetian::cluster::raft;

namespace {

class Input {
 public:
  Input(const std::uint8_t* data, std::size_t size) : bytes_(reinterpret_cast<const char*>(data), size) {}
  bool empty() const { return at_ == bytes_.size(); }
  std::uint64_t u(int width) {
    std::uint64_t v = 0;
    for (int i = 0; i < width && at_ < bytes_.size(); ++i) {
      v |= std::uint64_t{static_cast<unsigned char>(bytes_[at_++])} << (8 * i);
    }
    return v;
  }
  std::string_view take(std::uint64_t n) {
    const std::size_t size = static_cast<std::size_t>(std::min<std::uint64_t>(n, bytes_.size() - at_));
    const std::string_view out = bytes_.substr(at_, size);
    at_ += size;
    return out;
  }

 private:
  std::string_view bytes_;
  std::size_t at_ = 0;
};

void check(bool condition) {
  if (!condition) std::abort();
}

void checkInvariants(const raft::PolicyState& s) {
  check(s.version() == (s.current() ? s.current()->version : 0));
  check(s.history().size() == std::min<std::uint64_t>(s.version(), raft::kMaxHistory));
  if (!s.history().empty()) {
    check(s.history().back().version == s.version());
    check(s.history().back().index <= s.appliedIndex());
  }
  std::string error;
  const auto back = raft::PolicyState::restore(s.encode(), s.appliedIndex(), &error);
  check(back.has_value() && error.empty());
  check(back->encode() == s.encode() && back->appliedIndex() == s.appliedIndex());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  const raft::Index applied = in.u(1);
  const std::string_view snapshot = in.take(in.u(4));

  std::string error;
  std::optional<raft::PolicyState> restored = raft::PolicyState::restore(snapshot, applied, &error);
  raft::PolicyState state;
  if (restored) {
    check(error.empty());
    check(restored->encode() == snapshot);
    check(restored->appliedIndex() == applied);
    state = std::move(*restored);
  } else {
    check(!error.empty());
  }
  checkInvariants(state);

  while (!in.empty()) {
    const std::uint8_t kind = static_cast<std::uint8_t>(in.u(1));
    const std::string_view bytes = in.take(in.u(2));
    raft::Entry entry;
    entry.term = 1;
    entry.index = state.appliedIndex() + 1 + (kind >> 7);
    entry.type = static_cast<raft::EntryType>((kind & 0x7F) % 3);
    entry.data = std::string(bytes);

    const std::uint64_t version_before = state.version();
    const auto current_before = state.current();
    const raft::ApplyResult r = state.apply(entry);
    check(state.appliedIndex() == entry.index);
    const bool skipped = r.kind == raft::ApplyKind::policy_conflict || r.kind == raft::ApplyKind::policy_invalid ||
                         r.kind == raft::ApplyKind::malformed;
    check(r.error.empty() != skipped);
    if (entry.type != raft::EntryType::normal || entry.data.empty()) check(r.kind == raft::ApplyKind::none);
    if (r.kind == raft::ApplyKind::policy_applied) {
      check(state.version() == version_before + 1 && r.version == state.version());
      check(state.history().back().index == entry.index);
    } else {
      check(state.version() == version_before && state.current() == current_before);
    }
    if (r.kind == raft::ApplyKind::member_named) {
      const auto name = raft::decodeMemberName(entry.data);
      check(name.has_value() && raft::encodeMemberName(*name) == entry.data);
      check(state.nameOf(name->raft_id) == name->node_id);
      check(state.idOf(name->node_id) == name->raft_id);
    }
    checkInvariants(state);
  }

  const std::string before = state.encode();
  try {
    state.apply(raft::Entry{1, state.appliedIndex(), raft::EntryType::normal, ""});
    std::abort();
  } catch (const std::logic_error&) {
  }
  check(state.encode() == before);
  return 0;
}
