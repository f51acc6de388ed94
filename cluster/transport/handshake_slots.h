// Who may hold one of the node's handshake slots: the bookkeeping of accepted
// connections that have not finished (or failed) their handshake yet, as a pure core
// (no sockets, no clocks; the caller closes what it is told to).
//
// Why: until a connection proves the shared secret we know nothing of it but its
// source address, and each pending handshake costs a socket and memory for up to
// handshake_timeout. Without a policy, a stranger holding max_pending idle connections
// (re-opening each one as it times out) blocks every member: a restarted node cannot
// rejoin and ends up running alone after join_timeout. So:
//   - a stranger's address holds at most max_per_source pending handshakes;
//   - when the table is full, a newcomer takes the slot of the oldest pending
//     stranger (a held connection is worth nothing, so holding many buys no more
//     than connecting fast, and the per-source cap bounds that);
//   - a connection from a known member's address (a configured seed, an address in the
//     member list) always gets a slot, in a full table that of the oldest stranger, or
//     if only members' addresses are pending, of the oldest of them. Members' addresses
//     have no per-source cap: several nodes may share one host (and its address), and
//     a burst from there must not make them evict one another.
// A "member address" is only a hint for the slot, never for admission: the handshake
// still decides who is a member. A hostile process on a member's host therefore
// competes with strangers for slots, never with a member (whose connection, the newest,
// finishes its handshake long before 64 newer ones could push it out).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace zetian::cluster::transport {

struct HandshakeSlotLimits {
  std::size_t max_pending = 64;    // handshakes in progress, all sources together
  std::size_t max_per_source = 8;  // from one stranger's source address
};

class HandshakeSlots {
 public:
  using Id = std::uint64_t;  // never 0; increasing, so a smaller id is an older slot

  enum class Outcome {
    admitted,
    refused_source_full,  // a stranger at its address's cap
    refused_table_full,   // a stranger, and every slot is held by a member's address
  };
  struct Decision {
    Outcome outcome = Outcome::admitted;
    Id slot = 0;                 // admitted: the new connection's slot
    std::optional<Id> evicted;   // admitted: close this pending connection first
  };

  explicit HandshakeSlots(HandshakeSlotLimits limits);

  // A new connection from `source` (a numeric address, without the port); `member`:
  // that address is a known member's. An evicted slot is released already. A member's
  // address is never refused.
  Decision admit(const std::string& source, bool member);
  // The connection left its handshake: established, closed or evicted. Unknown ids
  // (released already, or 0) are ignored.
  void release(Id slot);

  std::size_t pending() const { return slots_.size(); }
  std::size_t pendingFrom(std::string_view source) const;
  const HandshakeSlotLimits& limits() const { return limits_; }

 private:
  struct Slot {
    std::string source;
    bool member = false;
  };
  std::optional<Id> oldest(bool strangers_only) const;
  Decision grant(const std::string& source, bool member, std::optional<Id> evicted);

  HandshakeSlotLimits limits_;
  Id next_id_ = 1;
  std::map<Id, Slot> slots_;                  // by age
  std::map<std::string, std::size_t, std::less<>> per_source_;
};

std::string_view nameOf(HandshakeSlots::Outcome outcome);

}  // namespace zetian::cluster::transport
