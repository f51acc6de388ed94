// Policy delegation answers (see policy_action.h for the mapping and its traps).
#include "milter/policy_action.h"

#include <cstddef>
#include <cstring>

namespace zetian::milter::policy {

namespace {

// A field of the verdict, when it lies entirely within verdict.size (the engine
// writes only those), cut at its NUL or at the array's end.
template <std::size_t N>
std::string_view fieldOf(const zetian_verdict& verdict, const char (&field)[N]) {
  const auto* base = reinterpret_cast<const char*>(&verdict);
  const auto offset = static_cast<std::size_t>(field - base);
  if (verdict.size < offset + N) return {};
  return std::string_view(field, strnlen(field, N));
}

bool isDigit(char c) { return c >= '0' && c <= '9'; }

// Three digits, the first of them `cls`.
bool isReplyCode(std::string_view code, char cls) {
  return code.size() == 3 && code[0] == cls && isDigit(code[1]) && isDigit(code[2]);
}

// RFC 3463: class.subject.detail, class as given, subject and detail 1 to 3 digits.
bool isEnhancedCode(std::string_view code, char cls) {
  if (code.size() < 5 || code[0] != cls || code[1] != '.') return false;
  std::size_t i = 2;
  for (int part = 0; part < 2; ++part) {
    std::size_t digits = 0;
    while (i < code.size() && isDigit(code[i])) {
      ++i;
      ++digits;
    }
    if (digits < 1 || digits > 3) return false;
    if (part == 0) {
      if (i >= code.size() || code[i] != '.') return false;
      ++i;
    }
  }
  return i == code.size();
}

std::string withText(std::string head, std::string_view text) {
  const std::string clean = sanitizeReplyText(text);
  if (!clean.empty()) {
    head += ' ';
    head += clean;
  }
  return "action=" + head + "\n\n";
}

}  // namespace

std::string sanitizeReplyText(std::string_view text, std::size_t max_bytes) {
  std::string out;
  out.reserve(text.size() < max_bytes ? text.size() : max_bytes);
  for (const char c : text) {
    if (out.size() >= max_bytes) break;
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += ' ';
    } else if (byte >= 0x80) {
      out += '?';
    } else {
      out += c;
    }
  }
  // Spaces at the ends would only be trimmed or doubled by Postfix's formatting.
  const std::size_t first = out.find_first_not_of(' ');
  if (first == std::string::npos) return {};
  out.erase(0, first);
  out.erase(out.find_last_not_of(' ') + 1);
  return out;
}

std::string dunnoAction() { return "action=DUNNO\n\n"; }

std::string verdictAction(const zetian_verdict& verdict, const ActionOptions& options) {
  if (verdict.size < offsetof(zetian_verdict, action) + sizeof verdict.action) return dunnoAction();
  if (verdict.action == ZETIAN_CONTINUE) return dunnoAction();
  const bool reject = verdict.action == ZETIAN_REJECT;
  const char cls = reject ? '5' : '4';
  std::string_view rcode = fieldOf(verdict, verdict.rcode);
  std::string_view xcode = fieldOf(verdict, verdict.xcode);
  const std::string_view text = fieldOf(verdict, verdict.text);
  if (!isReplyCode(rcode, cls)) rcode = reject ? "550" : "451";
  if (!isEnhancedCode(xcode, cls)) xcode = reject ? "5.7.1" : "4.7.1";
  // DEFER_IF_PERMIT has no code of its own (Postfix uses access_map_defer_code and
  // 4.7.1), and a 421 must keep closing the session.
  if (!reject && options.tempfail_as_defer_if_permit && rcode != "421") return withText("DEFER_IF_PERMIT", text);
  std::string head(rcode);
  head += ' ';
  head += xcode;
  return withText(std::move(head), text);
}

std::optional<std::string> prependAction(std::string_view name, std::string_view value) {
  if (name.empty() || name.size() > 76) return std::nullopt;
  for (const char c : name) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f || c == ':') return std::nullopt;
  }
  std::string clean;
  clean.reserve(value.size());
  for (const char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    clean += ((byte < 0x20 && c != '\t') || byte == 0x7f) ? ' ' : c;
  }
  const std::size_t room = kMaxHeaderLineBytes - name.size() - 2;
  if (clean.size() > room) {
    std::size_t cut = room;
    // Back off to the start of a UTF-8 character so no sequence is left half.
    while (cut > 0 && (static_cast<unsigned char>(clean[cut]) & 0xC0) == 0x80) --cut;
    clean.resize(cut);
  }
  std::string out = "action=PREPEND ";
  out += name;
  out += ": ";
  out += clean;
  out += "\n\n";
  return out;
}

std::string holdAction(std::string_view reason) { return withText("HOLD", reason); }

}  // namespace zetian::milter::policy
