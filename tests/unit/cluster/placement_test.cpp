#include "cluster/placement/hrw.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace zetian::cluster::placement {
namespace {

constexpr std::size_t kKeys = 100'000;

std::vector<NodeId> nodes(std::size_t count) {
  std::vector<NodeId> result;
  for (std::size_t i = 0; i < count; ++i) result.push_back("node-" + std::to_string(i + 1));
  return result;
}

// Keys shaped like the limiter's (rule and subject), fixed so that every run sees the
// same figures.
std::vector<std::string> keys() {
  std::vector<std::string> result;
  result.reserve(kKeys);
  for (std::size_t i = 0; i < kKeys; ++i) {
    result.push_back("sender:user" + std::to_string(i) + "@example.com");
  }
  return result;
}

std::vector<NodeId> owners(const std::vector<std::string>& all_keys,
                           const std::vector<NodeId>& members) {
  std::vector<NodeId> result;
  result.reserve(all_keys.size());
  for (const std::string& key : all_keys) result.push_back(ownerOf(key, members).value());
  return result;
}

TEST(Placement, NoMembersNoOwner) {
  EXPECT_FALSE(ownerOf("k", {}).has_value());
  EXPECT_TRUE(placement("k", {}, 3).empty());
  EXPECT_TRUE(placement("k", nodes(3), 0).empty());
}

TEST(Placement, DeterministicAndIndependentOfMemberOrder) {
  const std::vector<NodeId> members = nodes(7);
  std::mt19937_64 rng(20261130);
  for (int i = 0; i < 2000; ++i) {
    const std::string key = "client_ip:10.0." + std::to_string(i % 256) + "." +
                            std::to_string(i / 256);
    const auto owner = ownerOf(key, members);
    const auto replicas = placement(key, members, 3);
    std::vector<NodeId> shuffled = members;
    std::shuffle(shuffled.begin(), shuffled.end(), rng);
    EXPECT_EQ(ownerOf(key, shuffled), owner) << key;
    EXPECT_EQ(ownerOf(key, members), owner) << key;
    EXPECT_EQ(placement(key, shuffled, 3), replicas) << key;
  }
}

TEST(Placement, DuplicateMembersCountOnce) {
  const std::vector<NodeId> members = {"b", "a", "b", "c", "a"};
  for (int i = 0; i < 200; ++i) {
    const std::string key = "k" + std::to_string(i);
    const auto all = placement(key, members, 10);
    ASSERT_EQ(all.size(), 3U) << key;
    EXPECT_EQ(std::set<NodeId>(all.begin(), all.end()).size(), 3U) << key;
    EXPECT_EQ(all.front(), ownerOf(key, members).value()) << key;
  }
}

TEST(Placement, LengthPrefixSeparatesNodeFromKey) {
  EXPECT_NE(score("ab", "c"), score("a", "bc"));
  EXPECT_NE(score("", "abc"), score("abc", ""));
}

TEST(Placement, BalancedWithinFivePercent) {
  const std::vector<std::string> all_keys = keys();
  for (const std::size_t count : {3U, 5U, 7U, 9U}) {
    const std::vector<NodeId> members = nodes(count);
    std::map<NodeId, std::size_t> per_node;
    for (const NodeId& owner : owners(all_keys, members)) ++per_node[owner];
    ASSERT_EQ(per_node.size(), count);
    std::size_t max = 0;
    for (const auto& [node, keys_owned] : per_node) max = std::max(max, keys_owned);
    const double mean = static_cast<double>(kKeys) / static_cast<double>(count);
    const double ratio = static_cast<double>(max) / mean;
    std::printf("balance: %zu nodes, max/mean = %.4f\n", count, ratio);
    EXPECT_LE(ratio, 1.05) << count << " nodes";
  }
}

TEST(Placement, RemovingANodeMovesOnlyItsKeys) {
  const std::vector<std::string> all_keys = keys();
  for (const std::size_t count : {3U, 5U, 9U}) {
    const std::vector<NodeId> members = nodes(count);
    const std::vector<NodeId> before = owners(all_keys, members);
    for (const NodeId& gone : members) {
      std::vector<NodeId> rest;
      for (const NodeId& node : members) {
        if (node != gone) rest.push_back(node);
      }
      const std::vector<NodeId> after = owners(all_keys, rest);
      std::size_t moved = 0;
      for (std::size_t i = 0; i < kKeys; ++i) {
        if (before[i] == gone) {
          ++moved;
          // Its next owner is the one that held its first replica.
          EXPECT_EQ(after[i], placement(all_keys[i], members, 2).at(1)) << all_keys[i];
        } else {
          ASSERT_EQ(after[i], before[i]) << all_keys[i] << " moved without " << gone;
        }
      }
      EXPECT_GT(moved, 0U);
    }
  }
}

TEST(Placement, AddingANodeTakesAboutOneNthFromEveryone) {
  const std::vector<std::string> all_keys = keys();
  for (const std::size_t count : {3U, 5U, 7U, 9U}) {
    const std::vector<NodeId> members = nodes(count);
    std::vector<NodeId> grown = members;
    const NodeId joiner = "node-new";
    grown.push_back(joiner);
    const std::vector<NodeId> before = owners(all_keys, members);
    const std::vector<NodeId> after = owners(all_keys, grown);
    std::size_t moved = 0;
    std::map<NodeId, std::size_t> held;
    std::map<NodeId, std::size_t> given;
    for (std::size_t i = 0; i < kKeys; ++i) {
      ++held[before[i]];
      if (after[i] != before[i]) {
        ++moved;
        ++given[before[i]];
        ASSERT_EQ(after[i], joiner) << all_keys[i] << " moved between old members";
      }
    }
    // Every old member gives up the same share, so the cluster stays balanced.
    for (const auto& [node, keys_held] : held) {
      const double share = static_cast<double>(given[node]) / static_cast<double>(keys_held);
      EXPECT_NEAR(share, 1.0 / static_cast<double>(count + 1), 0.02) << node;
    }
    const double fraction = static_cast<double>(moved) / static_cast<double>(kKeys);
    const double expected = 1.0 / static_cast<double>(count + 1);
    std::printf("join: %zu -> %zu nodes, moved %.4f (expected %.4f)\n", count, count + 1,
                fraction, expected);
    // The binomial standard deviation is under 0.0015 here; 0.01 is over 6 of them.
    EXPECT_NEAR(fraction, expected, 0.01) << count << " -> " << count + 1;
  }
}

TEST(Placement, ReplicasAreDistinctOwnerFirst) {
  const std::vector<NodeId> members = nodes(5);
  for (int i = 0; i < 5000; ++i) {
    const std::string key = "recipient:r" + std::to_string(i);
    const NodeId owner = ownerOf(key, members).value();
    for (std::size_t factor = 1; factor <= 7; ++factor) {
      const std::vector<NodeId> replicas = placement(key, members, factor);
      ASSERT_EQ(replicas.size(), std::min<std::size_t>(factor, members.size()));
      EXPECT_EQ(replicas.front(), owner) << key;
      EXPECT_EQ(std::set<NodeId>(replicas.begin(), replicas.end()).size(), replicas.size());
      for (std::size_t j = 1; j < replicas.size(); ++j) {
        EXPECT_GE(score(replicas[j - 1], key), score(replicas[j], key)) << key;
      }
      if (factor >= members.size()) {
        EXPECT_EQ(std::set<NodeId>(replicas.begin(), replicas.end()),
                  std::set<NodeId>(members.begin(), members.end()));
      }
    }
  }
}

// Pins score function version 1. If this fails, the hash changed: every key of a running
// cluster would move on upgrade. Change these values only with a migration plan. The
// scores were checked against an independent Python transcription of the header's
// definition, not only copied from this implementation's output.
TEST(Placement, GoldenScoresAndOwners) {
  EXPECT_EQ(score("node-1", "sender:alice@example.com"), 0x2806a9d5af5fe29bULL);
  EXPECT_EQ(score("node-2", "sender:alice@example.com"), 0xe6afcaed25a84663ULL);
  EXPECT_EQ(score("", ""), 0x813f0174a2367c13ULL);
  EXPECT_EQ(score("10.0.0.7:7946", "client_ip:192.0.2.1"), 0xb8bbf35c5c94a742ULL);
  const std::vector<NodeId> three = nodes(3);
  const std::vector<NodeId> five = nodes(5);
  EXPECT_EQ(ownerOf("sender:alice@example.com", three), "node-2");
  EXPECT_EQ(ownerOf("client_ip:192.0.2.1", three), "node-1");
  EXPECT_EQ(ownerOf("global", five), "node-3");
  EXPECT_EQ(placement("recipient:bob@example.org", five, 3),
            (std::vector<NodeId>{"node-5", "node-4", "node-1"}));
}

}  // namespace
}  // namespace zetian::cluster::placement
