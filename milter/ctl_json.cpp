#include "milter/ctl_json.h"

#include <charconv>
#include <cstdint>
#include <system_error>

#include "cluster/json.h"

namespace zetian::milter {
namespace {

constexpr int kMaxDepth = 64;

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  std::optional<JsonValue> document(std::string* error) {
    JsonValue root;
    skipSpace();
    if (!value(root, 0)) {
      *error = "at byte " + std::to_string(pos_) + ": " + error_;
      return std::nullopt;
    }
    skipSpace();
    if (pos_ != text_.size()) {
      *error = "at byte " + std::to_string(pos_) + ": unexpected data after the document";
      return std::nullopt;
    }
    return root;
  }

 private:
  bool fail(const char* why) {
    error_ = why;
    return false;
  }
  bool atEnd() const { return pos_ >= text_.size(); }
  char peek() const { return text_[pos_]; }

  void skipSpace() {
    while (!atEnd() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) {
      ++pos_;
    }
  }

  bool literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return fail("invalid literal");
    pos_ += word.size();
    return true;
  }

  bool value(JsonValue& out, int depth) {
    if (atEnd()) return fail("unexpected end of input");
    switch (peek()) {
      case '{': return object(out, depth + 1);
      case '[': return array(out, depth + 1);
      case '"':
        out.type = JsonValue::Type::kString;
        return string(out.text);
      case 't':
        out.type = JsonValue::Type::kBool;
        out.boolean = true;
        return literal("true");
      case 'f':
        out.type = JsonValue::Type::kBool;
        out.boolean = false;
        return literal("false");
      case 'n':
        out.type = JsonValue::Type::kNull;
        return literal("null");
      default:
        return number(out);
    }
  }

  bool object(JsonValue& out, int depth) {
    if (depth > kMaxDepth) return fail("nested too deeply");
    out.type = JsonValue::Type::kObject;
    ++pos_;  // '{'
    skipSpace();
    if (!atEnd() && peek() == '}') {
      ++pos_;
      return true;
    }
    while (true) {
      skipSpace();
      if (atEnd() || peek() != '"') return fail("expected a member name in quotes");
      std::string key;
      if (!string(key)) return false;
      skipSpace();
      if (atEnd() || peek() != ':') return fail("expected ':' after a member name");
      ++pos_;
      skipSpace();
      JsonValue member;
      if (!value(member, depth)) return false;
      out.keys.push_back(std::move(key));
      out.items.push_back(std::move(member));
      skipSpace();
      if (atEnd()) return fail("unterminated object");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        return true;
      }
      return fail("expected ',' or '}' in an object");
    }
  }

  bool array(JsonValue& out, int depth) {
    if (depth > kMaxDepth) return fail("nested too deeply");
    out.type = JsonValue::Type::kArray;
    ++pos_;  // '['
    skipSpace();
    if (!atEnd() && peek() == ']') {
      ++pos_;
      return true;
    }
    while (true) {
      skipSpace();
      JsonValue element;
      if (!value(element, depth)) return false;
      out.items.push_back(std::move(element));
      skipSpace();
      if (atEnd()) return fail("unterminated array");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        return true;
      }
      return fail("expected ',' or ']' in an array");
    }
  }

  bool digits() {
    const std::size_t start = pos_;
    while (!atEnd() && peek() >= '0' && peek() <= '9') ++pos_;
    return pos_ > start;
  }

  bool number(JsonValue& out) {
    const std::size_t start = pos_;
    if (!atEnd() && peek() == '-') ++pos_;
    if (atEnd()) return fail("invalid value");
    if (peek() == '0') {
      ++pos_;
    } else if (!digits()) {
      return fail("invalid value");
    }
    if (!atEnd() && peek() == '.') {
      ++pos_;
      if (!digits()) return fail("expected digits after '.'");
    }
    if (!atEnd() && (peek() == 'e' || peek() == 'E')) {
      ++pos_;
      if (!atEnd() && (peek() == '+' || peek() == '-')) ++pos_;
      if (!digits()) return fail("expected digits in the exponent");
    }
    const std::string_view token = text_.substr(start, pos_ - start);
    double parsed = 0;
    const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), parsed);
    if (ec != std::errc{} || end != token.data() + token.size()) {
      pos_ = start;
      return fail("number out of range");
    }
    out.type = JsonValue::Type::kNumber;
    out.number = parsed;
    out.text = std::string(token);
    return true;
  }

  bool hex4(std::uint32_t& out) {
    if (text_.size() - pos_ < 4) return fail("truncated \\u escape");
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[pos_++];
      out <<= 4;
      if (c >= '0' && c <= '9') out |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') out |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') out |= static_cast<std::uint32_t>(c - 'A' + 10);
      else return fail("invalid \\u escape");
    }
    return true;
  }

  static void appendUtf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool string(std::string& out) {
    ++pos_;  // opening quote
    while (true) {
      if (atEnd()) return fail("unterminated string");
      const char c = text_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (atEnd()) return fail("unterminated string");
      const char e = text_[pos_++];
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          std::uint32_t cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF && text_.substr(pos_, 2) == "\\u") {
            const std::size_t save = pos_;
            pos_ += 2;
            std::uint32_t low = 0;
            if (!hex4(low)) return false;
            if (low >= 0xDC00 && low <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else {
              pos_ = save;  // not a pair: the high half stands alone
              cp = 0xFFFD;
            }
          } else if (cp >= 0xD800 && cp <= 0xDFFF) {
            cp = 0xFFFD;
          }
          appendUtf8(out, cp);
          break;
        }
        default:
          --pos_;
          return fail("invalid escape in a string");
      }
    }
  }

  std::string_view text_;
  std::size_t pos_ = 0;
  std::string error_;
};

void write(std::string& out, const JsonValue& v, int indent, int level) {
  const auto newline = [&](int at) {
    if (indent <= 0) return;
    out.push_back('\n');
    out.append(static_cast<std::size_t>(indent * at), ' ');
  };
  switch (v.type) {
    case JsonValue::Type::kNull: out += "null"; return;
    case JsonValue::Type::kBool: out += v.boolean ? "true" : "false"; return;
    case JsonValue::Type::kNumber: out += v.text.empty() ? "0" : v.text; return;
    case JsonValue::Type::kString: cluster::appendJsonString(out, v.text); return;
    case JsonValue::Type::kArray:
    case JsonValue::Type::kObject: {
      const bool is_object = v.isObject();
      out.push_back(is_object ? '{' : '[');
      for (std::size_t i = 0; i < v.items.size(); ++i) {
        if (i > 0) out.push_back(',');
        newline(level + 1);
        if (is_object) {
          cluster::appendJsonString(out, i < v.keys.size() ? v.keys[i] : std::string_view{});
          out += indent > 0 ? ": " : ":";
        }
        write(out, v.items[i], indent, level + 1);
      }
      if (!v.items.empty()) newline(level);
      out.push_back(is_object ? '}' : ']');
      return;
    }
  }
}

}  // namespace

const JsonValue* JsonValue::find(std::string_view key) const {
  if (!isObject()) return nullptr;
  for (std::size_t i = 0; i < keys.size() && i < items.size(); ++i) {
    if (keys[i] == key) return &items[i];
  }
  return nullptr;
}

std::optional<JsonValue> parseJson(std::string_view text, std::string* error) {
  std::string ignored;
  return Parser(text).document(error != nullptr ? error : &ignored);
}

std::string toJson(const JsonValue& value, int indent) {
  std::string out;
  write(out, value, indent, 0);
  return out;
}

}  // namespace zetian::milter
