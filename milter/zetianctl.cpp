// zetianctl: the operator's view of a running zetian-milter, through its health socket.
//
// Every command is one HTTP request (ctl_client: libcurl over the Unix socket) whose
// JSON reply (nlohmann-json) becomes a short human summary or table, or is printed as
// sent with --json. Text that came from SMTP clients (keys: HELO names, addresses) is
// printed with control characters escaped, so a hostile key cannot drive the
// operator's terminal.
//
// Deliberately standalone: it links neither libzetian nor anything of cluster/, so it
// still works when the thing being diagnosed is the daemon's own library set-up. It
// links the pure configuration library (conf/) for one reason: `policy apply` and
// `policy diff` read a policy file with the daemon's own loader, so a file is checked
// (FILE:LINE:COL) before anything is sent and compared field by field.
//
// Exit status: 0 success, 1 the server refused or something failed, 2 usage error;
// `policy diff` as diff(1): 0 no difference, 1 differences, 2 trouble.
//
// This file holds the command line and the commands on the node itself; the commands
// on the Raft-replicated policy and voters are in ctl_policy.cpp, what every command
// shares (options, exit status, the request) in ctl_command.h, and the terminal text
// in ctl_output.h.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "milter/ctl_client.h"
#include "milter/ctl_command.h"
#include "milter/ctl_output.h"
#include "milter/ctl_policy.h"

#ifndef ZETIAN_VERSION
#error "ZETIAN_VERSION must be defined by the build (CMake's PROJECT_VERSION)"
#endif

namespace zetian::milter::ctl {
namespace {

constexpr const char* kDefaultSocket = "/run/zetian/health.sock";

constexpr const char* kUsage =
    "Usage: zetianctl [-s SOCKET] [--json] COMMAND\n"
    "\n"
    "Talk to a running zetian-milter through its health socket.\n"
    "\n"
    "Commands:\n"
    "  status                        node, status, version, uptime, maintenance, members,\n"
    "                                policy host\n"
    "  health                        the /health document (pretty; --json: as sent)\n"
    "  members                       cluster members: id, address, region, status, load,\n"
    "                                last heartbeat (UTC)\n"
    "  metrics                       Prometheus metrics, as text\n"
    "  reload                        re-read the policy; refused if it has errors\n"
    "  maintenance on|off            drain this node (new SMTP sessions get 421 4.3.2,\n"
    "                                peers show it as maintenance) or end the drain\n"
    "  log level [LEVEL]             show the log level, or set it (error, warn or\n"
    "                                warning, info, debug) until the next reload\n"
    "  limits show [--rule R] [--key K] [--limit N]\n"
    "                                counters held: remaining tokens, retry-after;\n"
    "                                follows the server's pages up to N counters\n"
    "                                (default 1000, at most 1000000), then says so\n"
    "  limits reset RULE KEY         forget the counter of KEY under RULE (KEY `*`: all)\n"
    "  policy get                    the cluster's replicated policy, as TOML (--json:\n"
    "                                the document: version, proposer, time, text)\n"
    "  policy apply FILE [--base-version N]\n"
    "                                check FILE (FILE:LINE:COL errors, nothing sent),\n"
    "                                then make it the cluster's policy; answers once\n"
    "                                committed and in force on this node. With\n"
    "                                --base-version: only if N is still the current one\n"
    "  policy diff FILE              what FILE (a policy file or a node's zetian.toml)\n"
    "                                changes against the cluster's policy; exit 0 none,\n"
    "                                1 differences, 2 trouble (as diff)\n"
    "  policy history                the applied versions: who, when, Raft index\n"
    "  cluster remove NODE           take NODE out of the Raft cluster (its voters)\n"
    "  cluster transfer-leader [NODE]\n"
    "                                hand the Raft leadership to NODE (or the most\n"
    "                                up-to-date other voter)\n"
    "\n"
    "Options:\n"
    "  -s, --socket SOCKET  the health socket (default: $ZETIAN_HEALTH_SOCKET,\n"
    "                       else /run/zetian/health.sock)\n"
    "      --json           print the server's JSON instead of a summary or table\n"
    "                       (limits show: its pages merged into one document)\n"
    "      --timeout SECS   give up on the server after SECS seconds (default 5),\n"
    "                       15 for policy apply and the cluster commands;\n"
    "                       connecting gives up after 2 seconds, or SECS if shorter;\n"
    "                       for each request (limits show makes one per page)\n"
    "  -h, --help           show this help\n"
    "      --version        show the version\n"
    "\n"
    "Exit status: 0 success, 1 refused by the server or failed, 2 usage error\n"
    "(policy diff: 0 no difference, 1 differences, 2 trouble).\n";

static_assert(kConnectTimeout == std::chrono::seconds(2), "--help names the connect timeout");

// `limits show` pages through a store that can hold a billion keys: without a cap the
// table would flood the terminal and the merged document fill memory, so it stops at
// --limit counters (and says so). A page is the server's largest (GET /limits limit=).
constexpr std::size_t kDefaultLimitsShown = 1000;
constexpr std::size_t kMaxLimitsShown = 1'000'000;
constexpr std::size_t kLimitsPage = 1000;
// A real listing ends: a page stops at `limit` entries, 8,192 keys looked at or
// 262,144 hash slots, so even a store at the largest max_keys (10^9) with a --rule
// that matches little is through in about 130,000 pages. A server still answering
// `next` after this many is not paging through a store.
constexpr std::size_t kMaxLimitsPages = 1'000'000;
static_assert(kDefaultLimitsShown == 1000 && kMaxLimitsShown == 1'000'000, "--help names both");

struct UsageError {
  std::string message;
};

// ---- commands --------------------------------------------------------------------

// /health's `policy_host` for `status`: "off" for null (no policy host runs), else the
// figures the host reports, each "?" when the host left it out.
std::string policyHostText(const Json& host) {
  if (host.is_null()) return "off";
  if (!host.is_object()) return cell(&host);
  const auto count = [&host](const char* key) {
    const Json* v = member(host, key);
    return v != nullptr && v->is_number() ? formatNumber(*v) : std::string("?");
  };
  const Json* socket = member(host, "socket");
  const std::string where = socket != nullptr && socket->is_string() ? cell(socket) : "?";
  return where + ", " + count("connections") + " connections (max " + count("max_connections") + "), " +
         count("sessions") + " sessions, " + count("requests_total") + " requests, " + count("malformed_total") +
         " malformed";
}

int cmdStatus(const Options& options) {
  const auto ex = request(options, "GET", "/health");
  if (!ex) return kExitFailed;
  if (options.json) {
    printRaw(ex->reply.body);
    return ex->success() ? kExitOk : kExitFailed;
  }
  const Json* health = requireObject(*ex);
  if (health == nullptr) return kExitFailed;
  if (!ex->success() && member(*health, "status") == nullptr) {
    printServerErrors(*ex);
    return kExitFailed;
  }
  const Json* maintenance = member(*health, "maintenance");
  const Json* members = member(*health, "members");
  std::printf("node:         %s\n", cell(member(*health, "node_id")).c_str());
  std::printf("status:       %s\n", cell(member(*health, "status")).c_str());
  std::printf("version:      %s\n", cell(member(*health, "version")).c_str());
  std::printf("uptime:       %s\n", uptimeText(member(*health, "uptime_s")).c_str());
  std::printf("maintenance:  %s\n", maintenance != nullptr && maintenance->is_boolean()
                                        ? (maintenance->get<bool>() ? "on" : "off")
                                        : cell(maintenance).c_str());
  if (const Json* level = member(*health, "log_level"); level != nullptr) {
    std::printf("log level:    %s\n", cell(level).c_str());
  }
  std::printf("members:      %s\n", members != nullptr && members->is_array()
                                        ? std::to_string(members->size()).c_str()
                                        : cell(members).c_str());
  // The Raft lines only from a node with Raft (a `term`): without [cluster] there is none.
  if (member(*health, "term") != nullptr) {
    const Json* raft = member(*health, "raft");
    const Json* in_cluster = raft != nullptr ? member(*raft, "in_cluster") : nullptr;
    if (in_cluster != nullptr && in_cluster->is_boolean() && !in_cluster->get<bool>()) {
      const Json* waiting = member(*raft, "waiting_for");
      std::printf("raft:         not in a Raft cluster yet%s%s%s\n",
                  waiting != nullptr && waiting->is_string() && !textOf(*waiting).empty() ? " (waiting for " : "",
                  waiting != nullptr && waiting->is_string() ? displayText(textOf(*waiting)).c_str() : "",
                  waiting != nullptr && waiting->is_string() && !textOf(*waiting).empty() ? ")" : "");
    } else {
      const Json* leader = member(*health, "leader");
      const Json* role = raft != nullptr ? member(*raft, "role") : nullptr;
      std::printf("leader:       %s\n", leader != nullptr && leader->is_null() ? "none" : cell(leader).c_str());
      std::printf("term:         %s\n", cell(member(*health, "term")).c_str());
      if (role != nullptr) std::printf("raft role:    %s\n", cell(role).c_str());
    }
    const Json* version = member(*health, "policy_version");
    std::printf("policy:       %s\n", version != nullptr && version->is_null()
                                        ? "the node's own file (no replicated version yet)"
                                        : ("version " + cell(version)).c_str());
  }
  // A node from before the policy host has no `policy_host`: no line rather than a guess.
  if (const Json* host = member(*health, "policy_host")) {
    std::printf("policy host:  %s\n", policyHostText(*host).c_str());
  }
  if (!ex->success()) {
    std::fprintf(stderr, "zetianctl: /health answered %ld %s\n", ex->reply.status,
                 displayText(ex->reply.reason).c_str());
    return kExitFailed;
  }
  return kExitOk;
}

int cmdHealth(const Options& options) {
  const auto ex = request(options, "GET", "/health");
  if (!ex) return kExitFailed;
  if (options.json) {
    printRaw(ex->reply.body);
  } else if (ex->doc) {
    std::printf("%s\n", jsonText(*ex->doc, 2).c_str());
  } else if (ex->success()) {
    std::fprintf(stderr, "zetianctl: the reply to %s is not valid JSON (%s)\n", ex->what.c_str(),
                 ex->parse_error.c_str());
    return kExitFailed;
  } else {
    printServerErrors(*ex);
  }
  return ex->success() ? kExitOk : kExitFailed;
}

int cmdMembers(const Options& options) {
  const auto ex = request(options, "GET", "/health");
  if (!ex) return kExitFailed;
  const Json* health = requireObject(*ex);
  if (health == nullptr) return kExitFailed;
  if (!ex->success() && member(*health, "members") == nullptr) {
    printServerErrors(*ex);
    return kExitFailed;
  }
  const Json* members = member(*health, "members");
  if (members == nullptr || !members->is_array()) {
    std::fprintf(stderr, "zetianctl: the /health reply has no members list\n");
    return kExitFailed;
  }
  if (options.json) {
    std::printf("%s\n", jsonText(*members, -1).c_str());
    return ex->success() ? kExitOk : kExitFailed;
  }
  // Each member's Raft role, from a node with Raft (a `term`) only.
  const bool raft = member(*health, "term") != nullptr;
  std::vector<std::vector<std::string>> rows;
  for (const Json& m : *members) {
    const Json* load = member(m, "load");
    const Json* region = member(m, "region");
    const bool no_region = region != nullptr && region->is_string() && textOf(*region).empty();
    rows.push_back({cell(member(m, "id")), cell(member(m, "address")),
                    no_region ? "-" : cell(region), cell(member(m, "status")),
                    cell(load != nullptr ? member(*load, "sessions") : nullptr),
                    cell(load != nullptr ? member(*load, "messages_per_s") : nullptr),
                    cell(member(m, "keys_owned")), cell(member(m, "last_seen"))});
    if (raft) rows.back().push_back(cell(member(m, "raft_role")));
  }
  std::vector<std::string> header = {"ID", "ADDRESS", "REGION", "STATUS", "SESSIONS", "MSG/S", "KEYS", "LAST SEEN"};
  if (raft) header.push_back("RAFT");
  printTable(header, rows);
  return ex->success() ? kExitOk : kExitFailed;
}

int cmdMetrics(const Options& options) {
  const auto ex = request(options, "GET", "/metrics");
  if (!ex) return kExitFailed;
  if (!ex->success()) {
    printServerErrors(*ex);
    return kExitFailed;
  }
  std::fwrite(ex->reply.body.data(), 1, ex->reply.body.size(), stdout);
  return kExitOk;
}

int cmdReload(const Options& options) {
  const auto done = [](const Json& reply) {
    // A node with a replicated policy re-read its own keys only: the file's policy
    // tables were not applied.
    const Json* policy = member(reply, "policy");
    const bool replicated = policy != nullptr && policy->is_string() && textOf(*policy) == "replicated";
    std::string line = replicated ? "node settings reloaded; the replicated policy stays in force" : "policy reloaded";
    const Json* version = member(reply, "policy_version");
    const Json* rules = member(reply, "rules");
    if (version != nullptr && version->is_number()) line += ": version " + formatNumber(*version);
    if (rules != nullptr && rules->is_number()) {
      const std::string count = formatNumber(*rules);
      line += (version != nullptr && version->is_number() ? ", " : ": ") + count +
              (count == "1" ? " rule" : " rules");
    }
    if (const Json* message = member(reply, "message"); message != nullptr && message->is_string()) {
      line += "\n" + displayText(textOf(*message));
    }
    return line;
  };
  return mutation(options, "/reload", done, "reload refused; the running policy stays in force:");
}

int cmdMaintenance(const Options& options, bool enabled) {
  const auto done = [enabled](const Json& reply) {
    const Json* changed = member(reply, "changed");
    const bool was_change = changed == nullptr || !changed->is_boolean() || changed->get<bool>();
    std::string line = enabled ? "maintenance on: new SMTP sessions get 421 4.3.2 (loopback exempt)"
                               : "maintenance off: taking mail again";
    if (!was_change) line += " (it already was)";
    return line;
  };
  return mutation(options, enabled ? "/maintenance?state=on" : "/maintenance?state=off", done,
                  "the node refused the maintenance change:");
}

// GET or POST /log/level: "log level: debug (file: info; heartbeats on, sync off)".
int cmdLogLevel(const Options& options, const std::optional<std::string>& level) {
  const auto done = [](const Json& reply) {
    const auto onOff = [&](const char* key) {
      const Json* v = member(reply, key);
      return v != nullptr && v->is_boolean() ? (v->get<bool>() ? "on" : "off") : cell(v);
    };
    std::string line = "log level: " + cell(member(reply, "level")) + " (file: " + cell(member(reply, "file_level")) +
                       "; heartbeats " + onOff("heartbeats") + ", sync " + onOff("sync") + ")";
    if (const Json* changed = member(reply, "changed"); changed != nullptr && changed->is_boolean()) {
      if (changed->get<bool>()) line += "\nwas " + cell(member(reply, "previous")) + "; a reload sets the file's level again";
    }
    return line;
  };
  if (!level) return mutation(options, "/log/level", done, "the node did not answer with its log level:", "GET");
  return mutation(options, "/log/level?level=" + *level, done, "the node refused the log level:");
}

// One row of the `limits show` table.
std::vector<std::string> limitsRow(const Json& l) {
  std::string limit = cell(member(l, "limit"));
  if (const Json* period = member(l, "period"); period != nullptr && !period->is_null()) {
    limit += "/" + (period->is_number() ? formatNumber(*period) + "s" : cell(period));
  }
  return {cell(member(l, "rule")), cell(member(l, "key")), cell(member(l, "remaining")), limit,
          retryAfterText(member(l, "retry_after_s"))};
}

// GET /limits, page after page (each page's `next` is the `after` of the following
// one) until `next` is null or --limit counters are in. A lookup by key is one
// answer. Entries are kept as table rows or compact JSON text (a few hundred bytes
// each), not as parsed documents, which take several times that.
int cmdLimitsShow(const Options& options) {
  std::string base = "/limits";
  std::string sep = "?";
  if (options.rule) {
    base += sep + "rule=" + percentEncode(*options.rule);
    sep = "&";
  }
  if (options.key) {
    base += sep + "key=" + percentEncode(*options.key);
    sep = "&";
  }
  const std::size_t cap = options.limit.value_or(kDefaultLimitsShown);

  std::vector<std::vector<std::string>> rows;  // text
  std::vector<std::string> entries;            // --json
  std::size_t count = 0;
  std::optional<std::string> after;  // the cursor of the next page to ask for
  bool complete = false;             // the server said the listing ended
  bool cut = false;                  // a page held more than asked: the rest is unknown
  bool server_truncated = false;     // a server without pages cut the list itself
  for (std::size_t page = 0; !complete && !cut && count < cap; ++page) {
    if (page == kMaxLimitsPages) {
      std::fprintf(stderr, "zetianctl: GET /limits: still not at the end after %zu pages; giving up\n",
                   kMaxLimitsPages);
      return kExitFailed;
    }
    std::string target = base;
    if (!options.key) {
      target += sep + "limit=" + std::to_string(std::min(kLimitsPage, cap - count));
      if (after) target += "&after=" + percentEncode(*after);
    }
    const auto ex = request(options, "GET", target);
    if (!ex) return kExitFailed;
    if (!ex->success()) {
      // The first answer is what the operator asked about (a rule that does not
      // exist...): --json shows it as sent. Later, printing it would pass off a
      // part as the whole.
      if (options.json && page == 0) {
        printRaw(ex->reply.body);
      } else {
        printServerErrors(*ex);
      }
      return kExitFailed;
    }
    const Json* doc = requireObject(*ex);
    if (doc == nullptr) return kExitFailed;
    const Json* limits = member(*doc, "limits");
    if (limits == nullptr || !limits->is_array()) {
      std::fprintf(stderr, "zetianctl: the /limits reply has no limits list\n");
      return kExitFailed;
    }
    for (const Json& l : *limits) {
      if (count == cap) {
        cut = true;
        break;
      }
      if (options.json) {
        entries.push_back(jsonText(l, -1));
      } else {
        rows.push_back(limitsRow(l));
      }
      ++count;
    }
    const Json* next = member(*doc, "next");
    if (options.key || next == nullptr || next->is_null()) {
      complete = true;
      const Json* truncated = member(*doc, "truncated");
      server_truncated = truncated != nullptr && truncated->is_boolean() && truncated->get<bool>();
    } else if (!next->is_string() || textOf(*next).empty()) {
      std::fprintf(stderr, "zetianctl: the reply to %s has a `next` that is not a token\n", ex->what.c_str());
      return kExitFailed;
    } else if (after && textOf(*next) == *after) {
      std::fprintf(stderr, "zetianctl: the reply to %s sent back the same `next`; the listing would never end\n",
                   ex->what.c_str());
      return kExitFailed;
    } else {
      after = textOf(*next);
    }
  }
  // Stopped with the listing unfinished: at the cap, or the server's own cut.
  const bool more = !complete || cut || server_truncated;

  if (options.json) {
    std::string out = "{\"limits\":[";
    for (std::size_t i = 0; i < entries.size(); ++i) {
      if (i > 0) out += ',';
      out += entries[i];
    }
    out += std::string("],\"truncated\":") + (more ? "true" : "false") + ",\"more\":" + (more ? "true" : "false") +
           ",\"next\":";
    // Where the listing goes on, for GET /limits?after=: only when every entry of the
    // pages read was taken.
    out += !complete && !cut && after ? jsonText(Json(*after), -1) : "null";
    out += "}";
    std::printf("%s\n", out.c_str());
    return kExitOk;
  }
  if (count == 0 && !more) {
    std::fputs(options.rule || options.key ? "no counters match\n" : "no counters held\n", stdout);
    return kExitOk;
  }
  printTable({"RULE", "KEY", "REMAINING", "LIMIT", "RETRY_AFTER"}, rows);
  if (server_truncated) {
    std::printf("(only the first %zu counters are listed; narrow with --rule and --key)\n", count);
  } else if (more) {
    std::printf("(stopped at %zu counters, the --limit%s; there may be more: raise --limit or narrow with "
                "--rule and --key)\n",
                count, options.limit ? "" : " by default");
  }
  return kExitOk;
}

int cmdLimitsReset(const Options& options, const std::string& rule, const std::string& key) {
  const std::string target = "/limits/reset?rule=" + percentEncode(rule) + "&key=" + percentEncode(key);
  const auto done = [&](const Json& reply) {
    std::string line = "counter reset: rule " + displayText(rule) + ", key " + displayText(key);
    if (const Json* n = member(reply, "reset"); n != nullptr && n->is_number()) {
      const std::string count = formatNumber(*n);
      line += " (" + count + (count == "1" ? " counter" : " counters") + " cleared)";
    }
    return line;
  };
  return mutation(options, target, done, "reset refused:");
}

// ---- command line -------------------------------------------------------------------

Options parseArguments(int argc, char** argv, bool* help, bool* version) {
  Options options;
  bool options_done = false;
  const auto valueOf = [&](int& i, std::string_view arg, std::string_view name) -> std::string {
    // --name=value or --name value (and -s value / -svalue for the short form)
    if (arg.size() > name.size() && arg[name.size()] == '=') return std::string(arg.substr(name.size() + 1));
    if (name == "-s" && arg.size() > 2) return std::string(arg.substr(2));
    if (i + 1 >= argc) throw UsageError{"option " + std::string(name) + " needs a value"};
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (options_done || arg.empty() || arg[0] != '-' || arg == "-") {
      options.words.emplace_back(arg);
      continue;
    }
    const auto is = [&](std::string_view name) {
      return arg == name || (arg.size() > name.size() && arg.substr(0, name.size()) == name &&
                             arg[name.size()] == '=' && name.substr(0, 2) == "--");
    };
    if (arg == "--") {
      options_done = true;
    } else if (arg == "-h" || arg == "--help") {
      *help = true;
    } else if (arg == "--version") {
      *version = true;
    } else if (arg == "--json") {
      options.json = true;
    } else if (is("--socket")) {
      options.socket = valueOf(i, arg, "--socket");
    } else if (arg.substr(0, 2) == "-s") {
      options.socket = valueOf(i, arg, "-s");
    } else if (is("--rule")) {
      options.rule = valueOf(i, arg, "--rule");
    } else if (is("--key")) {
      options.key = valueOf(i, arg, "--key");
    } else if (is("--limit")) {
      const std::string text = valueOf(i, arg, "--limit");
      const bool digits = !text.empty() && text.size() <= 7 &&
                          std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
      const std::size_t n = digits ? std::stoul(text) : 0;
      if (n < 1 || n > kMaxLimitsShown) {
        throw UsageError{"--limit wants a whole number of counters from 1 to " + std::to_string(kMaxLimitsShown) +
                         ", not `" + text + "`"};
      }
      options.limit = n;
    } else if (is("--base-version")) {
      const std::string text = valueOf(i, arg, "--base-version");
      const bool digits = !text.empty() && text.size() <= 19 &&
                          std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (!digits || std::stoull(text) == 0) {
        throw UsageError{"--base-version wants a policy version (a whole number from 1), not `" + text + "`"};
      }
      options.base_version = std::stoull(text);
    } else if (is("--timeout")) {
      const std::string text = valueOf(i, arg, "--timeout");
      char* end = nullptr;
      const double seconds = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !(seconds > 0) || seconds > 3600) {
        throw UsageError{"--timeout wants a number of seconds between 0 and 3600, not `" + text + "`"};
      }
      options.timeout = std::chrono::milliseconds(static_cast<long long>(seconds * 1000 + 0.5));
      options.timeout_given = true;
      if (options.timeout.count() == 0) options.timeout = std::chrono::milliseconds(1);
    } else {
      throw UsageError{"unknown option `" + std::string(arg) + "`"};
    }
  }
  if (options.socket.empty()) {
    const char* env = std::getenv("ZETIAN_HEALTH_SOCKET");
    options.socket = env != nullptr && *env != '\0' ? env : kDefaultSocket;
  }
  return options;
}

int dispatch(const Options& options) {
  const auto& w = options.words;
  if (w.empty()) throw UsageError{"no command given"};
  const std::string& command = w[0];
  const bool limits_show = command == "limits" && w.size() >= 2 && w[1] == "show";
  if ((options.rule || options.key || options.limit) && !limits_show) {
    throw UsageError{"--rule, --key and --limit only apply to `limits show`"};
  }
  const bool policy_apply = command == "policy" && w.size() >= 2 && w[1] == "apply";
  if (options.base_version && !policy_apply) throw UsageError{"--base-version only applies to `policy apply`"};
  const auto noArguments = [&](std::size_t expected) {
    if (w.size() > expected) {
      throw UsageError{"unexpected argument `" + w[expected] + "` after `" + command + "`"};
    }
  };
  using Command = int (*)(const Options&);
  const std::pair<const char*, Command> simple[] = {
      {"status", cmdStatus},   {"health", cmdHealth}, {"members", cmdMembers},
      {"metrics", cmdMetrics}, {"reload", cmdReload},
  };
  for (const auto& [name, fn] : simple) {
    if (command == name) {
      noArguments(1);
      return fn(options);
    }
  }
  if (command == "maintenance") {
    if (w.size() != 2 || (w[1] != "on" && w[1] != "off")) {
      throw UsageError{"usage: zetianctl maintenance on|off"};
    }
    return cmdMaintenance(options, w[1] == "on");
  }
  if (command == "log") {
    if (w.size() < 2 || w[1] != "level" || w.size() > 3) throw UsageError{"usage: zetianctl log level [LEVEL]"};
    if (w.size() == 3) {
      static constexpr std::string_view kLevels[] = {"error", "warn", "warning", "info", "debug"};
      if (std::find(std::begin(kLevels), std::end(kLevels), w[2]) == std::end(kLevels)) {
        throw UsageError{"unknown log level `" + w[2] + "` (error, warn or warning, info, debug)"};
      }
      return cmdLogLevel(options, w[2]);
    }
    return cmdLogLevel(options, std::nullopt);
  }
  if (command == "limits") {
    if (w.size() < 2) throw UsageError{"`limits` needs `show` or `reset`"};
    if (w[1] == "show") {
      noArguments(2);
      return cmdLimitsShow(options);
    }
    if (w[1] == "reset") {
      if (w.size() != 4) throw UsageError{"usage: zetianctl limits reset RULE KEY"};
      return cmdLimitsReset(options, w[2], w[3]);
    }
    throw UsageError{"unknown `limits` command `" + w[1] + "` (show or reset)"};
  }
  if (command == "policy") {
    if (w.size() < 2) throw UsageError{"`policy` needs `get`, `apply`, `diff` or `history`"};
    if (w[1] == "get" || w[1] == "history") {
      noArguments(2);
      return w[1] == "get" ? cmdPolicyGet(options) : cmdPolicyHistory(options);
    }
    if (w[1] == "apply" || w[1] == "diff") {
      if (w.size() != 3) throw UsageError{"usage: zetianctl policy " + w[1] + " FILE"};
      if (w[1] == "diff" && options.json) throw UsageError{"`policy diff` prints text only (no --json)"};
      return w[1] == "apply" ? cmdPolicyApply(options, w[2]) : cmdPolicyDiff(options, w[2]);
    }
    throw UsageError{"unknown `policy` command `" + w[1] + "` (get, apply, diff or history)"};
  }
  if (command == "cluster") {
    if (w.size() < 2) throw UsageError{"`cluster` needs `remove` or `transfer-leader`"};
    if (w[1] == "remove") {
      if (w.size() != 3) throw UsageError{"usage: zetianctl cluster remove NODE"};
      return cmdClusterRemove(options, w[2]);
    }
    if (w[1] == "transfer-leader") {
      if (w.size() > 3) throw UsageError{"usage: zetianctl cluster transfer-leader [NODE]"};
      return cmdClusterTransferLeader(options, w.size() == 3 ? std::optional<std::string>(w[2]) : std::nullopt);
    }
    throw UsageError{"unknown `cluster` command `" + w[1] + "` (remove or transfer-leader)"};
  }
  throw UsageError{"unknown command `" + command + "`"};
}

int run(int argc, char** argv) {
  try {
    bool help = false;
    bool version = false;
    const Options options = parseArguments(argc, argv, &help, &version);
    if (help) {
      std::fputs(kUsage, stdout);
      return kExitOk;
    }
    if (version) {
      std::printf("zetianctl %s\n", ZETIAN_VERSION);
      return kExitOk;
    }
    const CurlLibrary curl;
    if (!curl.ready()) {
      std::fprintf(stderr, "zetianctl: cannot initialise libcurl (out of memory?)\n");
      return kExitFailed;
    }
    return dispatch(options);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "zetianctl: %s\nTry `zetianctl --help`.\n", e.message.c_str());
    return kExitUsage;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "zetianctl: %s\n", e.what());
    return kExitFailed;
  }
}

}  // namespace
}  // namespace zetian::milter::ctl

int main(int argc, char** argv) { return zetian::milter::ctl::run(argc, argv); }
