// The TOML layer of the loader, internal to conf/: where an error is reported, the
// schema walk, and typed reads from one table.
//
// The order of work is fixed: checkSchema() walks the whole document first and reports
// every unknown key and every value of the wrong TOML type. The section builders then
// read through TableReader, which returns nothing for a value of the wrong type (it was
// reported already), so each mistake is reported exactly once. TableReader refuses to
// read a key the schema does not list, or as another type than the schema says, by
// throwing std::logic_error: a programming error that the unit tests trip over.
#pragma once

#include <toml.hpp>

#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/load.h"
#include "conf/names.h"
#include "conf/schema.h"
#include "conf/source.h"

namespace zetian::conf {

// Values that come from a --set override are parsed from a source named
// "--set KEY", so an error about one can say where it came from; those from the
// environment from a source named by the variable ("ZETIAN_NODE_ID").
inline constexpr std::string_view kOverrideSource = "--set ";

// "--set KEY" or the variable's name: the source an override's values are parsed from.
std::string overrideSourceOf(std::string_view key);
bool isOverrideSource(std::string_view name);

class Diagnostics {
 public:
  explicit Diagnostics(std::string file) : file_(std::move(file)) {}

  // The text being parsed and the way back to the file as written (see source.h).
  // Until it is set, places are toml11's own.
  void setSource(SourceMap map) { source_ = std::move(map); }
  const SourceMap& source() const { return source_; }

  // At the start of the value (a range, a wrong type, a bad name).
  void atValue(const toml::value& v, std::string message);
  // At the key that holds `v` (an unknown key).
  void atKey(const toml::value& v, std::string_view key, std::string message);
  // About the file as a whole (no line).
  void atFile(std::string message);
  void atPlace(int line, int column, std::string message);
  // About an override, by its source (overrideSourceOf): "--set KEY: message",
  // "ZETIAN_NODE_ID: message".
  void atOverride(std::string_view source, std::string message);

  // Warnings: valid, but probably not what was meant. They never refuse the file.
  void warnAtValue(const toml::value& v, std::string message);
  void warnAtFile(std::string message);

  // The place of `v` in this file, or nothing (a value from --set, or made up).
  std::optional<SourcePlace> placeOf(const toml::value& v) const;

  // Errors about overrides are listed in the order the overrides were given (by source).
  void setOverrideOrder(std::vector<std::string> sources) { override_order_ = std::move(sources); }

  bool hasErrors() const { return !errors_.empty(); }
  const std::string& file() const { return file_; }
  // Sorted by place; errors without a line (the file, --set) come last.
  std::vector<ConfigError> take();
  std::vector<ConfigError> takeWarnings();

  // Every schema path read by a builder; the tests check that none is forgotten.
  std::set<std::string>& keysRead() { return keys_read_; }

 private:
  // An error or warning about `v`, at its place when it has one here.
  ConfigError about(const toml::value& v, std::string message) const;
  void sortByPlace(std::vector<ConfigError>& list) const;

  std::string file_;
  SourceMap source_;
  std::vector<ConfigError> errors_;
  std::vector<ConfigError> warnings_;
  std::set<std::string> keys_read_;
  std::vector<std::string> override_order_;
};

void checkSchema(const toml::value& root, Diagnostics& diag);

// `key` as it can be printed: bare keys as they are, others quoted and escaped.
std::string printableKey(std::string_view key);

class TableReader {
 public:
  // `table` may be null (the section is absent: every read gives nothing). `path` is
  // the table's schema path ("milter", "ratelimit.rule"); "" for the root.
  TableReader(Diagnostics& diag, const toml::value* table, std::string path)
      : diag_(diag), table_(table), path_(std::move(path)) {}

  const toml::value* table() const { return table_; }
  // The value under `key` of whatever type, or null.
  const toml::value* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }
  // "milter.timeout": the schema path of `key`, as error messages name it.
  std::string path(std::string_view key) const;

  std::optional<std::string> string(std::string_view key);
  std::optional<bool> boolean(std::string_view key);
  std::optional<std::int64_t> integer(std::string_view key, std::int64_t min, std::int64_t max);
  // A duration no shorter than `min`.
  std::optional<Duration> duration(std::string_view key, Duration min);
  // The elements of an array of strings, each with its value (for its place).
  std::optional<std::vector<std::pair<std::string, const toml::value*>>> strings(std::string_view key);
  // An array of tables, each element a table.
  std::vector<const toml::value*> tables(std::string_view key);
  // A sub-table, or null.
  const toml::value* subtable(std::string_view key);

  template <class E>
  std::optional<E> choice(std::string_view key, std::span<const NamedValue<E>> names) {
    auto text = string(key);
    if (!text) return std::nullopt;
    if (auto value = lookupName(names, *text)) return value;
    reportBadChoice(key, *text, namesOf(names));
    return std::nullopt;
  }

  // A secret given inline (`key`) or as a file (`file_key`) whose content is the secret,
  // trailing newlines removed. Never both; an empty inline value counts as unset. No
  // message ever contains the secret.
  std::optional<std::string> secret(std::string_view key, std::string_view file_key);

  // An error at the value of `key`.
  void error(std::string_view key, std::string message);
  // An error about the table itself (a missing key): at its header.
  void errorAtTable(std::string message);
  // A warning at the value of `key`, or at the table's header.
  void warning(std::string_view key, std::string message);

 private:
  const toml::value* read(std::string_view key, ValueType type);
  void reportBadChoice(std::string_view key, const std::string& text, std::vector<std::string_view> names);

  template <class E>
  static std::vector<std::string_view> namesOf(std::span<const NamedValue<E>> names) {
    std::vector<std::string_view> out;
    for (const auto& n : names) out.push_back(n.name);
    return out;
  }

  Diagnostics& diag_;
  const toml::value* table_;
  std::string path_;
};

}  // namespace zetian::conf
