// The typed configuration: what a zetian.toml file means once it has been parsed and
// validated. Nothing here is a toml11 type; the rest of the program never sees TOML.
//
// NodeConfig is per node and fixed for the life of the process (sockets, users,
// logging). Policy is the part that can change at run time (reload now, Raft later):
// rules, exemptions, bounds.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "conf/net.h"
#include "state/limit.h"

namespace zetian::conf {

using Duration = std::chrono::milliseconds;

enum class KeyKind { ClientIp, ClientNet, Helo, Sender, SenderDomain, SaslUser, Rcpt, RcptDomain, Global };
// Ordered as the SMTP dialogue goes: a rule may only use keys known by its stage.
enum class Stage { Connect = 0, Helo = 1, Mail = 2, Rcpt = 3, Data = 4 };
enum class Scope { Node, Cluster, Region };
enum class Action { Tempfail, Reject, Tag, Quarantine, DryRun };
enum class SenderFilter { Any, Null, NonNull };
enum class DefaultAction { Accept, Tempfail };
enum class LogLevel { Error = 0, Warn = 1, Info = 2, Debug = 3 };
enum class LogTarget { Syslog, Stderr, File };
enum class Discovery { Seeds, Dns, Multicast };
// Who decides a cluster-scope rule: its key's owner for every check (Exact), or this
// node from a lease of tokens the owner grants (Fast).
enum class Consistency { Exact, Fast };
// What a cluster-scope check does when the key's owner cannot answer in time.
enum class FailMode { Local, Open, Closed };
// Where a rule's count is kept. Local: in this node's store, or with the key's owner in
// the cluster, as the rule's scope and consistency say. Redis: in the Redis of [redis],
// one count for every node that uses that Redis, whatever its cluster.
enum class Store { Local, Redis };
// How a rule key's owner is chosen: by the key itself, or, for client-keyed rules, by
// the client's IP address (one owner per SMTP session's client checks).
enum class AffinityMethod { Key, SourceIp };
// How the policy-delegation host answers a tempfail verdict: with the rule's 4xx reply
// ("action=451 4.7.1 text"), or with DEFER_IF_PERMIT (Postfix defers only when no later
// restriction rejects, the way postfwd and policyd sites often run).
enum class PolicyTempfailAction { Reply, DeferIfPermit };

// The names used in zetian.toml ("client_ip", "rcpt", "dry_run", ...).
std::string_view keyKindName(KeyKind k);
std::string_view stageName(Stage s);
std::string_view scopeName(Scope s);
std::string_view actionName(Action a);
std::string_view senderFilterName(SenderFilter f);
std::string_view defaultActionName(DefaultAction a);
std::string_view logLevelName(LogLevel l);
std::string_view logTargetName(LogTarget t);
std::string_view discoveryName(Discovery d);
std::string_view consistencyName(Consistency c);
std::string_view failModeName(FailMode m);
std::string_view affinityMethodName(AffinityMethod m);
std::string_view storeName(Store s);
std::string_view policyTempfailActionName(PolicyTempfailAction a);

// "1h", "10m", "5s", "250ms", "1d"; the largest unit that divides the duration.
std::string formatDuration(Duration d);
// The inverse: "250ms", "5s", "10m", "1h", "1d" and compounds such as "1h30m".
// Grammar: one or more NUMBER UNIT parts, no spaces; UNIT is d, h, m, s or ms; the
// units go from the largest to the smallest, each at most once ("1h30m", never
// "30m1h" or "1h1h"); NUMBER is decimal without leading zeros ("0" alone is fine).
// A bare number is refused (the unit is never guessed). On failure `error` says why.
std::optional<Duration> parseDuration(std::string_view text, std::string* error = nullptr);

struct Rule {
  std::string name;
  KeyKind key = KeyKind::ClientIp;
  int prefix_v4 = 24;
  int prefix_v6 = 64;
  Stage stage = Stage::Mail;
  std::uint64_t limit = 0;
  Duration period{0};
  std::uint64_t burst = 0;  // defaults to limit
  state::Algorithm algorithm = state::Algorithm::TokenBucket;
  Scope scope = Scope::Cluster;
  Action action = Action::Tempfail;
  std::optional<std::string> reply;  // "451 4.7.1 text", placeholders kept unexpanded
  SenderFilter senders = SenderFilter::Any;
  Consistency consistency = Consistency::Exact;
  // Resolved: the rule's own `store`, else `ratelimit.store`. A Redis rule never sets
  // scope or consistency (the loader refuses them), so theirs are the defaults and
  // mean nothing.
  Store store = Store::Local;
  bool operator==(const Rule&) const = default;
};

struct Policy {
  std::vector<Cidr> exempt;  // default: 127.0.0.0/8, ::1/128
  bool exempt_authenticated = false;
  std::uint64_t max_keys = 1'000'000;
  FailMode fail_mode = FailMode::Local;
  AffinityMethod affinity = AffinityMethod::Key;
  // `ratelimit.store`, the store of the rules that name none; already resolved into
  // every Rule::store.
  Store store = Store::Local;
  std::vector<Rule> rules;
  bool operator==(const Policy&) const = default;
};

struct NodeSection {
  std::string id;  // default: the host name
  std::string state_dir = "/var/lib/zetian";
};

struct MilterSection {
  std::string socket = "inet:8891@127.0.0.1";  // "": no milter listener ([policy] serves)
  Duration timeout = std::chrono::seconds(10);
  DefaultAction default_action = DefaultAction::Accept;
  std::string user;   // empty: keep the user we were started as
  std::string group;  // empty: the user's primary group
  std::optional<unsigned> umask;  // e.g. 0007 for a Unix socket Postfix's group can use
  std::string pid_file;
};

// [policy]: the Postfix policy-delegation host (check_policy_service) inside
// zetian-milter. Fixed for the life of the process, like [milter].
struct PolicyHostSection {
  std::string socket;  // libmilter's socket syntax, as milter.socket; "": off
  std::int64_t max_connections = 1000;
  Duration idle_timeout = std::chrono::minutes(10);     // no request in progress
  Duration request_timeout = std::chrono::seconds(10);  // first byte to the empty line
  Duration session_timeout = std::chrono::minutes(10);  // an engine session without a request
  std::int64_t max_sessions = 100000;
  PolicyTempfailAction tempfail_action = PolicyTempfailAction::Reply;
};

struct HealthSection {
  std::string socket = "/run/zetian/health.sock";
  unsigned socket_mode = 0660;
  std::string listen;  // optional "127.0.0.1:9187"
  std::string admin_token;  // admin_token or admin_token_file: allows mutations over TCP
};

struct LogSection {
  LogLevel level = LogLevel::Info;
  LogTarget target = LogTarget::Syslog;
  std::string file;
  // Cluster traffic lines at level debug, rate-limited (cluster/trace_log.h): one per
  // heartbeat sent or received; one per replication, lease and Raft message.
  bool heartbeats = false;
  bool sync = false;
};

struct ClusterTls {
  std::string cert, key, ca;
};

struct ClusterSection {
  bool enabled = false;
  std::string bind = "0.0.0.0:7946";
  std::string advertise;
  Discovery discovery = Discovery::Seeds;
  std::vector<std::string> seeds;
  std::string dns_name;
  std::string multicast_group = "239.255.1.1:7946";
  std::string shared_secret;  // from shared_secret or shared_secret_file; never logged
  Duration heartbeat_interval = std::chrono::seconds(1);
  int failure_threshold = 3;
  int success_threshold = 2;
  Duration failure_detection_timeout = std::chrono::seconds(10);
  Duration join_timeout = std::chrono::seconds(30);
  std::string region;
  int replication_factor = 2;  // the owner and replication_factor - 1 replicas
  Duration replication_interval = std::chrono::milliseconds(250);
  Duration sync_interval = std::chrono::seconds(1);
  Duration check_timeout = std::chrono::milliseconds(200);
  // Raft (the replicated policy, docs/raft.md). 0: never start a Raft cluster, only
  // join one that exists.
  int bootstrap_expect = 0;
  Duration election_timeout = std::chrono::seconds(1);  // randomized in [t, 2t)
  int snapshot_every = 1000;  // applied entries between two snapshots
  int max_voters = 5;         // members beyond this stay learners
  std::optional<ClusterTls> tls;
};

struct HostPort {
  std::string host;  // a name or an address; an IPv6 address without its brackets
  std::uint16_t port = 0;
  bool operator==(const HostPort&) const = default;
};

// The four ways to reach Redis; RedisSection::endpoint holds one of them, parsed and
// checked, so the client never parses text.

// One server over TCP (`url = "redis://HOST:PORT/DB"`).
struct RedisServer {
  HostPort address;  // the port is 6379 when the URL gives none
  bool operator==(const RedisServer&) const = default;
};
// One server on this machine, through its Unix socket (`url = "unix:/path?db=N"`).
struct RedisUnixSocket {
  std::string path;  // absolute, at most 107 bytes
  bool operator==(const RedisUnixSocket&) const = default;
};
// The master that Sentinels name (`sentinels` and `master_name`), followed across
// failovers; the client asks any listed Sentinel for it and never writes to a replica.
struct RedisSentinels {
  std::vector<HostPort> sentinels;  // at least one, none twice
  std::string master_name;          // as in sentinel.conf's `sentinel monitor NAME ...`
  bool operator==(const RedisSentinels&) const = default;
};
// A Redis Cluster (`cluster`): the client loads the slot map from any listed node.
struct RedisCluster {
  std::vector<HostPort> nodes;  // at least one, none twice
  bool operator==(const RedisCluster&) const = default;
};

struct RedisSection {
  // std::monostate: there is no [redis] section, and no rule has store "redis".
  std::variant<std::monostate, RedisServer, RedisUnixSocket, RedisSentinels, RedisCluster> endpoint;
  int database = 0;      // SELECT it after connecting unless 0; always 0 with RedisCluster
  std::string username;  // a Redis 6 ACL user; "" authenticates with the password alone
  std::string password;  // from password or password_file; "" sends no AUTH; never logged
  std::string key_prefix = "zetian:";
  Duration timeout = std::chrono::milliseconds(250);  // below milter.timeout

  bool configured() const { return !std::holds_alternative<std::monostate>(endpoint); }
};

struct EventsSection {
  std::string exec;
};

// [metrics.statsd]: the /metrics figures pushed to a StatsD agent over UDP (the
// Datadog agent, Telegraf, the CloudWatch agent). The table's presence turns it on.
enum class StatsdTags { Dogstatsd, None };
struct StatsdSection {
  // Numeric, never a name: the cluster thread sends, and it must not wait for DNS.
  HostPort address{"127.0.0.1", 8125};
  std::string prefix = "zetian";  // "" for none
  Duration interval = std::chrono::seconds(10);
  StatsdTags tags = StatsdTags::Dogstatsd;
  bool operator==(const StatsdSection&) const = default;
};

struct MetricsSection {
  std::optional<StatsdSection> statsd;  // absent: no push
};

struct Config {
  std::string source;  // file name, or "<embedded default>"
  NodeSection node;
  MilterSection milter;
  PolicyHostSection policy_host;  // the [policy] section (`policy` is the rules' Policy)
  HealthSection health;
  LogSection log;
  ClusterSection cluster;
  RedisSection redis;
  EventsSection events;
  MetricsSection metrics;
  Policy policy;
};

}  // namespace zetian::conf
