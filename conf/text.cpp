#include "conf/text.h"

#include <algorithm>
#include <cstring>

namespace zetian::conf {
namespace {

std::string normalised(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c == '-') c = '_';
  }
  return out;
}

// strerror_r comes in two kinds: XSI returns 0 and fills `buffer`; GNU (glibc's C++
// default, which defines _GNU_SOURCE) returns the text, in `buffer` or a constant.
[[maybe_unused]] const char* strerrorResult(int status, const char* buffer) {
  return status == 0 ? buffer : nullptr;
}
[[maybe_unused]] const char* strerrorResult(const char* text, const char*) { return text; }

}  // namespace

void appendHexEscape(std::string& out, std::string_view prefix, unsigned char byte, HexDigits digits) {
  const char* table = digits == HexDigits::upper ? "0123456789ABCDEF" : "0123456789abcdef";
  out += prefix;
  out += table[byte >> 4];
  out += table[byte & 0xf];
}

std::string errnoText(int err) {
  char buffer[256] = {};
  const char* text = strerrorResult(strerror_r(err, buffer, sizeof buffer), buffer);
  if (text == nullptr || *text == '\0') return "error " + std::to_string(err);
  return text;
}

std::string quoteValue(std::string_view s) {
  constexpr std::size_t kMax = 64;
  std::string out = "\"";
  std::size_t n = 0;
  for (char c : s) {
    if (n++ == kMax) {
      out += "...";
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7f) {
      appendHexEscape(out, "\\x", u);
    } else {
      out += c;
    }
  }
  out += '"';
  return out;
}

std::string backticked(std::string_view name) {
  std::string out;
  out.reserve(name.size() + 2);
  out += '`';
  out += name;
  out += '`';
  return out;
}

std::size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

std::string_view closestMatch(std::string_view word, std::span<const std::string_view> candidates) {
  // Keys are short; anything past this is not a typo of one.
  if (word.size() > 64) return {};
  const std::string w = normalised(word);
  std::string_view best;
  std::size_t best_distance = 0;
  for (std::string_view candidate : candidates) {
    const std::size_t d = editDistance(w, normalised(candidate));
    if (best.empty() || d < best_distance) {
      best = candidate;
      best_distance = d;
    }
  }
  if (best.empty()) return {};
  // One edit for short words, two from 5 letters, three from 10.
  const std::size_t allowed = w.size() < 5 ? 1 : w.size() < 10 ? 2 : 3;
  return best_distance <= allowed ? best : std::string_view{};
}

std::size_t utf8SequenceLength(std::string_view s, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char second_min = 0x80, second_max = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) second_min = 0xa0;  // overlong below U+0800
    if (lead == 0xed) second_max = 0x9f;  // UTF-16 surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) second_min = 0x90;  // overlong below U+10000
    if (lead == 0xf4) second_max = 0x8f;  // above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() - i < length) return 0;
  if (byte(i + 1) < second_min || byte(i + 1) > second_max) return 0;
  for (std::size_t k = 2; k < length; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xbf) return 0;
  }
  return length;
}

std::optional<std::size_t> firstInvalidUtf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {  // the common case, without a call
      ++i;
      continue;
    }
    const std::size_t length = utf8SequenceLength(s, i);
    if (length == 0) return i;
    i += length;
  }
  return std::nullopt;
}

std::string joinNames(std::span<const std::string_view> names) {
  std::string out;
  for (std::string_view n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

}  // namespace zetian::conf
