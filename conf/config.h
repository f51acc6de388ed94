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
// How a rule key's owner is chosen: by the key itself, or, for client-keyed rules, by
// the client's IP address (one owner per SMTP session's client checks).
enum class AffinityMethod { Key, SourceIp };

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
};

struct Policy {
  std::vector<Cidr> exempt;  // default: 127.0.0.0/8, ::1/128
  bool exempt_authenticated = false;
  std::uint64_t max_keys = 1'000'000;
  FailMode fail_mode = FailMode::Local;
  AffinityMethod affinity = AffinityMethod::Key;
  std::vector<Rule> rules;
};

struct NodeSection {
  std::string id;  // default: the host name
  std::string state_dir = "/var/lib/zetian";
};

struct MilterSection {
  std::string socket = "inet:8891@127.0.0.1";
  Duration timeout = std::chrono::seconds(10);
  DefaultAction default_action = DefaultAction::Accept;
  std::string user;   // empty: keep the user we were started as
  std::string group;  // empty: the user's primary group
  std::optional<unsigned> umask;  // e.g. 0007 for a Unix socket Postfix's group can use
  std::string pid_file;
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
  std::optional<ClusterTls> tls;
};

struct RedisSection {
  bool enabled = false;
  std::string address = "127.0.0.1:6379";  // host:port or unix:/path
  std::string password;                    // password or password_file
  int database = 0;
  std::string key_prefix = "zetian:";
  Duration timeout = std::chrono::milliseconds(250);
};

struct EventsSection {
  std::string exec;
};

struct Config {
  std::string source;  // file name, or "<embedded default>"
  NodeSection node;
  MilterSection milter;
  HealthSection health;
  LogSection log;
  ClusterSection cluster;
  RedisSection redis;
  EventsSection events;
  Policy policy;
};

}  // namespace zetian::conf
