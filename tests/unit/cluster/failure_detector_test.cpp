#include "cluster/membership/failure_detector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace zetian::cluster::membership {
namespace {

using namespace std::chrono_literals;

constexpr Millis kInterval = 1000ms;
constexpr Millis kTimeout = 10000ms;

FailureDetectorConfig defaults() { return FailureDetectorConfig{kInterval, 3, 2, kTimeout}; }

// Ticks every `step` from `from` (inclusive) to `to` (inclusive); returns the time of
// the first transition of `peer` to `target`, if any.
std::optional<Millis> tickUntil(FailureDetector& fd, const PeerId& peer, PeerStatus target, Millis from,
                                Millis to, Millis step) {
  for (Millis now = from; now <= to; now += step) {
    for (const auto& t : fd.tick(now).transitions) {
      if (t.peer == peer && t.to == target) return now;
    }
  }
  return std::nullopt;
}

// b heartbeats at 0 and 1000 (active from 1000), then is silent.
FailureDetector activePeerB() {
  FailureDetector fd(defaults());
  fd.onHeartbeat("b", 1, 0ms);
  fd.onHeartbeat("b", 1, 1000ms);
  return fd;
}

TEST(FailureDetector, StatusNamesAreSpelledAsInTheSpec) {
  EXPECT_EQ(statusName(PeerStatus::joining), "joining");
  EXPECT_EQ(statusName(PeerStatus::active), "active");
  EXPECT_EQ(statusName(PeerStatus::suspect), "suspect");
  EXPECT_EQ(statusName(PeerStatus::failed), "failed");
  EXPECT_EQ(statusName(PeerStatus::left), "left");
  EXPECT_EQ(statusName(PeerStatus::maintenance), "maintenance");
  EXPECT_EQ(clusterStateName(ClusterState::no_quorum), "no_quorum");
}

TEST(FailureDetector, RejectsNonPositiveSettings) {
  EXPECT_THROW(FailureDetector(FailureDetectorConfig{0ms, 3, 2, kTimeout}), std::invalid_argument);
  EXPECT_THROW(FailureDetector(FailureDetectorConfig{kInterval, 0, 2, kTimeout}), std::invalid_argument);
  EXPECT_THROW(FailureDetector(FailureDetectorConfig{kInterval, 3, 0, kTimeout}), std::invalid_argument);
  EXPECT_THROW(FailureDetector(FailureDetectorConfig{kInterval, 3, 2, 0ms}), std::invalid_argument);
}

TEST(FailureDetector, UnknownPeerJoinsAndBecomesActiveAfterSuccessThresholdHeartbeats) {
  FailureDetector fd(defaults());
  EXPECT_EQ(fd.onHeartbeat("b", 1, 0ms),
            (std::vector<Transition>{{"b", std::nullopt, PeerStatus::joining, 0ms}}));
  EXPECT_EQ(fd.onHeartbeat("b", 1, 900ms),
            (std::vector<Transition>{{"b", PeerStatus::joining, PeerStatus::active, 900ms}}));
  EXPECT_TRUE(fd.onHeartbeat("b", 1, 1800ms).empty());
}

TEST(FailureDetector, WithSuccessThresholdOneTheFirstHeartbeatJoinsAndActivates) {
  FailureDetector fd(FailureDetectorConfig{kInterval, 3, 1, kTimeout});
  EXPECT_EQ(fd.onHeartbeat("b", 1, 5ms),
            (std::vector<Transition>{{"b", std::nullopt, PeerStatus::joining, 5ms},
                                     {"b", PeerStatus::joining, PeerStatus::active, 5ms}}));
}

TEST(FailureDetector, ActiveBecomesSuspectOnlyAfterMoreThanFailureThresholdIntervalsOfSilence) {
  FailureDetector fd = activePeerB();
  // Last heartbeat at 1000; three whole intervals of silence end at 4000.
  auto at4000 = fd.tick(4000ms);
  EXPECT_TRUE(at4000.transitions.empty());
  EXPECT_TRUE(at4000.probe_requests.empty());
  auto at4001 = fd.tick(4001ms);
  EXPECT_EQ(at4001.transitions,
            (std::vector<Transition>{{"b", PeerStatus::active, PeerStatus::suspect, 4001ms}}));
  EXPECT_EQ(at4001.probe_requests, std::vector<PeerId>{"b"});
}

TEST(FailureDetector, HeartbeatsWithinTheIntervalNeverRaiseSuspicion) {
  FailureDetector fd = activePeerB();
  for (Millis now = 1000ms; now <= 600000ms; now += 1000ms) {
    fd.onHeartbeat("b", 1, now);
    EXPECT_TRUE(fd.tick(now + 999ms).transitions.empty());
  }
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::active);
}

TEST(FailureDetector, SuspectFailsExactlyAfterFailureDetectionTimeout) {
  FailureDetector fd = activePeerB();
  ASSERT_EQ(tickUntil(fd, "b", PeerStatus::suspect, 1000ms, 5000ms, 1ms), 4001ms);
  // Last heard at 1000: 11000 is exactly the timeout, 11001 is past it.
  EXPECT_EQ(tickUntil(fd, "b", PeerStatus::failed, 4002ms, 20000ms, 1ms), 11001ms);
}

TEST(FailureDetector, CoarseTicksDelayFailureByAtMostOneTick) {
  FailureDetector fd = activePeerB();
  // Ticks every 700ms starting at 1000: suspect at 4500 (silence 3500 > 3000), failed at
  // the first tick after 1000 + 10000, which is 11500: 500ms late, within one tick.
  ASSERT_EQ(tickUntil(fd, "b", PeerStatus::suspect, 1000ms, 5000ms, 700ms), 4500ms);
  EXPECT_EQ(tickUntil(fd, "b", PeerStatus::failed, 5200ms, 30000ms, 700ms), 11500ms);
}

TEST(FailureDetector, FailedPeerBecomesActiveAfterSuccessThresholdHeartbeatsAndNotBefore) {
  FailureDetector fd(FailureDetectorConfig{kInterval, 3, 3, kTimeout});
  fd.onHeartbeat("b", 1, 0ms);
  fd.onHeartbeat("b", 1, 1000ms);
  fd.onHeartbeat("b", 1, 2000ms);
  ASSERT_EQ(fd.statusOf("b"), PeerStatus::active);
  ASSERT_TRUE(tickUntil(fd, "b", PeerStatus::failed, 2000ms, 20000ms, 100ms));
  EXPECT_TRUE(fd.onHeartbeat("b", 1, 30000ms).empty());
  EXPECT_TRUE(fd.onHeartbeat("b", 1, 31000ms).empty());
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::failed);
  EXPECT_EQ(fd.onHeartbeat("b", 1, 32000ms),
            (std::vector<Transition>{{"b", PeerStatus::failed, PeerStatus::active, 32000ms}}));
}

TEST(FailureDetector, AGapOfTwoIntervalsRestartsTheSuccessCount) {
  FailureDetector fd = activePeerB();
  ASSERT_TRUE(tickUntil(fd, "b", PeerStatus::suspect, 1000ms, 5000ms, 100ms));
  EXPECT_TRUE(fd.onHeartbeat("b", 1, 6000ms).empty());
  EXPECT_TRUE(fd.onHeartbeat("b", 1, 8000ms).empty());  // two intervals later: count restarts
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::suspect);
  EXPECT_EQ(fd.onHeartbeat("b", 1, 9500ms).size(), 1u);  // 1.5 intervals: jitter, still consecutive
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::active);
}

TEST(FailureDetector, SuspectIsProbedOncePerHeartbeatInterval) {
  FailureDetector fd = activePeerB();
  EXPECT_EQ(fd.tick(4001ms).probe_requests, std::vector<PeerId>{"b"});
  EXPECT_TRUE(fd.tick(4500ms).probe_requests.empty());
  EXPECT_TRUE(fd.tick(5000ms).probe_requests.empty());
  EXPECT_EQ(fd.tick(5001ms).probe_requests, std::vector<PeerId>{"b"});
}

TEST(FailureDetector, IndirectAcksKeepASuspectFromFailingAndTheirExpiryLetsItFail) {
  FailureDetector fd = activePeerB();
  ASSERT_EQ(tickUntil(fd, "b", PeerStatus::suspect, 1000ms, 5000ms, 1ms), 4001ms);
  for (Millis now = 4100ms; now <= 60000ms; now += 100ms) {
    if (now.count() % 1000 == 0) fd.onIndirectAck("b", now);
    EXPECT_TRUE(fd.tick(now).transitions.empty()) << "at " << now.count();
  }
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::suspect);
  // Last ack at 60000: it counts until 70000 inclusive.
  EXPECT_EQ(tickUntil(fd, "b", PeerStatus::failed, 60001ms, 80000ms, 1ms), 70001ms);
}

TEST(FailureDetector, IndirectAcksBeforeSuspicionDoNotDelayFailure) {
  FailureDetector fd = activePeerB();
  fd.onIndirectAck("b", 3900ms);  // still active: ignored
  ASSERT_EQ(tickUntil(fd, "b", PeerStatus::suspect, 1000ms, 5000ms, 1ms), 4001ms);
  EXPECT_EQ(tickUntil(fd, "b", PeerStatus::failed, 4002ms, 20000ms, 1ms), 11001ms);
}

TEST(FailureDetector, GoodbyeMakesThePeerLeftAndItNeverFailsAfterwards) {
  FailureDetector fd = activePeerB();
  EXPECT_EQ(fd.onGoodbye("b", 1, 1500ms),
            (std::vector<Transition>{{"b", PeerStatus::active, PeerStatus::left, 1500ms}}));
  EXPECT_TRUE(fd.onHeartbeat("b", 1, 1600ms).empty());  // in flight from before the goodbye
  EXPECT_TRUE(fd.onGoodbye("b", 1, 1700ms).empty());
  fd.onIndirectAck("b", 1800ms);
  for (Millis now = 1500ms; now <= 120000ms; now += 500ms) {
    auto out = fd.tick(now);
    EXPECT_TRUE(out.transitions.empty());
    EXPECT_TRUE(out.probe_requests.empty());
  }
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::left);
}

TEST(FailureDetector, HigherIncarnationAfterLeftRejoins) {
  FailureDetector fd = activePeerB();
  fd.onGoodbye("b", 1, 2000ms);
  EXPECT_TRUE(fd.onHeartbeat("b", 0, 3000ms).empty());  // older incarnation: stale
  EXPECT_EQ(fd.onHeartbeat("b", 2, 5000ms),
            (std::vector<Transition>{{"b", PeerStatus::left, PeerStatus::joining, 5000ms}}));
  EXPECT_EQ(fd.onHeartbeat("b", 2, 6000ms),
            (std::vector<Transition>{{"b", PeerStatus::joining, PeerStatus::active, 6000ms}}));
  EXPECT_EQ(fd.peers().at(0).incarnation, 2u);
}

TEST(FailureDetector, StaleGoodbyeFromAnOlderIncarnationIsIgnored) {
  FailureDetector fd(defaults());
  fd.onHeartbeat("b", 3, 0ms);
  EXPECT_TRUE(fd.onGoodbye("b", 2, 100ms).empty());
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::joining);
}

TEST(FailureDetector, MaintenanceSuspendsFailureDetectionAndClearingItRejoins) {
  FailureDetector fd = activePeerB();
  EXPECT_EQ(fd.onMaintenance("b", true, 1500ms),
            (std::vector<Transition>{{"b", PeerStatus::active, PeerStatus::maintenance, 1500ms}}));
  EXPECT_TRUE(fd.onMaintenance("b", true, 1600ms).empty());
  EXPECT_FALSE(tickUntil(fd, "b", PeerStatus::suspect, 1500ms, 100000ms, 500ms));
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::maintenance);
  fd.onHeartbeat("b", 1, 100100ms);
  fd.onHeartbeat("b", 1, 100200ms);
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::maintenance);  // heartbeats alone do not end it
  EXPECT_EQ(fd.onMaintenance("b", false, 100300ms),
            (std::vector<Transition>{{"b", PeerStatus::maintenance, PeerStatus::joining, 100300ms}}));
  fd.onHeartbeat("b", 1, 101000ms);
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::joining);
  fd.onHeartbeat("b", 1, 102000ms);
  EXPECT_EQ(fd.statusOf("b"), PeerStatus::active);
}

TEST(FailureDetector, MaintenanceIsIgnoredForLeftAndUnknownPeers) {
  FailureDetector fd = activePeerB();
  fd.onGoodbye("b", 1, 1500ms);
  EXPECT_TRUE(fd.onMaintenance("b", true, 1600ms).empty());
  EXPECT_TRUE(fd.onMaintenance("zz", true, 1600ms).empty());
  EXPECT_FALSE(fd.statusOf("zz"));
}

// Makes `peers` members with the given statuses (self is always active).
FailureDetector clusterWith(const std::vector<PeerStatus>& statuses) {
  FailureDetector fd(FailureDetectorConfig{kInterval, 3, 1, kTimeout});
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    const PeerId id = "p" + std::to_string(i);
    fd.onHeartbeat(id, 1, 0ms);  // active at once (success_threshold 1)
    switch (statuses[i]) {
      case PeerStatus::active: break;
      case PeerStatus::left: fd.onGoodbye(id, 1, 0ms); break;
      case PeerStatus::maintenance: fd.onMaintenance(id, true, 0ms); break;
      case PeerStatus::joining: fd.onMaintenance(id, true, 0ms); fd.onMaintenance(id, false, 0ms); break;
      case PeerStatus::suspect:
      case PeerStatus::failed: break;  // made below by silence
    }
  }
  // Keep the healthy ones fresh, let the rest go silent.
  const Millis suspectAt = 3001ms;
  const Millis failedAt = 3001ms + kTimeout + 1ms;
  auto refresh = [&](Millis now) {
    for (std::size_t i = 0; i < statuses.size(); ++i) {
      if (statuses[i] != PeerStatus::suspect && statuses[i] != PeerStatus::failed &&
          statuses[i] != PeerStatus::left)
        fd.onHeartbeat("p" + std::to_string(i), 1, now);
    }
  };
  bool anyFailed = std::count(statuses.begin(), statuses.end(), PeerStatus::failed) > 0;
  bool anySuspect = std::count(statuses.begin(), statuses.end(), PeerStatus::suspect) > 0;
  if (!anyFailed && !anySuspect) return fd;
  for (Millis now = 1000ms; now < suspectAt; now += 1000ms) refresh(now);
  refresh(suspectAt - 1ms);
  fd.tick(suspectAt);
  if (anyFailed) {
    for (Millis now = suspectAt; now < failedAt; now += 500ms) {
      refresh(now);
      for (std::size_t i = 0; i < statuses.size(); ++i) {
        if (statuses[i] == PeerStatus::suspect) fd.onIndirectAck("p" + std::to_string(i), now);
      }
      fd.tick(now);
    }
    refresh(failedAt);
    fd.tick(failedAt);
  }
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    EXPECT_EQ(fd.statusOf("p" + std::to_string(i)), statuses[i]) << "peer p" << i;
  }
  return fd;
}

TEST(ClusterState, SingleNodeIsForming) {
  EXPECT_EQ(FailureDetector(defaults()).clusterState(), ClusterState::forming);
  EXPECT_EQ(clusterWith({PeerStatus::left}).clusterState(), ClusterState::forming);
}

TEST(ClusterState, ThreeNodes) {
  using S = PeerStatus;
  EXPECT_EQ(clusterWith({S::active, S::active}).clusterState(), ClusterState::healthy);
  EXPECT_EQ(clusterWith({S::active, S::suspect}).clusterState(), ClusterState::degraded);
  EXPECT_EQ(clusterWith({S::active, S::failed}).clusterState(), ClusterState::degraded);
  EXPECT_EQ(clusterWith({S::suspect, S::failed}).clusterState(), ClusterState::no_quorum);
  EXPECT_EQ(clusterWith({S::active, S::joining}).clusterState(), ClusterState::healthy);
  EXPECT_EQ(clusterWith({S::maintenance, S::joining}).clusterState(), ClusterState::no_quorum);
  // A graceful leave shrinks the cluster: 2 members, both active.
  EXPECT_EQ(clusterWith({S::active, S::left}).clusterState(), ClusterState::healthy);
}

TEST(ClusterState, FiveNodes) {
  using S = PeerStatus;
  EXPECT_EQ(clusterWith({S::active, S::active, S::active, S::active}).clusterState(),
            ClusterState::healthy);
  EXPECT_EQ(clusterWith({S::active, S::active, S::failed, S::suspect}).clusterState(),
            ClusterState::degraded);  // 3 of 5 active
  EXPECT_EQ(clusterWith({S::active, S::failed, S::failed, S::suspect}).clusterState(),
            ClusterState::no_quorum);  // 2 of 5 active
  // Leaves shrink the member set: self, one active, one failed is a majority of 3.
  EXPECT_EQ(clusterWith({S::active, S::left, S::left, S::failed}).clusterState(),
            ClusterState::degraded);
}

TEST(ClusterState, TwoOfTwoActiveIsHealthyAndOneOfTwoHasNoQuorum) {
  using S = PeerStatus;
  EXPECT_EQ(clusterWith({S::active}).clusterState(), ClusterState::healthy);
  EXPECT_EQ(clusterWith({S::failed}).clusterState(), ClusterState::no_quorum);
}

// Randomized histories: peers heartbeat steadily, flakily or not at all, others vouch
// for some of the silent ones, peers leave, restart and go into maintenance, and the
// detector ticks at irregular times. After every input the test checks:
//   - every Transition is a real change from the status the test last saw, and there
//     are no changes without a Transition;
//   - suspect only after more than failure_threshold * interval of silence;
//   - failed only after more than failure_detection_timeout of silence, more than
//     failure_threshold * interval of silence (it was suspect first), and more than
//     failure_detection_timeout since the last indirect ack;
//   - a peer that always heartbeats within the interval is never suspect or failed.
TEST(FailureDetectorRandomized, InvariantsHoldOverThousandsOfSeededHistories) {
  enum class Mode { steady, flaky, silent, vouched };
  constexpr int kSeeds = 2000;
  constexpr int kSteps = 1500;
  constexpr int kPeers = 4;
  std::size_t transitions_seen = 0;
  std::size_t failures_seen = 0;
  std::size_t recoveries_seen = 0;
  for (int seed = 1; seed <= kSeeds; ++seed) {
    std::mt19937_64 rng(static_cast<std::uint64_t>(seed));
    auto uniform = [&](std::int64_t lo, std::int64_t hi) {
      return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
    };
    auto chance = [&](double p) { return std::bernoulli_distribution(p)(rng); };
    const FailureDetectorConfig cfg{Millis{uniform(1, 4) * 250}, static_cast<int>(uniform(1, 4)),
                                    static_cast<int>(uniform(1, 3)), Millis{uniform(1, 8) * 500}};
    FailureDetector fd(cfg);
    const Millis window = cfg.heartbeat_interval * cfg.failure_threshold;
    const std::int64_t interval = cfg.heartbeat_interval.count();

    std::map<PeerId, PeerStatus> seen;
    std::map<PeerId, Millis> last_heard;      // accepted heartbeats only
    std::map<PeerId, Millis> last_vouched;    // acks sent while the peer was suspect
    std::map<PeerId, std::uint64_t> incarnation;
    std::map<PeerId, std::uint64_t> left_incarnation;
    std::vector<Mode> mode(kPeers, Mode::steady);
    std::vector<Millis> next_steady(kPeers, 0ms);

    auto check = [&](const std::vector<Transition>& events, Millis now) {
      for (const auto& t : events) {
        ++transitions_seen;
        ASSERT_EQ(t.at, now);
        auto it = seen.find(t.peer);
        if (it == seen.end()) {
          ASSERT_FALSE(t.from.has_value()) << "seed " << seed;
        } else {
          ASSERT_EQ(t.from, it->second) << "seed " << seed;
        }
        ASSERT_NE(t.from, std::optional<PeerStatus>(t.to)) << "seed " << seed;
        if (t.to == PeerStatus::suspect) {
          ASSERT_GT(now - last_heard.at(t.peer), window) << "seed " << seed;
        }
        if (t.to == PeerStatus::failed) {
          ++failures_seen;
          ASSERT_GT(now - last_heard.at(t.peer), cfg.failure_detection_timeout) << "seed " << seed;
          ASSERT_GT(now - last_heard.at(t.peer), window) << "seed " << seed;
          if (auto v = last_vouched.find(t.peer); v != last_vouched.end()) {
            ASSERT_GT(now - v->second, cfg.failure_detection_timeout) << "seed " << seed;
          }
          last_vouched.erase(t.peer);
        }
        if (t.to == PeerStatus::active && t.from == PeerStatus::failed) ++recoveries_seen;
        // An ack vouches for one period of suspicion only.
        if (t.from == PeerStatus::suspect && t.to != PeerStatus::failed) last_vouched.erase(t.peer);
        if (t.to == PeerStatus::left) left_incarnation[t.peer] = incarnation[t.peer];
        if (t.peer == "p0") {
          ASSERT_NE(t.to, PeerStatus::suspect) << "steady peer suspected, seed " << seed;
          ASSERT_NE(t.to, PeerStatus::failed) << "steady peer failed, seed " << seed;
        }
        seen[t.peer] = t.to;
      }
      for (const auto& view : fd.peers()) {
        ASSERT_EQ(seen.at(view.peer), view.status) << "silent change, seed " << seed;
      }
    };

    Millis now{0};
    for (int step = 0; step < kSteps; ++step) {
      now += Millis{uniform(1, interval / 4 + 1)};
      if (step % 60 == 0) {
        for (int p = 1; p < kPeers; ++p) mode[p] = static_cast<Mode>(uniform(0, 3));
      }
      for (int p = 0; p < kPeers; ++p) {
        const PeerId id = "p" + std::to_string(p);
        bool beat = false;
        switch (mode[p]) {
          case Mode::steady:
            if (now >= next_steady[p]) {
              beat = true;
              // Sends within at most interval/4 of the due time: gaps stay <= interval.
              next_steady[p] = now + Millis{uniform(interval / 4, 3 * interval / 4)};
            }
            break;
          case Mode::flaky: beat = chance(0.1); break;
          case Mode::silent: break;
          case Mode::vouched:
            if (chance(0.2)) {
              if (seen.count(id) && seen[id] == PeerStatus::suspect) last_vouched[id] = now;
              fd.onIndirectAck(id, now);
              check({}, now);
            }
            break;
        }
        if (beat) {
          const std::uint64_t inc = incarnation[id];
          const bool was_left = seen.count(id) && seen[id] == PeerStatus::left;
          // After a goodbye only a higher incarnation is heard again.
          const bool accepted = !was_left || inc > left_incarnation[id];
          auto events = fd.onHeartbeat(id, inc, now);
          if (accepted) last_heard[id] = now;
          check(events, now);
          if (::testing::Test::HasFatalFailure()) return;
        }
        if (p == 0) continue;
        if (chance(0.003)) {
          check(fd.onGoodbye(id, incarnation[id], now), now);
        } else if (chance(0.003)) {
          ++incarnation[id];  // restart; the next heartbeat carries the new incarnation
        } else if (chance(0.003)) {
          check(fd.onMaintenance(id, chance(0.5), now), now);
        }
        if (::testing::Test::HasFatalFailure()) return;
      }
      if (chance(0.5)) {
        auto out = fd.tick(now);
        check(out.transitions, now);
        if (::testing::Test::HasFatalFailure()) return;
        for (const auto& id : out.probe_requests) ASSERT_EQ(seen.at(id), PeerStatus::suspect);
      }
    }
  }
  // The histories must actually exercise the interesting paths.
  EXPECT_GT(transitions_seen, 100000u);
  EXPECT_GT(failures_seen, 1000u);
  EXPECT_GT(recoveries_seen, 1000u);
}

}  // namespace
}  // namespace zetian::cluster::membership
