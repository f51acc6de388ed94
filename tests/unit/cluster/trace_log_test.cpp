// The trace lines of [log] heartbeats and sync: their budget per kind and what a sync
// line says (and does not: never a bucket key).
#include "cluster/trace_log.h"

#include <gtest/gtest.h>

namespace zetian::cluster {
namespace {

using Clock = TraceBudget::Clock;
using std::chrono::milliseconds;

// Offers `count` lines of `kind` at `at`; returns how many were allowed and the
// summaries that came with them.
std::size_t offer(TraceBudget& budget, TraceKind kind, std::size_t count, Clock::time_point at,
                  std::vector<std::string>* summaries) {
  std::size_t allowed = 0;
  for (std::size_t i = 0; i < count; ++i) {
    auto d = budget.allow(kind, at);
    if (d.summary) summaries->push_back(*d.summary);
    if (d.log_line) ++allowed;
  }
  return allowed;
}

TEST(TraceBudget, CapsEachWindowAndSummarisesWhatItLeftOut) {
  TraceBudget budget(3, std::chrono::seconds(1));
  const auto t0 = Clock::time_point{} + std::chrono::hours(1);
  std::vector<std::string> summaries;
  EXPECT_EQ(offer(budget, TraceKind::heartbeats, 10, t0, &summaries), 3u);
  EXPECT_TRUE(summaries.empty());
  EXPECT_EQ(budget.suppressed(TraceKind::heartbeats), 7u);
  // Still inside the window: nothing more, and no summary yet.
  EXPECT_EQ(offer(budget, TraceKind::heartbeats, 2, t0 + milliseconds(999), &summaries), 0u);
  EXPECT_TRUE(budget.flush(t0 + milliseconds(999)).empty());
  // The next window: its first line comes with the summary of the last one.
  EXPECT_EQ(offer(budget, TraceKind::heartbeats, 1, t0 + milliseconds(1000), &summaries), 1u);
  ASSERT_EQ(summaries.size(), 1u);
  EXPECT_EQ(summaries[0], "cluster_trace_suppressed kind=heartbeats lines=9 window_ms=1000");
}

TEST(TraceBudget, KindsHaveTheirOwnBudgets) {
  TraceBudget budget(2, std::chrono::seconds(1));
  const auto t0 = Clock::time_point{} + std::chrono::hours(1);
  std::vector<std::string> summaries;
  EXPECT_EQ(offer(budget, TraceKind::sync, 50, t0, &summaries), 2u);
  // A flood of sync lines leaves the heartbeats theirs.
  EXPECT_EQ(offer(budget, TraceKind::heartbeats, 2, t0, &summaries), 2u);
  EXPECT_EQ(budget.suppressed(TraceKind::heartbeats), 0u);
  EXPECT_EQ(budget.suppressed(TraceKind::sync), 48u);
}

TEST(TraceBudget, FlushSummarisesAWindowNoLineFollows) {
  TraceBudget budget(1, std::chrono::seconds(1));
  const auto t0 = Clock::time_point{} + std::chrono::hours(1);
  std::vector<std::string> summaries;
  offer(budget, TraceKind::sync, 5, t0, &summaries);
  offer(budget, TraceKind::heartbeats, 1, t0, &summaries);  // nothing left out: no summary
  const auto flushed = budget.flush(t0 + std::chrono::seconds(2));
  ASSERT_EQ(flushed.size(), 1u);
  EXPECT_EQ(flushed[0], "cluster_trace_suppressed kind=sync lines=4 window_ms=1000");
  EXPECT_TRUE(budget.flush(t0 + std::chrono::seconds(3)).empty());
}

TEST(TraceSync, DescribesReplicationLeasesAndRaftWithoutKeys) {
  wire::LimitItem lease;
  lease.op = wire::LimitOp::Lease;
  lease.key = std::string("per-ip\0192.0.2.7", 16);
  wire::LimitItem charge;
  charge.key = lease.key;
  const wire::Message request = wire::LimitRequest{{wire::LimitCall{1, {lease, charge}}}};
  ASSERT_TRUE(isSyncMessage(request));
  const auto text = describeSync(request);
  ASSERT_TRUE(text);
  EXPECT_EQ(*text, "type=limit_request calls=1 items=2 leases=1 refunds=0");
  EXPECT_EQ(text->find("192.0.2.7"), std::string::npos);

  wire::BucketSync sync;
  sync.reason = wire::SyncReason::Replication;
  sync.sequence = 12;
  sync.buckets.resize(3);
  sync.buckets[0].key = lease.key;
  const auto synced = describeSync(sync);
  ASSERT_TRUE(synced);
  EXPECT_EQ(*synced, "type=bucket_sync reason=replication seq=12 buckets=3 last=true");

  wire::RaftControl control;
  control.term = 4;
  EXPECT_EQ(describeSync(control).value_or(""), "type=raft_control kind=status term=4 leader=0");

  // Heartbeats and membership are not sync messages.
  EXPECT_FALSE(isSyncMessage(wire::Heartbeat{}));
  EXPECT_FALSE(describeSync(wire::Heartbeat{}));
  EXPECT_FALSE(isSyncMessage(wire::MemberList{}));
}

}  // namespace
}  // namespace zetian::cluster
