// The text handed to toml11, and the way back from its places to the file as written.
//
// Why the text is not handed over as it is: toml11 3.7 spends time proportional to the
// length of the line on every value it parses (for each string it formats an error
// message that copies the whole line, for each value it scans the line for comments),
// so N values on one line cost N times the line's length. 10,000 CIDRs on one 173 KB
// line took 18 s to check, 20,000 four times as long. prepareSource therefore breaks
// every line longer than kLongLine after each comma inside an array, where TOML allows
// a line break in any array (also one inside an inline table), which makes the parse
// linear in the size of the file. What cannot be broken is bounded instead: commas of
// inline tables, where TOML forbids a line break; no zetian table comes near the bound.
//
// Lines no longer than kLongLine are never touched, so for every ordinary file the
// parsed text is the file itself. The SourceMap puts every place toml11 reports (a
// value's offset, a syntax error's line and column) back on the line and column of the
// file as written, so a broken line is invisible in every message.
//
// The same pass refuses, before toml11 sees them, two shapes its parser handles badly:
// brackets nested deeper than kMaxNesting (it recurses once per level, without limit)
// and lines with more than kMaxDotsPerLine dots outside strings (dotted keys, quadratic).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace zetian::conf {

inline constexpr std::size_t kLongLine = 1024;
inline constexpr int kMaxInlineTableCommas = 64;
inline constexpr int kMaxNesting = 32;
inline constexpr int kMaxDotsPerLine = 64;

struct SourcePlace {
  int line = 0;    // 1-based
  int column = 0;  // 1-based, in bytes as toml11 counts
};

struct PreparedSource {
  std::string text;                 // what toml11 parses
  std::vector<std::size_t> breaks;  // offsets in the original before which '\n' was inserted
  // A shape refused before parsing, with its place in the original.
  std::optional<SourcePlace> refused_at;
  std::string refusal;
};

PreparedSource prepareSource(std::string_view original);

class SourceMap {
 public:
  SourceMap() = default;
  // Both views must outlive the map. `breaks` as prepareSource returns them.
  SourceMap(std::string_view original, std::string_view parsed, std::vector<std::size_t> breaks);

  bool empty() const { return original_line_starts_.empty(); }
  // The place in the original of the byte at `offset` in the parsed text.
  SourcePlace fromParsedOffset(std::size_t offset) const;
  // The place in the original of toml11's (line, column) in the parsed text.
  SourcePlace fromParsed(int line, int column) const;
  // Line `line` (1-based) of the parsed text, without its line break.
  std::string_view parsedLine(int line) const;
  // The line of the parsed text that holds byte `offset`.
  int parsedLineOf(std::size_t offset) const;
  // The offset in the parsed text of (line, column) of the parsed text.
  std::size_t parsedOffset(int line, int column) const;

 private:
  std::string_view original_, parsed_;
  std::vector<std::size_t> original_line_starts_;
  std::vector<std::size_t> parsed_line_starts_;
  std::vector<std::size_t> parsed_breaks_;  // offsets in the parsed text of the inserted '\n'
};

}  // namespace zetian::conf
