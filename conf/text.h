// Small text helpers for error messages. Internal to conf/.
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

// The offset of the first byte that is not part of well-formed UTF-8 (no overlong
// forms, no surrogates, nothing above U+10FFFF), or nothing when all of `s` is.
std::optional<std::size_t> firstInvalidUtf8(std::string_view s);

// "a, b, c" (for "must be one of ...").
std::string joinNames(std::span<const std::string_view> names);

}  // namespace zetian::conf
