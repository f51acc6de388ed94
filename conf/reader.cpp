#include "conf/reader.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "conf/env.h"
#include "conf/text.h"

namespace zetian::conf {
namespace {

bool isBareKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// toml11 keeps the place of a value, not of its key. The key is on the same line as
// the value (`key = value`) or in the table header that holds it (`[a.key]`): find it
// there as a whole word, preferring the last occurrence before the value.
int keyColumn(std::string_view line, std::string_view key, int value_column) {
  if (key.empty()) return value_column;
  int before = 0, after = 0;
  for (std::size_t pos = line.find(key); pos != std::string::npos; pos = line.find(key, pos + 1)) {
    const bool starts = pos == 0 || !isBareKeyChar(line[pos - 1]);
    const bool ends = pos + key.size() == line.size() || !isBareKeyChar(line[pos + key.size()]);
    if (!starts || !ends) continue;
    const int column = static_cast<int>(pos) + 1;
    if (column < value_column) {
      before = column;
    } else if (after == 0) {
      after = column;
    }
  }
  return before ? before : after ? after : value_column;
}

std::string_view tomlTypeName(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::string: return "a string";
    case toml::value_t::integer: return "an integer";
    case toml::value_t::floating: return "a floating-point number";
    case toml::value_t::boolean: return "a boolean";
    case toml::value_t::offset_datetime:
    case toml::value_t::local_datetime:
    case toml::value_t::local_date:
    case toml::value_t::local_time: return "a date or time";
    case toml::value_t::array: return "an array";
    case toml::value_t::table: return "a table";
    case toml::value_t::empty: return "nothing";
  }
  return "something else";
}

bool hasType(const toml::value& v, ValueType type) {
  switch (type) {
    case ValueType::String:
    case ValueType::Duration: return v.is_string();
    case ValueType::Integer: return v.is_integer();
    case ValueType::Boolean: return v.is_boolean();
    case ValueType::StringArray: return v.is_array();  // elements checked one by one
    case ValueType::Table: return v.is_table();
    case ValueType::TableArray:
      return v.is_array() && std::all_of(v.as_array().begin(), v.as_array().end(),
                                         [](const toml::value& e) { return e.is_table(); });
  }
  return false;
}

std::string typeMismatch(std::string_view path, ValueType type, const toml::value& v) {
  const std::string name = backticked(path);
  const std::string got = std::string(tomlTypeName(v));
  switch (type) {
    case ValueType::Duration:
      if (v.is_integer()) {
        return name + " needs a unit: write \"" + std::to_string(v.as_integer()) +
               "s\" for seconds (units: ms, s, m, h, d)";
      }
      if (v.is_floating()) return name + " needs a unit and a whole number, in quotes: e.g. \"1500ms\" or \"1h30m\"";
      return name + " must be a duration in quotes such as \"10s\", not " + got;
    case ValueType::String:
      return name + " must be a string (in double quotes), not " + got;
    case ValueType::Integer:
      if (v.is_string()) return name + " must be an integer, written without quotes";
      if (v.is_floating()) return name + " must be a whole number, not a floating-point number";
      return name + " must be an integer, not " + got;
    case ValueType::Boolean:
      if (v.is_string()) return name + " must be true or false, written without quotes";
      return name + " must be true or false, not " + got;
    case ValueType::StringArray:
      if (v.is_string()) return name + " must be an array of strings: put the value in brackets, [\"...\"]";
      return name + " must be an array of strings, such as [\"a\", \"b\"], not " + got;
    case ValueType::Table:
      return name + " must be a table: start it with [" + std::string(path) + "] on a line of its own";
    case ValueType::TableArray:
      if (v.is_table()) {
        return name + " must be an array of tables: write [[" + std::string(path) + "]] (double brackets) before each entry";
      }
      return name + " must be an array of tables: write [[" + std::string(path) + "]] before each entry";
  }
  return name + " has the wrong type";
}

std::string parentOf(std::string_view path) {
  const auto dot = path.rfind('.');
  return dot == std::string_view::npos ? std::string() : std::string(path.substr(0, dot));
}

std::string_view lastSegment(std::string_view path) {
  const auto dot = path.rfind('.');
  return dot == std::string_view::npos ? path : path.substr(dot + 1);
}

std::string sectionLabel(std::string_view path) {
  const auto* entry = findSchemaKey(path);
  if (entry && entry->type == ValueType::TableArray) return "[[" + std::string(path) + "]]";
  return "[" + std::string(path) + "]";
}

// Keys that existed once, with what replaced them: "did you mean" or "belongs in
// [cluster]" (for redis.enabled) would point the wrong way.
struct ReplacedKey {
  std::string_view path;
  std::string_view hint;
};
constexpr ReplacedKey kReplacedKeys[] = {
    {"redis.enabled", "Redis is used by the rules whose store is \"redis\" (`ratelimit.rule.store` or `ratelimit.store`); "
                      "[redis] only says where it is: remove `enabled`"},
    {"redis.address", "it is now `redis.url`, e.g. url = \"redis://127.0.0.1:6379/0\" or "
                      "\"unix:/run/redis/redis-server.sock\""},
    {"redis.database", "the database is now part of `redis.url`, e.g. \"redis://127.0.0.1:6379/3\" or \"unix:/path?db=3\""},
};

void reportUnknown(Diagnostics& diag, const toml::value& v, std::string_view parent, std::string_view key) {
  const std::string shown = parent.empty() ? printableKey(key) : std::string(parent) + "." + printableKey(key);
  for (const auto& replaced : kReplacedKeys) {
    if (replaced.path == shown) {
      diag.atKey(v, key, "unknown key `" + shown + "`: " + std::string(replaced.hint));
      return;
    }
  }
  std::vector<std::string_view> siblings;
  for (const auto& entry : schemaKeys()) {
    if (parentOf(entry.path) == parent) siblings.push_back(lastSegment(entry.path));
  }
  std::string message = "unknown key `" + shown + "`";
  if (auto near = closestMatch(key, siblings); !near.empty()) {
    message += "; did you mean `" + (parent.empty() ? std::string(near) : std::string(parent) + "." + std::string(near)) + "`?";
    diag.atKey(v, key, std::move(message));
    return;
  }
  for (const auto& entry : schemaKeys()) {
    if (lastSegment(entry.path) == key && entry.path.find('.') != std::string_view::npos) {
      message += "; `" + std::string(key) + "` belongs in " + sectionLabel(parentOf(entry.path));
      diag.atKey(v, key, std::move(message));
      return;
    }
  }
  if (parent.empty()) {
    message += "; the sections are " + joinNames(siblings);
  } else {
    message += "; the keys of " + sectionLabel(parent) + " are " + joinNames(siblings);
  }
  diag.atKey(v, key, std::move(message));
}

void checkTable(const toml::value& table, const std::string& path, Diagnostics& diag) {
  for (const auto& [key, value] : table.as_table()) {
    const std::string child = path.empty() ? key : path + "." + key;
    const KeySchema* entry = findSchemaKey(child);
    if (!entry) {
      reportUnknown(diag, value, path, key);
      continue;
    }
    if (!hasType(value, entry->type)) {
      diag.atValue(value, typeMismatch(child, entry->type, value));
      continue;
    }
    if (entry->type == ValueType::Table) {
      checkTable(value, child, diag);
    } else if (entry->type == ValueType::TableArray) {
      for (const auto& element : value.as_array()) checkTable(element, child, diag);
    } else if (entry->type == ValueType::StringArray) {
      for (const auto& element : value.as_array()) {
        if (!element.is_string()) {
          diag.atValue(element, backticked(child) + " must contain strings only, not " + std::string(tomlTypeName(element)));
        }
      }
    }
  }
}

}  // namespace

std::string printableKey(std::string_view key) {
  if (!key.empty() && std::all_of(key.begin(), key.end(), isBareKeyChar)) return std::string(key);
  return quoteValue(key);
}

void Diagnostics::atPlace(int line, int column, std::string message) {
  errors_.push_back(ConfigError{file_, line, column, std::move(message)});
}

std::string overrideSourceOf(std::string_view key) {
  return isEnvName(key) ? std::string(key) : std::string(kOverrideSource) + std::string(key);
}

bool isOverrideSource(std::string_view name) { return name.starts_with(kOverrideSource) || isEnvName(name); }

void Diagnostics::atOverride(std::string_view source, std::string message) {
  errors_.push_back(ConfigError{std::string(source), 0, 0, std::move(message)});
}

void Diagnostics::atFile(std::string message) { errors_.push_back(ConfigError{file_, 0, 0, std::move(message)}); }

// toml11 3.7 keeps a value's place as a region of its parse buffer. Its own
// location() counts the newlines from the start of the file and copies the whole line
// each time, which is quadratic over many errors or long lines; the region's offset
// into the buffer, mapped through the SourceMap, costs a binary search.
namespace {
const toml::detail::region* regionOf(const toml::value& v) {
  return dynamic_cast<const toml::detail::region*>(toml::detail::get_region(v));
}
}  // namespace

std::optional<SourcePlace> Diagnostics::placeOf(const toml::value& v) const {
  const toml::detail::region* region = regionOf(v);
  if (!region || region->name() != file_) return std::nullopt;
  if (source_.empty()) {
    const auto loc = v.location();
    return SourcePlace{static_cast<int>(loc.line()), static_cast<int>(loc.column())};
  }
  return source_.fromParsedOffset(static_cast<std::size_t>(region->first() - region->begin()));
}

ConfigError Diagnostics::about(const toml::value& v, std::string message) const {
  if (const auto* region = regionOf(v); region && region->name() != file_ && isOverrideSource(region->name())) {
    return ConfigError{region->name(), 0, 0, std::move(message)};
  }
  if (auto place = placeOf(v)) return ConfigError{file_, place->line, place->column, std::move(message)};
  return ConfigError{file_, 0, 0, std::move(message)};  // a value with no place of its own
}

void Diagnostics::atValue(const toml::value& v, std::string message) { errors_.push_back(about(v, std::move(message))); }

void Diagnostics::warnAtValue(const toml::value& v, std::string message) {
  warnings_.push_back(about(v, std::move(message)));
}

void Diagnostics::warnAtFile(std::string message) { warnings_.push_back(ConfigError{file_, 0, 0, std::move(message)}); }

void Diagnostics::atKey(const toml::value& v, std::string_view key, std::string message) {
  const toml::detail::region* region = regionOf(v);
  if (!region || region->name() != file_ || source_.empty()) {
    atValue(v, std::move(message));
    return;
  }
  // The key is searched on the line toml11 parsed, which is short even when the line
  // in the file is not (see source.h), and its column mapped back.
  const std::size_t offset = static_cast<std::size_t>(region->first() - region->begin());
  const int line = source_.parsedLineOf(offset);
  const int value_column = static_cast<int>(offset - source_.parsedOffset(line, 1)) + 1;
  const SourcePlace place = source_.fromParsed(line, keyColumn(source_.parsedLine(line), key, value_column));
  atPlace(place.line, place.column, std::move(message));
}

void Diagnostics::sortByPlace(std::vector<ConfigError>& list) const {
  // Placed errors by place; then the file's own; then overrides in the order given.
  const auto rank = [&](const ConfigError& e) -> std::size_t {
    if (e.line > 0) return 0;
    if (e.file == file_) return 1;
    for (std::size_t i = 0; i < override_order_.size(); ++i) {
      if (e.file == override_order_[i]) {
        return 2 + i;
      }
    }
    return 2 + override_order_.size();
  };
  std::stable_sort(list.begin(), list.end(), [&](const ConfigError& a, const ConfigError& b) {
    const std::size_t ra = rank(a), rb = rank(b);
    if (ra != rb) return ra < rb;
    if (a.line != b.line) return a.line < b.line;
    return a.column < b.column;
  });
}

std::vector<ConfigError> Diagnostics::take() {
  sortByPlace(errors_);
  return std::move(errors_);
}

std::vector<ConfigError> Diagnostics::takeWarnings() {
  sortByPlace(warnings_);
  return std::move(warnings_);
}

void checkSchema(const toml::value& root, Diagnostics& diag) {
  if (root.is_table()) checkTable(root, "", diag);
}

const toml::value* TableReader::find(std::string_view key) const {
  if (!table_ || !table_->is_table()) return nullptr;
  const auto& t = table_->as_table();
  const auto it = t.find(std::string(key));
  return it == t.end() ? nullptr : &it->second;
}

std::string TableReader::path(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

const toml::value* TableReader::read(std::string_view key, ValueType type) {
  const std::string full = path(key);
  const KeySchema* entry = findSchemaKey(full);
  if (!entry || entry->type != type) {
    throw std::logic_error("conf: the loader reads `" + full + "` as " + std::string(valueTypeName(type)) +
                           " but the schema says " + (entry ? std::string(valueTypeName(entry->type)) : "nothing"));
  }
  diag_.keysRead().insert(full);
  const toml::value* v = find(key);
  if (!v || !hasType(*v, type)) return nullptr;
  return v;
}

std::optional<std::string> TableReader::string(std::string_view key) {
  const toml::value* v = read(key, ValueType::String);
  if (!v) return std::nullopt;
  return v->as_string().str;
}

std::optional<bool> TableReader::boolean(std::string_view key) {
  const toml::value* v = read(key, ValueType::Boolean);
  if (!v) return std::nullopt;
  return v->as_boolean();
}

std::optional<std::int64_t> TableReader::integer(std::string_view key, std::int64_t min, std::int64_t max) {
  const toml::value* v = read(key, ValueType::Integer);
  if (!v) return std::nullopt;
  const std::int64_t n = v->as_integer();
  if (n < min || n > max) {
    std::string message = backticked(path(key)) + " must be ";
    if (max == INT64_MAX) {
      message += "at least " + std::to_string(min);
    } else {
      message += "from " + std::to_string(min) + " to " + std::to_string(max);
    }
    diag_.atValue(*v, message + ", not " + std::to_string(n));
    return std::nullopt;
  }
  return n;
}

std::optional<Duration> TableReader::duration(std::string_view key, Duration min) {
  const toml::value* v = read(key, ValueType::Duration);
  if (!v) return std::nullopt;
  std::string why;
  const auto d = parseDuration(v->as_string().str, &why);
  if (!d) {
    diag_.atValue(*v, backticked(path(key)) + ": " + why);
    return std::nullopt;
  }
  if (*d < min) {
    diag_.atValue(*v, backticked(path(key)) + " must be " +
                          (min == Duration(1) ? std::string("longer than 0s") : "at least " + formatDuration(min)));
    return std::nullopt;
  }
  return d;
}

std::optional<std::vector<std::pair<std::string, const toml::value*>>> TableReader::strings(std::string_view key) {
  const toml::value* v = read(key, ValueType::StringArray);
  if (!v) return std::nullopt;
  std::vector<std::pair<std::string, const toml::value*>> out;
  for (const auto& element : v->as_array()) {
    if (element.is_string()) out.emplace_back(element.as_string().str, &element);
  }
  return out;
}

std::vector<const toml::value*> TableReader::tables(std::string_view key) {
  std::vector<const toml::value*> out;
  const toml::value* v = read(key, ValueType::TableArray);
  if (!v) return out;
  for (const auto& element : v->as_array()) out.push_back(&element);
  return out;
}

const toml::value* TableReader::subtable(std::string_view key) { return read(key, ValueType::Table); }

void TableReader::reportBadChoice(std::string_view key, const std::string& text, std::vector<std::string_view> names) {
  std::string message = backticked(path(key)) + " must be one of " + joinNames(names) + ", not " + quoteValue(text);
  if (auto near = closestMatch(text, names); !near.empty()) message += "; did you mean `" + std::string(near) + "`?";
  error(key, std::move(message));
}

std::optional<std::string> TableReader::secret(std::string_view key, std::string_view file_key) {
  auto inline_value = string(key);
  auto file = string(file_key);
  if (inline_value && inline_value->empty()) inline_value.reset();
  if (inline_value && file) {
    error(file_key, "give either `" + path(key) + "` or `" + path(file_key) + "`, not both");
    return std::nullopt;
  }
  if (inline_value) return inline_value;
  if (!file) return std::nullopt;
  const std::string what = backticked(path(file_key)) + " " + quoteValue(*file);
  if (file->empty()) {
    error(file_key, backticked(path(file_key)) + " is empty; give the path of the file that holds the secret");
    return std::nullopt;
  }
  std::error_code ec;
  if (std::filesystem::is_directory(*file, ec)) {
    error(file_key, what + " is a directory, not a file");
    return std::nullopt;
  }
  std::ifstream in(*file, std::ios::binary);
  if (!in) {
    error(file_key, "cannot read " + what + ": " + errnoText(errno) +
                        "; check the path and that the user zetian runs as may read it");
    return std::nullopt;
  }
  constexpr std::size_t kMaxSecret = 64 * 1024;
  std::string content(kMaxSecret + 1, '\0');
  in.read(content.data(), static_cast<std::streamsize>(content.size()));
  content.resize(static_cast<std::size_t>(in.gcount()));
  if (in.bad()) {
    error(file_key, "cannot read " + what + ": " + errnoText(errno));
    return std::nullopt;
  }
  if (content.size() > kMaxSecret) {
    error(file_key, what + " is larger than 64 KiB; it should hold just the secret");
    return std::nullopt;
  }
  while (!content.empty() && (content.back() == '\n' || content.back() == '\r')) content.pop_back();
  if (content.empty()) {
    error(file_key, what + " is empty");
    return std::nullopt;
  }
  return content;
}

void TableReader::error(std::string_view key, std::string message) {
  if (const toml::value* v = find(key)) {
    diag_.atValue(*v, std::move(message));
  } else {
    errorAtTable(std::move(message));
  }
}

void TableReader::warning(std::string_view key, std::string message) {
  if (const toml::value* v = find(key)) {
    diag_.warnAtValue(*v, std::move(message));
  } else if (table_ && !path_.empty()) {
    diag_.warnAtValue(*table_, std::move(message));
  } else {
    diag_.warnAtFile(std::move(message));
  }
}

void TableReader::errorAtTable(std::string message) {
  if (table_ && !path_.empty()) {
    diag_.atValue(*table_, std::move(message));
  } else {
    diag_.atFile(std::move(message));
  }
}

}  // namespace zetian::conf
