// Durations, names and the single-value syntaxes (sockets, endpoints, modes, replies).
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <thread>
#include <vector>

#include "conf/config.h"
#include "conf/names.h"
#include "conf/syntax.h"
#include "conf/text.h"
#include "state/limit.h"

namespace zetian::conf {
namespace {

using namespace std::chrono_literals;

TEST(Duration, ParsesEveryUnitAndCompounds) {
  EXPECT_EQ(parseDuration("250ms"), Duration(250));
  EXPECT_EQ(parseDuration("5s"), Duration(5s));
  EXPECT_EQ(parseDuration("10m"), Duration(10min));
  EXPECT_EQ(parseDuration("1h"), Duration(1h));
  EXPECT_EQ(parseDuration("1d"), Duration(24h));
  EXPECT_EQ(parseDuration("1h30m"), Duration(90min));
  EXPECT_EQ(parseDuration("1m500ms"), Duration(60500));
  EXPECT_EQ(parseDuration("0s"), Duration(0));
}

TEST(Duration, BareNumberNeedsAUnit) {
  std::string why;
  EXPECT_FALSE(parseDuration("10", &why));
  EXPECT_NE(why.find("needs a unit"), std::string::npos) << why;
  EXPECT_NE(why.find("\"10s\""), std::string::npos) << why;
}

TEST(Duration, RefusesMalformedText) {
  for (auto bad : {"", "s", "10x", "1.5h", "-5s", "5 s", " 5s", "5s ", "1h30", "ms", "5S", "99999999999999999999s", "3651d"}) {
    std::string why;
    EXPECT_FALSE(parseDuration(bad, &why).has_value()) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
}

TEST(Duration, UnitsGoFromLargestToSmallestEachOnce) {
  EXPECT_EQ(parseDuration("1d2h3m4s5ms"), Duration(24h + 2h + 3min + 4s + 5ms));
  EXPECT_EQ(parseDuration("1h30s"), Duration(3630s));
  std::string why;
  EXPECT_FALSE(parseDuration("1h1h", &why));
  EXPECT_NE(why.find("twice"), std::string::npos) << why;
  EXPECT_FALSE(parseDuration("30s1h", &why));
  EXPECT_NE(why.find("from the largest to the smallest"), std::string::npos) << why;
  for (auto bad : {"500ms1s", "1m1h", "1s1s", "1ms1ms", "1m1d", "5s5ms5s"}) {
    EXPECT_FALSE(parseDuration(bad).has_value()) << bad;
  }
}

TEST(Duration, NumbersHaveNoLeadingZeros) {
  std::string why;
  EXPECT_FALSE(parseDuration("01h", &why));
  EXPECT_NE(why.find("cannot start with 0"), std::string::npos) << why;
  for (auto bad : {"00s", "1h05m", "007ms", "00"}) EXPECT_FALSE(parseDuration(bad).has_value()) << bad;
  EXPECT_EQ(parseDuration("0ms"), Duration(0));
  EXPECT_EQ(parseDuration("1h0m"), Duration(1h));
  EXPECT_EQ(parseDuration("10s"), Duration(10s));
}

TEST(Duration, FormatsWithTheLargestWholeUnit) {
  EXPECT_EQ(formatDuration(Duration(1h)), "1h");
  EXPECT_EQ(formatDuration(Duration(24h)), "1d");
  EXPECT_EQ(formatDuration(Duration(90min)), "90m");
  EXPECT_EQ(formatDuration(Duration(250)), "250ms");
  EXPECT_EQ(formatDuration(Duration(1500)), "1500ms");
  EXPECT_EQ(formatDuration(Duration(10s)), "10s");
  EXPECT_EQ(formatDuration(Duration(0)), "0s");
  for (auto text : {"1h", "1d", "90m", "250ms", "10s"}) EXPECT_EQ(formatDuration(*parseDuration(text)), text);
}

TEST(Names, RoundTripEveryEnumValue) {
  for (const auto& n : keyKindNames()) EXPECT_EQ(keyKindName(n.value), n.name);
  for (const auto& n : stageNames()) EXPECT_EQ(stageName(n.value), n.name);
  for (const auto& n : scopeNames()) EXPECT_EQ(scopeName(n.value), n.name);
  for (const auto& n : actionNames()) EXPECT_EQ(actionName(n.value), n.name);
  for (const auto& n : senderFilterNames()) EXPECT_EQ(senderFilterName(n.value), n.name);
  for (const auto& n : defaultActionNames()) EXPECT_EQ(defaultActionName(n.value), n.name);
  for (const auto& n : logLevelNames()) EXPECT_EQ(logLevelName(n.value), n.name);
  for (const auto& n : logTargetNames()) EXPECT_EQ(logTargetName(n.value), n.name);
  for (const auto& n : discoveryNames()) EXPECT_EQ(discoveryName(n.value), n.name);
  for (const auto& n : consistencyNames()) EXPECT_EQ(consistencyName(n.value), n.name);
  for (const auto& n : failModeNames()) EXPECT_EQ(failModeName(n.value), n.name);
  for (const auto& n : affinityMethodNames()) EXPECT_EQ(affinityMethodName(n.value), n.name);
}

TEST(Names, AlgorithmNamesAgreeWithTheStateModule) {
  for (const auto& n : algorithmNames()) {
    EXPECT_EQ(state::algorithmName(n.value), n.name);
    EXPECT_EQ(state::parseAlgorithm(n.name), n.value);
  }
}

TEST(Suggestions, FindCloseWordsOnly) {
  const std::string_view keys[] = {"socket", "timeout", "default_action", "user", "group"};
  EXPECT_EQ(closestMatch("tiemout", keys), "timeout");
  EXPECT_EQ(closestMatch("Socket", keys), "socket");
  EXPECT_EQ(closestMatch("default-action", keys), "default_action");
  EXPECT_EQ(closestMatch("usr", keys), "user");
  EXPECT_EQ(closestMatch("listen", keys), "");
  EXPECT_EQ(closestMatch("x", keys), "");
}

TEST(HostPort, ParsesNamesAndAddresses) {
  auto hp = parseHostPort("127.0.0.1:9187");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "127.0.0.1");
  EXPECT_EQ(hp->port, 9187);
  hp = parseHostPort("[::1]:9187");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "::1");
  hp = parseHostPort("mx2.example.net:7946");
  ASSERT_TRUE(hp);
  EXPECT_EQ(hp->host, "mx2.example.net");
  EXPECT_EQ(hp->port, 7946);
}

TEST(HostPort, RefusesWhatCannotBeReached) {
  for (auto bad : {"127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", ":9187", "::1:9187", "[::1]", "[::1]9187",
                   "[127.0.0.1]:80", "bad host:80", "-x.example:80", ""}) {
    std::string why;
    EXPECT_FALSE(parseHostPort(bad, &why).has_value()) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
}

TEST(HostPort, KeepsAHostNameAsWrittenAndAnIpv6AddressWithoutItsBrackets) {
  std::string why;
  auto hp = parseHostPort("MX2.Example.NET:25", &why);
  ASSERT_TRUE(hp) << why;
  EXPECT_EQ(hp->host, "MX2.Example.NET");
  EXPECT_EQ(hp->port, 25);
  hp = parseHostPort("[2001:db8::1]:65535", &why);
  ASSERT_TRUE(hp) << why;
  EXPECT_EQ(hp->host, "2001:db8::1");
  EXPECT_EQ(hp->port, 65535);
  EXPECT_TRUE(parseHostPort("192.0.2.1:1"));  // no error pointer: nothing written
}

TEST(HostPort, TakesTheDefaultPortOnlyWhenTheTextHasNone) {
  const HostPortRules rules{.default_port = 7946};
  std::string why;
  auto hp = parseHostPort("mx2.example.net", &why, rules);
  ASSERT_TRUE(hp) << why;
  EXPECT_EQ(hp->host, "mx2.example.net");
  EXPECT_EQ(hp->port, 7946);
  hp = parseHostPort("[::1]", &why, rules);
  ASSERT_TRUE(hp) << why;
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 7946);
  hp = parseHostPort("mx2.example.net:7000", &why, rules);
  ASSERT_TRUE(hp) << why;
  EXPECT_EQ(hp->port, 7000);
  hp = parseHostPort("[::1]:7001", &why, rules);
  ASSERT_TRUE(hp) << why;
  EXPECT_EQ(hp->port, 7001);
  // A default does not make an empty port after the colon acceptable.
  EXPECT_FALSE(parseHostPort("mx2:", &why, rules));
  EXPECT_FALSE(parseHostPort("[::1]:", &why, rules));
}

TEST(HostPort, RefusesAMissingPortWhenThereIsNoDefault) {
  std::string why;
  EXPECT_FALSE(parseHostPort("mx2.example.net", &why));
  EXPECT_NE(why.find("\"mx2.example.net\" needs a port"), std::string::npos) << why;
  EXPECT_FALSE(parseHostPort("[::1]", &why));
  EXPECT_NE(why.find("needs a port after the address: \"[::1]:PORT\""), std::string::npos) << why;
}

TEST(HostPort, AcceptsPortZeroOnlyWhenTheRulesAllowIt) {
  std::string why;
  EXPECT_FALSE(parseHostPort("127.0.0.1:0", &why));
  EXPECT_NE(why.find("from 1 to 65535"), std::string::npos) << why;
  EXPECT_FALSE(parseHostPort("mx2:0", &why, {.default_port = 7946}));

  const HostPortRules listener{.allow_port_zero = true};
  auto hp = parseHostPort("127.0.0.1:0", &why, listener);
  ASSERT_TRUE(hp) << why;
  EXPECT_EQ(hp->port, 0);
  hp = parseHostPort("[::]:0", &why, listener);
  ASSERT_TRUE(hp) << why;
  EXPECT_EQ(hp->host, "::");
  EXPECT_FALSE(parseHostPort("127.0.0.1:65536", &why, listener));
  EXPECT_NE(why.find("from 0 to 65535"), std::string::npos) << why;
}

TEST(HostPort, RefusesBadPortsWithAMessageThatQuotesTheInput) {
  for (const std::string text : {"mx2:0", "mx2:65536", "mx2:99999", "mx2:123456", "mx2:", "mx2:http", "mx2:-1",
                                 "mx2:+80", "mx2:0x50", "mx2:79 46", "mx2:80 ", "[::1]:", "[::1]:0", "[::1]:65536"}) {
    std::string why;
    EXPECT_FALSE(parseHostPort(text, &why, {.default_port = 7946})) << text;
    EXPECT_NE(why.find("the port in \"" + text + "\" must be a number from 1 to 65535"), std::string::npos)
        << text << ": " << why;
  }
}

TEST(HostPort, WantsIpv6InBracketsAndOnlyIpv6InThem) {
  const auto refusal = [](const std::string& text) {
    std::string why;
    EXPECT_FALSE(parseHostPort(text, &why, {.default_port = 7946})) << text;
    EXPECT_FALSE(why.empty()) << text;
    return why;
  };
  for (const std::string text : {"[::1", "[::1:7946", "::1]:7946", "2001:db8::1:7946", "::1", "2001:db8::1",
                                 "[::1]7946", "[::1]]:7946", "[mx2.example.net]:7946", "[127.0.0.1]:80", "[]:7946", "[]"}) {
    refusal(text);
  }
  EXPECT_NE(refusal("[::1").find("'[' without ']'"), std::string::npos);
  EXPECT_NE(refusal("2001:db8::1:7946").find("put an IPv6 address in brackets"), std::string::npos);
  EXPECT_NE(refusal("::1").find("put an IPv6 address in brackets"), std::string::npos);
  EXPECT_NE(refusal("[::1]7946").find("\"[::1]:PORT\""), std::string::npos);
  EXPECT_NE(refusal("[mx2.example.net]:7946").find("in brackets must be an IPv6 address"), std::string::npos);
  EXPECT_NE(refusal("[127.0.0.1]:80").find("in brackets must be an IPv6 address"), std::string::npos);
}

TEST(HostPort, RefusesEmptyHostsAndJunk) {
  std::string why;
  EXPECT_FALSE(parseHostPort("", &why, {.default_port = 7946}));
  EXPECT_NE(why.find("empty"), std::string::npos) << why;
  EXPECT_FALSE(parseHostPort(":7946", &why));
  EXPECT_NE(why.find("needs a host"), std::string::npos) << why;
  const std::vector<std::string> junk{"mx2 .example.net:7946", "mx2/24:7946",      "-x.example:80",
                                      "mx2..example:80",       "mx2_example$:80", "mx2:7946\n",
                                      std::string("mx2\0:80", 6)};
  for (const std::string& text : junk) {
    EXPECT_FALSE(parseHostPort(text, &why, {.default_port = 7946})) << text;
    EXPECT_FALSE(why.empty()) << text;
  }
  // What the operator wrote is quoted with its control characters escaped.
  EXPECT_FALSE(parseHostPort("mx\x01:80", &why));
  EXPECT_NE(why.find("\"mx\\x01\""), std::string::npos) << why;
}

TEST(HexEscape, AppendsThePrefixAndTwoHexDigits) {
  std::string out = "a";
  appendHexEscape(out, "\\x", 0x1b);
  EXPECT_EQ(out, "a\\x1b");
  out.clear();
  appendHexEscape(out, "\\x", 0x00);
  appendHexEscape(out, "\\u00", 0x7f);
  appendHexEscape(out, "%", 0xfe, HexDigits::upper);
  appendHexEscape(out, "%", 0xab);
  EXPECT_EQ(out, "\\x00\\u007f%FE%ab");
  EXPECT_EQ(quoteValue(std::string("a\x01\x7f", 3)), "\"a\\x01\\x7f\"");
}

// The one UTF-8 check that configuration files, log values and JSON all rely on: every
// boundary of RFC 3629's table of well-formed sequences, on both sides.
TEST(Utf8, SequenceLengthFollowsTheTableOfWellFormedSequences) {
  struct Case {
    std::string bytes;
    std::size_t length;
  };
  const Case cases[] = {
      {"a", 1},
      {std::string(1, '\0'), 1},
      {"\x7f", 1},
      {"\x80", 0},              // a continuation byte cannot start a character
      {"\xbf", 0},
      {"\xc0\x80", 0},          // overlong NUL
      {"\xc1\xbf", 0},          // overlong U+007F
      {"\xc2\x80", 2},          // U+0080
      {"\xdf\xbf", 2},          // U+07FF
      {"\xc2", 0},              // cut short
      {"\xc2\x41", 0},          // not followed by a continuation byte
      {"\xe0\x9f\xbf", 0},      // overlong U+07FF
      {"\xe0\xa0\x80", 3},      // U+0800
      {"\xec\xbf\xbf", 3},
      {"\xed\x9f\xbf", 3},      // U+D7FF
      {"\xed\xa0\x80", 0},      // U+D800, a surrogate
      {"\xed\xbf\xbf", 0},      // U+DFFF
      {"\xee\x80\x80", 3},      // U+E000
      {"\xef\xbf\xbf", 3},      // U+FFFF
      {"\xe2\x82", 0},          // cut short
      {"\xe2\x82\x41", 0},
      {"\xf0\x8f\xbf\xbf", 0},  // overlong U+FFFF
      {"\xf0\x90\x80\x80", 4},  // U+10000
      {"\xf4\x8f\xbf\xbf", 4},  // U+10FFFF
      {"\xf4\x90\x80\x80", 0},  // above U+10FFFF
      {"\xf5\x80\x80\x80", 0},
      {"\xff", 0},
      {"\xf0\x9f\x98", 0},      // cut short
  };
  for (const auto& c : cases) {
    std::string hex;
    for (unsigned char b : c.bytes) appendHexEscape(hex, "\\x", b);
    EXPECT_EQ(utf8SequenceLength(c.bytes, 0), c.length) << hex;
    // The same bytes in the middle of a text, with more text after them.
    const std::string text = "ab" + c.bytes + (c.length == 0 ? "" : "z");
    EXPECT_EQ(utf8SequenceLength(text, 2), c.length) << hex;
  }
  EXPECT_EQ(firstInvalidUtf8("plain \xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80"), std::nullopt);
  EXPECT_EQ(firstInvalidUtf8("ok \xc3\xa9\xed\xa0\x80 after"), std::optional<std::size_t>(5));
  EXPECT_EQ(firstInvalidUtf8("cut \xe2\x82"), std::optional<std::size_t>(4));
}

TEST(ErrnoText, GivesTheCLibrarysMessage) {
  EXPECT_EQ(errnoText(ENOENT), "No such file or directory");
  EXPECT_EQ(errnoText(EACCES), "Permission denied");
  const std::string unknown = errnoText(98765);
  EXPECT_NE(unknown.find("98765"), std::string::npos) << unknown;
}

TEST(ErrnoText, EachThreadGetsItsOwnMessage) {
  // Unknown values are formatted with their number: a buffer shared between threads
  // would hand one thread another's number.
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &wrong] {
      const int err = 20000 + t;
      for (int i = 0; i < 20000; ++i) {
        if (errnoText(err).find(std::to_string(err)) == std::string::npos) ++wrong;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(MilterSocket, AcceptsLibmilterSyntax) {
  for (auto good : {"inet:8891@127.0.0.1", "inet:8891", "inet:8891@localhost", "inet6:8891@::1", "inet6:8891",
                    "unix:/run/zetian/milter.sock", "local:/var/spool/postfix/zetian/milter"}) {
    std::string why;
    EXPECT_TRUE(checkMilterSocket(good, &why)) << good << ": " << why;
  }
}

TEST(MilterSocket, RefusesOtherForms) {
  for (auto bad : {"8891", "tcp:8891@127.0.0.1", "inet:0@127.0.0.1", "inet:70000@127.0.0.1", "inet:@127.0.0.1",
                   "inet:8891@", "inet:8891@::1", "inet6:8891@[::1]", "inet6:8891@127.0.0.1", "unix:relative.sock",
                   "unix:", "inet:8891@bad host"}) {
    std::string why;
    EXPECT_FALSE(checkMilterSocket(bad, &why)) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
  std::string why;
  EXPECT_FALSE(checkMilterSocket("unix:/" + std::string(200, 'a'), &why));
  EXPECT_NE(why.find("at most 107"), std::string::npos) << why;
}

TEST(OctalMode, ParsesPermissionBits) {
  EXPECT_EQ(parseOctalMode("0660"), 0660u);
  EXPECT_EQ(parseOctalMode("0007"), 07u);
  EXPECT_EQ(parseOctalMode("755"), 0755u);
  for (auto bad : {"", "0999", "rw-rw----", "01777", "12345", "0x1ff"}) EXPECT_FALSE(parseOctalMode(bad).has_value()) << bad;
}

TEST(Reply, AcceptsCodesThatMatchTheAction) {
  std::string why;
  EXPECT_TRUE(checkReply("451 4.7.1 Too many messages, try again later", Action::Tempfail, &why)) << why;
  EXPECT_TRUE(checkReply("450 slow down", Action::Tempfail, &why)) << why;
  EXPECT_TRUE(checkReply("550 5.7.1 Rule %{rule}: %{limit} per %{period} for %{key}; retry in %{retry_after}", Action::Reject, &why))
      << why;
  EXPECT_TRUE(checkReply("554 5.7.1 100% sure: too much", Action::Reject, &why)) << why;
  EXPECT_TRUE(checkReply("451 4.7.1 tab\there", Action::Tempfail, &why)) << why;
}

struct BadReply {
  const char* reply;
  Action action;
  const char* expect;
};

TEST(Reply, RefusesEachKindOfMistake) {
  const BadReply cases[] = {
      {"550 5.7.1 no", Action::Tempfail, "4xx"},
      {"451 4.7.1 no", Action::Reject, "5xx"},
      {"451 5.7.1 no", Action::Tempfail, "class 4"},
      {"551 4.7.1 no", Action::Reject, "class 5"},
      {"451 4.7 no", Action::Tempfail, "enhanced status code"},
      {"451 4.7.1", Action::Tempfail, "needs a text"},
      {"451", Action::Tempfail, "three-digit"},
      {"45 too short", Action::Tempfail, "three-digit"},
      {"4511 text", Action::Tempfail, "three-digit"},
      {"491 4.7.1 text", Action::Tempfail, "not an SMTP code"},
      {"451 4.7.1 two\r\nlines", Action::Tempfail, "carriage return"},
      {"451 4.7.1 two\nlines", Action::Tempfail, "line feed"},
      {"451 4.7.1 %{rules}", Action::Tempfail, "did you mean `%{rule}`"},
      {"451 4.7.1 %{nope}", Action::Tempfail, "unknown placeholder %{nope}"},
      {"451 4.7.1 %{rule", Action::Tempfail, "not closed"},
      {"451 4.7.1 text", Action::Tag, "only used with action"},
      {"451 4.7.1 text", Action::DryRun, "only used with action"},
  };
  for (const auto& c : cases) {
    std::string why;
    EXPECT_FALSE(checkReply(c.reply, c.action, &why)) << c.reply;
    EXPECT_NE(why.find(c.expect), std::string::npos) << c.reply << " -> " << why;
  }
  std::string why;
  EXPECT_FALSE(checkReply(std::string("451 4.7.1 nul\0byte", 18), Action::Tempfail, &why));
  EXPECT_NE(why.find("NUL"), std::string::npos) << why;
  EXPECT_FALSE(checkReply("451 4.7.1 " + std::string(500, 'x'), Action::Tempfail, &why));
}

}  // namespace
}  // namespace zetian::conf
