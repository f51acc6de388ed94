// The node-level sections: [node], [milter], [policy], [health], [log], [cluster],
// [redis], [events]. Each builder starts from the defaults in config.h and overwrites what the
// file sets, so an absent key or section keeps its default.
#include "conf/build.h"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <variant>

#include "conf/policy_document.h"
#include "conf/syntax.h"
#include "conf/text.h"

namespace zetian::conf {
namespace {

using namespace std::chrono_literals;

// The bounds of the timing keys; docs/configuration.md gives the same reasons.
// smfi_settimeout() takes whole seconds: 500ms would become 0.
constexpr Duration kMinMilterTimeout = 1s;
// Each interval a heartbeat goes to every peer and the loop ticks four times: below
// 100ms that is load for nothing; above a minute a dead node goes unseen for minutes.
constexpr Duration kMinHeartbeat = 100ms;
constexpr Duration kMaxHeartbeat = 1min;
// One late or lost heartbeat must never fail a node: at least two intervals, and 1s.
constexpr Duration kMinFailureDetection = 1s;
// A join needs a connection, a handshake and a first heartbeat from a peer.
constexpr Duration kMinJoinTimeout = 1s;
// A Redis request that must answer within 1ms fails whenever the server is busy.
constexpr Duration kMinRedisTimeout = 10ms;
// One replica for each of up to eight failures: more only multiplies the traffic.
constexpr std::int64_t kMaxReplicationFactor = 9;
// Replication batches the buckets changed since the last round: below 10ms a batch is
// hardly a batch; above 10s the replicas lag that far behind their owner.
constexpr Duration kMinReplicationInterval = 10ms;
constexpr Duration kMaxReplicationInterval = 10s;
// Each interval a node tops up its fast-mode leases from every owner it uses: below
// 50ms that is traffic for nothing; above a minute a lease follows the limit too slowly.
constexpr Duration kMinSyncInterval = 50ms;
constexpr Duration kMaxSyncInterval = 1min;
// A message waits up to this long for a remote check, once per stage.
constexpr Duration kMinCheckTimeout = 1ms;
constexpr Duration kMaxCheckTimeout = 5s;
constexpr Duration kMinElectionTimeout = 100ms;
constexpr Duration kMaxElectionTimeout = 60s;

// A duration within [min, max] (max 0: no upper bound); `why` explains the bounds.
std::optional<Duration> boundedDuration(TableReader& r, std::string_view key, Duration min, Duration max,
                                        std::string_view why) {
  auto d = r.duration(key, Duration(0));
  if (!d) return std::nullopt;
  if (*d < min || (max.count() > 0 && *d > max)) {
    const std::string range = max.count() > 0 ? "from " + formatDuration(min) + " to " + formatDuration(max)
                                              : "at least " + formatDuration(min);
    r.error(key, backticked(r.path(key)) + " must be " + range + ", not " + formatDuration(*d) + " (" +
                     std::string(why) + ")");
    return std::nullopt;
  }
  return d;
}

// A mode that leaves the owner (the user zetian runs as) unable to read and write what
// it creates makes the socket useless.
bool ownerCanReadWrite(unsigned mode) { return (mode & 0600) == 0600; }

// What can never match an Authorization header: HTTP trims the spaces around a field
// value and a field holds no control characters, so such a token is refused.
std::string tokenProblem(std::string_view token) {
  for (std::size_t i = 0; i < token.size(); ++i) {
    const auto c = static_cast<unsigned char>(token[i]);
    if (c < 0x20 || c == 0x7f) {
      const char* what = c == '\r' ? "a carriage return (CR)" : c == '\n' ? "a line feed (LF)" : c == '\t' ? "a tab" : "a control character";
      return std::string("contains ") + what + " at character " + std::to_string(i + 1) +
             ", which no HTTP Authorization header can carry";
    }
  }
  if (!token.empty() && (token.front() == ' ' || token.back() == ' ')) {
    return "starts or ends with a space, which HTTP strips from the Authorization header";
  }
  return {};
}

// `milter.user` or `milter.group`: "" keeps what zetian was started with; a name must
// exist here, or the start fails after --check-config said the file was fine.
void checkAccount(TableReader& r, std::string_view key, const std::string& name, AccountKind kind,
                  const AccountLookupFn& lookup) {
  if (name.empty() || !lookup) return;
  const AccountLookup found = lookup(kind, name);
  const char* what = kind == AccountKind::User ? "user" : "group";
  if (!found.error.empty()) {
    r.error(key, "cannot look up the " + std::string(what) + " " + quoteValue(name) + " of " + backticked(r.path(key)) +
                     ": " + found.error);
  } else if (!found.exists) {
    r.error(key, backticked(r.path(key)) + ": no " + what + " " + quoteValue(name) + " on this machine; " +
                     (kind == AccountKind::User ? "create it (adduser --system " + name + ") or set \"\" to keep the user zetian starts as"
                                                : "create it (addgroup --system " + name + ") or set \"\" for the user's primary group"));
  }
}

bool isNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

// Node ids and regions travel in cluster messages, metrics labels and logs.
bool checkName(TableReader& r, std::string_view key, const std::string& value) {
  if (!isNodeIdText(value)) {
    r.error(key, backticked(r.path(key)) + " must be 1 to 64 characters from A-Z a-z 0-9 _ . -, not " + quoteValue(value));
    return false;
  }
  return true;
}

// An optional endpoint: "" leaves the default in `out`.
void readHostPort(TableReader& r, std::string_view key, std::string& out, bool empty_ok) {
  auto text = r.string(key);
  if (!text || (empty_ok && text->empty())) return;
  std::string why;
  if (parseHostPort(*text, &why)) {
    out = *text;
  } else {
    r.error(key, backticked(r.path(key)) + ": " + why);
  }
}

std::string hostName() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return {};
  return buf;
}

void buildNode(TableReader r, Diagnostics& diag, NodeSection& node) {
  if (auto id = r.string("id")) {
    if (checkName(r, "id", *id)) node.id = *id;
  } else if (!r.has("id")) {
    node.id = hostName();
    if (node.id.empty()) diag.atFile("cannot find this machine's host name for the node id; set `node.id`");
  }
  if (auto dir = r.string("state_dir")) {
    if (dir->empty()) {
      r.error("state_dir", "`node.state_dir` cannot be empty");
    } else {
      node.state_dir = *dir;
    }
  }
}

void buildMilter(TableReader r, MilterSection& milter, const AccountLookupFn& account_lookup) {
  if (auto socket = r.string("socket")) {
    std::string why;
    // "": no milter listener, for a node that serves only [policy] (checked in
    // checkListeners, once both sections are read).
    if (socket->empty() || checkMilterSocket(*socket, &why)) {
      milter.socket = *socket;
    } else {
      r.error("socket", "`milter.socket`: " + why);
    }
  }
  if (auto t = boundedDuration(r, "timeout", kMinMilterTimeout, Duration(0),
                               "libmilter counts it in whole seconds; less would become 0")) {
    if (t->count() % 1000 != 0) {
      r.error("timeout", "`milter.timeout` must be whole seconds (libmilter counts it in seconds), not " +
                             formatDuration(*t) + "; write e.g. \"" + std::to_string(t->count() / 1000) + "s\"");
    } else {
      milter.timeout = *t;
    }
  }
  if (auto a = r.choice("default_action", defaultActionNames())) milter.default_action = *a;
  if (auto user = r.string("user")) {
    milter.user = *user;
    checkAccount(r, "user", *user, AccountKind::User, account_lookup);
  }
  if (auto group = r.string("group")) {
    milter.group = *group;
    checkAccount(r, "group", *group, AccountKind::Group, account_lookup);
  }
  if (auto umask = r.string("umask")) {
    std::string why;
    if (auto mode = parseOctalMode(*umask, &why)) {
      if ((*mode & 0600) != 0) {
        r.error("umask", "`milter.umask` " + quoteValue(*umask) +
                             " takes read or write away from the owner of the sockets and files zetian creates; "
                             "mask only group and other bits, e.g. \"0007\" or \"0027\"");
      } else {
        milter.umask = *mode;
      }
    } else {
      r.error("umask", "`milter.umask`: " + why);
    }
  }
  if (auto pid = r.string("pid_file")) milter.pid_file = *pid;
}

void buildPolicyHost(TableReader r, PolicyHostSection& policy) {
  if (auto socket = r.string("socket")) {
    std::string why;
    if (socket->empty() || checkMilterSocket(*socket, &why)) {
      policy.socket = *socket;
    } else {
      r.error("socket", "`policy.socket`: " + why);
    }
  }
  if (auto n = r.integer("max_connections", 1, 1'000'000)) policy.max_connections = *n;
  // Each must be above zero: a zero timeout would close every connection (or session)
  // before its first request.
  if (auto d = r.duration("idle_timeout", Duration(1))) policy.idle_timeout = *d;
  if (auto d = r.duration("request_timeout", Duration(1))) policy.request_timeout = *d;
  if (auto d = r.duration("session_timeout", Duration(1))) policy.session_timeout = *d;
  if (auto n = r.integer("max_sessions", 1, 10'000'000)) policy.max_sessions = *n;
  if (auto a = r.choice("tempfail_action", policyTempfailActionNames())) policy.tempfail_action = *a;
}

// The two listeners together: at least one, and not both on one address (the second
// bind would fail at start, after --check-config said the file was fine).
void checkListeners(TableReader milter_reader, TableReader policy_reader, Diagnostics& diag, const MilterSection& milter,
                    const PolicyHostSection& policy) {
  if (milter.socket.empty() && policy.socket.empty()) {
    const std::string message = "nothing to listen on: set milter.socket or policy.socket (or both)";
    if (milter_reader.has("socket")) {
      milter_reader.error("socket", message);
    } else if (policy_reader.has("socket")) {
      policy_reader.error("socket", message);
    } else {
      diag.atFile(message);
    }
    return;
  }
  if (!milter.socket.empty() && !policy.socket.empty() && listenersCollide(milter.socket, policy.socket)) {
    policy_reader.error("socket", "`policy.socket` " + quoteValue(policy.socket) + " is the same address as `milter.socket` " +
                                      quoteValue(milter.socket) + "; give the policy host a port or path of its own, "
                                      "e.g. \"inet:10031@127.0.0.1\"");
  }
}

void buildHealth(TableReader r, HealthSection& health) {
  if (auto socket = r.string("socket")) {
    std::string why;
    if (checkUnixSocketPath(*socket, &why)) {
      health.socket = *socket;
    } else {
      r.error("socket", "`health.socket`: " + why);
    }
  }
  if (auto mode = r.string("socket_mode")) {
    std::string why;
    if (auto m = parseOctalMode(*mode, &why)) {
      if (!ownerCanReadWrite(*m)) {
        // Connecting to a Unix socket needs write permission on it: without the owner's
        // rw, only root could use the socket, and zetianctl run as zetian could not.
        r.error("socket_mode", "`health.socket_mode` " + quoteValue(*mode) +
                                   " leaves the socket's owner without read and write, so nobody but root can use it; "
                                   "give the owner rw, e.g. \"0660\" (owner and group) or \"0600\" (owner only)");
      } else {
        health.socket_mode = *m;
        if ((*m & 0002) != 0) {
          r.warning("socket_mode", "`health.socket_mode` " + quoteValue(*mode) +
                                       " lets every local user connect, and the Unix socket allows changes (reload, "
                                       "maintenance) without a token; prefer \"0660\"");
        }
      }
    } else {
      r.error("socket_mode", "`health.socket_mode`: " + why);
    }
  }
  readHostPort(r, "listen", health.listen, true);
  if (auto token = r.secret("admin_token", "admin_token_file")) {
    const char* key = r.has("admin_token_file") ? "admin_token_file" : "admin_token";
    if (token->size() < 16) {
      r.error(key, "the admin token is too short: use at least 16 characters");
    } else if (const std::string problem = tokenProblem(*token); !problem.empty()) {
      r.error(key, "the admin token " + problem + "; it could never match");
    } else {
      health.admin_token = std::move(*token);
    }
  }
}

void buildLog(TableReader r, LogSection& log) {
  if (auto level = r.choice("level", logLevelNames())) log.level = *level;
  if (auto target = r.choice("target", logTargetNames())) log.target = *target;
  if (auto file = r.string("file")) log.file = *file;
  if (auto heartbeats = r.boolean("heartbeats")) log.heartbeats = *heartbeats;
  if (auto sync = r.boolean("sync")) log.sync = *sync;
  if (log.target == LogTarget::File && log.file.empty()) {
    if (r.has("file")) {
      r.error("file", "`log.file` is empty; `log.target` = \"file\" needs `log.file`, the path of the log file");
    } else {
      r.error("target", "`log.target` = \"file\" needs `log.file`, the path of the log file");
    }
  }
}

void buildTls(TableReader r, ClusterTls& tls) {
  for (auto [key, field] : {std::pair{"cert", &tls.cert}, std::pair{"key", &tls.key}, std::pair{"ca", &tls.ca}}) {
    if (auto path = r.string(key); path && !path->empty()) {
      *field = *path;
    } else if (path) {
      r.error(key, "`cluster.tls." + std::string(key) + "` is empty; [cluster.tls] needs the path of a PEM file");
    } else if (!r.has(key)) {
      r.errorAtTable("[cluster.tls] needs `cluster.tls." + std::string(key) + "`, the path of a PEM file");
    }
  }
}

bool isMulticast(const IpAddress& a) {
  return a.v4 ? (a.bytes[12] & 0xf0) == 0xe0 : a.bytes[0] == 0xff;
}

bool isUnspecified(std::string_view host) {
  const auto a = IpAddress::parse(host);
  return a && a->masked(0) == *a;
}

void buildCluster(TableReader r, Diagnostics& diag, ClusterSection& cluster, const MilterSection& milter) {
  if (auto enabled = r.boolean("enabled")) cluster.enabled = *enabled;
  readHostPort(r, "bind", cluster.bind, false);
  readHostPort(r, "advertise", cluster.advertise, true);
  if (!cluster.advertise.empty()) {
    const auto hp = parseHostPort(cluster.advertise);
    if (hp && isUnspecified(hp->host)) {
      r.error("advertise", "`cluster.advertise` must be an address other nodes can reach, not " + hp->host);
    }
  } else {
    cluster.advertise = cluster.bind;
  }
  if (auto d = r.choice("discovery", discoveryNames())) cluster.discovery = *d;
  if (auto seeds = r.strings("seeds")) {
    for (const auto& [seed, where] : *seeds) {
      std::string why;
      if (parseHostPort(seed, &why)) {
        cluster.seeds.push_back(seed);
      } else {
        diag.atValue(*where, "`cluster.seeds`: " + why);
      }
    }
  }
  if (auto name = r.string("dns_name")) {
    if (name->empty() || isHostName(*name)) {
      cluster.dns_name = *name;
    } else {
      r.error("dns_name", "`cluster.dns_name` must be a DNS name such as \"_zetian._tcp.example.net\", not " + quoteValue(*name));
    }
  }
  if (auto group = r.string("multicast_group")) {
    std::string why;
    if (auto hp = parseHostPort(*group, &why)) {
      const auto addr = IpAddress::parse(hp->host);
      if (addr && isMulticast(*addr)) {
        cluster.multicast_group = *group;
      } else {
        r.error("multicast_group", "`cluster.multicast_group` needs a multicast address (224.0.0.0/4 or ff00::/8), not " +
                                       quoteValue(hp->host));
      }
    } else {
      r.error("multicast_group", "`cluster.multicast_group`: " + why);
    }
  }
  const toml::value* inline_secret = r.find("shared_secret");
  const bool secret_given = r.has("shared_secret_file") || (inline_secret && !(inline_secret->is_string() && inline_secret->as_string().str.empty()));
  if (auto secret = r.secret("shared_secret", "shared_secret_file")) {
    if (secret->size() < 16) {
      r.error(r.has("shared_secret_file") ? "shared_secret_file" : "shared_secret",
              "the cluster's shared secret is too short: use at least 16 characters (e.g. from `openssl rand -hex 32`)");
    } else {
      cluster.shared_secret = std::move(*secret);
    }
  } else if (cluster.enabled && !secret_given) {
    r.error("enabled", "a cluster needs a shared secret: set `cluster.shared_secret_file` (or `cluster.shared_secret`)");
  }
  if (auto d = boundedDuration(r, "heartbeat_interval", kMinHeartbeat, kMaxHeartbeat,
                               "each interval a heartbeat goes to every peer")) {
    cluster.heartbeat_interval = *d;
  }
  if (auto n = r.integer("failure_threshold", 1, 1000)) cluster.failure_threshold = static_cast<int>(*n);
  if (auto n = r.integer("success_threshold", 1, 1000)) cluster.success_threshold = static_cast<int>(*n);
  if (auto d = boundedDuration(r, "failure_detection_timeout", kMinFailureDetection, Duration(0),
                               "a node is failed after this long without news")) {
    if (*d < 2 * cluster.heartbeat_interval) {
      r.error("failure_detection_timeout", "`cluster.failure_detection_timeout` must be at least twice "
                                           "`cluster.heartbeat_interval` (" +
                                               formatDuration(2 * cluster.heartbeat_interval) +
                                               "), so that one late heartbeat never fails a node");
    } else {
      cluster.failure_detection_timeout = *d;
    }
  }
  if (auto d = boundedDuration(r, "join_timeout", kMinJoinTimeout, Duration(0),
                               "a join needs a connection, a handshake and a heartbeat")) {
    cluster.join_timeout = *d;
  }
  if (auto region = r.string("region")) {
    if (region->empty() || checkName(r, "region", *region)) cluster.region = *region;
  }
  if (auto n = r.integer("replication_factor", 1, kMaxReplicationFactor)) cluster.replication_factor = static_cast<int>(*n);
  if (auto d = boundedDuration(r, "replication_interval", kMinReplicationInterval, kMaxReplicationInterval,
                               "how often an owner sends its changed buckets to its replicas")) {
    cluster.replication_interval = *d;
  }
  if (auto d = boundedDuration(r, "sync_interval", kMinSyncInterval, kMaxSyncInterval,
                               "how often a fast-mode lease is topped up")) {
    cluster.sync_interval = *d;
  }
  if (auto d = boundedDuration(r, "check_timeout", kMinCheckTimeout, kMaxCheckTimeout,
                               "a message waits up to this long for a remote check")) {
    // The MTA gives up on the whole milter step after milter.timeout; a check allowed
    // to run longer would be answered to nobody.
    if (*d >= milter.timeout) {
      r.error("check_timeout", "`cluster.check_timeout` (" + formatDuration(*d) + ") must be below `milter.timeout` (" +
                                   formatDuration(milter.timeout) +
                                   "): a remote check that outlasts the MTA's patience is answered to nobody");
    } else {
      cluster.check_timeout = *d;
    }
  }
  if (auto n = r.integer("bootstrap_expect", 0, 7)) cluster.bootstrap_expect = static_cast<int>(*n);
  if (auto d = boundedDuration(r, "election_timeout", kMinElectionTimeout, kMaxElectionTimeout,
                               "a follower that hears no Raft leader for this long (randomized up to twice) starts an election")) {
    cluster.election_timeout = *d;
  }
  if (auto n = r.integer("snapshot_every", 10, 1000000)) cluster.snapshot_every = static_cast<int>(*n);
  if (auto n = r.integer("max_voters", 1, 7)) cluster.max_voters = static_cast<int>(*n);
  if (const toml::value* tls = r.subtable("tls")) {
    ClusterTls paths;
    buildTls(TableReader(diag, tls, "cluster.tls"), paths);
    cluster.tls = paths;
  }
  // An empty dns_name is the same mistake as a missing one, reported where it is.
  if (cluster.discovery == Discovery::Dns && cluster.dns_name.empty()) {
    if (const toml::value* name = r.find("dns_name"); name && name->is_string()) {
      r.error("dns_name", "`cluster.dns_name` is empty; `cluster.discovery` = \"dns\" needs the name to look up, e.g. "
                          "\"_zetian._tcp.example.net\"");
    } else if (!name) {
      r.error("discovery", "`cluster.discovery` = \"dns\" needs `cluster.dns_name`");
    }
  }
}

bool hasSpaceOrControl(std::string_view text) {
  return std::any_of(text.begin(), text.end(),
                     [](char c) { return c == ' ' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// True when `key` holds a non-empty array: `sentinels = []` counts as unset.
bool nonEmptyArray(const TableReader& r, std::string_view key) {
  const toml::value* v = r.find(key);
  return v && v->is_array() && !v->as_array().empty();
}

// `redis.sentinels` or `redis.cluster`: HOST:PORT each, read as `cluster.seeds` are,
// none twice (the client would ask the same server twice and count it as two).
std::vector<HostPort> readRedisHosts(TableReader& r, Diagnostics& diag, std::string_view key) {
  std::vector<HostPort> out;
  auto list = r.strings(key);
  if (!list) return out;
  for (const auto& [text, where] : *list) {
    std::string why;
    if (auto hp = parseHostPort(text, &why)) {
      if (std::find(out.begin(), out.end(), *hp) != out.end()) {
        diag.atValue(*where, backticked(r.path(key)) + " lists " + quoteValue(text) + " twice");
      } else {
        out.push_back(std::move(*hp));
      }
    } else {
      diag.atValue(*where, backticked(r.path(key)) + ": " + why);
    }
  }
  return out;
}

void buildRedis(TableReader r, Diagnostics& diag, RedisSection& redis, const MilterSection& milter) {
  std::optional<RedisUrl> url;
  if (auto text = r.string("url")) {
    std::string why;
    if (text->empty()) {
      r.error("url", "`redis.url` is empty; write redis://HOST:PORT/DB or unix:/path, e.g. \"redis://127.0.0.1:6379/0\"");
    } else if (url = parseRedisUrl(*text, &why); !url) {
      r.error("url", "`redis.url`: " + why);
    }
  }
  const bool sentinels_given = nonEmptyArray(r, "sentinels");
  std::vector<HostPort> sentinels = readRedisHosts(r, diag, "sentinels");
  const auto master_name = r.string("master_name");
  const bool cluster_given = nonEmptyArray(r, "cluster");
  std::vector<HostPort> nodes = readRedisHosts(r, diag, "cluster");
  static constexpr std::string_view kMonitor = "the name the Sentinels monitor (`sentinel monitor NAME ...` in sentinel.conf)";

  if (master_name) {
    if (master_name->empty()) {
      r.error("master_name", "`redis.master_name` is empty; give " + std::string(kMonitor));
    } else if (!std::all_of(master_name->begin(), master_name->end(), isNameChar)) {
      r.error("master_name", "`redis.master_name` must be characters from A-Z a-z 0-9 _ . - (as Sentinel allows), not " +
                                 quoteValue(*master_name));
    } else if (!sentinels_given) {
      r.error("master_name", "`redis.master_name` is only used with `redis.sentinels`: list the Sentinels as HOST:PORT");
    }
  }
  if (sentinels_given && cluster_given) {
    r.error("cluster", "give either `redis.sentinels` (a master followed through its Sentinels) or `redis.cluster` (a "
                       "Redis Cluster), not both");
  } else if (sentinels_given && !r.has("master_name")) {
    r.error("sentinels", "`redis.sentinels` needs `redis.master_name`, " + std::string(kMonitor));
  }
  const bool has_server = url && !std::holds_alternative<std::monostate>(url->server);
  if (url) {
    if (sentinels_given && has_server) {
      r.error("url", "with `redis.sentinels` the Sentinels name the master: `redis.url` may only give the database, as "
                     "\"redis:///2\", or be left out for database 0");
    } else if (cluster_given && has_server) {
      r.error("url", "with `redis.cluster` the nodes are the listed ones and those they name: leave `redis.url` out");
    } else if (cluster_given && url->database != 0) {
      r.error("url", "a Redis Cluster has only database 0, not " + std::to_string(url->database) + "; leave `redis.url` out");
    } else if (!sentinels_given && !cluster_given && !has_server) {
      r.error("url", "`redis.url` needs a host: redis://HOST:PORT/DB, e.g. \"redis://127.0.0.1:6379/0\" (a URL with only "
                     "a database, \"redis:///2\", goes with `redis.sentinels`)");
    }
  } else if (r.table() && !r.has("url") && !r.has("master_name") && !sentinels_given && !cluster_given) {
    r.errorAtTable("[redis] does not say where Redis is: give `redis.url` (e.g. \"redis://127.0.0.1:6379/0\" or "
                   "\"unix:/run/redis/redis-server.sock\"), `redis.sentinels` with `redis.master_name`, or `redis.cluster`");
  }
  if (cluster_given) {
    redis.endpoint = RedisCluster{std::move(nodes)};
  } else if (sentinels_given) {
    redis.endpoint = RedisSentinels{std::move(sentinels), master_name.value_or("")};
  } else if (has_server) {
    std::visit([&](const auto& server) { redis.endpoint = server; }, url->server);
  }
  if (url) redis.database = url->database;

  const toml::value* inline_password = r.find("password");
  const bool password_given = r.has("password_file") || (inline_password && inline_password->is_string() &&
                                                         !inline_password->as_string().str.empty());
  if (auto password = r.secret("password", "password_file")) redis.password = std::move(*password);
  if (auto user = r.string("username"); user && !user->empty()) {
    if (hasSpaceOrControl(*user)) {
      r.error("username", "`redis.username` cannot contain spaces or control characters (no Redis ACL user has them)");
    } else if (!password_given) {
      r.error("username", "`redis.username` needs a password: an ACL user logs in with both; put it in "
                          "`redis.password_file` (or `redis.password`)");
    } else {
      redis.username = *user;
    }
  }
  if (auto prefix = r.string("key_prefix")) {
    if (hasSpaceOrControl(*prefix)) {
      r.error("key_prefix", "`redis.key_prefix` cannot contain spaces or control characters");
    } else if (cluster_given && prefix->find_first_of("{}") != std::string::npos) {
      // Redis Cluster places a key by the text between its first '{' and the next '}';
      // zetian puts such a tag after the prefix so that one bucket's keys share a slot.
      r.error("key_prefix", "`redis.key_prefix` cannot contain '{' or '}' with `redis.cluster`: Redis Cluster places a "
                            "key by its first {...}, which would put every key in one slot");
    } else {
      redis.key_prefix = *prefix;
    }
  }
  if (auto t = boundedDuration(r, "timeout", kMinRedisTimeout, Duration(0), "a busy server takes milliseconds to answer")) {
    // As for cluster.check_timeout: a check still waiting when the MTA gives up on the
    // milter step is answered to nobody.
    if (*t >= milter.timeout) {
      r.error("timeout", "`redis.timeout` (" + formatDuration(*t) + ") must be below `milter.timeout` (" +
                             formatDuration(milter.timeout) + "): a Redis check that outlasts the MTA's patience is "
                             "answered to nobody");
    } else {
      redis.timeout = *t;
    }
  }
}

void buildEvents(TableReader r, EventsSection& events) {
  if (auto exec = r.string("exec")) {
    if (!exec->empty() && exec->front() != '/') {
      r.error("exec", "`events.exec` must be an absolute path to the hook program");
    } else {
      events.exec = *exec;
    }
  }
}

// [metrics.statsd]. The interval bounds: below 1s the pushes cost more than the agent
// gains (it aggregates over its own flush, 10s by default); above 10 minutes a gauge
// is too stale to alert on.
constexpr Duration kMinStatsdInterval = 1s;
constexpr Duration kMaxStatsdInterval = 10min;
constexpr std::array<NamedValue<StatsdTags>, 2> kStatsdTags{{
    {"dogstatsd", StatsdTags::Dogstatsd},
    {"none", StatsdTags::None},
}};

// A StatsD name is split on dots by every agent, and ':', '|', '@', '#' are the line's
// own separators: a prefix is dot-separated words of letters, digits, '_' and '-'.
std::string statsdPrefixProblem(std::string_view prefix) {
  if (prefix.empty()) return {};
  if (prefix.front() == '.' || prefix.back() == '.' || prefix.find("..") != std::string_view::npos) {
    return "cannot start or end with a dot or hold two dots in a row";
  }
  for (char c : prefix) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || c == '.';
    if (!ok) return "may only hold letters, digits, '_', '-' and '.' (a StatsD name's separators cannot be in it)";
  }
  if (prefix.size() > 100) return "is longer than 100 characters";
  return {};
}

void buildStatsd(TableReader r, StatsdSection& statsd) {
  if (auto text = r.string("address")) {
    std::string why;
    auto address = parseHostPort(*text, &why);
    if (!address) {
      r.error("address", "`metrics.statsd.address`: " + why);
    } else if (!IpAddress::parse(address->host)) {
      r.error("address", "`metrics.statsd.address` " + quoteValue(*text) +
                             " must be an IP address and port, e.g. \"127.0.0.1:8125\" or \"[::1]:8125\": the "
                             "cluster thread sends the metrics and never waits for DNS");
    } else {
      statsd.address = *address;
    }
  }
  if (auto prefix = r.string("prefix")) {
    if (const std::string problem = statsdPrefixProblem(*prefix); !problem.empty()) {
      r.error("prefix", "`metrics.statsd.prefix` " + quoteValue(*prefix) + " " + problem);
    } else {
      statsd.prefix = *prefix;
    }
  }
  if (auto d = boundedDuration(r, "interval", kMinStatsdInterval, kMaxStatsdInterval,
                               "the agent aggregates over its own flush interval")) {
    statsd.interval = *d;
  }
  if (auto tags = r.choice("tags", std::span<const NamedValue<StatsdTags>>(kStatsdTags))) statsd.tags = *tags;
}

void buildMetrics(TableReader r, Diagnostics& diag, MetricsSection& metrics) {
  if (const toml::value* statsd = r.subtable("statsd")) {
    StatsdSection section;
    buildStatsd(TableReader(diag, statsd, "metrics.statsd"), section);
    metrics.statsd = section;
  }
}

}  // namespace

Config buildConfig(const toml::value& root, Diagnostics& diag, const AccountLookupFn& account_lookup) {
  Config config;
  TableReader top(diag, &root, "");
  buildNode(TableReader(diag, top.subtable("node"), "node"), diag, config.node);
  buildMilter(TableReader(diag, top.subtable("milter"), "milter"), config.milter, account_lookup);
  buildPolicyHost(TableReader(diag, top.subtable("policy"), "policy"), config.policy_host);
  checkListeners(TableReader(diag, top.subtable("milter"), "milter"), TableReader(diag, top.subtable("policy"), "policy"),
                 diag, config.milter, config.policy_host);
  buildHealth(TableReader(diag, top.subtable("health"), "health"), config.health);
  buildLog(TableReader(diag, top.subtable("log"), "log"), config.log);
  buildCluster(TableReader(diag, top.subtable("cluster"), "cluster"), diag, config.cluster, config.milter);
  const toml::value* redis = top.subtable("redis");
  buildRedis(TableReader(diag, redis, "redis"), diag, config.redis, config.milter);
  buildEvents(TableReader(diag, top.subtable("events"), "events"), config.events);
  buildMetrics(TableReader(diag, top.subtable("metrics"), "metrics"), diag, config.metrics);
  TableReader ratelimit(diag, top.subtable("ratelimit"), "ratelimit");
  config.policy = buildPolicy(ratelimit, diag, redis != nullptr);
  buildAffinity(TableReader(diag, top.subtable("affinity"), "affinity"), config.policy);
  return config;
}

}  // namespace zetian::conf
