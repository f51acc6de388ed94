// Loading whole files: good files give the Config they say, bad files give every error
// with the place it was found.
#include <gtest/gtest.h>

#include "conf/load.h"
#include "load_support.h"

namespace zetian::conf {
namespace {

using namespace std::chrono_literals;

// ---------------------------------------------------------------- good files

TEST(LoadGood, EmptyFileGivesTheDefaults) {
  const Config c = good("");
  EXPECT_EQ(c.source, "t.toml");
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  EXPECT_EQ(c.node.id, host);
  EXPECT_EQ(c.node.state_dir, "/var/lib/zetian");
  EXPECT_EQ(c.milter.socket, "inet:8891@127.0.0.1");
  EXPECT_EQ(c.milter.timeout, 10s);
  EXPECT_EQ(c.milter.default_action, DefaultAction::Accept);
  EXPECT_FALSE(c.milter.umask.has_value());
  EXPECT_EQ(c.health.socket, "/run/zetian/health.sock");
  EXPECT_EQ(c.health.socket_mode, 0660u);
  EXPECT_EQ(c.log.level, LogLevel::Info);
  EXPECT_EQ(c.log.target, LogTarget::Syslog);
  ASSERT_EQ(c.policy.exempt.size(), 2u);
  EXPECT_EQ(c.policy.exempt[0].toString(), "127.0.0.0/8");
  EXPECT_EQ(c.policy.exempt[1].toString(), "::1/128");
  EXPECT_FALSE(c.policy.exempt_authenticated);
  EXPECT_EQ(c.policy.max_keys, 1'000'000u);
  EXPECT_TRUE(c.policy.rules.empty());
  EXPECT_FALSE(c.cluster.enabled);
  EXPECT_EQ(c.cluster.advertise, "0.0.0.0:7946");  // defaults to bind
  EXPECT_FALSE(c.cluster.tls.has_value());
  EXPECT_FALSE(c.redis.configured());
  EXPECT_EQ(c.redis.timeout, 250ms);
  EXPECT_EQ(c.policy.store, Store::Local);
}

TEST(LoadGood, EveryKeySetIsRead) {
  TempDir dir;
  const std::string secret_file = dir.write("cluster.secret", "0123456789abcdef0123456789abcdef\n");
  const std::string text = R"(
[node]
id = "mx1.example"
state_dir = "/srv/zetian"

[milter]
socket = "unix:/var/spool/postfix/zetian/milter.sock"
timeout = "2s"
default_action = "tempfail"
user = "zetian"
group = "postfix"
umask = "0007"
pid_file = "/run/zetian/zetian.pid"

[health]
socket = "/tmp/zetian-health.sock"
socket_mode = "0600"
listen = "[::1]:9187"
admin_token = "a-long-admin-token-for-tcp"

[log]
level = "debug"
target = "file"
file = "/var/log/zetian.log"

[ratelimit]
exempt = ["192.0.2.0/24", "2001:db8::/32"]
exempt_authenticated = true
max_keys = 5000
fail_mode = "open"

[[ratelimit.rule]]
name = "per-net"
key = "client_net"
prefix_v4 = 16
prefix_v6 = 48
stage = "connect"
limit = 30
period = "1m"
burst = 60
algorithm = "gcra"
scope = "node"
action = "reject"
reply = "550 5.7.1 %{rule}: over %{limit} per %{period}"
consistency = "fast"

[[ratelimit.rule]]
name = "bounces"
key = "rcpt_domain"
limit = 5
period = "1h30m"
algorithm = "sliding_window"
scope = "region"
action = "tag"
senders = "null"

[cluster]
enabled = true
bind = "10.0.0.1:7946"
advertise = "mx1.example.net:7946"
discovery = "dns"
seeds = ["mx2.example.net:7946", "[2001:db8::3]:7946"]
dns_name = "_zetian._tcp.example.net"
multicast_group = "[ff02::1:7]:7946"
shared_secret_file = ")" + secret_file + R"("
heartbeat_interval = "500ms"
failure_threshold = 4
success_threshold = 3
failure_detection_timeout = "5s"
join_timeout = "1m"
region = "eu-west"
replication_factor = 3
replication_interval = "100ms"
sync_interval = "500ms"
check_timeout = "150ms"

[cluster.tls]
cert = "/etc/zetian/node.crt"
key = "/etc/zetian/node.key"
ca = "/etc/zetian/ca.crt"

[affinity]
method = "source_ip"

[redis]
url = "unix:/run/redis/redis.sock?db=3"
username = "zetian"
password = "redis-password"
key_prefix = "zt:"
timeout = "1s"

[events]
exec = "/usr/local/bin/zetian-hook"
)";
  const Config c = good(text);
  EXPECT_EQ(c.node.id, "mx1.example");
  EXPECT_EQ(c.node.state_dir, "/srv/zetian");
  EXPECT_EQ(c.milter.socket, "unix:/var/spool/postfix/zetian/milter.sock");
  EXPECT_EQ(c.milter.timeout, 2s);
  EXPECT_EQ(c.milter.default_action, DefaultAction::Tempfail);
  EXPECT_EQ(c.milter.user, "zetian");
  EXPECT_EQ(c.milter.group, "postfix");
  EXPECT_EQ(c.milter.umask, 07u);
  EXPECT_EQ(c.milter.pid_file, "/run/zetian/zetian.pid");
  EXPECT_EQ(c.health.socket, "/tmp/zetian-health.sock");
  EXPECT_EQ(c.health.socket_mode, 0600u);
  EXPECT_EQ(c.health.listen, "[::1]:9187");
  EXPECT_EQ(c.health.admin_token, "a-long-admin-token-for-tcp");
  EXPECT_EQ(c.log.level, LogLevel::Debug);
  EXPECT_EQ(c.log.target, LogTarget::File);
  EXPECT_EQ(c.log.file, "/var/log/zetian.log");
  ASSERT_EQ(c.policy.exempt.size(), 2u);
  EXPECT_EQ(c.policy.exempt[1].toString(), "2001:db8::/32");
  EXPECT_TRUE(c.policy.exempt_authenticated);
  EXPECT_EQ(c.policy.max_keys, 5000u);
  EXPECT_EQ(c.policy.fail_mode, FailMode::Open);
  EXPECT_EQ(c.policy.affinity, AffinityMethod::SourceIp);
  ASSERT_EQ(c.policy.rules.size(), 2u);
  const Rule& net = c.policy.rules[0];
  EXPECT_EQ(net.name, "per-net");
  EXPECT_EQ(net.key, KeyKind::ClientNet);
  EXPECT_EQ(net.prefix_v4, 16);
  EXPECT_EQ(net.prefix_v6, 48);
  EXPECT_EQ(net.stage, Stage::Connect);
  EXPECT_EQ(net.limit, 30u);
  EXPECT_EQ(net.period, 1min);
  EXPECT_EQ(net.burst, 60u);
  EXPECT_EQ(net.algorithm, state::Algorithm::Gcra);
  EXPECT_EQ(net.scope, Scope::Node);
  EXPECT_EQ(net.action, Action::Reject);
  EXPECT_EQ(net.reply, "550 5.7.1 %{rule}: over %{limit} per %{period}");  // kept as written
  EXPECT_EQ(net.senders, SenderFilter::Any);
  EXPECT_EQ(net.consistency, Consistency::Fast);
  const Rule& bounces = c.policy.rules[1];
  EXPECT_EQ(bounces.stage, Stage::Rcpt);  // the default for recipient keys
  EXPECT_EQ(bounces.burst, 5u);          // the default: limit
  EXPECT_EQ(bounces.period, 90min);
  EXPECT_EQ(bounces.algorithm, state::Algorithm::SlidingWindow);
  EXPECT_EQ(bounces.scope, Scope::Region);
  EXPECT_EQ(bounces.action, Action::Tag);
  EXPECT_EQ(bounces.senders, SenderFilter::Null);
  EXPECT_EQ(bounces.consistency, Consistency::Exact);
  EXPECT_FALSE(bounces.reply.has_value());
  EXPECT_TRUE(c.cluster.enabled);
  EXPECT_EQ(c.cluster.bind, "10.0.0.1:7946");
  EXPECT_EQ(c.cluster.advertise, "mx1.example.net:7946");
  EXPECT_EQ(c.cluster.discovery, Discovery::Dns);
  EXPECT_EQ(c.cluster.seeds, (std::vector<std::string>{"mx2.example.net:7946", "[2001:db8::3]:7946"}));
  EXPECT_EQ(c.cluster.dns_name, "_zetian._tcp.example.net");
  EXPECT_EQ(c.cluster.multicast_group, "[ff02::1:7]:7946");
  EXPECT_EQ(c.cluster.shared_secret, "0123456789abcdef0123456789abcdef");  // newline stripped
  EXPECT_EQ(c.cluster.heartbeat_interval, 500ms);
  EXPECT_EQ(c.cluster.failure_threshold, 4);
  EXPECT_EQ(c.cluster.success_threshold, 3);
  EXPECT_EQ(c.cluster.failure_detection_timeout, 5s);
  EXPECT_EQ(c.cluster.join_timeout, 1min);
  EXPECT_EQ(c.cluster.region, "eu-west");
  EXPECT_EQ(c.cluster.replication_factor, 3);
  EXPECT_EQ(c.cluster.replication_interval, 100ms);
  EXPECT_EQ(c.cluster.sync_interval, 500ms);
  EXPECT_EQ(c.cluster.check_timeout, 150ms);
  ASSERT_TRUE(c.cluster.tls.has_value());
  EXPECT_EQ(c.cluster.tls->cert, "/etc/zetian/node.crt");
  EXPECT_EQ(c.cluster.tls->key, "/etc/zetian/node.key");
  EXPECT_EQ(c.cluster.tls->ca, "/etc/zetian/ca.crt");
  EXPECT_EQ(c.redis.endpoint, (decltype(c.redis.endpoint){RedisUnixSocket{"/run/redis/redis.sock"}}));
  EXPECT_EQ(c.redis.username, "zetian");
  EXPECT_EQ(c.redis.password, "redis-password");
  EXPECT_EQ(c.redis.database, 3);
  EXPECT_EQ(c.redis.key_prefix, "zt:");
  EXPECT_EQ(c.redis.timeout, 1s);
  EXPECT_EQ(c.events.exec, "/usr/local/bin/zetian-hook");
}

TEST(LoadGood, RuleDefaults) {
  const Config c = good(R"(
[[ratelimit.rule]]
name = "per-sender"
key = "sender"
limit = 7
period = "1d"

[[ratelimit.rule]]
name = "per_rcpt.v2"
key = "rcpt"
limit = 1
period = "250ms"
)");
  ASSERT_EQ(c.policy.rules.size(), 2u);
  const Rule& r = c.policy.rules[0];
  EXPECT_EQ(r.stage, Stage::Mail);
  EXPECT_EQ(r.burst, 7u);
  EXPECT_EQ(r.algorithm, state::Algorithm::TokenBucket);
  EXPECT_EQ(r.scope, Scope::Cluster);
  EXPECT_EQ(r.action, Action::Tempfail);
  EXPECT_EQ(r.senders, SenderFilter::Any);
  EXPECT_EQ(r.period, 24h);
  EXPECT_EQ(c.policy.rules[1].stage, Stage::Rcpt);
  EXPECT_EQ(c.policy.rules[1].period, 250ms);
}

TEST(LoadGood, RulesKeepFileOrder) {
  std::string text;
  for (int i = 0; i < 20; ++i) {
    text += "[[ratelimit.rule]]\nname = \"r" + std::to_string(i) + "\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\n";
  }
  const Config c = good(text);
  ASSERT_EQ(c.policy.rules.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(c.policy.rules[i].name, "r" + std::to_string(i));
}

TEST(LoadGood, EmptyExemptListMeansNoExemptions) {
  EXPECT_TRUE(good("[ratelimit]\nexempt = []\n").policy.exempt.empty());
}

TEST(LoadGood, InlineTablesAndDottedKeysAreTheSameDocument) {
  const Config c = good("milter.timeout = \"3s\"\nhealth = { socket_mode = \"0640\" }\n");
  EXPECT_EQ(c.milter.timeout, 3s);
  EXPECT_EQ(c.health.socket_mode, 0640u);
}

TEST(LoadGood, EmbeddedDefault) {
  const auto r = loadEmbeddedDefault();
  ASSERT_TRUE(r.ok()) << dump(r);
  const Config& c = *r.config;
  EXPECT_EQ(c.source, "<embedded default>");
  EXPECT_EQ(c.milter.socket, "inet:8891@127.0.0.1");
  EXPECT_EQ(c.health.socket, "/run/zetian/health.sock");
  EXPECT_EQ(c.node.state_dir, "/var/lib/zetian");
  EXPECT_EQ(c.log.target, LogTarget::Syslog);
  ASSERT_EQ(c.policy.exempt.size(), 2u);
  ASSERT_EQ(c.policy.rules.size(), 1u);
  const Rule& rule = c.policy.rules[0];
  EXPECT_EQ(rule.name, "per-client-ip");
  EXPECT_EQ(rule.key, KeyKind::ClientIp);
  EXPECT_EQ(rule.stage, Stage::Mail);
  EXPECT_EQ(rule.limit, 100u);
  EXPECT_EQ(rule.period, 1h);
  EXPECT_EQ(rule.action, Action::Tempfail);
  EXPECT_FALSE(embeddedDefaultText().empty());
}

TEST(LoadGood, ContribExampleLoadsWithoutErrors) {
  const auto r = loadFile(std::string(ZETIAN_SOURCE_DIR) + "/contrib/zetian.toml");
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_FALSE(r.config->policy.rules.empty());
}

TEST(LoadGood, LoadFileReadsTheFile) {
  TempDir dir;
  const auto path = dir.write("z.toml", "[log]\nlevel = \"warn\"\n");
  const auto r = loadFile(path);
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.config->source, path);
  EXPECT_EQ(r.config->log.level, LogLevel::Warn);
}

// ---------------------------------------------------------------- error kinds

TEST(LoadErrors, UnknownKeySuggestsTheCloseOne) {
  EXPECT_ERROR_AT(onlyError("[milter]\n  tiemout = \"10s\"\n"), 2, 3, "did you mean `milter.timeout`?");
  EXPECT_ERROR_AT(onlyError("[clustr]\nenabled = false\n"), 1, 2, "did you mean `cluster`?");
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\nburts = 3\n"),
                  6, 1, "did you mean `ratelimit.rule.burst`?");
  EXPECT_ERROR_AT(onlyError("[log]\nlevel = \"info\"\nLevel = \"debug\"\n"), 3, 1, "did you mean `log.level`?");
}

TEST(LoadErrors, UnknownKeySaysWhereItBelongs) {
  EXPECT_ERROR_AT(onlyError("[milter]\nlisten = \"127.0.0.1:9187\"\n"), 2, 1, "`listen` belongs in [health]");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nperiod = \"1h\"\n"), 2, 1, "`period` belongs in [[ratelimit.rule]]");
}

TEST(LoadErrors, UnknownKeyWithNothingCloseListsTheKnownOnes) {
  const auto e = onlyError("[events]\nwhatever = 1\n");
  EXPECT_ERROR_AT(e, 2, 1, "unknown key `events.whatever`");
  EXPECT_NE(e.message.find("exec"), std::string::npos) << e.message;
  EXPECT_ERROR_AT(onlyError("zzzzzz = 1\n"), 1, 1, "the sections are node, milter");
}

TEST(LoadErrors, UnknownKeyInDottedAndInlineForms) {
  EXPECT_ERROR_AT(onlyError("milter.sockt = \"inet:1@127.0.0.1\"\n"), 1, 8, "did you mean `milter.socket`?");
  EXPECT_ERROR_AT(onlyError("health = { socket_mod = \"0660\" }\n"), 1, 12, "did you mean `health.socket_mode`?");
}

TEST(LoadErrors, WrongTypes) {
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nmax_keys = \"100\"\n"), 2, 12, "must be an integer, written without quotes");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nmax_keys = 1.5\n"), 2, 12, "whole number");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nexempt_authenticated = \"yes\"\n"), 2, 24, "must be true or false");
  EXPECT_ERROR_AT(onlyError("[node]\nid = 42\n"), 2, 6, "must be a string");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nexempt = \"127.0.0.0/8\"\n"), 2, 10, "put the value in brackets");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nexempt = [\"127.0.0.0/8\", 5]\n"), 2, 26, "must contain strings only");
  EXPECT_ERROR_AT(onlyError("node = \"mx1\"\n"), 1, 8, "must be a table");
  EXPECT_ERROR_AT(onlyError("[ratelimit.rule]\nname = \"a\"\n"), 1, 1, "write [[ratelimit.rule]] (double brackets)");
  EXPECT_ERROR_AT(onlyError("[log]\nlevel = 2024-01-01\n"), 2, 9, "not a date or time");
}

TEST(LoadErrors, BadDurations) {
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = 10\n"), 2, 11, "needs a unit: write \"10s\"");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"10\"\n"), 2, 11, "needs a unit");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"1.5s\"\n"), 2, 11, "whole numbers");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"10 s\"\n"), 2, 11, "is not a duration");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"0s\"\n"), 2, 11, "at least 1s");
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"0s\"\n"), 5, 10,
                  "longer than 0s");
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"5y\"\n"), 2, 11, "unknown unit");
}

TEST(LoadErrors, BadCidrs) {
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nexempt = [\"127.0.0.0/8\", \"10.1.2.3/8\"]\n"), 2, 26, "did you mean 10.0.0.0/8?");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nexempt = [\"localhost\"]\n"), 2, 11, "not an IPv4 or IPv6 address");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nexempt = [\"::1/129\"]\n"), 2, 11, "0..128");
}

TEST(LoadErrors, BadEnumsListTheAllowedValues) {
  EXPECT_ERROR_AT(onlyError("[log]\nlevel = \"verbose\"\n"), 2, 9, "must be one of error, warn, info, debug, not \"verbose\"");
  EXPECT_ERROR_AT(onlyError("[log]\ntarget = \"stdout\"\n"), 2, 10, "syslog, stderr, file");
  EXPECT_ERROR_AT(onlyError("[milter]\ndefault_action = \"reject\"\n"), 2, 18, "accept, tempfail");
  EXPECT_ERROR_AT(onlyError("[cluster]\ndiscovery = \"mdns\"\n"), 2, 13, "seeds, dns, multicast");
  const auto e = onlyError("[[ratelimit.rule]]\nname = \"a\"\nkey = \"client-ip\"\nlimit = 1\nperiod = \"1s\"\n");
  EXPECT_ERROR_AT(e, 3, 7, "client_ip, client_net, helo, sender, sender_domain, sasl_user, rcpt, rcpt_domain, global");
  EXPECT_NE(e.message.find("did you mean `client_ip`?"), std::string::npos) << e.message;
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\nalgorithm = \"leaky\"\n"),
                  6, 13, "token_bucket, gcra, sliding_window, fixed_window");
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\naction = \"drop\"\n"),
                  6, 10, "tempfail, reject, tag, quarantine, dry_run");
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\nscope = \"world\"\n"),
                  6, 9, "node, cluster, region");
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\nsenders = \"bounces\"\n"),
                  6, 11, "any, null, non_null");
}

TEST(LoadErrors, OutOfRange) {
  const std::string rule = "[[ratelimit.rule]]\nname = \"a\"\nkey = \"client_net\"\nperiod = \"1s\"\n";
  EXPECT_ERROR_AT(onlyError(rule + "limit = 0\n"), 5, 9, "from 1 to");
  EXPECT_ERROR_AT(onlyError(rule + "limit = -5\n"), 5, 9, "not -5");
  EXPECT_ERROR_AT(onlyError(rule + "limit = 1\nburst = 0\n"), 6, 9, "from 1 to");
  EXPECT_ERROR_AT(onlyError(rule + "limit = 1\nprefix_v4 = 33\n"), 6, 13, "from 0 to 32");
  EXPECT_ERROR_AT(onlyError(rule + "limit = 1\nprefix_v6 = 129\n"), 6, 13, "from 0 to 128");
  EXPECT_ERROR_AT(onlyError("[ratelimit]\nmax_keys = 0\n"), 2, 12, "from 1 to");
  EXPECT_ERROR_AT(onlyError("[cluster]\nfailure_threshold = 0\n"), 2, 21, "from 1 to 1000");
}

TEST(LoadErrors, DuplicateRuleName) {
  const auto e = onlyError(R"([[ratelimit.rule]]
name = "same"
key = "global"
limit = 1
period = "1s"

[[ratelimit.rule]]
name = "same"
key = "client_ip"
limit = 2
period = "1s"
)");
  EXPECT_ERROR_AT(e, 8, 8, "already a rule named `same` (line 2)");
}

TEST(LoadErrors, BadRuleName) {
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\nname = \"two words\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\n"), 2, 8,
                  "A-Z a-z 0-9 _ . -");
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\nname = \"\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\n"), 2, 8,
                  "1 to 64 characters");
}

TEST(LoadErrors, KeyMustBeKnownAtItsStage) {
  const auto rule = [](std::string key, std::string stage) {
    return "[[ratelimit.rule]]\nname = \"a\"\nlimit = 1\nperiod = \"1s\"\nkey = \"" + key + "\"\n" +
           (stage.empty() ? "" : "stage = \"" + stage + "\"\n");
  };
  EXPECT_ERROR_AT(onlyError(rule("helo", "connect")), 6, 9, "key \"helo\" is not known yet at stage \"connect\"");
  EXPECT_ERROR_AT(onlyError(rule("sender", "helo")), 6, 9, "use stage \"mail\" or later");
  EXPECT_ERROR_AT(onlyError(rule("sender_domain", "connect")), 6, 9, "not known yet");
  EXPECT_ERROR_AT(onlyError(rule("sasl_user", "helo")), 6, 9, "not known yet");
  EXPECT_ERROR_AT(onlyError(rule("rcpt", "mail")), 6, 9, "only known at stage \"rcpt\"");
  EXPECT_ERROR_AT(onlyError(rule("rcpt_domain", "data")), 6, 9, "only known at stage \"rcpt\"");
  for (const auto& [key, stage] : std::vector<std::pair<std::string, std::string>>{
           {"client_ip", "connect"}, {"client_net", "data"}, {"global", "rcpt"}, {"helo", "helo"}, {"helo", "mail"},
           {"sender", "mail"}, {"sender", "data"}, {"sasl_user", "rcpt"}, {"rcpt", "rcpt"}, {"rcpt", ""}, {"rcpt_domain", ""}}) {
    const auto r = load(rule(key, stage));
    EXPECT_TRUE(r.ok()) << key << " at " << stage << ": " << dump(r);
  }
}

TEST(LoadErrors, PrefixesOnlyWithClientNet) {
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\nname = \"a\"\nkey = \"client_ip\"\nlimit = 1\nperiod = \"1s\"\nprefix_v6 = 64\n"), 6,
                  13, "only used with key \"client_net\"");
}

TEST(LoadErrors, SendersNeedsTheMailStage) {
  EXPECT_ERROR_AT(
      onlyError("[[ratelimit.rule]]\nname = \"a\"\nkey = \"client_ip\"\nstage = \"helo\"\nlimit = 1\nperiod = \"1s\"\nsenders = \"null\"\n"),
      7, 11, "needs stage \"mail\" or later");
}

TEST(LoadErrors, BadReplies) {
  const std::string rule = "[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"1s\"\n";
  EXPECT_ERROR_AT(onlyError(rule + "reply = \"550 5.7.1 no\"\n"), 6, 9, "needs a 4xx reply code");
  EXPECT_ERROR_AT(onlyError(rule + "action = \"reject\"\nreply = \"451 4.7.1 no\"\n"), 7, 9, "needs a 5xx reply code");
  EXPECT_ERROR_AT(onlyError(rule + "action = \"reject\"\nreply = \"550 4.7.1 no\"\n"), 7, 9, "class 5");
  EXPECT_ERROR_AT(onlyError(rule + "reply = \"451 4.7.1 %{limt} reached\"\n"), 6, 9, "did you mean `%{limit}`?");
  EXPECT_ERROR_AT(onlyError(rule + "reply = \"451 4.7.1 two\\r\\nlines\"\n"), 6, 9, "carriage return");
  EXPECT_ERROR_AT(onlyError(rule + "action = \"tag\"\nreply = \"451 4.7.1 x\"\n"), 7, 9, "only used with action");
  EXPECT_ERROR_AT(onlyError(rule + "reply = \"Too many\"\n"), 6, 9, "three-digit SMTP code");
}

TEST(LoadErrors, MissingRequiredRuleKeys) {
  EXPECT_ERROR_AT(onlyError("\n[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nperiod = \"1s\"\n"), 2, 1,
                  "missing its required key `limit` (e.g. limit = 100)");
  EXPECT_ERROR_AT(onlyError("[[ratelimit.rule]]\n"), 1, 1, "missing its required keys `name`, `key`, `limit`, `period`");
}

TEST(LoadErrors, OtherSectionChecks) {
  EXPECT_ERROR_AT(onlyError("[milter]\nsocket = \"inet:8891@::1\"\n"), 2, 10, "use inet6:8891@::1");
  EXPECT_ERROR_AT(onlyError("[milter]\nsocket = \"8891\"\n"), 2, 10, "inet:PORT@HOST");
  EXPECT_ERROR_AT(onlyError("[milter]\numask = \"077x\"\n"), 2, 9, "octal");
  EXPECT_ERROR_AT(onlyError("[health]\nsocket = \"\"\n"), 2, 10, "empty");
  EXPECT_ERROR_AT(onlyError("[health]\nlisten = \"127.0.0.1\"\n"), 2, 10, "needs a port");
  EXPECT_ERROR_AT(onlyError("[log]\ntarget = \"file\"\n"), 2, 10, "needs `log.file`");
  EXPECT_ERROR_AT(onlyError("[cluster]\nenabled = true\n"), 2, 11, "needs a shared secret");
  EXPECT_ERROR_AT(onlyError("[cluster]\nmulticast_group = \"10.0.0.1:7946\"\n"), 2, 19, "multicast address");
  EXPECT_ERROR_AT(onlyError("[cluster]\nseeds = [\"mx2:7946\", \"mx3\"]\n"), 2, 22, "needs a port");
  EXPECT_ERROR_AT(onlyError("[cluster]\nadvertise = \"0.0.0.0:7946\"\n"), 2, 13, "other nodes can reach");
  EXPECT_ERROR_AT(onlyError("[cluster.tls]\ncert = \"/c\"\nkey = \"/k\"\n"), 1, 1, "needs `cluster.tls.ca`");
  EXPECT_ERROR_AT(onlyError("[cluster]\nheartbeat_interval = \"5s\"\nfailure_detection_timeout = \"1s\"\n"), 3, 29,
                  "at least twice `cluster.heartbeat_interval` (10s)");
  EXPECT_ERROR_AT(onlyError("[redis]\nurl = \"redis.local:6379\"\n"), 2, 7, "did you mean \"redis://redis.local:6379\"?");
  EXPECT_ERROR_AT(onlyError("[events]\nexec = \"hook.sh\"\n"), 2, 8, "absolute path");
  EXPECT_ERROR_AT(onlyError("[node]\nid = \"mx 1\"\n"), 2, 6, "A-Z a-z 0-9");
}

TEST(LoadErrors, SyntaxErrorsHaveLineAndColumn) {
  EXPECT_ERROR_AT(onlyError("[milter]\ntimeout = \"10s\"\nsocket = \n"), 3, 10, "TOML syntax error");
  EXPECT_ERROR_AT(onlyError("[log]\nlevel = \"info\" extra\n"), 2, 16, "TOML syntax error");
  EXPECT_ERROR_AT(onlyError("[log]\nlevel = \"info\nfile = \"x\"\n"), 2, 9, "TOML syntax error");
  const auto dup = onlyError("[log]\nlevel = \"info\"\nlevel = \"debug\"\n");
  EXPECT_ERROR_AT(dup, 3, 9, "already exists");
  EXPECT_NE(dup.message.find("see also line 2"), std::string::npos) << dup.message;
  EXPECT_ERROR_AT(onlyError("a = {b = 1,}\n"), 1, 12, "trailing comma");
}

TEST(LoadErrors, DeepNestingIsRefusedBeforeParsing) {
  EXPECT_ERROR_AT(onlyError("a = " + std::string(100000, '[')), 1, 37, "nested too deeply");
  EXPECT_ERROR_AT(onlyError("a = " + std::string(100000, '{')), 1, 37, "nested too deeply");
  std::string dotted = "a";
  for (int i = 0; i < 10000; ++i) dotted += ".a";
  EXPECT_ERROR_AT(onlyError(dotted + " = 1\n"), 1, 130, "nested too deeply");
  // Brackets in strings and comments do not count.
  const auto r = load("[node]\nid = \"mx1\" # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\nstate_dir = \"/x[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"\n");
  EXPECT_TRUE(r.ok()) << dump(r);
}

TEST(LoadErrors, EveryErrorInAFileIsReportedInOrder) {
  const auto r = load(R"([milter]
timeout = 10
tiemout = "10s"
[log]
level = "loud"
[ratelimit]
exempt = ["10.0.0.1/8"]
[[ratelimit.rule]]
name = "a"
key = "helo"
stage = "connect"
limit = 0
period = "1h"
)");
  ASSERT_EQ(r.errors.size(), 6u) << dump(r);
  const int lines[] = {2, 3, 5, 7, 11, 12};
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(r.errors[i].line, lines[i]) << dump(r);
  EXPECT_EQ(r.errors[0].file, "t.toml");
  EXPECT_EQ(r.errors[0].format().substr(0, 12), "t.toml:2:11:");
  EXPECT_FALSE(r.config.has_value());
}

TEST(LoadErrors, MissingFileSaysWhatToDo) {
  const auto r = loadFile("/nonexistent/zetian.toml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0].line, 0);
  EXPECT_EQ(r.errors[0].format().rfind("/nonexistent/zetian.toml: ", 0), 0u) << r.errors[0].format();
  EXPECT_NE(r.errors[0].message.find("-c FILE"), std::string::npos);
  TempDir dir;
  const auto d = loadFile(dir.path(""));
  ASSERT_EQ(d.errors.size(), 1u);
  EXPECT_NE(d.errors[0].message.find("is a directory"), std::string::npos);
}

// ---------------------------------------------------------------- secrets

TEST(Secrets, FromFileWithTrailingNewlineStripped) {
  TempDir dir;
  const auto token = dir.write("token", "abcdefghijklmnopqrstuvwxyz\r\n");
  const auto pw = dir.write("pw", "redis-secret\n\n");
  const Config c = good("[health]\nadmin_token_file = \"" + token + "\"\n[redis]\nurl = \"redis://r\"\npassword_file = \"" + pw + "\"\n");
  EXPECT_EQ(c.health.admin_token, "abcdefghijklmnopqrstuvwxyz");
  EXPECT_EQ(c.redis.password, "redis-secret");
}

TEST(Secrets, InlineAndFileTogetherIsAnError) {
  TempDir dir;
  const auto file = dir.write("s", "0123456789abcdef0123");
  const auto e = onlyError("[cluster]\nshared_secret = \"hunter2-hunter2-hunter2\"\nshared_secret_file = \"" + file + "\"\n");
  EXPECT_ERROR_AT(e, 3, 22, "either `cluster.shared_secret` or `cluster.shared_secret_file`, not both");
  EXPECT_EQ(e.format().find("hunter2"), std::string::npos);
}

TEST(Secrets, UnreadableOrEmptyFileIsAnError) {
  TempDir dir;
  const std::string redis = "[redis]\nurl = \"redis://r\"\n";
  EXPECT_ERROR_AT(onlyError(redis + "password_file = \"" + dir.path("absent") + "\"\n"), 3, 17, "No such file or directory");
  const auto empty = dir.write("empty", "\n");
  EXPECT_ERROR_AT(onlyError(redis + "password_file = \"" + empty + "\"\n"), 3, 17, "is empty");
  EXPECT_ERROR_AT(onlyError(redis + "password_file = \"" + dir.path("") + "\"\n"), 3, 17, "is a directory");
}

TEST(Secrets, NeverAppearInMessages) {
  TempDir dir;
  const std::string secret = "s3cr3t-VALUE-must-not-leak";
  const auto short_file = dir.write("short", "s3cr3t\n");
  const std::vector<std::string> texts = {
      "[cluster]\nshared_secret = \"s3cr3t\"\n",                                     // too short
      "[cluster]\nshared_secret_file = \"" + short_file + "\"\n",                    // too short, from a file
      "[health]\nadmin_token = \"s3cr3t\"\n",                                        // too short
      "[redis]\npassword = \"" + secret + "\"\npassword_file = \"/x\"\n",            // both
      "[cluster]\nshared_secret = \"" + secret + "\"\nshared_secret = \"x\"\n",      // syntax error
  };
  for (const auto& text : texts) {
    const auto r = load(text);
    ASSERT_FALSE(r.ok()) << text;
    for (const auto& e : r.errors) EXPECT_EQ(e.format().find("s3cr3t"), std::string::npos) << e.format();
  }
}

// ---------------------------------------------------------------- overrides

TEST(Overrides, StringsNumbersAndArrays) {
  const Config c = good("[health]\nsocket = \"/run/zetian/health.sock\"\n",
                        {{"health.socket", "/tmp/h.sock"},
                         {"log.target", "stderr"},
                         {"log.level", "debug"},
                         {"ratelimit.max_keys", "42"},
                         {"ratelimit.exempt_authenticated", "true"},
                         {"ratelimit.exempt", "[\"10.0.0.0/8\"]"},
                         {"milter.timeout", "1m"},
                         {"node.id", "\"quoted\""}});
  EXPECT_EQ(c.health.socket, "/tmp/h.sock");
  EXPECT_EQ(c.log.target, LogTarget::Stderr);
  EXPECT_EQ(c.log.level, LogLevel::Debug);
  EXPECT_EQ(c.policy.max_keys, 42u);
  EXPECT_TRUE(c.policy.exempt_authenticated);
  ASSERT_EQ(c.policy.exempt.size(), 1u);
  EXPECT_EQ(c.milter.timeout, 1min);
  EXPECT_EQ(c.node.id, "quoted");
}

TEST(Overrides, ApplyToTheEmbeddedDefault) {
  const auto r = loadEmbeddedDefault({{"health.socket", "run/health.sock"}, {"log.target", "stderr"}});
  ASSERT_TRUE(r.ok()) << dump(r);
  EXPECT_EQ(r.config->health.socket, "run/health.sock");
  EXPECT_EQ(r.config->policy.rules.size(), 1u);
}

TEST(Overrides, LaterOverrideWins) {
  EXPECT_EQ(good("", {{"log.level", "warn"}, {"log.level", "error"}}).log.level, LogLevel::Error);
}

TEST(Overrides, ErrorsNameTheOverride) {
  const auto r = load("[log]\nlevel = \"info\"\n", {{"health.socket", ""},
                                                    {"milter.tiemout", "3s"},
                                                    {"log.level", "loud"},
                                                    {"ratelimit.rule.limit", "5"},
                                                    {"log.level.x", "1"},
                                                    {"bad key", "1"},
                                                    {"milter.timeout", "10"}});
  ASSERT_EQ(r.errors.size(), 7u) << dump(r);
  EXPECT_EQ(r.errors[0].format().rfind("--set health.socket: ", 0), 0u) << dump(r);
  EXPECT_EQ(r.errors[1].format(), "--set milter.tiemout: unknown key `milter.tiemout`; did you mean `milter.timeout`?");
  EXPECT_EQ(r.errors[2].format().rfind("--set log.level: `log.level` must be one of", 0), 0u) << dump(r);
  EXPECT_NE(r.errors[3].message.find("array of tables"), std::string::npos) << dump(r);
  EXPECT_NE(r.errors[4].message.find("not a table"), std::string::npos) << dump(r);
  EXPECT_NE(r.errors[5].message.find("not a key"), std::string::npos) << dump(r);
  EXPECT_EQ(r.errors[6].format().rfind("--set milter.timeout: `milter.timeout` needs a unit", 0), 0u) << dump(r);
  for (const auto& e : r.errors) EXPECT_EQ(e.line, 0);
}

TEST(Overrides, FileErrorsComeFirst) {
  const auto r = load("[log]\nlevel = \"loud\"\n", {{"log.target", "nowhere"}});
  ASSERT_EQ(r.errors.size(), 2u) << dump(r);
  EXPECT_EQ(r.errors[0].line, 2);
  EXPECT_EQ(r.errors[1].file, "--set log.target");
}

TEST(Overrides, ValueThatLooksLikeMoreTomlIsAString) {
  EXPECT_EQ(good({}, {{"node.state_dir", "/x\ny = 1"}}).node.state_dir, "/x\ny = 1");
}

}  // namespace
}  // namespace zetian::conf
