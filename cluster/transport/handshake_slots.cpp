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

// The oldest pending slot, among strangers only or among all.
std::optional<HandshakeSlots::Id> HandshakeSlots::oldest(bool strangers_only) const {
  for (const auto& [id, slot] : slots_) {
    if (!strangers_only || !slot.member) return id;
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
  if (!member && pendingFrom(source) >= limits_.max_per_source) {
    return Decision{Outcome::refused_source_full, 0, std::nullopt};
  }
  if (slots_.size() < limits_.max_pending) return grant(source, member, std::nullopt);
  auto victim = oldest(true);
  if (!victim && member) victim = oldest(false);
  if (!victim) return Decision{Outcome::refused_table_full, 0, std::nullopt};
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
