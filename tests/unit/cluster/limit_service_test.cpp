// LimitService on a real loop with a scripted PeerDirectory: what a node does with the
// calls it gets while ownership moves. Settling (a new owner holds a key's calls until
// the member that held the key has handed it over), forwarding (an old owner passes
// calls on to the new one) and calls waiting for a link that is coming back.
#include "cluster/limits/service.h"

#include <gtest/gtest.h>

#include <chrono>
#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cluster/limits/evaluate.h"
#include "cluster/loop.h"
#include "cluster/placement/view.h"
#include "state/transfer.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::cluster::limits {
namespace {

using namespace std::chrono_literals;
using zetian::cluster::testing::runOnLoop;
using Clock = std::chrono::steady_clock;

constexpr state::Nanos kHour = 3'600'000'000'000;
const state::Limit kLimit{3, kHour, 3};

state::Nanos steadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

// The peers as the service sees them; only touched on the loop thread.
struct ScriptedPeers : PeerDirectory {
  std::map<std::string, std::uint64_t> caps;  // linked peers
  std::set<std::string> coming;               // linkComing()
  std::vector<std::pair<std::string, wire::Message>> sent;

  std::optional<std::uint64_t> peerCapabilities(const std::string& peer) const override {
    auto it = caps.find(peer);
    if (it == caps.end()) return std::nullopt;
    return it->second;
  }
  bool sendToPeer(const std::string& peer, const wire::Message& message) override {
    if (!caps.count(peer)) return false;
    sent.emplace_back(peer, message);
    return true;
  }
  bool linkComing(const std::string& peer) const override { return coming.count(peer) > 0; }

  template <typename T>
  std::vector<T> sentTo(const std::string& peer) const {
    std::vector<T> out;
    for (const auto& [to, message] : sent) {
      if (to == peer && std::holds_alternative<T>(message)) out.push_back(std::get<T>(message));
    }
    return out;
  }
};

std::shared_ptr<placement::View> viewOf(std::vector<std::string> members, std::vector<std::string> pending = {}) {
  auto v = std::make_shared<placement::View>();
  v->self = "x";
  std::sort(members.begin(), members.end());
  std::sort(pending.begin(), pending.end());
  v->members = members;
  v->region_members = members;
  v->pending = pending;
  v->lease_granters = {};
  return v;
}

// A store key this node "x" owns among {p, q, x} and that `before` held before x came.
std::string keyOwnedByXHeldBefore(const std::string& before) {
  const auto view = viewOf({"p", "q", "x"});
  for (int i = 0; i < 10000; ++i) {
    std::string key = std::string("r") + '\0' + "k" + std::to_string(i);
    const auto held = placement::heldBefore(placement::hashKey("", key), *view, false);
    if (held && *held == before) return key;
  }
  ADD_FAILURE() << "no key";
  return "";
}

// A store key `owner` owns among {p, q, x}.
std::string keyOwnedBy(const std::string& owner) {
  const auto view = viewOf({"p", "q", "x"});
  for (int i = 0; i < 10000; ++i) {
    std::string key = std::string("r") + '\0' + "k" + std::to_string(i);
    if (*placement::ownerOf(key, view->members) == owner) return key;
  }
  ADD_FAILURE() << "no key";
  return "";
}

wire::LimitItem chargeOf(const std::string& key) {
  ItemSpec spec;
  spec.key = key;
  spec.limit = kLimit;
  spec.blocking = true;
  return toWire(spec);
}

wire::LimitRequest requestFor(std::uint64_t id, const std::string& key) {
  return wire::LimitRequest{{wire::LimitCall{id, {chargeOf(key)}}}};
}

// The bucket of `key` after `charges` charges, as a hand-off carries it.
wire::SyncedBucket bucketAfter(const std::string& key, int charges) {
  state::BucketStore other(100);
  const state::Nanos now = steadyNanos();
  for (int i = 0; i < charges; ++i) other.charge(key, state::Algorithm::TokenBucket, kLimit, now, 1);
  const auto held = other.find(key);
  EXPECT_TRUE(held);
  const auto portable = state::toPortable(held->algorithm, held->state, now);
  wire::SyncedBucket b;
  b.key = key;
  b.algorithm = static_cast<std::uint8_t>(held->algorithm);
  b.limit = kLimit.limit;
  b.period_ns = kLimit.period_ns;
  b.burst = kLimit.burst;
  b.level = portable.level;
  b.count = portable.count;
  b.stamp_age_ns = portable.stamp_age_ns;
  b.initialised = portable.initialised;
  return b;
}

class LimitServiceTest : public ::testing::Test {
 protected:
  template <typename Fn>
  auto onLoop(Fn fn) -> decltype(fn()) {
    return runOnLoop(loop_, std::move(fn));
  }

  void SetUp() override {
    loop_.start();
    peers_.caps = {{"p", wire::kOwnCapabilities}, {"q", wire::kOwnCapabilities}};
  }
  void TearDown() override {
    onLoop([&] {
      service_.reset();
      return true;
    });
    loop_.stop();
  }


  // The service on "x", with check_timeout `timeout` (settling waits half of it).
  void start(std::chrono::milliseconds timeout = 10s) {
    onLoop([&] {
      ReplicationOptions options;
      options.self = "x";
      options.interval = std::chrono::milliseconds(0);  // no replication rounds here
      options.check_timeout = timeout;
      service_ = std::make_unique<LimitService>(loop_, peers_, store_, steadyNanos, options);
      return true;
    });
  }

  // "x" joins a cluster of p and q: it becomes a candidate, so it awaits their hand-offs.
  void join() {
    onLoop([&] {
      for (auto view : {viewOf({"p", "q"}), viewOf({"p", "q", "x"})}) {
        service_->beforeView(*view);
        service_->onView(view);
      }
      return true;
    });
  }

  std::vector<wire::LimitReply> repliesTo(const std::string& peer) {
    return onLoop([&] { return peers_.sentTo<wire::LimitReply>(peer); });
  }

  bool waitReplies(const std::string& peer, std::size_t n, std::chrono::milliseconds deadline = 10s) {
    const auto until = Clock::now() + deadline;
    while (Clock::now() < until) {
      if (repliesTo(peer).size() >= n) return true;
      std::this_thread::sleep_for(2ms);  // polling with a deadline
    }
    return false;
  }

  Loop loop_;
  ScriptedPeers peers_;
  state::BucketStore store_{1000};
  std::unique_ptr<LimitService> service_;
};

TEST_F(LimitServiceTest, ANewOwnerSendsItsMarkersAndHoldsACallUntilTheKeysStateArrives) {
  start();
  join();
  // Its own walks had nothing to hand over: both peers get markers at once (one per
  // view that made them newcomers).
  for (const char* peer : {"p", "q"}) {
    const auto syncs = onLoop([&] { return peers_.sentTo<wire::BucketSync>(peer); });
    ASSERT_FALSE(syncs.empty()) << peer;
    for (const auto& sync : syncs) {
      EXPECT_EQ(sync.reason, wire::SyncReason::Handoff);
      EXPECT_TRUE(sync.last);
      EXPECT_TRUE(sync.buckets.empty());
    }
  }
  const std::string key = keyOwnedByXHeldBefore("p");
  onLoop([&] {
    service_->onRequest("q", requestFor(7, key));
    return true;
  });
  EXPECT_TRUE(repliesTo("q").empty());  // held: p has not handed over yet
  EXPECT_EQ(onLoop([&] { return service_->counters().calls_held; }), 1u);
  // p's walk: the key, used up (3 of 3), in a frame that is not the last.
  onLoop([&] {
    service_->onSync("p", wire::BucketSync{wire::SyncReason::Handoff, 1, false, {bucketAfter(key, 3)}});
    return true;
  });
  const auto replies = repliesTo("q");
  ASSERT_EQ(replies.size(), 1u);
  ASSERT_EQ(replies[0].answers.size(), 1u);
  EXPECT_EQ(replies[0].answers[0].request_id, 7u);
  ASSERT_EQ(replies[0].answers[0].outcomes.size(), 1u);
  // Decided on p's count, not from zero.
  EXPECT_EQ(replies[0].answers[0].outcomes[0].result, wire::ItemResult::Denied);
}

TEST_F(LimitServiceTest, APeersMarkerReleasesTheCallsForKeysItHadNothingFor) {
  start();
  join();
  const std::string key = keyOwnedByXHeldBefore("p");
  onLoop([&] {
    service_->onRequest("q", requestFor(8, key));
    // q's marker does not concern this key.
    service_->onSync("q", wire::BucketSync{wire::SyncReason::Handoff, 1, true, {}});
    return true;
  });
  EXPECT_TRUE(repliesTo("q").empty());
  onLoop([&] {
    service_->onSync("p", wire::BucketSync{wire::SyncReason::Handoff, 2, true, {}});
    return true;
  });
  const auto replies = repliesTo("q");
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].answers.at(0).request_id, 8u);
  EXPECT_EQ(replies[0].answers.at(0).outcomes.at(0).result, wire::ItemResult::Charged);
}

TEST_F(LimitServiceTest, WithoutAMarkerTheWaitEndsAtHalfTheCheckTimeout) {
  start(200ms);
  join();
  const std::string key = keyOwnedByXHeldBefore("p");
  onLoop([&] {
    service_->onRequest("q", requestFor(9, key));
    return true;
  });
  EXPECT_TRUE(repliesTo("q").empty());
  ASSERT_TRUE(waitReplies("q", 1));
  EXPECT_EQ(repliesTo("q")[0].answers.at(0).outcomes.at(0).result, wire::ItemResult::Charged);
}

TEST_F(LimitServiceTest, AKeyThisNodeHoldsStateForIsNotHeld) {
  start();
  join();
  const std::string key = keyOwnedByXHeldBefore("p");
  store_.charge(key, state::Algorithm::TokenBucket, kLimit, steadyNanos(), 1);
  onLoop([&] {
    service_->onRequest("q", requestFor(10, key));
    return true;
  });
  ASSERT_EQ(repliesTo("q").size(), 1u);
  EXPECT_EQ(onLoop([&] { return service_->counters().calls_held; }), 0u);
}

TEST_F(LimitServiceTest, ThisNodesOwnCheckOfSuchAKeyWaitsToo) {
  start();
  join();
  const std::string key = keyOwnedByXHeldBefore("q");
  auto result = std::make_shared<std::optional<CallResult>>();  // answered at teardown at the latest
  onLoop([&] {
    service_->call("x", {chargeOf(key)}, Clock::now() + 10s, [result](CallResult r) { *result = std::move(r); });
    return true;
  });
  EXPECT_FALSE(onLoop([&] { return result->has_value(); }));
  onLoop([&] {
    service_->onSync("q", wire::BucketSync{wire::SyncReason::Handoff, 1, false, {bucketAfter(key, 3)}});
    return true;
  });
  const auto r = onLoop([&] { return *result; });
  ASSERT_TRUE(r);
  ASSERT_FALSE(r->failed);
  EXPECT_EQ(r->outcomes.at(0).result, wire::ItemResult::Denied);
}

TEST_F(LimitServiceTest, APeerThatLeavesIsNoLongerAwaited) {
  start();
  join();
  const std::string key = keyOwnedByXHeldBefore("p");
  onLoop([&] {
    service_->onRequest("q", requestFor(11, key));
    peers_.caps.erase("p");
    service_->onPeerDown("p");
    return true;
  });
  ASSERT_EQ(repliesTo("q").size(), 1u);
}

TEST_F(LimitServiceTest, AnOldOwnerForwardsACallToTheNewOwnerAndRelaysItsAnswer) {
  start();
  onLoop([&] {
    service_->onView(viewOf({"p", "q", "x"}));
    return true;
  });
  const std::string key = keyOwnedBy("p");
  onLoop([&] {
    service_->onRequest("q", requestFor(12, key));
    return true;
  });
  EXPECT_TRUE(repliesTo("q").empty());
  // The flush runs later in the same turn of the loop: this call runs after it.
  const auto forwarded = onLoop([&] { return peers_.sentTo<wire::LimitRequest>("p"); });
  ASSERT_EQ(forwarded.size(), 1u);
  ASSERT_EQ(forwarded[0].calls.size(), 1u);
  const std::uint64_t id = forwarded[0].calls[0].request_id;
  EXPECT_TRUE(id & wire::kForwardedCallBit);
  EXPECT_EQ(forwarded[0].calls[0].items, (std::vector<wire::LimitItem>{chargeOf(key)}));
  wire::LimitOutcome denied;
  denied.result = wire::ItemResult::Denied;
  denied.retry_after_ns = 5;
  onLoop([&] {
    service_->onReply("p", wire::LimitReply{{wire::LimitAnswer{id, wire::CallStatus::Ok, {denied}}}});
    return true;
  });
  const auto replies = repliesTo("q");
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0].answers.at(0).request_id, 12u);
  EXPECT_EQ(replies[0].answers.at(0).outcomes, (std::vector<wire::LimitOutcome>{denied}));
  EXPECT_FALSE(store_.find(key));  // nothing charged on this node's copy
  EXPECT_EQ(onLoop([&] { return service_->counters().calls_forwarded; }), 1u);
}

TEST_F(LimitServiceTest, AForwardedCallIsAnsweredWhereItArrivesAndNeverForwardedAgain) {
  start();
  onLoop([&] {
    service_->onView(viewOf({"p", "q", "x"}));
    return true;
  });
  const std::string key = keyOwnedBy("p");
  onLoop([&] {
    service_->onRequest("q", requestFor(13 | wire::kForwardedCallBit, key));
    return true;
  });
  ASSERT_EQ(repliesTo("q").size(), 1u);
  EXPECT_EQ(repliesTo("q")[0].answers.at(0).outcomes.at(0).result, wire::ItemResult::Charged);
  EXPECT_TRUE(onLoop([&] { return peers_.sentTo<wire::LimitRequest>("p").empty(); }));
}

TEST_F(LimitServiceTest, ACallToAPeerWhoseLinkIsComingBackWaitsForIt) {
  start();
  const std::string key = keyOwnedBy("p");
  auto result = std::make_shared<std::optional<CallResult>>();  // answered at teardown at the latest
  onLoop([&] {
    peers_.caps.erase("p");
    peers_.coming.insert("p");
    service_->call("p", {chargeOf(key)}, Clock::now() + 10s, [result](CallResult r) { *result = std::move(r); });
    return true;
  });
  EXPECT_FALSE(onLoop([&] { return result->has_value(); }));  // neither failed nor sent
  EXPECT_EQ(onLoop([&] { return service_->pending(); }), 1u);
  onLoop([&] {
    peers_.coming.clear();
    peers_.caps["p"] = wire::kOwnCapabilities;
    service_->onPeerUp("p");
    return true;
  });
  const auto sent = onLoop([&] { return peers_.sentTo<wire::LimitRequest>("p"); });
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].calls.at(0).items.at(0).key, key);
}

TEST_F(LimitServiceTest, ACallWaitingForALinkFailsWhenThePeerIsDown) {
  start();
  const std::string key = keyOwnedBy("p");
  auto result = std::make_shared<std::optional<CallResult>>();  // answered at teardown at the latest
  onLoop([&] {
    peers_.caps.erase("p");
    peers_.coming.insert("p");
    service_->call("p", {chargeOf(key)}, Clock::now() + 10s, [result](CallResult r) { *result = std::move(r); });
    peers_.coming.clear();
    service_->onPeerDown("p");
    return true;
  });
  const auto r = onLoop([&] { return *result; });
  ASSERT_TRUE(r);
  EXPECT_EQ(r->failed, FallbackReason::Unreachable);
}

}  // namespace
}  // namespace zetian::cluster::limits
