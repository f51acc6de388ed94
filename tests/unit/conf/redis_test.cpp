// [redis] and the store keys: the URL forms and each refusal with its text and place,
// Sentinel and Cluster mode and how they exclude each other, the login keys, and a
// rule's store with what it may not be combined with.
#include <gtest/gtest.h>

#include <string>

#include "conf/load.h"
#include "conf/syntax.h"
#include "load_support.h"

namespace zetian::conf {
namespace {

using namespace std::chrono_literals;

const std::string kRule = "[[ratelimit.rule]]\nname = \"r\"\nkey = \"client_ip\"\nlimit = 10\nperiod = \"1h\"\n";

// The endpoint of a file whose [redis] is `body` (and one rule, so no warning).
RedisSection redis(const std::string& body) { return good("[redis]\n" + body + kRule).redis; }

std::string urlError(std::string_view url) {
  std::string why;
  EXPECT_FALSE(parseRedisUrl(url, &why).has_value()) << url;
  return why;
}

// ---------------------------------------------------------------- the URL

TEST(RedisUrl, TcpTakesHostPortAndDatabaseWithDefaults) {
  auto r = redis("url = \"redis://10.0.0.5:6380/2\"\n");
  EXPECT_EQ(r.endpoint, (decltype(r.endpoint){RedisServer{{"10.0.0.5", 6380}}}));
  EXPECT_EQ(r.database, 2);
  EXPECT_TRUE(r.configured());
  r = redis("url = \"redis://redis.example.net\"\n");
  EXPECT_EQ(r.endpoint, (decltype(r.endpoint){RedisServer{{"redis.example.net", 6379}}}));
  EXPECT_EQ(r.database, 0);
  r = redis("url = \"redis://[::1]:6379/0\"\n");
  EXPECT_EQ(r.endpoint, (decltype(r.endpoint){RedisServer{{"::1", 6379}}}));
  r = redis("url = \"redis://[2001:db8::5]/15\"\n");
  EXPECT_EQ(r.endpoint, (decltype(r.endpoint){RedisServer{{"2001:db8::5", 6379}}}));
  EXPECT_EQ(r.database, 15);
  r = redis("url = \"redis://127.0.0.1:6379/\"\n");  // an empty path is database 0
  EXPECT_EQ(r.database, 0);
  EXPECT_EQ(redis("url = \"redis://r/2147483646\"\n").database, 2147483646);
}

TEST(RedisUrl, UnixSocketTakesAnAbsolutePathAndOptionallyADatabase) {
  auto r = redis("url = \"unix:/run/redis/redis-server.sock\"\n");
  EXPECT_EQ(r.endpoint, (decltype(r.endpoint){RedisUnixSocket{"/run/redis/redis-server.sock"}}));
  EXPECT_EQ(r.database, 0);
  r = redis("url = \"unix:/run/redis/redis-server.sock?db=4\"\n");
  EXPECT_EQ(r.endpoint, (decltype(r.endpoint){RedisUnixSocket{"/run/redis/redis-server.sock"}}));
  EXPECT_EQ(r.database, 4);
}

TEST(RedisUrl, RedissIsRefusedWithTheWayToReachARemoteRedisSafely) {
  const auto e = onlyError("[redis]\nurl = \"rediss://redis.example.net:6380/0\"\n");
  EXPECT_ERROR_AT(e, 2, 7, "`redis.url`: rediss:// (Redis over TLS) is not supported: Debian 12's hiredis 0.14 has no TLS");
  EXPECT_NE(e.message.find("stunnel or spiped"), std::string::npos) << e.format();
  EXPECT_NE(e.message.find("private network"), std::string::npos) << e.format();
}

TEST(RedisStore, ARuleOutsideTheScriptsDomainIsRefused) {
  // 100 tokens refilled at 1 per 3650 days: an empty bucket takes 365,000 days to fill,
  // beyond what the scripts count exactly (2^40 ms).
  const auto e = onlyError(
      "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\n"
      "[[ratelimit.rule]]\nname = \"r\"\nkey = \"client_ip\"\nlimit = 1\nperiod = \"3650d\"\nburst = 100\n"
      "store = \"redis\"\n");
  EXPECT_ERROR_AT(e, 9, 9, "`ratelimit.rule.store`: this rule cannot be kept in Redis: burst * period / limit");
  EXPECT_NE(e.message.find("lower burst or period, or raise limit"), std::string::npos) << e.format();
}

TEST(RedisUrl, OtherSchemesAndBareAddressesAreRefused) {
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"http://10.0.0.5:6379\"\n"), 2, 7,
                  "`redis.url`: unknown scheme \"http://\"; write redis://HOST:PORT/DB or unix:/path");
  EXPECT_NE(urlError("redis-sentinel://10.0.0.5:26379").find("list the Sentinels in `redis.sentinels`"), std::string::npos);
  // The old `address` form gets the URL it meant.
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"127.0.0.1:6379\"\n"), 2, 7,
                  "\"127.0.0.1:6379\" is not a URL; did you mean \"redis://127.0.0.1:6379\"?");
  EXPECT_EQ(urlError("not a url"), "\"not a url\" is not a Redis URL; write redis://HOST:PORT/DB or unix:/path");
}

TEST(RedisUrl, HostPortAndDatabaseMustBeValid) {
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://:6379/0\"\n"), 2, 7, "needs a host before the port");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis:///0\"\n"), 2, 7,
                  "`redis.url` needs a host: redis://HOST:PORT/DB, e.g. \"redis://127.0.0.1:6379/0\"");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r:0/0\"\n"), 2, 7, "the port in \"r:0\" must be a number from 1 to 65535");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r:65536\"\n"), 2, 7, "from 1 to 65535");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r:port/0\"\n"), 2, 7, "from 1 to 65535");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://::1:6379/0\"\n"), 2, 7, "put an IPv6 address in brackets");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://bad_host!/0\"\n"), 2, 7, "neither an IP address nor a host name");
  for (const char* db : {"2147483647", "99999999999", "-1", "x", "02", "1/2"}) {
    EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r/" + std::string(db) + "\"\n"), 2, 7,
                    "the database in \"redis://r/" + std::string(db) + "\" must be a number from 0 to 2147483646, not \"" +
                        db + "\"");
  }
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"unix:/tmp/r.sock?db=-1\"\n"), 2, 7, "from 0 to 2147483646, not \"-1\"");
  EXPECT_NE(urlError("redis://r:6379?db=2").find("takes no query or fragment: write the database as its path"),
            std::string::npos);
  EXPECT_NE(urlError("redis://r:6379/2#x").find("takes no query or fragment"), std::string::npos);
}

TEST(RedisUrl, UnixPathsAreAbsoluteWithOneSlashAndOnlyDbAsParameter) {
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"unix://run/redis.sock\"\n"), 2, 7, "one slash after unix:");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"unix:redis.sock\"\n"), 2, 7, "the path after unix: must be absolute");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"unix:\"\n"), 2, 7, "must be absolute");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"unix:/run/r.sock?database=2\"\n"), 2, 7, "takes only db=N");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"unix:/" + std::string(120, 'a') + "\"\n"), 2, 7, "at most 107");
}

TEST(RedisUrl, AUserOrPasswordInTheUrlIsRefusedWithoutQuotingIt) {
  for (const char* url : {"redis://:hunter2@r:6379/0", "redis://zetian:hunter2@r/0", "rediss://:hunter2@r",
                          "http://u:hunter2@r", "u:hunter2@r:6379", "redis://r/hunter2@x"}) {
    const auto e = onlyError("[redis]\nurl = \"" + std::string(url) + "\"\n");
    EXPECT_ERROR_AT(e, 2, 7, "a user or password does not belong in the URL");
    EXPECT_NE(e.message.find("`redis.password_file`"), std::string::npos) << e.format();
    EXPECT_EQ(e.format().find("hunter2"), std::string::npos) << e.format();
  }
}

TEST(RedisUrl, EmptyUrlIsAnErrorAtItsPlace) {
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"\"\n"), 2, 7, "`redis.url` is empty");
}

// ---------------------------------------------------------------- the section

TEST(RedisSection, AbsentMeansNotConfigured) {
  const Config c = good(kRule);
  EXPECT_FALSE(c.redis.configured());
  EXPECT_EQ(c.redis.key_prefix, "zetian:");
  EXPECT_EQ(c.redis.timeout, 250ms);
  EXPECT_EQ(c.redis.database, 0);
  EXPECT_TRUE(c.redis.username.empty());
  EXPECT_TRUE(c.redis.password.empty());
}

TEST(RedisSection, MustSayWhereRedisIs) {
  const std::string message = "[redis] does not say where Redis is: give `redis.url`";
  EXPECT_ERROR_AT(onlyError("[redis]\n"), 1, 1, message);
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"5s\"\n[redis]\ntimeout = \"1s\"\n"), 3, 1, message);
  EXPECT_ERROR_AT(onlyError("[redis]\nsentinels = []\ncluster = []\n"), 1, 1, message);  // [] is none
}

TEST(RedisSection, TheOldKeysSayWhatReplacedThem) {
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r\"\nenabled = true\n"), 3, 1,
                  "unknown key `redis.enabled`: Redis is used by the rules whose store is \"redis\"");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r\"\naddress = \"r:6379\"\n"), 3, 1,
                  "unknown key `redis.address`: it is now `redis.url`");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r\"\ndatabase = 3\n"), 3, 1,
                  "unknown key `redis.database`: the database is now part of `redis.url`");
}

TEST(RedisSection, UsernameNeedsAPasswordAndNoSpaces) {
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r\"\nusername = \"zetian\"\n"), 3, 12,
                  "`redis.username` needs a password: an ACL user logs in with both");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r\"\nusername = \"zetian\"\npassword = \"\"\n"), 3, 12,
                  "needs a password");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r\"\nusername = \"zet ian\"\npassword = \"pw\"\n"), 3, 12,
                  "cannot contain spaces or control characters");
  auto r = redis("url = \"redis://r\"\nusername = \"zetian\"\npassword = \"pw\"\n");
  EXPECT_EQ(r.username, "zetian");
  EXPECT_EQ(r.password, "pw");
  TempDir dir;
  const auto file = dir.write("pw", "from-a-file\n");
  r = redis("url = \"redis://r\"\nusername = \"zetian\"\npassword_file = \"" + file + "\"\n");
  EXPECT_EQ(r.username, "zetian");
  EXPECT_EQ(r.password, "from-a-file");
  EXPECT_TRUE(redis("url = \"redis://r\"\nusername = \"\"\n").username.empty());  // "" is none
}

TEST(RedisSection, PasswordInlineOrFromAFileNotBoth) {
  TempDir dir;
  const auto file = dir.write("pw", "secret-in-file\n");
  const auto e = onlyError("[redis]\nurl = \"redis://r\"\npassword = \"hunter2\"\npassword_file = \"" + file + "\"\n");
  EXPECT_ERROR_AT(e, 4, 17, "give either `redis.password` or `redis.password_file`, not both");
  EXPECT_EQ(e.format().find("hunter2"), std::string::npos);
}

TEST(RedisSection, TimeoutIsAtLeastTenMillisecondsAndBelowTheMilterTimeout) {
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r\"\ntimeout = \"9ms\"\n"), 3, 11,
                  "`redis.timeout` must be at least 10ms, not 9ms");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"2s\"\n[redis]\nurl = \"redis://r\"\ntimeout = \"2s\"\n"), 5, 11,
                  "`redis.timeout` (2s) must be below `milter.timeout` (2s)");
  EXPECT_EQ(redis("url = \"redis://r\"\ntimeout = \"9s\"\n").timeout, 9s);
}

TEST(RedisSection, KeyPrefixHasNoSpacesAndNoHashTagInClusterMode) {
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r\"\nkey_prefix = \"a b\"\n"), 3, 14,
                  "`redis.key_prefix` cannot contain spaces or control characters");
  EXPECT_EQ(redis("url = \"redis://r\"\nkey_prefix = \"{mx}:\"\n").key_prefix, "{mx}:");
  EXPECT_ERROR_AT(onlyError("[redis]\ncluster = [\"10.0.0.5:6379\"]\nkey_prefix = \"{mx}:\"\n"), 3, 14,
                  "cannot contain '{' or '}' with `redis.cluster`");
  EXPECT_TRUE(redis("url = \"redis://r\"\nkey_prefix = \"\"\n").key_prefix.empty());
}

// ---------------------------------------------------------------- Sentinel

TEST(RedisSentinel, SentinelsWithAMasterNameAndTheDatabaseFromAHostlessUrl) {
  auto r = redis("sentinels = [\"10.0.0.5:26379\", \"[2001:db8::6]:26379\", \"s3.example.net:26379\"]\nmaster_name = \"mymaster\"\n");
  EXPECT_EQ(r.endpoint, (decltype(r.endpoint){RedisSentinels{
                            {{"10.0.0.5", 26379}, {"2001:db8::6", 26379}, {"s3.example.net", 26379}}, "mymaster"}}));
  EXPECT_EQ(r.database, 0);
  r = redis("url = \"redis:///2\"\nsentinels = [\"10.0.0.5:26379\"]\nmaster_name = \"mx-pool.1\"\n");
  EXPECT_EQ(r.endpoint, (decltype(r.endpoint){RedisSentinels{{{"10.0.0.5", 26379}}, "mx-pool.1"}}));
  EXPECT_EQ(r.database, 2);
}

TEST(RedisSentinel, SentinelsAndMasterNameGoTogether) {
  EXPECT_ERROR_AT(onlyError("[redis]\nsentinels = [\"10.0.0.5:26379\"]\n"), 2, 13,
                  "`redis.sentinels` needs `redis.master_name`, the name the Sentinels monitor");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r\"\nmaster_name = \"mymaster\"\n"), 3, 15,
                  "`redis.master_name` is only used with `redis.sentinels`");
  EXPECT_ERROR_AT(onlyError("[redis]\nmaster_name = \"mymaster\"\n"), 2, 15, "only used with `redis.sentinels`");
  EXPECT_ERROR_AT(onlyError("[redis]\nsentinels = [\"10.0.0.5:26379\"]\nmaster_name = \"\"\n"), 3, 15,
                  "`redis.master_name` is empty");
  EXPECT_ERROR_AT(onlyError("[redis]\nsentinels = [\"10.0.0.5:26379\"]\nmaster_name = \"my master\"\n"), 3, 15,
                  "`redis.master_name` must be characters from A-Z a-z 0-9 _ . -");
}

TEST(RedisSentinel, TheUrlMayOnlyGiveTheDatabase) {
  const std::string sentinels = "sentinels = [\"10.0.0.5:26379\"]\nmaster_name = \"m\"\n";
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://10.0.0.9:6379/2\"\n" + sentinels), 2, 7,
                  "with `redis.sentinels` the Sentinels name the master: `redis.url` may only give the database, as "
                  "\"redis:///2\"");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"unix:/run/r.sock\"\n" + sentinels), 2, 7, "may only give the database");
}

TEST(RedisSentinel, EntriesAreCheckedAsClusterSeedsAre) {
  EXPECT_ERROR_AT(onlyError("[redis]\nsentinels = [\"10.0.0.5:26379\", \"10.0.0.6\"]\nmaster_name = \"m\"\n"), 2, 32,
                  "`redis.sentinels`: \"10.0.0.6\" needs a port");
  EXPECT_ERROR_AT(onlyError("[redis]\nsentinels = [\"10.0.0.5:26379\", \"10.0.0.5:26379\"]\nmaster_name = \"m\"\n"), 2,
                  32, "`redis.sentinels` lists \"10.0.0.5:26379\" twice");
  EXPECT_ERROR_AT(onlyError("[redis]\nsentinels = [\"10.0.0.5:26379\", 5]\nmaster_name = \"m\"\n"), 2, 32,
                  "must contain strings only");
}

// ---------------------------------------------------------------- Cluster

TEST(RedisClusterMode, NodesWithDatabaseZero) {
  auto r = redis("cluster = [\"10.0.0.5:6379\", \"10.0.0.6:6379\"]\n");
  EXPECT_EQ(r.endpoint, (decltype(r.endpoint){RedisCluster{{{"10.0.0.5", 6379}, {"10.0.0.6", 6379}}}}));
  EXPECT_EQ(r.database, 0);
  EXPECT_EQ(redis("url = \"redis:///0\"\ncluster = [\"10.0.0.5:6379\"]\n").database, 0);
}

TEST(RedisClusterMode, ExcludesSentinelsAHostAndAnotherDatabase) {
  EXPECT_ERROR_AT(onlyError("[redis]\nsentinels = [\"10.0.0.5:26379\"]\nmaster_name = \"m\"\ncluster = [\"10.0.0.5:6379\"]\n"),
                  4, 11, "give either `redis.sentinels` (a master followed through its Sentinels) or `redis.cluster`");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis:///3\"\ncluster = [\"10.0.0.5:6379\"]\n"), 2, 7,
                  "a Redis Cluster has only database 0, not 3");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://10.0.0.5\"\ncluster = [\"10.0.0.5:6379\"]\n"), 2, 7,
                  "with `redis.cluster` the nodes are the listed ones and those they name: leave `redis.url` out");
  EXPECT_ERROR_AT(onlyError("[redis]\ncluster = [\"10.0.0.5:6379\", \"10.0.0.5:6379\"]\n"), 2, 29,
                  "`redis.cluster` lists \"10.0.0.5:6379\" twice");
  EXPECT_ERROR_AT(onlyError("[redis]\ncluster = [\"10.0.0.5:0\"]\n"), 2, 12, "`redis.cluster`: the port in");
}

// ---------------------------------------------------------------- store

const std::string kRedis = "[redis]\nurl = \"redis://127.0.0.1\"\n";

TEST(Store, LocalByDefaultAndPerRule) {
  Config c = good(kRule);
  EXPECT_EQ(c.policy.store, Store::Local);
  EXPECT_EQ(c.policy.rules.at(0).store, Store::Local);
  c = good(kRedis + kRule + "store = \"redis\"\n" + "[[ratelimit.rule]]\nname = \"r2\"\nkey = \"sender\"\nlimit = 1\nperiod = \"1s\"\n");
  ASSERT_EQ(c.policy.rules.size(), 2u);
  EXPECT_EQ(c.policy.rules[0].store, Store::Redis);
  EXPECT_EQ(c.policy.rules[1].store, Store::Local);
  EXPECT_EQ(storeName(Store::Redis), "redis");
  EXPECT_EQ(storeName(Store::Local), "local");
}

TEST(Store, TheRatelimitDefaultAppliesToRulesThatNameNone) {
  const Config c = good(kRedis + "[ratelimit]\nstore = \"redis\"\n" + kRule +
                        "[[ratelimit.rule]]\nname = \"node\"\nkey = \"helo\"\nlimit = 1\nperiod = \"1s\"\nstore = "
                        "\"local\"\nscope = \"node\"\n");
  EXPECT_EQ(c.policy.store, Store::Redis);
  ASSERT_EQ(c.policy.rules.size(), 2u);
  EXPECT_EQ(c.policy.rules[0].store, Store::Redis);
  EXPECT_EQ(c.policy.rules[1].store, Store::Local);
  EXPECT_EQ(c.policy.rules[1].scope, Scope::Node);
}

TEST(Store, RedisNeedsARedisSection) {
  EXPECT_ERROR_AT(onlyError(kRule + "store = \"redis\"\n"), 6, 9,
                  "store \"redis\" needs a [redis] section that says where Redis is");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nstore = \"redis\"\n" + kRule), 2, 9,
                  "`ratelimit.store` = \"redis\" needs a [redis] section");
  // A broken [redis] is reported once, by its own error.
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis://r:0\"\n" + kRule + "store = \"redis\"\n"), 2, 7, "the port in");
}

TEST(Store, NamesAreCheckedWithASuggestion) {
  EXPECT_ERROR_AT(onlyError(kRule + "store = \"Redis\"\n"), 6, 9,
                  "`ratelimit.rule.store` must be one of local, redis, not \"Redis\"; did you mean `redis`?");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nstore = \"cluster\"\n" + kRule), 2, 9,
                  "`ratelimit.store` must be one of local, redis");
}

TEST(Store, ScopeAndConsistencyAreRefusedOnARedisRule) {
  EXPECT_ERROR_AT(onlyError(kRedis + kRule + "store = \"redis\"\nscope = \"node\"\n"), 9, 9,
                  "`ratelimit.rule.scope` does not apply with store \"redis\": every node that uses this Redis shares "
                  "the rule's count; remove `scope`");
  EXPECT_ERROR_AT(onlyError(kRedis + kRule + "store = \"redis\"\nscope = \"cluster\"\n"), 9, 9, "remove `scope`");
  EXPECT_ERROR_AT(onlyError(kRedis + kRule + "store = \"redis\"\nconsistency = \"fast\"\n"), 9, 15,
                  "`ratelimit.rule.consistency` does not apply with store \"redis\"");
  EXPECT_ERROR_AT(onlyError(kRedis + kRule + "store = \"redis\"\nconsistency = \"exact\"\n"), 9, 15,
                  "remove `consistency`");
  // A bad scope on a Redis rule is one error, about its value.
  EXPECT_ERROR_AT(onlyError(kRedis + kRule + "store = \"redis\"\nscope = \"nod\"\n"), 9, 9, "did you mean `node`?");
}

TEST(Store, AnInheritedRedisStoreSaysWhereItCameFrom) {
  const std::string head = kRedis + "[ratelimit]\nstore = \"redis\"\n" + kRule;
  EXPECT_ERROR_AT(onlyError(head + "scope = \"region\"\n"), 10, 9,
                  "`ratelimit.rule.scope` does not apply with store \"redis\" (from `ratelimit.store`)");
  EXPECT_NE(onlyError(head + "scope = \"region\"\n").message.find("or set store = \"local\" on this rule"), std::string::npos);
  EXPECT_ERROR_AT(onlyError(head + "consistency = \"fast\"\n"), 10, 15,
                  "`ratelimit.rule.consistency` does not apply with store \"redis\" (from `ratelimit.store`)");
  const auto r = load(head + "scope = \"node\"\nconsistency = \"fast\"\n");
  EXPECT_EQ(r.errors.size(), 2u) << dump(r);
}

TEST(Store, OverridesSetTheStoreAndTheUrl) {
  const Config c = good(kRule, {{"redis.url", "redis://10.0.0.5:6379/1"}, {"ratelimit.store", "redis"}});
  EXPECT_EQ(c.redis.endpoint, (decltype(c.redis.endpoint){RedisServer{{"10.0.0.5", 6379}}}));
  EXPECT_EQ(c.redis.database, 1);
  EXPECT_EQ(c.policy.rules.at(0).store, Store::Redis);
}

}  // namespace
}  // namespace zetian::conf
