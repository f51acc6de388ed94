#include "cluster/json.h"

#include <charconv>
#include <cmath>
#include <stdexcept>

#include "conf/text.h"

namespace zetian::cluster {
void appendJsonString(std::string& out, std::string_view text) {
  out.push_back('"');
  std::size_t i = 0;
  while (i < text.size()) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
          if (c < 0x20 || c == 0x7F) {
            conf::appendHexEscape(out, "\\u00", c);
          } else {
            out.push_back(static_cast<char>(c));
          }
      }
      ++i;
      continue;
    }
    const std::size_t len = conf::utf8SequenceLength(text, i);
    if (len == 0) {
      out += "\\ufffd";
      ++i;
    } else {
      out.append(text.substr(i, len));
      i += len;
    }
  }
  out.push_back('"');
}

std::string jsonError(std::string_view message) {
  JsonWriter w;
  w.beginObject().field("error", message).endObject();
  return w.take();
}

void JsonWriter::beforeValue() {
  if (stack_.empty()) {
    if (has_root_) throw std::logic_error("JsonWriter: a document has one root value");
    has_root_ = true;
    return;
  }
  Frame& top = stack_.back();
  if (top.is_object) {
    if (!top.key_pending) throw std::logic_error("JsonWriter: value in an object needs a key");
    top.key_pending = false;
    return;
  }
  if (top.has_members) out_.push_back(',');
  top.has_members = true;
}

JsonWriter& JsonWriter::key(std::string_view name) {
  if (stack_.empty() || !stack_.back().is_object) {
    throw std::logic_error("JsonWriter: key outside an object");
  }
  Frame& top = stack_.back();
  if (top.key_pending) throw std::logic_error("JsonWriter: two keys in a row");
  if (top.has_members) out_.push_back(',');
  top.has_members = true;
  top.key_pending = true;
  appendJsonString(out_, name);
  out_.push_back(':');
  return *this;
}

JsonWriter& JsonWriter::beginObject() {
  beforeValue();
  out_.push_back('{');
  stack_.push_back(Frame{true});
  return *this;
}

JsonWriter& JsonWriter::endObject() {
  if (stack_.empty() || !stack_.back().is_object) {
    throw std::logic_error("JsonWriter: endObject without a matching beginObject");
  }
  if (stack_.back().key_pending) throw std::logic_error("JsonWriter: key without a value");
  stack_.pop_back();
  out_.push_back('}');
  return *this;
}

JsonWriter& JsonWriter::beginArray() {
  beforeValue();
  out_.push_back('[');
  stack_.push_back(Frame{false});
  return *this;
}

JsonWriter& JsonWriter::endArray() {
  if (stack_.empty() || stack_.back().is_object) {
    throw std::logic_error("JsonWriter: endArray without a matching beginArray");
  }
  stack_.pop_back();
  out_.push_back(']');
  return *this;
}

JsonWriter& JsonWriter::value(std::string_view text) {
  beforeValue();
  appendJsonString(out_, text);
  return *this;
}

JsonWriter& JsonWriter::value(bool flag) {
  beforeValue();
  out_ += flag ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::value(double number) {
  if (!std::isfinite(number)) return null();
  beforeValue();
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, number);
  if (ec != std::errc{}) throw std::logic_error("JsonWriter: cannot format a double");
  out_.append(buf, end);
  return *this;
}

JsonWriter& JsonWriter::signedValue(std::int64_t number) {
  beforeValue();
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, number);
  (void)ec;  // 24 bytes always hold an int64
  out_.append(buf, end);
  return *this;
}

JsonWriter& JsonWriter::unsignedValue(std::uint64_t number) {
  beforeValue();
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, number);
  (void)ec;
  out_.append(buf, end);
  return *this;
}

JsonWriter& JsonWriter::null() {
  beforeValue();
  out_ += "null";
  return *this;
}

JsonWriter& JsonWriter::raw(std::string_view json) {
  beforeValue();
  out_.append(json);
  return *this;
}

const std::string& JsonWriter::str() const {
  if (!stack_.empty()) throw std::logic_error("JsonWriter: document has unclosed containers");
  return out_;
}

std::string JsonWriter::take() {
  str();
  std::string result = std::move(out_);
  out_.clear();
  has_root_ = false;
  return result;
}

}  // namespace zetian::cluster
