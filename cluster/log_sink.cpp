#include "cluster/log_sink.h"

#include <cstddef>

#include "conf/text.h"

namespace zetian::cluster {

namespace {

// Valid characters that still break "one event, one line" in some viewers: the C1
// controls (U+0080..U+009F: NEL, CSI...) and the Unicode line and paragraph separators.
bool isInvisibleBreak(std::string_view sequence) {
  const auto b0 = static_cast<unsigned char>(sequence[0]);
  if (sequence.size() == 2) return b0 == 0xc2 && static_cast<unsigned char>(sequence[1]) <= 0x9f;
  return sequence.size() == 3 && b0 == 0xe2 && static_cast<unsigned char>(sequence[1]) == 0x80 &&
         (static_cast<unsigned char>(sequence[2]) == 0xa8 || static_cast<unsigned char>(sequence[2]) == 0xa9);
}

}  // namespace

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
  for (std::size_t i = 0; i < value.size();) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x80) {
      const std::size_t length = conf::utf8SequenceLength(value, i);
      if (length == 0) {
        conf::appendHexEscape(out, "\\x", c);  // one byte at a time: the next one may start a valid character
        ++i;
      } else {
        const std::string_view sequence = value.substr(i, length);
        if (isInvisibleBreak(sequence)) {
          for (unsigned char b : sequence) conf::appendHexEscape(out, "\\x", b);
        } else {
          out.append(sequence);
        }
        i += length;
      }
      continue;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < ' ' || c == 0x7f) {
      conf::appendHexEscape(out, "\\x", c);
    } else {
      out += char(c);
    }
    ++i;
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

std::string_view nameOf(RefusalKind kind) {
  switch (kind) {
    case RefusalKind::garbage: return "garbage";
    case RefusalKind::handshake_timeout: return "handshake_timeout";
    case RefusalKind::gave_up: return "gave_up";
    case RefusalKind::bad_mac: return "bad_mac";
    case RefusalKind::duplicate_id: return "duplicate_id";
    case RefusalKind::tls: return "tls";
    case RefusalKind::admission: return "admission";
  }
  return "unknown";
}

std::string refusalsSuppressedLine(RefusalKind kind, std::uint64_t left_out,
                                   std::chrono::steady_clock::duration window) {
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(window).count();
  return "cluster_refusals_suppressed kind=" + std::string(nameOf(kind)) + " count=" + std::to_string(left_out) +
         " window=" + std::to_string(seconds) + "s";
}

}  // namespace zetian::cluster
