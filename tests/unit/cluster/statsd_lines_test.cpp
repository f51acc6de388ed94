// The StatsD lines the exporter sends, from the Prometheus text /metrics writes.
#include "cluster/statsd/lines.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace zetian::cluster::statsd {
namespace {

constexpr const char* kText =
    "# HELP zetian_build_info Version.\n# TYPE zetian_build_info gauge\n"
    "zetian_build_info{version=\"1.2.3\"} 1\n"
    "# HELP zetian_sessions_total SMTP sessions seen.\n# TYPE zetian_sessions_total counter\n"
    "zetian_sessions_total 7\n"
    "# TYPE zetian_sessions_active gauge\nzetian_sessions_active 2\n"
    "# TYPE zetian_decisions_total counter\n"
    "zetian_decisions_total{rule=\"per-ip\",verdict=\"allow\"} 5\n"
    "zetian_decisions_total{rule=\"per-ip\",verdict=\"tempfail\"} 1\n"
    "# TYPE zetian_decision_duration_seconds histogram\n"
    "zetian_decision_duration_seconds_bucket{le=\"1e-06\"} 0\n"
    "zetian_decision_duration_seconds_bucket{le=\"+Inf\"} 6\n"
    "zetian_decision_duration_seconds_sum 0.000125\n"
    "zetian_decision_duration_seconds_count 6\n";

std::vector<std::string> linesOf(LineEncoder& encoder, const std::string& text, TagStyle tags,
                                 const std::string& prefix = "zetian") {
  return encoder.encode(parsePrometheusText(text), LineOptions{prefix, tags});
}

bool has(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

TEST(StatsdLines, ParsesKindsLabelsAndLeavesBucketsOut) {
  std::size_t skipped = 99;
  const auto samples = parsePrometheusText(kText, &skipped);
  EXPECT_EQ(skipped, 0u);
  ASSERT_EQ(samples.size(), 7u);
  EXPECT_EQ(samples[0].name, "zetian_build_info");
  EXPECT_EQ(samples[0].kind, SampleKind::Gauge);
  ASSERT_EQ(samples[0].labels.size(), 1u);
  EXPECT_EQ(samples[0].labels[0], (std::pair<std::string, std::string>{"version", "1.2.3"}));
  EXPECT_EQ(samples[1].kind, SampleKind::Counter);
  EXPECT_EQ(samples[5].name, "zetian_decision_duration_seconds_sum");
  EXPECT_EQ(samples[5].kind, SampleKind::Counter);
  EXPECT_EQ(samples[6].name, "zetian_decision_duration_seconds_count");
}

TEST(StatsdLines, UnescapesLabelValuesAndSkipsWhatDoesNotParse) {
  std::size_t skipped = 0;
  const auto samples = parsePrometheusText(
      "# TYPE m gauge\nm{a=\"x\\\"y\\\\z\\n\"} 1\nnot a metric line\nm{a=\"open 3\nm NaN\nm 2 1700000000\n", &skipped);
  ASSERT_EQ(samples.size(), 2u);
  EXPECT_EQ(samples[0].labels[0].second, "x\"y\\z\n");
  EXPECT_EQ(samples[1].value, 2);  // a timestamp after the value is not the value
  EXPECT_EQ(skipped, 2u);          // the free text and the unclosed label; NaN is no error
}

TEST(StatsdLines, NamesTakeThePrefixInPlaceOfZetian) {
  EXPECT_EQ(statsdName("zetian_sessions_total", "zetian"), "zetian.sessions_total");
  EXPECT_EQ(statsdName("zetian_sessions_total", "mail.mx1"), "mail.mx1.sessions_total");
  EXPECT_EQ(statsdName("zetian_sessions_total", ""), "sessions_total");
  EXPECT_EQ(statsdName("other:metric", "p"), "p.other_metric");
}

TEST(StatsdLines, DogstatsdTagsCarryTheLabels) {
  LineEncoder encoder;
  const auto lines = linesOf(encoder, kText, TagStyle::Dogstatsd);
  EXPECT_TRUE(has(lines, "zetian.build_info:1|g|#version:1.2.3"));
  EXPECT_TRUE(has(lines, "zetian.sessions_total:7|c"));
  EXPECT_TRUE(has(lines, "zetian.sessions_active:2|g"));
  EXPECT_TRUE(has(lines, "zetian.decisions_total:5|c|#rule:per-ip,verdict:allow"));
  EXPECT_TRUE(has(lines, "zetian.decision_duration_seconds_sum:0.000125|c"));
  EXPECT_TRUE(has(lines, "zetian.decision_duration_seconds_count:6|c"));
  EXPECT_EQ(lines.size(), 7u);
}

TEST(StatsdLines, WithoutTagsLabelValuesAreFoldedIntoTheName) {
  LineEncoder encoder;
  const auto lines = linesOf(encoder, kText, TagStyle::None, "mx");
  EXPECT_TRUE(has(lines, "mx.build_info.1_2_3:1|g"));
  EXPECT_TRUE(has(lines, "mx.decisions_total.per-ip.allow:5|c"));
  EXPECT_TRUE(has(lines, "mx.decisions_total.per-ip.tempfail:1|c"));
  EXPECT_TRUE(has(lines, "mx.sessions_total:7|c"));
}

TEST(StatsdLines, SeparatorsInLabelValuesCannotBreakTheLine) {
  LineEncoder encoder;
  const auto tagged = linesOf(encoder, "m{a=\"x,y|z#w@v:u/t.s e\"} 1\n", TagStyle::Dogstatsd);
  ASSERT_EQ(tagged.size(), 1u);
  EXPECT_EQ(tagged[0], "zetian.m:1|g|#a:x_y_z_w_v:u/t.s_e");
  LineEncoder plain;
  const auto folded = linesOf(plain, "m{a=\"x.y:z\",b=\"\"} 1\n", TagStyle::None);
  ASSERT_EQ(folded.size(), 1u);
  EXPECT_EQ(folded[0], "zetian.m.x_y_z:1|g");  // an empty label is no label
}

TEST(StatsdLines, CountersGoOutAsTheChangeSinceTheLastPush) {
  LineEncoder encoder;
  const std::string first = "# TYPE c counter\nc{k=\"a\"} 10\nc{k=\"b\"} 3\n# TYPE g gauge\ng 4\n";
  const std::string second = "# TYPE c counter\nc{k=\"a\"} 15\nc{k=\"b\"} 3\n# TYPE g gauge\ng 4\n";
  const std::string reset = "# TYPE c counter\nc{k=\"a\"} 2\nc{k=\"b\"} 3\n# TYPE g gauge\ng 1\n";
  EXPECT_TRUE(has(linesOf(encoder, first, TagStyle::Dogstatsd), "zetian.c:10|c|#k:a"));
  const auto again = linesOf(encoder, second, TagStyle::Dogstatsd);
  EXPECT_TRUE(has(again, "zetian.c:5|c|#k:a"));
  EXPECT_TRUE(has(again, "zetian.c:0|c|#k:b"));  // unchanged: a zero, so rates show 0, not a gap
  EXPECT_TRUE(has(again, "zetian.g:4|g"));       // a gauge is its value every time
  const auto after_reset = linesOf(encoder, reset, TagStyle::Dogstatsd);
  EXPECT_TRUE(has(after_reset, "zetian.c:2|c|#k:a"));  // lower than before: counted again from zero
  EXPECT_TRUE(has(after_reset, "zetian.g:1|g"));
}

TEST(StatsdLines, ABaselineIsNotSentAgain) {
  LineEncoder encoder;
  encoder.takeBaseline(parsePrometheusText("# TYPE c counter\nc 100\n"));
  EXPECT_TRUE(has(linesOf(encoder, "# TYPE c counter\nc 104\n", TagStyle::Dogstatsd), "zetian.c:4|c"));
}

TEST(StatsdLines, ASeriesThatComesBackCountsFromZero) {
  LineEncoder encoder;
  linesOf(encoder, "# TYPE c counter\nc{r=\"x\"} 5\n", TagStyle::Dogstatsd);
  linesOf(encoder, "# TYPE c counter\n", TagStyle::Dogstatsd);  // gone: forgotten
  EXPECT_TRUE(has(linesOf(encoder, "# TYPE c counter\nc{r=\"x\"} 6\n", TagStyle::Dogstatsd), "zetian.c:6|c|#r:x"));
}

TEST(StatsdLines, ANegativeGaugeIsSetFromZeroNotReadAsADecrement) {
  LineEncoder encoder;
  const auto lines = linesOf(encoder, "# TYPE g gauge\ng -3\n", TagStyle::Dogstatsd);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "zetian.g:0|g");
  EXPECT_EQ(lines[1], "zetian.g:-3|g");
}

TEST(StatsdLines, FractionsKeepTheirDigitsAndWholeNumbersHaveNone) {
  LineEncoder encoder;
  const auto lines = linesOf(encoder, "# TYPE g gauge\ng 0.1\nh 1e+06\ni 2.5e-07\n", TagStyle::Dogstatsd);
  EXPECT_TRUE(has(lines, "zetian.g:0.1|g"));
  EXPECT_TRUE(has(lines, "zetian.h:1000000|g"));
  EXPECT_TRUE(has(lines, "zetian.i:2.5e-07|g"));
}

TEST(StatsdLines, DatagramsHoldWholeLinesUpToTheLimit) {
  std::vector<std::string> lines;
  for (int i = 0; i < 100; ++i) lines.push_back("zetian.metric_" + std::to_string(i) + ":" + std::to_string(i) + "|c");
  lines.insert(lines.begin() + 50, std::string(200, 'x'));  // longer than a datagram: dropped
  std::size_t dropped = 0;
  const auto datagrams = packDatagrams(lines, 100, &dropped);
  EXPECT_EQ(dropped, 1u);
  std::string joined;
  for (const auto& d : datagrams) {
    EXPECT_LE(d.size(), 100u);
    EXPECT_NE(d.back(), '\n');
    if (!joined.empty()) joined += '\n';
    joined += d;
  }
  std::string expected;
  for (const auto& l : lines) {
    if (l.size() > 100) continue;
    if (!expected.empty()) expected += '\n';
    expected += l;
  }
  EXPECT_EQ(joined, expected);  // every line once, in order, none split
  // Full: adding the next datagram's first line would have passed the limit.
  for (std::size_t i = 0; i + 1 < datagrams.size(); ++i) {
    const std::string next_first = datagrams[i + 1].substr(0, datagrams[i + 1].find('\n'));
    EXPECT_GT(datagrams[i].size() + 1 + next_first.size(), 100u);
  }
  EXPECT_TRUE(packDatagrams({}, 100).empty());
}

}  // namespace
}  // namespace zetian::cluster::statsd
