// The node-level sections: [node], [milter], [health], [log], [cluster], [redis],
// [events]. Each builder starts from the defaults in config.h and overwrites what the
// file sets, so an absent key or section keeps its default.
#include "conf/build.h"

#include <unistd.h>

#include <algorithm>
#include <climits>

#include "conf/syntax.h"
#include "conf/text.h"

namespace zetian::conf {
namespace {

constexpr Duration kPositive{1};  // "longer than 0s"

bool isNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

// Node ids and regions travel in cluster messages, metrics labels and logs.
bool checkName(TableReader& r, std::string_view key, const std::string& value) {
  if (value.empty() || value.size() > 64 || !std::all_of(value.begin(), value.end(), isNameChar)) {
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

void buildMilter(TableReader r, MilterSection& milter) {
  if (auto socket = r.string("socket")) {
    std::string why;
    if (checkMilterSocket(*socket, &why)) {
      milter.socket = *socket;
    } else {
      r.error("socket", "`milter.socket`: " + why);
    }
  }
  if (auto t = r.duration("timeout", kPositive)) milter.timeout = *t;
  if (auto a = r.choice("default_action", defaultActionNames())) milter.default_action = *a;
  if (auto user = r.string("user")) milter.user = *user;
  if (auto group = r.string("group")) milter.group = *group;
  if (auto umask = r.string("umask")) {
    std::string why;
    if (auto mode = parseOctalMode(*umask, &why)) {
      milter.umask = *mode;
    } else {
      r.error("umask", "`milter.umask`: " + why);
    }
  }
  if (auto pid = r.string("pid_file")) milter.pid_file = *pid;
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
      health.socket_mode = *m;
    } else {
      r.error("socket_mode", "`health.socket_mode`: " + why);
    }
  }
  readHostPort(r, "listen", health.listen, true);
  if (auto token = r.secret("admin_token", "admin_token_file")) {
    if (token->size() < 16) {
      r.error(r.has("admin_token_file") ? "admin_token_file" : "admin_token",
              "the admin token is too short: use at least 16 characters");
    } else {
      health.admin_token = std::move(*token);
    }
  }
}

void buildLog(TableReader r, LogSection& log) {
  if (auto level = r.choice("level", logLevelNames())) log.level = *level;
  if (auto target = r.choice("target", logTargetNames())) log.target = *target;
  if (auto file = r.string("file")) log.file = *file;
  if (log.target == LogTarget::File && log.file.empty()) {
    r.error("target", "`log.target` = \"file\" needs `log.file`, the path of the log file");
  }
}

void buildTls(TableReader r, ClusterTls& tls) {
  for (auto [key, field] : {std::pair{"cert", &tls.cert}, std::pair{"key", &tls.key}, std::pair{"ca", &tls.ca}}) {
    if (auto path = r.string(key); path && !path->empty()) {
      *field = *path;
    } else if (!r.has(key) || path) {
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

void buildCluster(TableReader r, Diagnostics& diag, ClusterSection& cluster) {
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
  if (auto d = r.duration("heartbeat_interval", kPositive)) cluster.heartbeat_interval = *d;
  if (auto n = r.integer("failure_threshold", 1, 1000)) cluster.failure_threshold = static_cast<int>(*n);
  if (auto n = r.integer("success_threshold", 1, 1000)) cluster.success_threshold = static_cast<int>(*n);
  if (auto d = r.duration("failure_detection_timeout", kPositive)) {
    if (*d < cluster.heartbeat_interval) {
      r.error("failure_detection_timeout", "`cluster.failure_detection_timeout` must be at least `cluster.heartbeat_interval` (" +
                                               formatDuration(cluster.heartbeat_interval) + ")");
    } else {
      cluster.failure_detection_timeout = *d;
    }
  }
  if (auto d = r.duration("join_timeout", kPositive)) cluster.join_timeout = *d;
  if (auto region = r.string("region")) {
    if (region->empty() || checkName(r, "region", *region)) cluster.region = *region;
  }
  if (const toml::value* tls = r.subtable("tls")) {
    ClusterTls paths;
    buildTls(TableReader(diag, tls, "cluster.tls"), paths);
    cluster.tls = paths;
  }
  if (cluster.enabled && cluster.discovery == Discovery::Dns && cluster.dns_name.empty() && !r.has("dns_name")) {
    r.error("discovery", "`cluster.discovery` = \"dns\" needs `cluster.dns_name`");
  }
}

void buildRedis(TableReader r, RedisSection& redis) {
  if (auto enabled = r.boolean("enabled")) redis.enabled = *enabled;
  if (auto address = r.string("address")) {
    std::string why;
    bool ok = false;
    if (address->starts_with("unix:")) {
      const std::string path = address->substr(5);
      ok = !path.empty() && path.front() == '/' && checkUnixSocketPath(path, &why);
      if (!ok && why.empty()) why = "the path after unix: must be absolute";
    } else {
      ok = parseHostPort(*address, &why).has_value();
    }
    if (ok) {
      redis.address = *address;
    } else {
      r.error("address", "`redis.address`: " + why + " (HOST:PORT or unix:/path)");
    }
  }
  if (auto password = r.secret("password", "password_file")) redis.password = std::move(*password);
  if (auto db = r.integer("database", 0, INT_MAX)) redis.database = static_cast<int>(*db);
  if (auto prefix = r.string("key_prefix")) {
    if (std::any_of(prefix->begin(), prefix->end(), [](char c) { return c == ' ' || static_cast<unsigned char>(c) < 0x20; })) {
      r.error("key_prefix", "`redis.key_prefix` cannot contain spaces or control characters");
    } else {
      redis.key_prefix = *prefix;
    }
  }
  if (auto t = r.duration("timeout", kPositive)) redis.timeout = *t;
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

}  // namespace

Config buildConfig(const toml::value& root, Diagnostics& diag) {
  Config config;
  TableReader top(diag, &root, "");
  buildNode(TableReader(diag, top.subtable("node"), "node"), diag, config.node);
  buildMilter(TableReader(diag, top.subtable("milter"), "milter"), config.milter);
  buildHealth(TableReader(diag, top.subtable("health"), "health"), config.health);
  buildLog(TableReader(diag, top.subtable("log"), "log"), config.log);
  buildCluster(TableReader(diag, top.subtable("cluster"), "cluster"), diag, config.cluster);
  buildRedis(TableReader(diag, top.subtable("redis"), "redis"), config.redis);
  buildEvents(TableReader(diag, top.subtable("events"), "events"), config.events);
  TableReader ratelimit(diag, top.subtable("ratelimit"), "ratelimit");
  config.policy = buildPolicy(ratelimit, diag);
  return config;
}

}  // namespace zetian::conf
