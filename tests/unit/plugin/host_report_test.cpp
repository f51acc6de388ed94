// zetian_engine_set_reporter: a host's own figures in GET /metrics and GET /health's
// "policy_host", through the C ABI, a started engine and its real health socket; and
// the promise that lets a host free its context: after a removal returns, the old
// reporter is neither running nor called again (run under TSan and ASan).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "plugin/zetian.h"
#include "tests/unit/cluster/test_support.h"

namespace {

using namespace std::chrono_literals;
namespace testing_support = zetian::cluster::testing;

// What a reporter answers, and what it saw. Counters are plain ints on purpose: the
// reporter runs on the health thread and the test reads them after
// zetian_engine_set_reporter returned, which must order the two (TSan checks it).
struct Reporter {
  std::string metrics;
  std::string health;
  int metrics_calls = 0;
  int health_calls = 0;
  int other_calls = 0;
  zetian_engine* engine = nullptr;  // for the reporter that tries to swap itself
  int nested_result = 1;
};

void report(void* ctx, int what, zetian_append_fn append, void* sink) {
  auto* r = static_cast<Reporter*>(ctx);
  if (what == ZETIAN_REPORT_METRICS) {
    ++r->metrics_calls;
    // In two pieces: the engine concatenates.
    const std::size_t half = r->metrics.size() / 2;
    append(sink, r->metrics.data(), half);
    append(sink, r->metrics.data() + half, r->metrics.size() - half);
  } else if (what == ZETIAN_REPORT_HEALTH) {
    ++r->health_calls;
    append(sink, r->health.data(), r->health.size());
  } else {
    ++r->other_calls;
  }
}

void reportAndSwapItself(void* ctx, int what, zetian_append_fn append, void* sink) {
  auto* r = static_cast<Reporter*>(ctx);
  r->nested_result = zetian_engine_set_reporter(r->engine, nullptr, nullptr);
  report(ctx, what, append, sink);
}

class HostReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(path_) << "[log]\nlevel = \"warn\"\ntarget = \"file\"\nfile = \"" << dir_ << "/zetian.log\"\n"
                         << "[health]\nsocket = \"" << socket_ << "\"\n"
                         << "[ratelimit]\nexempt = []\n";
    engine_ = zetian_engine_open(path_.c_str(), nullptr, 0, nullptr, nullptr);
    ASSERT_NE(engine_, nullptr);
    ASSERT_EQ(zetian_engine_start(engine_, nullptr, nullptr), 0);
  }
  void TearDown() override { zetian_engine_close(engine_); }

  testing_support::RawReply get(const std::string& target) const {
    return testing_support::roundTrip(testing_support::connectUnix(socket_),
                                      testing_support::simpleRequest("GET", target));
  }
  nlohmann::json health() const {
    const auto reply = get("/health");
    EXPECT_EQ(reply.status, 200) << reply.head;
    return nlohmann::json::parse(reply.body);  // throws (fails the test) on a broken document
  }
  std::string log() const {
    std::ifstream in(dir_ + "/zetian.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  testing_support::TempDir temp_;
  const std::string dir_ = temp_.path();
  const std::string path_ = dir_ + "/zetian.toml";
  const std::string socket_ = dir_ + "/health.sock";
  zetian_engine* engine_ = nullptr;
};

constexpr const char* kMetrics =
    "# HELP zetian_policy_connections Policy connections open now.\n"
    "# TYPE zetian_policy_connections gauge\n"
    "zetian_policy_connections 3\n";
constexpr const char* kHealth =
    R"({"socket":"inet:10031@127.0.0.1","connections":3,"max_connections":1000,"sessions":2,)"
    R"("requests_total":1234,"malformed_total":0})";

TEST_F(HostReportTest, WithoutAReporterPolicyHostIsNullAndMetricsHaveNoHostLines) {
  const nlohmann::json doc = health();
  ASSERT_TRUE(doc.contains("policy_host"));
  EXPECT_TRUE(doc["policy_host"].is_null());
  EXPECT_EQ(get("/metrics").body.find("zetian_policy_connections"), std::string::npos);
}

TEST_F(HostReportTest, TheReportersTextEndsMetricsAndIsHealthsPolicyHost) {
  Reporter r{kMetrics, kHealth};
  ASSERT_EQ(zetian_engine_set_reporter(engine_, &report, &r), 0);
  const auto metrics = get("/metrics");
  EXPECT_EQ(metrics.status, 200);
  ASSERT_GE(metrics.body.size(), std::string(kMetrics).size());
  EXPECT_EQ(metrics.body.substr(metrics.body.size() - std::string(kMetrics).size()), kMetrics);
  EXPECT_NE(metrics.body.find("zetian_build_info"), std::string::npos);  // the engine's own come first

  const nlohmann::json doc = health();
  EXPECT_EQ(doc["policy_host"], nlohmann::json::parse(kHealth));
  EXPECT_TRUE(doc.contains("node_id"));  // the rest of the document is intact

  ASSERT_EQ(zetian_engine_set_reporter(engine_, nullptr, nullptr), 0);
  // Once per what per request, and never another what.
  EXPECT_EQ(r.metrics_calls, 1);
  EXPECT_EQ(r.health_calls, 1);
  EXPECT_EQ(r.other_calls, 0);
}

TEST_F(HostReportTest, AfterRemovalTheReporterIsNotCalledAndPolicyHostIsNullAgain) {
  Reporter r{kMetrics, kHealth};
  ASSERT_EQ(zetian_engine_set_reporter(engine_, &report, &r), 0);
  EXPECT_FALSE(health()["policy_host"].is_null());
  ASSERT_EQ(zetian_engine_set_reporter(engine_, nullptr, &r), 0);
  const int metrics_calls = r.metrics_calls;
  const int health_calls = r.health_calls;
  EXPECT_TRUE(health()["policy_host"].is_null());
  EXPECT_EQ(get("/metrics").body.find("zetian_policy_connections"), std::string::npos);
  EXPECT_EQ(r.metrics_calls, metrics_calls);
  EXPECT_EQ(r.health_calls, health_calls);
}

TEST_F(HostReportTest, ANewReporterReplacesTheOld) {
  Reporter first{kMetrics, R"({"socket":"first"})"};
  Reporter second{"zetian_policy_second 1\n", R"({"socket":"second"})"};
  ASSERT_EQ(zetian_engine_set_reporter(engine_, &report, &first), 0);
  ASSERT_EQ(zetian_engine_set_reporter(engine_, &report, &second), 0);
  EXPECT_EQ(health()["policy_host"]["socket"], "second");
  EXPECT_EQ(first.health_calls, 0);
  ASSERT_EQ(zetian_engine_set_reporter(engine_, nullptr, nullptr), 0);
}

TEST_F(HostReportTest, AnEmptyOrBrokenHealthReportIsNullAndTheDocumentStaysValid) {
  Reporter r{"", ""};
  ASSERT_EQ(zetian_engine_set_reporter(engine_, &report, &r), 0);
  EXPECT_TRUE(health()["policy_host"].is_null());
  EXPECT_EQ(log().find("host_report"), std::string::npos);  // nothing to say: not a problem

  r.health = R"("just a string")";
  EXPECT_TRUE(health()["policy_host"].is_null());
  r.health = R"({"cut":)";
  EXPECT_TRUE(health()["policy_host"].is_null());
  ASSERT_EQ(zetian_engine_set_reporter(engine_, nullptr, nullptr), 0);
  const std::string text = log();
  const auto first = text.find("host_report what=1");
  EXPECT_NE(first, std::string::npos) << text;
  EXPECT_EQ(text.find("host_report", first + 1), std::string::npos) << "logged once: " << text;
}

TEST_F(HostReportTest, MetricsWithoutAFinalNewlineGetOne) {
  Reporter r{"zetian_policy_x 1", ""};
  ASSERT_EQ(zetian_engine_set_reporter(engine_, &report, &r), 0);
  const std::string body = get("/metrics").body;
  ASSERT_EQ(zetian_engine_set_reporter(engine_, nullptr, nullptr), 0);
  EXPECT_TRUE(body.ends_with("\nzetian_policy_x 1\n")) << body;
}

TEST_F(HostReportTest, AReportOverOneMebibyteIsLeftOutWhole) {
  std::string huge;
  while (huge.size() <= (1u << 20)) huge += "zetian_policy_padding 1\n";
  Reporter r{huge, kHealth};
  ASSERT_EQ(zetian_engine_set_reporter(engine_, &report, &r), 0);
  const auto metrics = get("/metrics");
  ASSERT_EQ(zetian_engine_set_reporter(engine_, nullptr, nullptr), 0);
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.body.find("zetian_policy_padding"), std::string::npos);
  EXPECT_NE(metrics.body.find("zetian_build_info"), std::string::npos);
}

TEST_F(HostReportTest, AReporterCannotSwapItselfButIsNotDeadlocked) {
  Reporter r{kMetrics, kHealth};
  r.engine = engine_;
  ASSERT_EQ(zetian_engine_set_reporter(engine_, &reportAndSwapItself, &r), 0);
  EXPECT_FALSE(health()["policy_host"].is_null());
  ASSERT_EQ(zetian_engine_set_reporter(engine_, nullptr, nullptr), 0);
  EXPECT_EQ(r.nested_result, -1);
}

TEST(HostReportAbi, NullOrClosedEngineIsRefused) {
  EXPECT_EQ(zetian_engine_set_reporter(nullptr, &report, nullptr), -1);
  EXPECT_EQ(zetian_engine_set_reporter(nullptr, nullptr, nullptr), -1);
  testing_support::TempDir temp;
  const std::string path = temp.path() + "/zetian.toml";
  std::ofstream(path) << "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n[health]\nsocket = \"" << temp.path()
                      << "/health.sock\"\n";
  zetian_engine* e = zetian_engine_open(path.c_str(), nullptr, 0, nullptr, nullptr);
  ASSERT_NE(e, nullptr);
  Reporter r;
  EXPECT_EQ(zetian_engine_set_reporter(e, &report, &r), 0);  // before start: fine, nothing calls it yet
  zetian_engine_close(e);
  EXPECT_EQ(zetian_engine_set_reporter(e, nullptr, nullptr), -1);  // the handle outlives the close
  EXPECT_EQ(r.metrics_calls + r.health_calls, 0);
}

// A host that removes its reporter and frees the context at once, while /metrics and
// /health are asked in a loop from another thread: no call may run on the freed
// context (ASan: use after free; TSan: a race between the reporter's writes and the
// delete).
TEST_F(HostReportTest, RemovalWhileRequestsRunNeverLeavesACallOnAFreedContext) {
  std::atomic<bool> stop{false};
  std::atomic<int> replies{0};
  std::thread scraper([&] {
    while (!stop.load()) {
      const bool metrics = replies.load() % 2 == 0;
      const auto reply = get(metrics ? "/metrics" : "/health");
      if (reply.status == 200) replies.fetch_add(1);
    }
  });
  int rounds_with_calls = 0;
  for (int round = 0; round < 20; ++round) {
    auto r = std::make_unique<Reporter>(Reporter{kMetrics, kHealth});
    ASSERT_EQ(zetian_engine_set_reporter(engine_, &report, r.get()), 0);
    // Until the reporter has been called at least once (polled, with a deadline).
    const int seen = replies.load();
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (replies.load() < seen + 3 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    ASSERT_EQ(zetian_engine_set_reporter(engine_, nullptr, nullptr), 0);
    const int calls = r->metrics_calls + r->health_calls;  // read after the removal: ordered by it
    if (calls > 0) ++rounds_with_calls;
    r.reset();  // freed while the scraper keeps asking
  }
  stop.store(true);
  scraper.join();
  EXPECT_GT(replies.load(), 0);
  EXPECT_EQ(rounds_with_calls, 20);
}

}  // namespace
