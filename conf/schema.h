// The schema of zetian.toml: every key the loader knows, by dotted path, with the TOML
// type it must have. The loader refuses any key not listed here and checks each listed
// key's type from this table before it reads any value, so the table is the single
// answer to "what can I write". docs/configuration.md documents exactly these keys (a
// unit test compares the two).
//
// Keys inside [[ratelimit.rule]] are listed as "ratelimit.rule.KEY": the array index
// is not part of the path.
#pragma once

#include <span>
#include <string_view>

namespace zetian::conf {

enum class ValueType {
  String,
  Integer,
  Boolean,
  Duration,     // a string such as "10s" (see parseDuration)
  StringArray,  // an array whose elements are all strings
  Table,        // [section]
  TableArray,   // [[section]]
};

struct KeySchema {
  std::string_view path;
  ValueType type;
};

// Every known key, tables included, in documentation order.
std::span<const KeySchema> schemaKeys();

// The entry for `path`, or nullptr.
const KeySchema* findSchemaKey(std::string_view path);

// "string", "integer", "boolean", "duration", "array of strings", "table",
// "array of tables": the type column of the configuration reference.
std::string_view valueTypeName(ValueType t);

}  // namespace zetian::conf
