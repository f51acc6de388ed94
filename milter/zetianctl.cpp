// zetianctl: the operator's view of a running zetian-milter, through its health socket.
//
// Every command is one HTTP request (ctl_http) whose JSON reply (ctl_json) becomes a
// short human summary or table, or is printed as sent with --json. Text that came
// from SMTP clients (keys: HELO names, addresses) is printed with control characters
// escaped, so a hostile key cannot drive the operator's terminal.
//
// Exit status: 0 success, 1 the server refused or something failed, 2 usage error.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "milter/ctl_http.h"
#include "milter/ctl_json.h"

#ifndef ZETIAN_VERSION
#define ZETIAN_VERSION "0.1.0"
#endif

namespace zetian::milter {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr std::chrono::milliseconds kDefaultTimeout{5000};
constexpr const char* kDefaultSocket = "/run/zetian/health.sock";

constexpr const char* kUsage =
    "Usage: zetianctl [-s SOCKET] [--json] COMMAND\n"
    "\n"
    "Talk to a running zetian-milter through its health socket.\n"
    "\n"
    "Commands:\n"
    "  status                        node, status, version, uptime, maintenance, members\n"
    "  health                        the /health document (pretty; --json: as sent)\n"
    "  members                       cluster members: id, address, region, status, load,\n"
    "                                last heartbeat (UTC)\n"
    "  metrics                       Prometheus metrics, as text\n"
    "  reload                        re-read the policy; refused if it has errors\n"
    "  maintenance on|off            drain this node (new SMTP sessions get 421 4.3.2,\n"
    "                                peers show it as maintenance) or end the drain\n"
    "  limits show [--rule R] [--key K]\n"
    "                                counters held: remaining tokens, retry-after\n"
    "  limits reset RULE KEY         forget the counter of KEY under RULE (KEY `*`: all)\n"
    "\n"
    "Options:\n"
    "  -s, --socket SOCKET  the health socket (default: $ZETIAN_HEALTH_SOCKET,\n"
    "                       else /run/zetian/health.sock)\n"
    "      --json           print the server's JSON instead of a summary or table\n"
    "      --timeout SECS   give up on the server after SECS seconds (default 5)\n"
    "  -h, --help           show this help\n"
    "      --version        show the version\n"
    "\n"
    "Exit status: 0 success, 1 refused by the server or failed, 2 usage error.\n";

struct UsageError {
  std::string message;
};

struct Options {
  std::string socket;
  bool json = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
  std::optional<std::string> rule;
  std::optional<std::string> key;
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

std::string formatNumber(const JsonValue& v) {
  if (v.text.find_first_of(".eE") == std::string::npos) return v.text;
  if (v.number == static_cast<double>(static_cast<long long>(v.number)) && v.number < 1e15 &&
      v.number > -1e15) {
    return std::to_string(static_cast<long long>(v.number));
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", v.number);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

// A member for a table cell: strings (escaped), numbers, booleans; "-" if absent.
std::string cell(const JsonValue* v) {
  if (v == nullptr || v->isNull()) return "-";
  if (v->isString()) return v->text.empty() ? "\"\"" : displayText(v->text);
  if (v->isNumber()) return formatNumber(*v);
  if (v->isBool()) return v->boolean ? "true" : "false";
  return displayText(toJson(*v, 0));
}

std::string uptimeText(const JsonValue* v) {
  if (v == nullptr || !v->isNumber() || v->number < 0) return cell(v);
  auto total = static_cast<long long>(v->number);
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

std::string retryAfterText(const JsonValue* v) {
  if (v == nullptr || !v->isNumber()) return cell(v);
  if (v->number <= 0) return "-";
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

// ---- talking to the server ----------------------------------------------------------

struct Exchange {
  std::string what;  // "GET /health", for messages
  HttpResponse response;
  std::optional<JsonValue> doc;  // the body, if it is JSON
  std::string parse_error;
  bool success() const { return response.status >= 200 && response.status < 300; }
};

std::optional<Exchange> request(const Options& options, std::string_view method,
                                const std::string& target) {
  Exchange ex;
  ex.what = std::string(method) + " " + target;
  std::string error;
  if (!httpRequest(options.socket, method, target, options.timeout, &ex.response, &error)) {
    std::fprintf(stderr, "zetianctl: %s\n", error.c_str());
    return std::nullopt;
  }
  ex.doc = parseJson(ex.response.body, &ex.parse_error);
  return ex;
}

// Prints what the server said about a failure: its "error" and "errors" lines if the
// body is JSON, otherwise the status and the first line of the body.
void printServerErrors(const Exchange& ex) {
  bool printed = false;
  if (ex.doc) {
    if (const JsonValue* e = ex.doc->find("error"); e != nullptr && e->isString()) {
      std::fprintf(stderr, "zetianctl: %s\n", displayText(e->text).c_str());
      printed = true;
    }
    if (const JsonValue* list = ex.doc->find("errors"); list != nullptr && list->isArray()) {
      for (const JsonValue& line : list->items) {
        std::fprintf(stderr, "%s\n", line.isString() ? displayText(line.text).c_str()
                                                     : displayText(toJson(line, 0)).c_str());
        printed = true;
      }
    }
  }
  if (!printed) {
    std::string first_line = ex.response.body.substr(0, ex.response.body.find('\n'));
    if (first_line.size() > 200) first_line.resize(200);
    std::fprintf(stderr, "zetianctl: %s: the server answered %d %s%s%s\n", ex.what.c_str(),
                 ex.response.status, displayText(ex.response.reason).c_str(),
                 first_line.empty() ? "" : ": ", displayText(first_line).c_str());
  }
}

// The JSON object a command needs, or nullptr after saying why there is none.
const JsonValue* requireObject(const Exchange& ex) {
  if (!ex.doc) {
    if (!ex.success()) {
      printServerErrors(ex);
    } else {
      std::fprintf(stderr, "zetianctl: the reply to %s is not valid JSON (%s)\n", ex.what.c_str(),
                   ex.parse_error.c_str());
    }
    return nullptr;
  }
  if (!ex.doc->isObject()) {
    std::fprintf(stderr, "zetianctl: the reply to %s is not a JSON object\n", ex.what.c_str());
    return nullptr;
  }
  return &*ex.doc;
}

// ---- commands --------------------------------------------------------------------

int cmdStatus(const Options& options) {
  const auto ex = request(options, "GET", "/health");
  if (!ex) return kExitFailed;
  if (options.json) {
    printRaw(ex->response.body);
    return ex->success() ? kExitOk : kExitFailed;
  }
  const JsonValue* health = requireObject(*ex);
  if (health == nullptr) return kExitFailed;
  if (!ex->success() && health->find("status") == nullptr) {
    printServerErrors(*ex);
    return kExitFailed;
  }
  const JsonValue* maintenance = health->find("maintenance");
  const JsonValue* members = health->find("members");
  std::printf("node:         %s\n", cell(health->find("node_id")).c_str());
  std::printf("status:       %s\n", cell(health->find("status")).c_str());
  std::printf("version:      %s\n", cell(health->find("version")).c_str());
  std::printf("uptime:       %s\n", uptimeText(health->find("uptime_s")).c_str());
  std::printf("maintenance:  %s\n", maintenance != nullptr && maintenance->isBool()
                                        ? (maintenance->boolean ? "on" : "off")
                                        : cell(maintenance).c_str());
  std::printf("members:      %s\n", members != nullptr && members->isArray()
                                        ? std::to_string(members->items.size()).c_str()
                                        : cell(members).c_str());
  if (!ex->success()) {
    std::fprintf(stderr, "zetianctl: /health answered %d %s\n", ex->response.status,
                 displayText(ex->response.reason).c_str());
    return kExitFailed;
  }
  return kExitOk;
}

int cmdHealth(const Options& options) {
  const auto ex = request(options, "GET", "/health");
  if (!ex) return kExitFailed;
  if (options.json) {
    printRaw(ex->response.body);
  } else if (ex->doc) {
    std::printf("%s\n", toJson(*ex->doc, 2).c_str());
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
  const JsonValue* health = requireObject(*ex);
  if (health == nullptr) return kExitFailed;
  if (!ex->success() && health->find("members") == nullptr) {
    printServerErrors(*ex);
    return kExitFailed;
  }
  const JsonValue* members = health->find("members");
  if (members == nullptr || !members->isArray()) {
    std::fprintf(stderr, "zetianctl: the /health reply has no members list\n");
    return kExitFailed;
  }
  if (options.json) {
    std::printf("%s\n", toJson(*members, 0).c_str());
    return ex->success() ? kExitOk : kExitFailed;
  }
  std::vector<std::vector<std::string>> rows;
  for (const JsonValue& m : members->items) {
    const JsonValue* load = m.find("load");
    const JsonValue* region = m.find("region");
    const bool no_region = region != nullptr && region->isString() && region->text.empty();
    rows.push_back({cell(m.find("id")), cell(m.find("address")), no_region ? "-" : cell(region),
                    cell(m.find("status")), cell(load != nullptr ? load->find("sessions") : nullptr),
                    cell(load != nullptr ? load->find("messages_per_s") : nullptr), cell(m.find("last_seen"))});
  }
  printTable({"ID", "ADDRESS", "REGION", "STATUS", "SESSIONS", "MSG/S", "LAST SEEN"}, rows);
  return ex->success() ? kExitOk : kExitFailed;
}

int cmdMetrics(const Options& options) {
  const auto ex = request(options, "GET", "/metrics");
  if (!ex) return kExitFailed;
  if (!ex->success()) {
    printServerErrors(*ex);
    return kExitFailed;
  }
  std::fwrite(ex->response.body.data(), 1, ex->response.body.size(), stdout);
  return kExitOk;
}

// reload and limits reset: {"ok":true,...} or {"ok":false,"errors":[...]}. `done`
// turns the accepted reply into the line to print.
int mutation(const Options& options, const std::string& target,
             const std::function<std::string(const JsonValue&)>& done, const std::string& refused) {
  const auto ex = request(options, "POST", target);
  if (!ex) return kExitFailed;
  const JsonValue* ok = ex->doc ? ex->doc->find("ok") : nullptr;
  const bool accepted = ex->success() && (ok == nullptr || !ok->isBool() || ok->boolean);
  if (options.json) {
    printRaw(ex->response.body);
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
  return kExitFailed;
}

int cmdReload(const Options& options) {
  const auto done = [](const JsonValue& reply) {
    std::string line = "policy reloaded";
    const JsonValue* version = reply.find("policy_version");
    const JsonValue* rules = reply.find("rules");
    if (version != nullptr && version->isNumber()) line += ": version " + formatNumber(*version);
    if (rules != nullptr && rules->isNumber()) {
      line += (version != nullptr && version->isNumber() ? ", " : ": ") + formatNumber(*rules) +
              (rules->text == "1" ? " rule" : " rules");
    }
    return line;
  };
  return mutation(options, "/reload", done, "reload refused; the running policy stays in force:");
}

int cmdMaintenance(const Options& options, bool enabled) {
  const auto done = [enabled](const JsonValue& reply) {
    const JsonValue* changed = reply.find("changed");
    const bool was_change = changed == nullptr || !changed->isBool() || changed->boolean;
    std::string line = enabled ? "maintenance on: new SMTP sessions get 421 4.3.2 (loopback exempt)"
                               : "maintenance off: taking mail again";
    if (!was_change) line += " (it already was)";
    return line;
  };
  return mutation(options, enabled ? "/maintenance?state=on" : "/maintenance?state=off", done,
                  "the node refused the maintenance change:");
}

int cmdLimitsShow(const Options& options) {
  std::string target = "/limits";
  std::string sep = "?";
  if (options.rule) {
    target += sep + "rule=" + percentEncode(*options.rule);
    sep = "&";
  }
  if (options.key) target += sep + "key=" + percentEncode(*options.key);

  const auto ex = request(options, "GET", target);
  if (!ex) return kExitFailed;
  if (options.json) {
    printRaw(ex->response.body);
    return ex->success() ? kExitOk : kExitFailed;
  }
  if (!ex->success()) {
    printServerErrors(*ex);
    return kExitFailed;
  }
  const JsonValue* doc = requireObject(*ex);
  if (doc == nullptr) return kExitFailed;
  const JsonValue* limits = doc->find("limits");
  if (limits == nullptr || !limits->isArray()) {
    std::fprintf(stderr, "zetianctl: the /limits reply has no limits list\n");
    return kExitFailed;
  }
  if (limits->items.empty()) {
    std::fputs(options.rule || options.key ? "no counters match\n" : "no counters held\n", stdout);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const JsonValue& l : limits->items) {
    std::string limit = cell(l.find("limit"));
    if (const JsonValue* period = l.find("period"); period != nullptr && !period->isNull()) {
      limit += "/" + (period->isNumber() ? formatNumber(*period) + "s" : cell(period));
    }
    rows.push_back({cell(l.find("rule")), cell(l.find("key")), cell(l.find("remaining")), limit,
                    retryAfterText(l.find("retry_after_s"))});
  }
  printTable({"RULE", "KEY", "REMAINING", "LIMIT", "RETRY_AFTER"}, rows);
  if (const JsonValue* truncated = doc->find("truncated"); truncated != nullptr && truncated->isBool() &&
                                                          truncated->boolean) {
    std::printf("(only the first %zu counters are listed; narrow with --rule and --key)\n",
                limits->items.size());
  }
  return kExitOk;
}

int cmdLimitsReset(const Options& options, const std::string& rule, const std::string& key) {
  const std::string target = "/limits/reset?rule=" + percentEncode(rule) + "&key=" + percentEncode(key);
  const auto done = [&](const JsonValue& reply) {
    std::string line = "counter reset: rule " + displayText(rule) + ", key " + displayText(key);
    if (const JsonValue* n = reply.find("reset"); n != nullptr && n->isNumber()) {
      line += " (" + formatNumber(*n) + (n->text == "1" ? " counter" : " counters") + " cleared)";
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
    } else if (is("--timeout")) {
      const std::string text = valueOf(i, arg, "--timeout");
      char* end = nullptr;
      const double seconds = std::strtod(text.c_str(), &end);
      if (text.empty() || *end != '\0' || !(seconds > 0) || seconds > 3600) {
        throw UsageError{"--timeout wants a number of seconds between 0 and 3600, not `" + text + "`"};
      }
      options.timeout = std::chrono::milliseconds(static_cast<long long>(seconds * 1000 + 0.5));
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
  if ((options.rule || options.key) && !limits_show) {
    throw UsageError{"--rule and --key only apply to `limits show`"};
  }
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
    return dispatch(options);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "zetianctl: %s\nTry `zetianctl --help`.\n", e.message.c_str());
    return kExitUsage;
  }
}

}  // namespace
}  // namespace zetian::milter

int main(int argc, char** argv) { return zetian::milter::run(argc, argv); }
