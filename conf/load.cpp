// Loading: text -> TOML document -> overrides -> schema check -> Config.
//
// Traps in toml11 v3 that this file works around:
// - Its parser recurses once per nested array or inline table and has no depth limit:
//   "a = [[[[..." a few ten thousand deep overflows the stack; it handles very long
//   dotted keys in quadratic time; and each value costs it the length of its line.
//   The text goes through prepareSource (source.h) before it is parsed.
// - A syntax error's location() is where the parser gave up, often the start of the
//   line; the exact place is only in the message it formats for humans, which is read
//   back here (syntaxError).
// - When a string holds invalid UTF-8 it computes the error's place from an iterator
//   into another buffer (a heap overflow found by fuzzing): the text is checked to be
//   UTF-8 first, as TOML requires anyway.
// - It keeps the place of values, not of keys; see keyColumn in reader.cpp.
#include "conf/load.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "conf/build.h"
#include "conf/env.h"
#include "conf/parse.h"
#include "conf/reader.h"
#include "conf/text.h"

namespace zetian::conf {
namespace {

constexpr std::string_view kEmbeddedName = "<embedded default>";

constexpr std::string_view kEmbeddedDefault = R"toml(# The built-in configuration of zetian-milter, used when no configuration file is
# given. Every key not set here has its documented default (docs/configuration.md).

[node]
state_dir = "/var/lib/zetian"

[milter]
socket = "inet:8891@127.0.0.1"

[health]
socket = "/run/zetian/health.sock"

[log]
target = "syslog"

[ratelimit]
exempt = ["127.0.0.0/8", "::1/128"]

# At most 100 messages an hour from one client address; more are told to try later.
[[ratelimit.rule]]
name = "per-client-ip"
key = "client_ip"
stage = "mail"
limit = 100
period = "1h"
action = "tempfail"
)toml";

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// toml11 formats a syntax error as
//   [error] toml::parse_key_value_pair: missing value after key-value separator '='
//    --> zetian.toml
//      |
//    2 | b =
//      |     ^--- expected value, but got nothing
// with one or more such snippets. The last snippet is the offending place.
void syntaxError(const toml::syntax_error& e, const SourceMap& source, Diagnostics& diag) {
  std::istringstream in(e.what());
  std::string headline, row;
  std::getline(in, headline);
  std::string_view head = trim(headline);
  if (head.starts_with("[error]")) head = trim(head.substr(7));
  if (head.starts_with("toml::")) {
    const auto colon = head.find(": ");
    if (colon != std::string_view::npos) head = head.substr(colon + 2);
  }
  while (!head.empty() && head.back() == '.') head.remove_suffix(1);

  struct Snippet {
    int line = 0, column = 0;
    std::string note;
  };
  std::vector<Snippet> snippets;
  int pending_line = 0;
  while (std::getline(in, row)) {
    const auto bar = row.find(" | ");
    const auto bar_end = row.find(" |");
    if (bar != std::string::npos) {
      const std::string_view number = trim(std::string_view(row).substr(0, bar));
      if (!number.empty() && std::all_of(number.begin(), number.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        pending_line = std::stoi(std::string(number.substr(0, 9)));
        continue;
      }
    }
    if (pending_line > 0 && bar_end != std::string::npos && trim(std::string_view(row).substr(0, bar_end)).empty()) {
      const std::size_t code_start = bar_end + 3;
      const auto mark = row.find_first_of("^~", bar_end + 2);
      if (mark != std::string::npos && mark >= code_start) {
        std::string_view note = std::string_view(row).substr(mark);
        while (!note.empty() && (note.front() == '^' || note.front() == '~' || note.front() == '-')) note.remove_prefix(1);
        snippets.push_back({pending_line, static_cast<int>(mark - code_start) + 1, std::string(trim(note))});
      }
      pending_line = 0;
    }
  }
  std::string message = "TOML syntax error: " + std::string(head);
  // toml11's places are in the text it parsed, which may have more line breaks than
  // the file (see source.h).
  if (snippets.empty()) {
    const SourcePlace at = source.fromParsed(static_cast<int>(e.location().line()), static_cast<int>(e.location().column()));
    diag.atPlace(at.line, at.column, message);
    return;
  }
  const Snippet& last = snippets.back();
  const SourcePlace at = source.fromParsed(last.line, last.column);
  const SourcePlace first = source.fromParsed(snippets.front().line, snippets.front().column);
  if (!last.note.empty() && last.note != "here") message += " (" + last.note + ")";
  if (snippets.size() > 1 && first.line != at.line) message += "; see also line " + std::to_string(first.line);
  diag.atPlace(at.line, at.column, message);
}

bool isBareKey(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// Parses `text` as the document "v = <text>" whose values carry the source name
// "--set KEY"; returns its single value, or nothing when it is not exactly that.
std::optional<toml::value> parseOverrideValue(const std::string& text, const std::string& source) {
  if (text.size() > kMaxConfigBytes || firstInvalidUtf8(text)) return std::nullopt;
  PreparedSource prepared = prepareSource("v = " + text + "\n");
  if (prepared.refused_at) return std::nullopt;
  try {
    std::istringstream in(std::move(prepared.text));
    toml::value doc = toml::parse(in, source);
    if (!doc.is_table() || doc.as_table().size() != 1 || !doc.contains("v")) return std::nullopt;
    return doc.at("v");
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// `o.key` is a dotted path here (an environment name was resolved before); `source`
// names where it came from, for the errors.
// `as_text`: the key is a string (or duration), so a value that TOML would read as
// another type is meant as the text it spells (an all-digit secret, a node id "42").
void applyOverride(toml::value& root, const Override& o, const std::string& source, Diagnostics& diag,
                   bool as_text = false) {
  std::vector<std::string> path;
  for (std::size_t start = 0;;) {
    const auto dot = o.key.find('.', start);
    path.push_back(o.key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  if (!std::all_of(path.begin(), path.end(), isBareKey)) {
    diag.atOverride(source, "not a key: write --set section.key=value, e.g. --set health.socket=/tmp/health.sock");
    return;
  }
  // A value that parses as TOML is taken as such ("10", "true", "[\"a\"]"); anything
  // else is the string it spells ("debug", "/tmp/h.sock", "10s").
  auto value = parseOverrideValue(o.value, source);
  if (!value || (as_text && !value->is_string())) value = parseOverrideValue(tomlString(o.value), source);
  if (!value) {
    diag.atOverride(source, "the value is not valid UTF-8");
    return;
  }
  toml::value* table = &root;
  std::string walked;
  for (std::size_t i = 0; i + 1 < path.size(); ++i) {
    walked += (walked.empty() ? "" : ".") + path[i];
    auto& t = table->as_table();
    auto it = t.find(path[i]);
    if (it == t.end()) {
      auto empty = parseOverrideValue("{}", source);
      it = t.emplace(path[i], empty ? *empty : toml::value(toml::table{})).first;
    }
    if (it->second.is_array() && !it->second.as_array().empty() && it->second.as_array().front().is_table()) {
      diag.atOverride(source, backticked(walked) + " is an array of tables; --set cannot change one of its entries, edit the file");
      return;
    }
    if (!it->second.is_table()) {
      diag.atOverride(source, backticked(walked) + " is not a table, so it has no key `" + path[i + 1] + "`");
      return;
    }
    table = &it->second;
  }
  table->as_table()[path.back()] = std::move(*value);
}

LoadResult finish(Diagnostics& diag, std::optional<Config> config) {
  LoadResult result;
  result.errors = diag.take();
  result.warnings = diag.takeWarnings();
  if (result.errors.empty()) result.config = std::move(config);
  return result;
}

}  // namespace

std::string tomlString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::optional<toml::value> parseDocument(std::string_view text, const std::string& name, PreparedSource& prepared,
                                         Diagnostics& diag) {
  if (text.size() > kMaxConfigBytes) {
    diag.atFile("the configuration is larger than 1 MiB; is this the right file?");
    return std::nullopt;
  }
  if (auto bad = firstInvalidUtf8(text)) {
    // TOML documents are UTF-8; toml11 3.7 also misreads its own buffers when it
    // reports invalid UTF-8 in a string, so it never gets to see any.
    const std::string_view before = text.substr(0, *bad);
    const auto line_start = before.rfind('\n');
    const int line = 1 + static_cast<int>(std::count(before.begin(), before.end(), '\n'));
    const int column = static_cast<int>(*bad - (line_start == std::string_view::npos ? 0 : line_start + 1)) + 1;
    diag.atPlace(line, column, "the file is not valid UTF-8 here; TOML files must be UTF-8");
    return std::nullopt;
  }
  prepared = prepareSource(text);
  if (prepared.refused_at) {
    diag.atPlace(prepared.refused_at->line, prepared.refused_at->column, std::move(prepared.refusal));
    return std::nullopt;
  }
  diag.setSource(SourceMap(text, prepared.text, prepared.breaks));
  try {
    std::istringstream in{prepared.text};
    return toml::parse(in, name);
  } catch (const toml::syntax_error& e) {
    syntaxError(e, diag.source(), diag);
    return std::nullopt;
  }
}

std::string ConfigError::format() const {
  if (line <= 0) return file + ": " + message;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

LoadResult loadString(std::string_view text, const std::string& name, const LoadOptions& options) {
  Diagnostics diag(name);
  try {
    PreparedSource prepared;
    std::optional<toml::value> parsed = parseDocument(text, name, prepared, diag);
    if (!parsed) return finish(diag, std::nullopt);
    toml::value& root = *parsed;
    std::vector<std::string> order;
    for (const auto& o : options.overrides) order.push_back(overrideSourceOf(o.key));
    diag.setOverrideOrder(std::move(order));
    for (const auto& o : options.overrides) {
      const std::string source = overrideSourceOf(o.key);
      if (!isEnvName(o.key)) {
        applyOverride(root, o, source, diag);
        continue;
      }
      if (isNonConfigEnvName(o.key)) continue;
      EnvKey key = resolveEnvName(o.key, schemaKeys());
      if (key.path.empty()) {
        diag.atOverride(source, std::move(key.error));
        continue;
      }
      const KeySchema* entry = findSchemaKey(key.path);
      const bool as_text = entry && (entry->type == ValueType::String || entry->type == ValueType::Duration);
      applyOverride(root, Override{std::move(key.path), o.value}, source, diag, as_text);
    }
    checkSchema(root, diag);
    Config config = buildConfig(root, diag, options.account_lookup);
    config.source = name;
    return finish(diag, std::move(config));
  } catch (const std::exception& e) {
    diag.atFile(std::string("internal error while reading the configuration: ") + e.what());
  } catch (...) {
    diag.atFile("internal error while reading the configuration");
  }
  return finish(diag, std::nullopt);
}

LoadResult loadString(std::string_view text, const std::string& name, const std::vector<Override>& overrides) {
  return loadString(text, name, LoadOptions{overrides, nullptr});
}

LoadResult loadFile(const std::string& path, const LoadOptions& options) {
  auto fail = [&](std::string message) {
    LoadResult result;
    result.errors.push_back(ConfigError{path, 0, 0, std::move(message)});
    return result;
  };
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return fail("is a directory; give the path of the TOML file with -c FILE");
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    if (err == ENOENT) {
      return fail("no such file; give the path of your configuration with -c FILE, or start from the commented "
                  "example (contrib/zetian.toml in the sources, installed as /etc/zetian/zetian.toml)");
    }
    if (err == EACCES) {
      return fail("permission denied; make the file readable by the user zetian-milter is started as");
    }
    return fail("cannot open: " + errnoText(err));
  }
  std::string text(kMaxConfigBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return fail("cannot read: " + errnoText(errno));
  text.resize(static_cast<std::size_t>(in.gcount()));
  return loadString(text, path, options);
}

LoadResult loadFile(const std::string& path, const std::vector<Override>& overrides) {
  return loadFile(path, LoadOptions{overrides, nullptr});
}

std::string_view embeddedDefaultText() { return kEmbeddedDefault; }

LoadResult loadEmbeddedDefault(const LoadOptions& options) {
  return loadString(kEmbeddedDefault, std::string(kEmbeddedName), options);
}

LoadResult loadEmbeddedDefault(const std::vector<Override>& overrides) {
  return loadEmbeddedDefault(LoadOptions{overrides, nullptr});
}

}  // namespace zetian::conf
