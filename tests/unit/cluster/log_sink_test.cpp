// Log values stay one line of valid UTF-8 whatever bytes they carry, and refusal
// lines of one kind cannot use up the budget of another.
#include "cluster/log_sink.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

namespace zetian::cluster {
namespace {

using namespace std::chrono_literals;
using Clock = RefusalBudget::Clock;

// Every byte sequence is well-formed UTF-8 (what a log reader may assume).
bool validUtf8(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

TEST(LogSinkValue, PlainValuesStayBareAndOthersAreQuoted) {
  EXPECT_EQ(logValue("mx1.example.org"), "mx1.example.org");
  EXPECT_EQ(logValue(""), "\"\"");
  EXPECT_EQ(logValue("a b"), "\"a b\"");
  EXPECT_EQ(logValue("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(logValue("k=v"), "\"k=v\"");
}

TEST(LogSinkValue, ControlBytesAreEscaped) {
  EXPECT_EQ(logValue("a\nb\rc\x1b[2J\x7f"), "\"a\\x0ab\\x0dc\\x1b[2J\\x7f\"");
  EXPECT_EQ(logValue(std::string("a\0b", 3)), "\"a\\x00b\"");
}

TEST(LogSinkValue, ValidUtf8IsKeptAsItIs) {
  EXPECT_EQ(logValue("j\xc3\xbcrgen@b\xc3\xbc" "cher.example"), "\"j\xc3\xbcrgen@b\xc3\xbc" "cher.example\"");
  EXPECT_EQ(logValue("\xe6\xb3\xbd\xe5\xa4\xa9"), "\"\xe6\xb3\xbd\xe5\xa4\xa9\"");        // 泽天
  EXPECT_EQ(logValue("\xf0\x9f\x93\xa7"), "\"\xf0\x9f\x93\xa7\"");                      // U+1F4E7
  EXPECT_EQ(logValue("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\"");                      // U+10FFFF
  EXPECT_EQ(logValue("\xed\x9f\xbf"), "\"\xed\x9f\xbf\"");                              // U+D7FF
}

TEST(LogSinkValue, InvalidUtf8IsEscapedBytePerByte) {
  EXPECT_EQ(logValue("a\xff" "b"), "\"a\\xffb\"");
  EXPECT_EQ(logValue("\xc3"), "\"\\xc3\"");                               // truncated at the end
  EXPECT_EQ(logValue("\xc3(x"), "\"\\xc3(x\"");                           // bad continuation
  EXPECT_EQ(logValue("\xc0\xaf"), "\"\\xc0\\xaf\"");                      // overlong '/'
  EXPECT_EQ(logValue("\xe0\x80\xaf"), "\"\\xe0\\x80\\xaf\"");             // overlong
  EXPECT_EQ(logValue("\xed\xa0\x80"), "\"\\xed\\xa0\\x80\"");             // a UTF-16 surrogate
  EXPECT_EQ(logValue("\xf4\x90\x80\x80"), "\"\\xf4\\x90\\x80\\x80\"");    // above U+10FFFF
  EXPECT_EQ(logValue("\xf5\x80\x80\x80"), "\"\\xf5\\x80\\x80\\x80\"");
  EXPECT_EQ(logValue("\x80"), "\"\\x80\"");                               // lone continuation
  // A bad byte does not swallow the valid character after it.
  EXPECT_EQ(logValue("\xe6\xb3\xc3\xbc"), "\"\\xe6\\xb3\xc3\xbc\"");
}

TEST(LogSinkValue, CharactersThatViewersTakeAsLineBreaksAreEscaped) {
  EXPECT_EQ(logValue("a\xc2\x85" "b"), "\"a\\xc2\\x85b\"");      // NEL
  EXPECT_EQ(logValue("\xc2\x9b" "2J"), "\"\\xc2\\x9b2J\"");      // CSI
  EXPECT_EQ(logValue("a\xe2\x80\xa8" "b"), "\"a\\xe2\\x80\\xa8b\"");
  EXPECT_EQ(logValue("\xe2\x80\xa9"), "\"\\xe2\\x80\\xa9\"");
  EXPECT_EQ(logValue("\xc2\xa0"), "\"\xc2\xa0\"");  // NO-BREAK SPACE is a character like any other
}

TEST(LogSinkValue, AnyBytesGiveOneLineOfValidUtf8) {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  for (const std::string& input : {all, all + all.substr(0xc0), std::string("\xf0\x9f\x93")}) {
    const std::string out = logValue(input);
    EXPECT_TRUE(validUtf8(out)) << out;
    EXPECT_EQ(out.find('\n'), std::string::npos);
    EXPECT_EQ(out.find('\r'), std::string::npos);
  }
}

// The lines one refusal logs, in order, as ClusterNode logs them: the summary of the
// kind's previous window if any, then `line` if the budget allows it.
std::vector<std::string> record(RefusalBudget& budget, RefusalKind kind, const std::string& line,
                                Clock::time_point now) {
  auto decision = budget.allow(kind, now);
  std::vector<std::string> out;
  if (decision.summary) out.push_back(*decision.summary);
  if (decision.log_line) out.push_back(line);
  return out;
}

TEST(LogSinkRefusalBudget, ADecisionNeedsNoLineAndSaysWhetherToBuildOne) {
  RefusalBudget budget(1, 60s);
  const auto t0 = Clock::time_point{} + 1h;
  auto first = budget.allow(RefusalKind::garbage, t0);
  EXPECT_TRUE(first.log_line);
  EXPECT_FALSE(first.summary);
  auto dropped = budget.allow(RefusalKind::garbage, t0 + 1s);
  EXPECT_FALSE(dropped.log_line);
  EXPECT_FALSE(dropped.summary);
  auto next = budget.allow(RefusalKind::garbage, t0 + 60s);
  EXPECT_TRUE(next.log_line);
  ASSERT_TRUE(next.summary);
  EXPECT_EQ(*next.summary, "cluster_refusals_suppressed kind=garbage count=1 window=60s");
}

TEST(LogSinkRefusalBudget, EachKindHasItsOwnBudget) {
  RefusalBudget budget(3, 60s);
  const auto t0 = Clock::time_point{} + 1h;
  int garbage_logged = 0;
  for (int i = 0; i < 100; ++i) garbage_logged += int(record(budget, RefusalKind::garbage, "g", t0).size());
  EXPECT_EQ(garbage_logged, 3);
  EXPECT_EQ(budget.suppressed(RefusalKind::garbage), 97u);
  // The stranger's flood did not use up the line of a misconfigured member.
  EXPECT_EQ(record(budget, RefusalKind::bad_mac, "cluster_link_refused reason=\"bad MAC\"", t0 + 1s),
            std::vector<std::string>{"cluster_link_refused reason=\"bad MAC\""});
  EXPECT_EQ(budget.suppressed(RefusalKind::bad_mac), 0u);
  EXPECT_EQ(record(budget, RefusalKind::handshake_timeout, "t", t0 + 1s).size(), 1u);
}

TEST(LogSinkRefusalBudget, TheNextRefusalAfterTheWindowBringsTheSummaryFirst) {
  RefusalBudget budget(2, 60s);
  const auto t0 = Clock::time_point{} + 1h;
  for (int i = 0; i < 7; ++i) record(budget, RefusalKind::garbage, "g", t0 + std::chrono::seconds(i));
  EXPECT_TRUE(record(budget, RefusalKind::garbage, "g", t0 + 59s).empty());
  const auto lines = record(budget, RefusalKind::garbage, "again", t0 + 60s);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "cluster_refusals_suppressed kind=garbage count=6 window=60s");
  EXPECT_EQ(lines[1], "again");
  EXPECT_EQ(budget.suppressed(RefusalKind::garbage), 6u);
  // A fresh window: its own budget, and nothing to summarise at its end.
  EXPECT_EQ(record(budget, RefusalKind::garbage, "g", t0 + 61s).size(), 1u);
  EXPECT_TRUE(budget.flush(t0 + 200s).empty());
}

TEST(LogSinkRefusalBudget, FlushSummarisesEndedWindowsOncePerKind) {
  RefusalBudget budget(1, 60s);
  const auto t0 = Clock::time_point{} + 1h;
  for (int i = 0; i < 5; ++i) record(budget, RefusalKind::garbage, "g", t0);
  for (int i = 0; i < 3; ++i) record(budget, RefusalKind::bad_mac, "m", t0 + 30s);
  record(budget, RefusalKind::tls, "t", t0);  // within budget: no summary
  EXPECT_TRUE(budget.flush(t0 + 59s).empty());
  EXPECT_EQ(budget.flush(t0 + 60s), std::vector<std::string>{"cluster_refusals_suppressed kind=garbage count=4 window=60s"});
  EXPECT_TRUE(budget.flush(t0 + 61s).empty());
  EXPECT_EQ(budget.flush(t0 + 90s), std::vector<std::string>{"cluster_refusals_suppressed kind=bad_mac count=2 window=60s"});
  EXPECT_TRUE(budget.flush(t0 + 500s).empty());
  EXPECT_EQ(budget.suppressed(RefusalKind::garbage), 4u);
  EXPECT_EQ(budget.suppressed(RefusalKind::bad_mac), 2u);
}

TEST(LogSinkRefusalBudget, EveryKindHasADistinctName) {
  std::vector<std::string> names;
  for (auto kind : kRefusalKinds) names.emplace_back(nameOf(kind));
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::unique(names.begin(), names.end()), names.end());
  EXPECT_EQ(nameOf(RefusalKind::bad_mac), "bad_mac");
}

}  // namespace
}  // namespace zetian::cluster
