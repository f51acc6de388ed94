// The handshake-slot policy without sockets: strangers are capped per address and give
// way to each other oldest first, and a member's address always gets a slot.
#include "cluster/transport/handshake_slots.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace zetian::cluster::transport {
namespace {

using Outcome = HandshakeSlots::Outcome;

std::string stranger(int i) { return "198.51.100." + std::to_string(i); }

TEST(HandshakeSlots, AStrangerAddressHoldsAtMostItsCap) {
  HandshakeSlots slots({64, 8});
  for (int i = 0; i < 8; ++i) EXPECT_EQ(slots.admit("203.0.113.9", false).outcome, Outcome::admitted);
  const auto ninth = slots.admit("203.0.113.9", false);
  EXPECT_EQ(ninth.outcome, Outcome::refused_source_full);
  EXPECT_FALSE(ninth.evicted);
  EXPECT_EQ(slots.pendingFrom("203.0.113.9"), 8u);
  EXPECT_EQ(slots.admit("203.0.113.10", false).outcome, Outcome::admitted);
}

TEST(HandshakeSlots, AReleasedSlotIsFreeAgainAndReleasingTwiceChangesNothing) {
  HandshakeSlots slots({2, 2});
  const auto a = slots.admit("203.0.113.1", false);
  const auto b = slots.admit("203.0.113.1", false);
  EXPECT_EQ(slots.admit("203.0.113.1", false).outcome, Outcome::refused_source_full);
  slots.release(a.slot);
  slots.release(a.slot);
  slots.release(0);
  EXPECT_EQ(slots.pending(), 1u);
  EXPECT_EQ(slots.admit("203.0.113.1", false).outcome, Outcome::admitted);
  slots.release(b.slot);
  EXPECT_EQ(slots.pendingFrom("203.0.113.1"), 1u);
}

TEST(HandshakeSlots, AFullTableEvictsTheOldestStrangerForANewStranger) {
  HandshakeSlots slots({4, 8});
  std::vector<HandshakeSlots::Id> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(slots.admit(stranger(i), false).slot);
  const auto fifth = slots.admit(stranger(4), false);
  ASSERT_EQ(fifth.outcome, Outcome::admitted);
  ASSERT_TRUE(fifth.evicted);
  EXPECT_EQ(*fifth.evicted, ids[0]);
  EXPECT_EQ(slots.pending(), 4u);
  EXPECT_EQ(slots.pendingFrom(stranger(0)), 0u);
  const auto sixth = slots.admit(stranger(5), false);
  ASSERT_TRUE(sixth.evicted);
  EXPECT_EQ(*sixth.evicted, ids[1]);
}

TEST(HandshakeSlots, AMemberAddressGetsASlotInATableFullOfStrangers) {
  HandshakeSlots slots({64, 8});
  for (int i = 0; i < 64; ++i) ASSERT_EQ(slots.admit(stranger(i), false).outcome, Outcome::admitted);
  const auto member = slots.admit("192.0.2.2", true);
  ASSERT_EQ(member.outcome, Outcome::admitted);
  ASSERT_TRUE(member.evicted);
  EXPECT_EQ(slots.pending(), 64u);
  EXPECT_EQ(slots.pendingFrom(stranger(0)), 0u);  // the oldest stranger made room
}

TEST(HandshakeSlots, StrangersEvictOnlyStrangersNeverAMember) {
  HandshakeSlots slots({4, 8});
  const auto member = slots.admit("192.0.2.2", true);  // the oldest of all
  std::set<HandshakeSlots::Id> evicted;
  for (int i = 0; i < 100; ++i) {
    const auto d = slots.admit(stranger(i % 50), false);
    ASSERT_EQ(d.outcome, Outcome::admitted);
    if (d.evicted) evicted.insert(*d.evicted);
  }
  EXPECT_EQ(evicted.count(member.slot), 0u);
  EXPECT_EQ(slots.pendingFrom("192.0.2.2"), 1u);
}

TEST(HandshakeSlots, AStrangerIsRefusedWhenOnlyMembersHoldSlots) {
  HandshakeSlots slots({2, 8});
  slots.admit("192.0.2.2", true);
  slots.admit("192.0.2.3", true);
  const auto d = slots.admit(stranger(1), false);
  EXPECT_EQ(d.outcome, Outcome::refused_table_full);
  EXPECT_FALSE(d.evicted);
  EXPECT_EQ(slots.pending(), 2u);
}

TEST(HandshakeSlots, AMemberAddressHasNoPerAddressCap) {
  // Several nodes may share a host: a burst from its address must not churn.
  HandshakeSlots slots({64, 3});
  std::vector<HandshakeSlots::Id> ids;
  for (int i = 0; i < 20; ++i) {
    const auto d = slots.admit("192.0.2.2", true);
    ASSERT_EQ(d.outcome, Outcome::admitted);
    EXPECT_FALSE(d.evicted);
    ids.push_back(d.slot);
  }
  EXPECT_EQ(slots.pendingFrom("192.0.2.2"), 20u);
}

TEST(HandshakeSlots, InAFullTableAMemberAddressEvictsStrangersBeforeOtherMembers) {
  HandshakeSlots slots({3, 8});
  const auto old_member = slots.admit("192.0.2.2", true);
  const auto stranger1 = slots.admit(stranger(1), false);
  const auto stranger2 = slots.admit(stranger(2), false);
  const auto d = slots.admit("192.0.2.3", true);
  ASSERT_TRUE(d.evicted);
  EXPECT_EQ(*d.evicted, stranger1.slot);
  const auto e = slots.admit("192.0.2.3", true);
  ASSERT_TRUE(e.evicted);
  EXPECT_EQ(*e.evicted, stranger2.slot);
  const auto f = slots.admit("192.0.2.4", true);
  ASSERT_TRUE(f.evicted);
  EXPECT_EQ(*f.evicted, old_member.slot);
}

TEST(HandshakeSlots, AMemberInATableFullOfMembersTakesTheOldestSlot) {
  HandshakeSlots slots({2, 8});
  const auto first = slots.admit("192.0.2.2", true);
  slots.admit("192.0.2.3", true);
  const auto d = slots.admit("192.0.2.4", true);
  ASSERT_EQ(d.outcome, Outcome::admitted);
  ASSERT_TRUE(d.evicted);
  EXPECT_EQ(*d.evicted, first.slot);
}

TEST(HandshakeSlots, ZeroLimitsStillLeaveOneSlot) {
  HandshakeSlots slots({0, 0});
  EXPECT_EQ(slots.admit("192.0.2.2", true).outcome, Outcome::admitted);
  EXPECT_EQ(slots.admit(stranger(1), false).outcome, Outcome::refused_table_full);
}

// Seeded random histories: the bounds hold after every step, and a member is never
// refused.
TEST(HandshakeSlots, RandomHistoriesKeepTheBoundsAndAlwaysAdmitMembers) {
  for (std::uint32_t seed = 1; seed <= 200; ++seed) {
    std::mt19937 rng(seed);
    const HandshakeSlotLimits limits{1 + rng() % 16, 1 + rng() % 4};
    HandshakeSlots slots(limits);
    std::vector<HandshakeSlots::Id> live;
    for (int step = 0; step < 500; ++step) {
      if (!live.empty() && rng() % 3 == 0) {
        const std::size_t i = rng() % live.size();
        slots.release(live[i]);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      } else {
        const bool member = rng() % 5 == 0;
        const std::string source = (member ? "192.0.2." : "198.51.100.") + std::to_string(rng() % 6);
        const auto d = slots.admit(source, member);
        if (member) {
          ASSERT_EQ(d.outcome, Outcome::admitted) << "seed " << seed;
        }
        if (d.evicted) {
          auto it = std::find(live.begin(), live.end(), *d.evicted);
          ASSERT_NE(it, live.end()) << "evicted a slot that was not pending, seed " << seed;
          live.erase(it);
        }
        if (d.outcome == Outcome::admitted) live.push_back(d.slot);
      }
      ASSERT_EQ(slots.pending(), live.size()) << "seed " << seed;
      ASSERT_LE(slots.pending(), limits.max_pending) << "seed " << seed;
      for (int a = 0; a < 6; ++a) {
        ASSERT_LE(slots.pendingFrom("198.51.100." + std::to_string(a)), limits.max_per_source) << "seed " << seed;
      }
    }
  }
}

}  // namespace
}  // namespace zetian::cluster::transport
