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
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "conf/load.h"
#include "conf/policy.h"
#include "conf/policy_diff.h"
#include "milter/ctl_client.h"

#ifndef ZETIAN_VERSION
#error "ZETIAN_VERSION must be defined by the build (CMake's PROJECT_VERSION)"
#endif

namespace zetian::milter {
namespace {

// Keeps object members in the order the server wrote them: `health` and
// `members --json` print documents back, and operators read them top-down.
using Json = nlohmann::ordered_json;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr std::chrono::milliseconds kDefaultTimeout{5000};
// A Raft change (policy apply, cluster remove, transfer-leader) is answered once it is
// committed, or after the server's 10 s deadline: wait a little longer than that
// unless --timeout says otherwise.
constexpr std::chrono::milliseconds kRaftChangeTimeout{15000};
// A policy file is at most what the loader reads (1 MiB).
constexpr std::size_t kMaxPolicyFileBytes = 1 << 20;
constexpr const char* kDefaultSocket = "/run/zetian/health.sock";
// The server nests four levels deep; the cap keeps printing, which recurses, from
// running off the stack whatever arrives.
constexpr int kMaxJsonDepth = 64;

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

struct Options {
  std::string socket;
  bool json = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
  bool timeout_given = false;  // --timeout: also for Raft changes
  std::optional<std::uint64_t> base_version;  // policy apply --base-version
  std::optional<std::string> rule;
  std::optional<std::string> key;
  std::optional<std::size_t> limit;  // limits show: most counters listed
  std::vector<std::string> words;  // the command and its arguments
};

// ---- output helpers -------------------------------------------------------------

// `text` with control characters (C0, DEL, and C1 in UTF-8) shown as \xNN.
std::string displayText(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const bool c1 = c == 0xC2 && i + 1 < text.size() &&
                    static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                    static_cast<unsigned char>(text[i + 1]) <= 0x9F;
    if (c < 0x20 || c == 0x7F || c1) {
      const auto shown = c1 ? static_cast<unsigned char>(text[++i]) : c;
      out += "\\x";
      out.push_back(kHex[shown >> 4]);
      out.push_back(kHex[shown & 0xF]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// `value` as JSON text for a terminal: pretty with `indent` > 0, compact with -1.
// nlohmann escapes C0 controls but writes DEL and C1 (U+0080-U+009F) as they are;
// those can only occur inside strings, where \u escapes mean the same.
std::string jsonText(const Json& value, int indent) {
  const std::string raw = value.dump(indent, ' ', false, Json::error_handler_t::replace);
  std::string out;
  out.reserve(raw.size());
  char escape[8];
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const auto c = static_cast<unsigned char>(raw[i]);
    if (c == 0x7F) {
      out += "\\u007f";
    } else if (c == 0xC2 && i + 1 < raw.size() && static_cast<unsigned char>(raw[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(raw[i + 1]) <= 0x9F) {
      std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned char>(raw[++i]));
      out += escape;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// The member `key` of an object, or nullptr (also when `value` is not an object).
const Json* member(const Json& value, const char* key) {
  if (!value.is_object()) return nullptr;
  const auto it = value.find(key);
  return it == value.end() ? nullptr : &*it;
}

const std::string& textOf(const Json& value) { return value.get_ref<const std::string&>(); }

std::string formatNumber(const Json& v) {
  if (v.is_number_integer()) return v.dump();  // int64 or uint64, exact
  const double number = v.get<double>();
  if (number < 1e15 && number > -1e15 &&
      number == static_cast<double>(static_cast<long long>(number))) {
    return std::to_string(static_cast<long long>(number));
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", number);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// A member for a table cell: strings (escaped), numbers, booleans; "-" if absent.
std::string cell(const Json* v) {
  if (v == nullptr || v->is_null()) return "-";
  if (v->is_string()) return textOf(*v).empty() ? "\"\"" : displayText(textOf(*v));
  if (v->is_number()) return formatNumber(*v);
  if (v->is_boolean()) return v->get<bool>() ? "true" : "false";
  return displayText(jsonText(*v, -1));
}

std::string uptimeText(const Json* v) {
  if (v == nullptr || !v->is_number() || v->get<double>() < 0) return cell(v);
  auto total = static_cast<long long>(v->get<double>());
  const long long days = total / 86400;
  const long long hours = total / 3600 % 24;
  const long long minutes = total / 60 % 60;
  const long long seconds = total % 60;
  std::string out;
  if (days > 0) out += std::to_string(days) + "d ";
  if (days > 0 || hours > 0) out += std::to_string(hours) + "h ";
  if (days > 0 || hours > 0 || minutes > 0) out += std::to_string(minutes) + "m ";
  out += std::to_string(seconds) + "s";
  return out;
}

std::string retryAfterText(const Json* v) {
  if (v == nullptr || !v->is_number()) return cell(v);
  if (v->get<double>() <= 0) return "-";
  return formatNumber(*v) + "s";
}

// Display width: UTF-8 continuation bytes take no column.
std::size_t width(std::string_view s) {
  std::size_t w = 0;
  for (const char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++w;
  }
  return w;
}

void printTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) widths[c] = width(header[c]);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], width(row[c]));
    }
  }
  const auto printRow = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line.append(widths[c] - width(row[c]) + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  };
  printRow(header);
  for (const auto& row : rows) printRow(row);
}

void printRaw(const std::string& body) {
  std::fwrite(body.data(), 1, body.size(), stdout);
  if (body.empty() || body.back() != '\n') std::fputc('\n', stdout);
}

// ---- JSON ---------------------------------------------------------------------------

struct NestedTooDeeply {};

// One JSON document, or nullopt with *error = "at byte N: what was wrong".
std::optional<Json> parseDocument(const std::string& text, std::string* error) {
  const Json::parser_callback_t limitDepth = [](int depth, Json::parse_event_t, Json&) {
    if (depth > kMaxJsonDepth) throw NestedTooDeeply{};
    return true;
  };
  try {
    return Json::parse(text, limitDepth);
  } catch (const NestedTooDeeply&) {
    *error = "nested more than " + std::to_string(kMaxJsonDepth) + " levels deep";
  } catch (const Json::parse_error& e) {
    // what(): "[json.exception.parse_error.101] parse error at line 1, column 13: why"
    std::string_view why = e.what();
    if (const std::size_t colon = why.find(": "); colon != std::string_view::npos) {
      why.remove_prefix(colon + 2);
    }
    *error = "at byte " + std::to_string(e.byte) + ": " + displayText(why);
  } catch (const Json::exception& e) {
    // Numbers out of double range: "[json.exception.out_of_range.406] number overflow ..."
    std::string_view why = e.what();
    if (const std::size_t bracket = why.find("] "); bracket != std::string_view::npos) {
      why.remove_prefix(bracket + 2);
    }
    *error = displayText(why);
  }
  return std::nullopt;
}

// ---- talking to the server ----------------------------------------------------------

struct Exchange {
  std::string what;  // "GET /health", for messages
  HttpReply reply;
  std::optional<Json> doc;  // the body, if it is JSON
  std::string parse_error;
  bool success() const { return reply.status >= 200 && reply.status < 300; }
};

std::optional<Exchange> request(const Options& options, std::string_view method,
                                const std::string& target, std::string_view body = {}) {
  Exchange ex;
  ex.what = std::string(method) + " " + target;
  std::string error;
  if (!healthRequest(options.socket, method, target, options.timeout, &ex.reply, &error, body)) {
    std::fprintf(stderr, "zetianctl: %s\n", displayText(error).c_str());
    return std::nullopt;
  }
  ex.doc = parseDocument(ex.reply.body, &ex.parse_error);
  return ex;
}

// Prints what the server said about a failure: its "error" and "errors" lines if the
// body is JSON, otherwise the status and the first line of the body.
void printServerErrors(const Exchange& ex) {
  bool printed = false;
  if (ex.doc) {
    if (const Json* e = member(*ex.doc, "error"); e != nullptr && e->is_string()) {
      std::fprintf(stderr, "zetianctl: %s\n", displayText(textOf(*e)).c_str());
      printed = true;
    }
    if (const Json* list = member(*ex.doc, "errors"); list != nullptr && list->is_array()) {
      for (const Json& line : *list) {
        std::fprintf(stderr, "%s\n", line.is_string() ? displayText(textOf(line)).c_str()
                                                      : displayText(jsonText(line, -1)).c_str());
        printed = true;
      }
    }
  }
  if (!printed) {
    std::string first_line = ex.reply.body.substr(0, ex.reply.body.find('\n'));
    if (first_line.size() > 200) first_line.resize(200);
    std::fprintf(stderr, "zetianctl: %s: the server answered %ld %s%s%s\n", ex.what.c_str(),
                 ex.reply.status, displayText(ex.reply.reason).c_str(),
                 first_line.empty() ? "" : ": ", displayText(first_line).c_str());
  }
}

// What to do next after a refusal of the replicated policy's endpoints (the server's
// own message names what happened).
void printNextStep(const Exchange& ex) {
  const Json* e = ex.doc ? member(*ex.doc, "error") : nullptr;
  const std::string message = e != nullptr && e->is_string() ? textOf(*e) : std::string();
  const char* next = nullptr;
  if (ex.reply.status == 503 && message.rfind("no quorum", 0) == 0) {
    next = "changes need a majority of voters; every node keeps enforcing the policy in force meanwhile";
  } else if (ex.reply.status == 503 && message.rfind("no leader", 0) == 0) {
    next = "the cluster is electing a leader: try again in a few seconds";
  } else if (ex.reply.status == 409) {
    next = "another change landed first: see `zetianctl policy diff FILE`, then apply again";
  } else if (ex.reply.status == 504) {
    next = "it may still commit: check `zetianctl policy history` before trying again";
  }
  if (next != nullptr) std::fprintf(stderr, "zetianctl: %s\n", next);
}

// The JSON object a command needs, or nullptr after saying why there is none.
const Json* requireObject(const Exchange& ex) {
  if (!ex.doc) {
    if (!ex.success()) {
      printServerErrors(ex);
    } else {
      std::fprintf(stderr, "zetianctl: the reply to %s is not valid JSON (%s)\n", ex.what.c_str(),
                   ex.parse_error.c_str());
    }
    return nullptr;
  }
  if (!ex.doc->is_object()) {
    std::fprintf(stderr, "zetianctl: the reply to %s is not a JSON object\n", ex.what.c_str());
    return nullptr;
  }
  return &*ex.doc;
}

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

// ---- commands --------------------------------------------------------------------

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

// reload and limits reset: {"ok":true,...} or {"ok":false,"errors":[...]}. `done`
// turns the accepted reply into the line to print.
int mutation(const Options& options, const std::string& target,
             const std::function<std::string(const Json&)>& done, const std::string& refused,
             std::string_view method = "POST", std::string_view body = {}) {
  const auto ex = request(options, method, target, body);
  if (!ex) return kExitFailed;
  const Json* ok = ex->doc ? member(*ex->doc, "ok") : nullptr;
  const bool accepted = ex->success() && (ok == nullptr || !ok->is_boolean() || ok->get<bool>());
  if (options.json) {
    printRaw(ex->reply.body);
    return accepted ? kExitOk : kExitFailed;
  }
  if (accepted) {
    if (!ex->doc) {
      std::fprintf(stderr, "zetianctl: the reply to %s is not valid JSON (%s)\n", ex->what.c_str(),
                   ex->parse_error.c_str());
      return kExitFailed;
    }
    std::printf("%s\n", done(*ex->doc).c_str());
    return kExitOk;
  }
  std::fprintf(stderr, "zetianctl: %s\n", refused.c_str());
  printServerErrors(*ex);
  printNextStep(*ex);
  return kExitFailed;
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

// ---- the replicated policy ----------------------------------------------------------

// Multi-line text from the server (a policy's TOML) for a terminal: as displayText,
// but line ends and tabs stay what they are.
std::string displayLines(std::string_view text) {
  std::string out;
  std::size_t from = 0;
  while (from < text.size()) {
    const std::size_t end = text.find_first_of("\n\t", from);
    out += displayText(text.substr(from, end == std::string_view::npos ? std::string_view::npos : end - from));
    if (end == std::string_view::npos) break;
    out.push_back(text[end]);
    from = end + 1;
  }
  return out;
}

// RFC 3339 UTC with milliseconds, as /health shows times.
std::string utcTime(const Json* unix_ms) {
  if (unix_ms == nullptr || !unix_ms->is_number_unsigned()) return cell(unix_ms);
  const auto ms = unix_ms->get<std::uint64_t>();
  const auto seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  if (gmtime_r(&seconds, &tm) == nullptr) return cell(unix_ms);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

// A Raft change waits for its commit: longer than a read, unless --timeout says.
Options forRaftChange(const Options& options) {
  Options o = options;
  if (!o.timeout_given) o.timeout = kRaftChangeTimeout;
  return o;
}

// The file's text, or nullopt after saying why not.
std::optional<std::string> readPolicyFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "zetianctl: cannot read %s: %s\n", displayText(path).c_str(), std::strerror(errno));
    return std::nullopt;
  }
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxPolicyFileBytes) {
      std::fprintf(stderr, "zetianctl: %s is larger than %zu bytes, more than a policy may be\n",
                   displayText(path).c_str(), kMaxPolicyFileBytes);
      return std::nullopt;
    }
  }
  if (in.bad()) {
    std::fprintf(stderr, "zetianctl: cannot read %s\n", displayText(path).c_str());
    return std::nullopt;
  }
  return text;
}

void printConfigErrors(const std::vector<conf::ConfigError>& errors) {
  for (const auto& e : errors) std::fprintf(stderr, "%s\n", displayText(e.format()).c_str());
}

// GET /policy's document, or nullptr after saying why there is none.
const Json* policyDocument(const std::optional<Exchange>& ex) {
  if (!ex) return nullptr;
  if (!ex->success()) {
    printServerErrors(*ex);
    printNextStep(*ex);
    return nullptr;
  }
  const Json* doc = requireObject(*ex);
  if (doc == nullptr) return nullptr;
  const Json* text = member(*doc, "text");
  if (text == nullptr || !text->is_string()) {
    std::fprintf(stderr, "zetianctl: the reply to %s has no policy text\n", ex->what.c_str());
    return nullptr;
  }
  return doc;
}

int cmdPolicyGet(const Options& options) {
  const auto ex = request(options, "GET", "/policy");
  if (!ex) return kExitFailed;
  if (options.json) {
    printRaw(ex->reply.body);
    return ex->success() ? kExitOk : kExitFailed;
  }
  const Json* doc = policyDocument(ex);
  if (doc == nullptr) return kExitFailed;
  const std::string text = displayLines(textOf(*member(*doc, "text")));
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (!text.empty() && text.back() != '\n') std::fputc('\n', stdout);
  return kExitOk;
}

int cmdPolicyApply(const Options& options, const std::string& path) {
  const auto text = readPolicyFile(path);
  if (!text) return kExitFailed;
  // The daemon's own loader, so a file is refused here exactly as the cluster would
  // refuse it, before anything is sent.
  const conf::PolicyLoadResult loaded = conf::loadPolicy(*text, path);
  if (!loaded.ok()) {
    printConfigErrors(loaded.errors);
    std::fprintf(stderr, "zetianctl: %s has errors; nothing was sent\n", displayText(path).c_str());
    // A node's whole zetian.toml: the loader refuses its node-local tables one by one.
    const bool node_file = std::any_of(loaded.errors.begin(), loaded.errors.end(), [](const conf::ConfigError& e) {
      return e.message.find("is a node-local table") != std::string::npos;
    });
    if (node_file) {
      std::fprintf(stderr,
                   "zetianctl: a policy file holds only [ratelimit] and [affinity]; `zetianctl policy get > "
                   "policy.toml` gives one to edit\n");
    }
    return kExitFailed;
  }
  for (const auto& w : loaded.warnings) std::fprintf(stderr, "warning: %s\n", displayText(w.format()).c_str());
  std::string target = "/policy";
  if (options.base_version) target += "?base_version=" + std::to_string(*options.base_version);
  const auto done = [](const Json& reply) {
    return "policy version " + cell(member(reply, "version")) + " committed (index " + cell(member(reply, "index")) +
           ")";
  };
  return mutation(forRaftChange(options), target, done, "the policy was not applied:", "PUT", *text);
}

int cmdPolicyDiff(const Options& options, const std::string& path) {
  const auto text = readPolicyFile(path);
  if (!text) return kExitUsage;
  // A policy file, or a node's zetian.toml: its policy tables are compared (what the
  // start-up warning policy_file_differs is about).
  std::optional<conf::Policy> file_policy;
  conf::PolicyLoadResult as_policy = conf::loadPolicy(*text, path);
  if (as_policy.ok()) {
    file_policy = std::move(as_policy.policy);
  } else {
    conf::LoadResult as_node_file = conf::loadString(*text, path);
    if (as_node_file.ok()) {
      file_policy = std::move(as_node_file.config->policy);
    } else {
      printConfigErrors(as_policy.errors);
      std::fprintf(stderr, "zetianctl: %s has errors; nothing to compare\n", displayText(path).c_str());
      return kExitUsage;
    }
  }
  const auto ex = request(options, "GET", "/policy");
  const Json* doc = policyDocument(ex);
  if (doc == nullptr) return kExitUsage;
  const Json* version = member(*doc, "version");
  const std::string cluster_name = "<policy version " + cell(version) + ">";
  const conf::PolicyLoadResult cluster = conf::loadPolicy(textOf(*member(*doc, "text")), cluster_name);
  if (!cluster.ok()) {
    printConfigErrors(cluster.errors);
    std::fprintf(stderr, "zetianctl: the cluster's policy does not load here (is zetianctl older than the daemon?)\n");
    return kExitUsage;
  }
  const conf::PolicyDiff diff = conf::diffPolicies(*cluster.policy, *file_policy);
  std::printf("--- the cluster's policy, version %s\n+++ %s\n", cell(version).c_str(), displayText(path).c_str());
  const std::string rendered = displayLines(conf::renderPolicyDiff(diff));
  std::fwrite(rendered.data(), 1, rendered.size(), stdout);
  if (!rendered.empty() && rendered.back() != '\n') std::fputc('\n', stdout);
  return diff.empty() ? kExitOk : kExitFailed;
}

int cmdPolicyHistory(const Options& options) {
  const auto ex = request(options, "GET", "/policy/history");
  if (!ex) return kExitFailed;
  if (options.json) {
    printRaw(ex->reply.body);
    return ex->success() ? kExitOk : kExitFailed;
  }
  if (!ex->success() || !ex->doc) {
    if (ex->success()) {
      std::fprintf(stderr, "zetianctl: the reply to %s is not valid JSON (%s)\n", ex->what.c_str(),
                   ex->parse_error.c_str());
    } else {
      printServerErrors(*ex);
    }
    return kExitFailed;
  }
  if (!ex->doc->is_array()) {
    std::fprintf(stderr, "zetianctl: the reply to %s is not a JSON array\n", ex->what.c_str());
    return kExitFailed;
  }
  if (ex->doc->empty()) {
    std::puts("no policy version applied yet");
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const Json& item : *ex->doc) {
    rows.push_back({cell(member(item, "version")), cell(member(item, "proposer")), utcTime(member(item, "time_unix_ms")),
                    cell(member(item, "index")), cell(member(item, "text_bytes"))});
  }
  printTable({"VERSION", "PROPOSER", "TIME (UTC)", "INDEX", "BYTES"}, rows);
  return kExitOk;
}

int cmdClusterRemove(const Options& options, const std::string& node) {
  const auto done = [&](const Json& reply) {
    return displayText(node) + " removed from the Raft cluster (index " + cell(member(reply, "index")) + ")";
  };
  return mutation(forRaftChange(options), "/cluster/remove?node=" + percentEncode(node), done,
                  "the removal was refused:");
}

int cmdClusterTransferLeader(const Options& options, const std::optional<std::string>& node) {
  const auto done = [](const Json& reply) {
    const Json* leader = member(reply, "leader");
    if (leader == nullptr || !leader->is_string()) return std::string("leadership transferred");
    return "leadership transferred: " + displayText(textOf(*leader)) + " leads now";
  };
  const std::string target = node ? "/cluster/transfer-leader?node=" + percentEncode(*node) : "/cluster/transfer-leader";
  return mutation(forRaftChange(options), target, done, "the leadership transfer failed:");
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
}  // namespace zetian::milter

int main(int argc, char** argv) { return zetian::milter::run(argc, argv); }
