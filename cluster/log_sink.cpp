#include "cluster/log_sink.h"

namespace zetian::cluster {

std::string logValue(std::string_view value) {
  bool needs_quotes = value.empty();
  for (unsigned char c : value) {
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) {
      needs_quotes = true;
      break;
    }
  }
  if (!needs_quotes) return std::string(value);
  std::string out = "\"";
  for (unsigned char c : value) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < ' ' || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += char(c);
    }
  }
  out += '"';
  return out;
}

// Built with append rather than "`" + string: GCC 12 gives a false -Wrestrict there.
std::string backquoted(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('`');
  out.append(text);
  out.push_back('`');
  return out;
}

}  // namespace zetian::cluster
