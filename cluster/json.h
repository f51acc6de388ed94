// A small builder for compact JSON documents (health, limits, error bodies).
//
// It writes straight into one std::string and keeps a stack of open containers so it
// can place commas and check the shape: a value inside an object needs a key first,
// containers must be closed in order, and str() is only complete once everything is
// closed. Misuse throws std::logic_error, so a broken document is a test failure
// rather than bytes on the wire.
//
// Strings are escaped for JSON: quote, backslash and every control character; valid
// UTF-8 passes through unchanged, and each byte of an invalid UTF-8 sequence becomes
// \ufffd, so keys taken from SMTP (arbitrary bytes) always give valid JSON.
// Numbers use std::to_chars: no locale, shortest round-trip form for doubles;
// NaN and infinities, which JSON cannot express, are written as null.
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace zetian::cluster {

class JsonWriter {
 public:
  JsonWriter& beginObject();
  JsonWriter& endObject();
  JsonWriter& beginArray();
  JsonWriter& endArray();

  // The next value's name; only inside an object.
  JsonWriter& key(std::string_view name);

  JsonWriter& value(std::string_view text);
  JsonWriter& value(const char* text) { return value(std::string_view(text)); }
  JsonWriter& value(const std::string& text) { return value(std::string_view(text)); }
  JsonWriter& value(bool flag);
  JsonWriter& value(double number);
  template <std::integral Int>
    requires(!std::same_as<Int, bool> && !std::same_as<Int, char>)
  JsonWriter& value(Int number) {
    if constexpr (std::is_signed_v<Int>) {
      return signedValue(static_cast<std::int64_t>(number));
    } else {
      return unsignedValue(static_cast<std::uint64_t>(number));
    }
  }
  JsonWriter& null();
  // Splices an already-encoded JSON value in unchanged; the caller vouches for it.
  JsonWriter& raw(std::string_view json);

  // key(name).value(v) in one call.
  template <typename T>
  JsonWriter& field(std::string_view name, const T& v) {
    key(name);
    return value(v);
  }

  // The document; throws std::logic_error while a container is still open.
  const std::string& str() const;
  std::string take();

 private:
  struct Frame {
    bool is_object;
    bool has_members = false;
    bool key_pending = false;  // object only: key() written, value not yet
  };
  void beforeValue();
  JsonWriter& signedValue(std::int64_t number);
  JsonWriter& unsignedValue(std::uint64_t number);

  std::string out_;
  std::vector<Frame> stack_;
  bool has_root_ = false;
};

// Appends `text` as a quoted JSON string (the escaping rules above).
void appendJsonString(std::string& out, std::string_view text);

// A complete error document: {"error":"<message>"}.
std::string jsonError(std::string_view message);

}  // namespace zetian::cluster
