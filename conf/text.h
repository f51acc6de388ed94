// Small text helpers for error messages. Most are internal to conf/; appendHexEscape,
// utf8SequenceLength and errnoText are the one copy every library of the project uses
// (conf/ is the lowest layer that handles text).
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace zetian::conf {

// `s` in double quotes, safe to print: control characters escaped, cut after 64 bytes.
// Never call it on a secret.
std::string quoteValue(std::string_view s);

// "`name`": a key or a path as messages show it.
std::string backticked(std::string_view name);

// Levenshtein distance, for "did you mean".
std::size_t editDistance(std::string_view a, std::string_view b);

// The candidate closest to `word`, if it is close enough to be a plausible typo
// (same word up to case or '-'/'_', or a few edits for its length); else empty.
std::string_view closestMatch(std::string_view word, std::span<const std::string_view> candidates);

// The length (1 to 4) of the well-formed UTF-8 character that starts at s[i], or 0
// when the bytes there are not one: a stray continuation byte, an overlong form, a
// surrogate, a code point above U+10FFFF, or a sequence cut short (RFC 3629, section
// 4). Requires i < s.size(). The project's one UTF-8 check: configuration files, log
// values and JSON strings all go through it.
std::size_t utf8SequenceLength(std::string_view s, std::size_t i);

// The offset of the first byte that is not part of well-formed UTF-8 (as
// utf8SequenceLength), or nothing when all of `s` is.
std::optional<std::size_t> firstInvalidUtf8(std::string_view s);

// "a, b, c" (for "must be one of ...").
std::string joinNames(std::span<const std::string_view> names);

enum class HexDigits { lower, upper };

// Appends `prefix` and the two hex digits of `byte`: ("\\x", 0x1b) gives "\x1b". The
// one byte escape of the project's libraries: \xNN in log values and configuration
// messages, \u00NN in JSON, %NN (upper case, as RFC 3986 recommends) in URLs, and
// with no prefix the hex of a digest.
void appendHexEscape(std::string& out, std::string_view prefix, unsigned char byte,
                     HexDigits digits = HexDigits::lower);

// The C library's message for an errno value ("No such file or directory"). Safe from
// any thread, unlike std::strerror, which may format into one buffer shared by all
// (the cluster thread, libmilter's threads and the main thread all report errors).
std::string errnoText(int err);

}  // namespace zetian::conf
