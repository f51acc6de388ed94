// A small JSON reader for zetianctl: parses the health socket's replies into a tree
// and prints them back (pretty or compact).
//
// Strict RFC 8259 (no comments, no trailing commas, no NaN) because the other end is
// our own server; anything else is refused with the byte offset, never a crash:
// nesting is capped, numbers out of double range are errors, and a lone surrogate
// escape becomes U+FFFD. Numbers keep the text they were written with, so 17-digit
// counters print exactly as the server sent them.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zetian::milter {

struct JsonValue {
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };

  Type type = Type::kNull;
  bool boolean = false;
  double number = 0;
  std::string text;                   // a string's value, or a number as written
  std::vector<JsonValue> items;       // array elements, or object member values
  std::vector<std::string> keys;      // object member names: keys[i] names items[i]

  bool isNull() const { return type == Type::kNull; }
  bool isBool() const { return type == Type::kBool; }
  bool isNumber() const { return type == Type::kNumber; }
  bool isString() const { return type == Type::kString; }
  bool isArray() const { return type == Type::kArray; }
  bool isObject() const { return type == Type::kObject; }

  // The member named `key` of an object (the first, if repeated); nullptr otherwise.
  const JsonValue* find(std::string_view key) const;
};

// nullopt with *error = "at byte N: what was wrong" for anything but one valid
// document (surrounded by optional whitespace).
std::optional<JsonValue> parseJson(std::string_view text, std::string* error);

// Serialises `value`: indent > 0 pretty-prints with that many spaces per level,
// indent == 0 writes it compactly. Control characters are always escaped.
std::string toJson(const JsonValue& value, int indent = 2);

}  // namespace zetian::milter
