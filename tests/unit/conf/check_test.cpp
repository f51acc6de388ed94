// What --check-config refuses beyond types and syntax, each with its line: values that
// would pass the parser but cannot work (an empty required string, a timeout libmilter
// rounds to 0, a socket nobody can use, an account that does not exist, a token that
// can never match, absurd timings), and the warnings that never refuse a file.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>

#include "conf/load.h"
#include "conf/schema.h"
#include "load_support.h"

namespace zetian::conf {
namespace {

using namespace std::chrono_literals;

std::string warnings(const LoadResult& r) {
  std::string out;
  for (const auto& w : r.warnings) out += w.format() + "\n";
  return out;
}

// A file with one rule, so that only the warnings a test provokes appear.
constexpr std::string_view kRule = "[[ratelimit.rule]]\nname = \"r\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\n";

// ---------------------------------------------------------------- empty strings

TEST(ConfChecks, EmptyDnsNameIsTheSameErrorAsAMissingOne) {
  EXPECT_ERROR_AT(onlyError("[cluster]\ndiscovery = \"dns\"\ndns_name = \"\"\n"), 3, 12, "`cluster.dns_name` is empty");
  EXPECT_ERROR_AT(onlyError("[cluster]\ndiscovery = \"dns\"\n"), 2, 13, "needs `cluster.dns_name`");
  EXPECT_ERROR_AT(onlyError("[cluster]\nenabled = true\nshared_secret = \"0123456789abcdef\"\ndiscovery = \"dns\"\n"
                            "dns_name = \"\"\n"),
                  5, 12, "`cluster.dns_name` is empty");
  good("[cluster]\ndiscovery = \"seeds\"\ndns_name = \"\"\n");
}

TEST(ConfChecks, EmptyPathsThatATableNeedsAreRefusedWhereTheyAre) {
  EXPECT_ERROR_AT(onlyError("[cluster.tls]\ncert = \"\"\nkey = \"/k\"\nca = \"/c\"\n"), 2, 8, "`cluster.tls.cert` is empty");
  EXPECT_ERROR_AT(onlyError("[log]\ntarget = \"file\"\nfile = \"\"\n"), 3, 8, "`log.file` is empty");
}

// Every string key of the schema set to "": either "" is documented as "none" / "keep"
// (the list below), or the file is refused at that line. A new string key must be
// added to one side deliberately.
TEST(ConfChecks, EveryEmptyStringIsRefusedUnlessItMeansNone) {
  const std::set<std::string> empty_means_none = {
      "milter.user",       "milter.group",  "milter.pid_file", "health.listen",   "health.admin_token",
      "log.file",          "cluster.advertise", "cluster.dns_name", "cluster.shared_secret", "cluster.region",
      "redis.username",    "redis.password", "redis.key_prefix", "events.exec",
      "policy.socket",  // off; milter.socket = "" is refused here as nothing would listen
      "metrics.statsd.prefix",  // names without a prefix
  };
  for (const auto& key : schemaKeys()) {
    if (key.type != ValueType::String) continue;
    const std::string path(key.path);
    const auto dot = path.rfind('.');
    const std::string table = path.substr(0, dot), name = path.substr(dot + 1);
    std::string text;
    int line = 2;
    if (table == "ratelimit.rule") {
      std::map<std::string, std::string> rule = {
          {"name", "\"r\""}, {"key", "\"global\""}, {"limit", "1"}, {"period", "\"1s\""}};
      rule[name] = "\"\"";
      text = "[[ratelimit.rule]]\n" + name + " = \"\"\n";
      for (const auto& [k, v] : rule) {
        if (k != name) text += k + " = " + v + "\n";
      }
    } else {
      text = "[" + table + "]\n" + name + " = \"\"\n";
      if (table == "cluster.tls") {
        for (const char* other : {"cert", "key", "ca"}) {
          if (name != other) text += std::string(other) + " = \"/x\"\n";
        }
      }
      if (table == "redis" && name != "url") text += "url = \"redis://127.0.0.1\"\n";  // [redis] needs a server
      text += kRule;
    }
    const auto r = load(text);
    if (empty_means_none.count(path)) {
      EXPECT_TRUE(r.ok()) << path << "\n" << dump(r);
    } else {
      ASSERT_FALSE(r.ok()) << path << " = \"\" is accepted; refuse it or list it as meaning none";
      EXPECT_EQ(r.errors.front().line, line) << path << "\n" << dump(r);
    }
  }
}

// ---------------------------------------------------------------- milter

TEST(ConfChecks, MilterTimeoutIsWholeSecondsFromOne) {
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"500ms\"\n"), 2, 11, "must be at least 1s, not 500ms");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"999ms\"\n"), 2, 11, "whole seconds");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"1500ms\"\n"), 2, 11, "must be whole seconds");
  EXPECT_EQ(good("[milter]\ntimeout = \"1s\"\n").milter.timeout, 1s);
  EXPECT_EQ(good("[milter]\ntimeout = \"1m30s\"\n").milter.timeout, 90s);
}

// A fake passwd/group database: users root and zetian, groups root and postfix; the
// name "nss-down" makes the lookup itself fail.
AccountLookup fakeAccounts(AccountKind kind, const std::string& name) {
  if (name == "nss-down") return {false, "Connection refused"};
  static const std::set<std::string> users = {"root", "zetian"}, groups = {"root", "postfix"};
  return {(kind == AccountKind::User ? users : groups).count(name) > 0, {}};
}

LoadResult loadWithAccounts(std::string_view text) { return loadString(text, "t.toml", LoadOptions{{}, fakeAccounts}); }

TEST(ConfChecks, MilterUserAndGroupMustExistOnThisMachine) {
  auto r = loadWithAccounts("[milter]\nuser = \"zetain\"\n");
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_ERROR_AT(r.errors[0], 2, 8, "no user \"zetain\" on this machine");
  r = loadWithAccounts("[milter]\nuser = \"zetian\"\ngroup = \"posfix\"\n");
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_ERROR_AT(r.errors[0], 3, 9, "no group \"posfix\" on this machine");
  r = loadWithAccounts("[milter]\nuser = \"nss-down\"\n");
  ASSERT_EQ(r.errors.size(), 1u) << dump(r);
  EXPECT_ERROR_AT(r.errors[0], 2, 8, "cannot look up the user \"nss-down\"");
  EXPECT_NE(r.errors[0].message.find("Connection refused"), std::string::npos);
  // A user that exists, "" (keep), and no lookup at all (the tests' default) pass.
  EXPECT_TRUE(loadWithAccounts("[milter]\nuser = \"zetian\"\ngroup = \"postfix\"\n").ok());
  EXPECT_TRUE(loadWithAccounts("[milter]\nuser = \"\"\ngroup = \"\"\n").ok());
  EXPECT_TRUE(load("[milter]\nuser = \"zetain\"\n").ok());
}

TEST(ConfChecks, UmaskMustLeaveTheOwnerReadAndWrite) {
  EXPECT_ERROR_AT(onlyError("[milter]\numask = \"0777\"\n"), 2, 9, "takes read or write away from the owner");
  EXPECT_ERROR_AT(onlyError("[milter]\numask = \"0277\"\n"), 2, 9, "owner");
  EXPECT_EQ(good("[milter]\numask = \"0077\"\n").milter.umask, 0077u);
}

// ---------------------------------------------------------------- health

TEST(ConfChecks, SocketModeMustLetTheOwnerReadAndWrite) {
  for (const char* mode : {"0000", "0400", "0200", "0066", "0577", "0077"}) {
    EXPECT_ERROR_AT(onlyError("[health]\nsocket_mode = \"" + std::string(mode) + "\"\n"), 2, 15,
                    "without read and write");
  }
  for (const char* mode : {"0600", "0660", "0700", "0620"}) {
    const auto r = load("[health]\nsocket_mode = \"" + std::string(mode) + "\"\n" + std::string(kRule));
    EXPECT_TRUE(r.ok()) << mode << dump(r);
    EXPECT_TRUE(r.warnings.empty()) << mode << warnings(r);
  }
}

TEST(ConfChecks, WorldWritableSocketModeIsAWarning) {
  const auto r = load("[health]\nsocket_mode = \"0666\"\n" + std::string(kRule));
  EXPECT_TRUE(r.ok()) << dump(r);
  ASSERT_EQ(r.warnings.size(), 1u) << warnings(r);
  EXPECT_ERROR_AT(r.warnings[0], 2, 15, "every local user");
  ASSERT_TRUE(r.config);
  EXPECT_EQ(r.config->health.socket_mode, 0666u);
}

TEST(ConfChecks, AdminTokenThatCanNeverMatchIsRefused) {
  EXPECT_ERROR_AT(onlyError("[health]\nadmin_token = \"abcdefghijklmnop\\r\\n\"\n"), 2, 15, "carriage return (CR) at character 17");
  EXPECT_ERROR_AT(onlyError("[health]\nadmin_token = \"abcdefghijklmnop\\n\"\n"), 2, 15, "line feed (LF)");
  EXPECT_ERROR_AT(onlyError("[health]\nadmin_token = \"abcdefgh\\tijklmnop\"\n"), 2, 15, "a tab");
  EXPECT_ERROR_AT(onlyError("[health]\nadmin_token = \"abcdefgh\\u0001ijklmnop\"\n"), 2, 15, "control character");
  EXPECT_ERROR_AT(onlyError("[health]\nadmin_token = \" abcdefghijklmnop\"\n"), 2, 15, "starts or ends with a space");
  EXPECT_ERROR_AT(onlyError("[health]\nadmin_token = \"abcdefghijklmnop \"\n"), 2, 15, "starts or ends with a space");
  EXPECT_EQ(good("[health]\nadmin_token = \"abcdefgh ijklmnop\"\n").health.admin_token, "abcdefgh ijklmnop");
  // The same rule for a token from a file (its trailing newlines are not part of it).
  TempDir dir;
  const auto file = dir.write("token", "abcdefgh\rijklmnop\n");
  EXPECT_ERROR_AT(onlyError("[health]\nadmin_token_file = \"" + file + "\"\n"), 2, 20, "carriage return");
  const auto message = onlyError("[health]\nadmin_token_file = \"" + file + "\"\n").message;
  EXPECT_EQ(message.find("abcdefgh"), std::string::npos) << "the token leaked: " << message;
}

// ---------------------------------------------------------------- timings

TEST(ConfChecks, ClusterTimingsHaveSaneBounds) {
  EXPECT_ERROR_AT(onlyError("[cluster]\nheartbeat_interval = \"1ms\"\n"), 2, 22, "from 100ms to 1m, not 1ms");
  EXPECT_ERROR_AT(onlyError("[cluster]\nheartbeat_interval = \"2m\"\n"), 2, 22, "from 100ms to 1m, not 2m");
  EXPECT_ERROR_AT(onlyError("[cluster]\nfailure_detection_timeout = \"500ms\"\n"), 2, 29, "at least 1s, not 500ms");
  EXPECT_ERROR_AT(onlyError("[cluster]\nheartbeat_interval = \"1s\"\nfailure_detection_timeout = \"1500ms\"\n"), 3, 29,
                  "at least twice `cluster.heartbeat_interval` (2s)");
  EXPECT_ERROR_AT(onlyError("[cluster]\njoin_timeout = \"10ms\"\n"), 2, 16, "at least 1s, not 10ms");
  EXPECT_ERROR_AT(onlyError("[redis]\ntimeout = \"1ms\"\nurl = \"redis://r\"\n"), 2, 11, "at least 10ms, not 1ms");
  const Config c = good("[cluster]\nheartbeat_interval = \"100ms\"\nfailure_detection_timeout = \"1s\"\njoin_timeout = \"1s\"\n"
                        "[redis]\nurl = \"redis://r\"\ntimeout = \"10ms\"\n");
  EXPECT_EQ(c.cluster.heartbeat_interval, 100ms);
  EXPECT_EQ(c.cluster.failure_detection_timeout, 1s);
  EXPECT_EQ(c.cluster.join_timeout, 1s);
  EXPECT_EQ(c.redis.timeout, 10ms);
}

TEST(ConfChecks, DurationsWithRepeatedOrUnorderedUnitsOrLeadingZerosAreRefused) {
  const std::string rule = "[[ratelimit.rule]]\nname = \"r\"\nkey = \"global\"\nlimit = 1\nperiod = ";
  EXPECT_ERROR_AT(onlyError(rule + "\"1h1h\"\n"), 5, 10, "twice");
  EXPECT_ERROR_AT(onlyError(rule + "\"30s1h\"\n"), 5, 10, "from the largest to the smallest");
  EXPECT_ERROR_AT(onlyError(rule + "\"01h\"\n"), 5, 10, "cannot start with 0");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"10s10s\"\n"), 2, 11, "twice");
}

// ---------------------------------------------------------------- warnings

TEST(ConfWarnings, NoRuleIsAWarningNotAnError) {
  auto r = load("[ratelimit]\nexempt = []\n");
  EXPECT_TRUE(r.ok()) << dump(r);
  ASSERT_EQ(r.warnings.size(), 1u) << warnings(r);
  EXPECT_ERROR_AT(r.warnings[0], 1, 1, "no [[ratelimit.rule]]");
  EXPECT_EQ(r.warnings[0].format().rfind("t.toml:1:1: there is no [[ratelimit.rule]]", 0), 0u) << warnings(r);

  r = load("");  // no [ratelimit] at all: about the file
  EXPECT_TRUE(r.ok());
  ASSERT_EQ(r.warnings.size(), 1u) << warnings(r);
  EXPECT_EQ(r.warnings[0].line, 0);
  EXPECT_EQ(r.warnings[0].format().rfind("t.toml: there is no [[ratelimit.rule]]", 0), 0u) << warnings(r);

  r = load("[node]\nid = \"a\"\n[ratelimit]\nrule = []\n");
  ASSERT_EQ(r.warnings.size(), 1u) << warnings(r);
  EXPECT_EQ(r.warnings[0].line, 4);
}

TEST(ConfWarnings, ARuleWithErrorsIsNotAMissingRule) {
  const auto r = load("[[ratelimit.rule]]\nname = \"r\"\nkey = \"global\"\nlimit = 0\nperiod = \"1s\"\n");
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.warnings.empty()) << warnings(r);
  EXPECT_TRUE(load(kRule).warnings.empty());
  EXPECT_TRUE(loadEmbeddedDefault().warnings.empty()) << warnings(loadEmbeddedDefault());
}

// ---------------------------------------------------------------- long lines

std::string cidrs(int n, std::string_view separator) {
  std::string out;
  for (int i = 0; i < n; ++i) {
    if (i > 0) out += separator;
    out += "\"10." + std::to_string((i >> 16) & 255) + "." + std::to_string((i >> 8) & 255) + "." +
           std::to_string(i & 255) + "/32\"";
  }
  return out;
}

TEST(ConfLongLines, ManyValuesOnOneLineLoadInLinearTime) {
  // Before, 20,000 CIDRs on one line took over a minute (toml11 spends the length of the
  // line on each value); now about as long as one per line. The bound is loose for a
  // loaded machine and far below the quadratic time.
  const std::string text = "[ratelimit]\nexempt = [" + cidrs(20000, ", ") + "]\n" + std::string(kRule);
  const auto start = std::chrono::steady_clock::now();
  const auto r = load(text);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.config->policy.exempt.size(), 20000u);
  EXPECT_LT(took, 10s);
}

TEST(ConfLongLines, ErrorsOnALongLineKeepTheirLineAndColumn) {
  std::string line = "exempt = [" + cidrs(3000, ", ") + ", \"10.1.2.3/8\", " + cidrs(10, ", ") + "]";
  const int column = static_cast<int>(line.find("\"10.1.2.3/8\"")) + 1;
  EXPECT_ERROR_AT(onlyError("[ratelimit]\n" + line + "\n"), 2, column, "did you mean 10.0.0.0/8?");
  // A syntax error after the point where the line was broken: a missing comma.
  line = "exempt = [" + cidrs(3000, ", ") + " \"10.9.9.9/32\"]";
  const auto e = onlyError("[ratelimit]\n" + line + "\n# after\n");
  EXPECT_EQ(e.line, 2) << e.format();
  EXPECT_GT(e.column, 3000 * 10) << e.format();
  EXPECT_NE(e.message.find("TOML syntax error"), std::string::npos) << e.format();
  // An unknown key in an inline table on a long line: the column of the key.
  line = "rule = [" + std::string(1100, ' ') + "{name = \"r\", key = \"global\", limit = 1, period = \"1s\"}, {nam = \"x\"}]";
  const auto r = load("[ratelimit]\n" + line + "\n");
  const auto unknown = std::find_if(r.errors.begin(), r.errors.end(),
                                    [](const ConfigError& e) { return e.message.find("`ratelimit.rule.nam`") != std::string::npos; });
  ASSERT_NE(unknown, r.errors.end()) << dump(r);
  EXPECT_ERROR_AT(*unknown, 2, static_cast<int>(line.find("nam =")) + 1, "did you mean `ratelimit.rule.name`?");
}

TEST(ConfLongLines, AShortLineIsParsedAsWritten) {
  // Only lines over 1 KiB are broken; a config of ordinary lines reaches toml11 as is, so
  // its syntax errors read exactly as before.
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nexempt = [\"127.0.0.0/8\" \"::1/128\"]\n"), 2, 25, "TOML syntax error");
}

TEST(ConfLongLines, ManyInlineTableEntriesOnALongLineAreRefused) {
  std::string table = "{";
  for (int i = 0; i < 200; ++i) table += (i ? ", k" : "k") + std::to_string(i) + " = \"" + std::string(10, 'v') + "\"";
  table += "}";
  const auto e = onlyError("[events]\nexec = \"\"\nx = " + table + "\n");
  EXPECT_EQ(e.line, 3) << e.format();
  EXPECT_NE(e.message.find("more than 64 commas inside { }"), std::string::npos) << e.format();
  EXPECT_NE(e.message.find("one key per line"), std::string::npos) << e.format();
  // Inline rules on one long line, each with few keys, are fine: the array is broken
  // between them.
  std::string rules = "rule = [";
  for (int i = 0; i < 100; ++i) {
    rules += (i ? ", " : "") + std::string("{name = \"r") + std::to_string(i) +
             "\", key = \"global\", limit = 1, period = \"1s\", action = \"tempfail\"}";
  }
  rules += "]";
  const auto r = load("[ratelimit]\n" + rules + "\n");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.config->policy.rules.size(), 100u);
}

}  // namespace
}  // namespace zetian::conf
