#include "cluster/transport/handshake_slots.h"

#include <algorithm>

namespace zetian::cluster::transport {

HandshakeSlots::HandshakeSlots(HandshakeSlotLimits limits) : limits_(limits) {
  // A cap of zero would refuse every member too; one slot is the least that works.
  limits_.max_pending = std::max<std::size_t>(1, limits_.max_pending);
  limits_.max_per_source = std::max<std::size_t>(1, limits_.max_per_source);
}

std::size_t HandshakeSlots::pendingFrom(std::string_view source) const {
  auto it = per_source_.find(source);
  return it == per_source_.end() ? 0 : it->second;
}

// The oldest slot, among strangers only or all, from `from_source` or (nullptr) any.
std::optional<HandshakeSlots::Id> HandshakeSlots::oldest(bool strangers_only, const std::string* from_source) const {
  for (const auto& [id, slot] : slots_) {
    if (strangers_only && slot.member) continue;
    if (from_source && slot.source != *from_source) continue;
    return id;
  }
  return std::nullopt;
}

HandshakeSlots::Decision HandshakeSlots::grant(const std::string& source, bool member, std::optional<Id> evicted) {
  if (evicted) release(*evicted);
  const Id id = next_id_++;
  slots_.emplace(id, Slot{source, member});
  ++per_source_[source];
  return Decision{Outcome::admitted, id, evicted};
}

HandshakeSlots::Decision HandshakeSlots::admit(const std::string& source, bool member) {
  const bool source_full = pendingFrom(source) >= limits_.max_per_source;
  const bool table_full = slots_.size() >= limits_.max_pending;
  if (!member) {
    if (source_full) return Decision{Outcome::refused_source_full, 0, std::nullopt};
    if (!table_full) return grant(source, member, std::nullopt);
    auto victim = oldest(true, nullptr);
    if (!victim) return Decision{Outcome::refused_table_full, 0, std::nullopt};
    return grant(source, member, victim);
  }
  if (source_full) {
    // Strangers first, even from a member's address (another process on its host).
    auto victim = oldest(true, &source);
    if (!victim) victim = oldest(false, &source);
    return grant(source, member, victim);
  }
  if (!table_full) return grant(source, member, std::nullopt);
  auto victim = oldest(true, nullptr);
  if (!victim) victim = oldest(false, nullptr);
  return grant(source, member, victim);
}

void HandshakeSlots::release(Id slot) {
  auto it = slots_.find(slot);
  if (it == slots_.end()) return;
  auto count = per_source_.find(it->second.source);
  if (count != per_source_.end() && --count->second == 0) per_source_.erase(count);
  slots_.erase(it);
}

std::string_view nameOf(HandshakeSlots::Outcome outcome) {
  switch (outcome) {
    case HandshakeSlots::Outcome::admitted: return "admitted";
    case HandshakeSlots::Outcome::refused_source_full: return "per_source_limit";
    case HandshakeSlots::Outcome::refused_table_full: return "table_full";
  }
  return "unknown";
}

}  // namespace zetian::cluster::transport
