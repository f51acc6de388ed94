#include "conf/source.h"

#include <algorithm>

namespace zetian::conf {
namespace {

std::vector<std::size_t> lineStarts(std::string_view text) {
  std::vector<std::size_t> starts{0};
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') starts.push_back(i + 1);
  }
  return starts;
}

// The 0-based index of the line that holds `offset`.
std::size_t lineIndex(const std::vector<std::size_t>& starts, std::size_t offset) {
  const auto it = std::upper_bound(starts.begin(), starts.end(), offset);
  return static_cast<std::size_t>(it - starts.begin()) - 1;
}

}  // namespace

// A conservative lexer: enough of TOML's strings and comments to tell brackets, commas
// and dots in code from the same characters inside strings and comments. It never
// decides whether the document is valid; toml11 does that on the result.
PreparedSource prepareSource(std::string_view text) {
  enum class In { Code, Comment, Basic, Literal, MultiBasic, MultiLiteral };
  // What an open bracket is: an array, an inline table, or part of a [table] header.
  enum class Bracket : char { Array, InlineTable, Header };
  PreparedSource out;
  out.text.reserve(text.size());
  const std::vector<std::size_t> starts = lineStarts(text);
  const auto lineLength = [&](std::size_t index) {
    const std::size_t end = index + 1 < starts.size() ? starts[index + 1] - 1 : text.size();
    return end - starts[index];
  };
  std::vector<Bracket> open;
  In in = In::Code;
  int dots = 0, line = 1, column = 0;
  bool long_line = false;
  bool line_blank_so_far = true;  // nothing but spaces before this point of the line
  // The current segment of the parsed text (a line of the original, or the part of a
  // broken line between two inserted breaks).
  std::size_t segment_start = 0;
  int segment_commas = 0;
  std::optional<SourcePlace> first_comma_over;
  auto refuse = [&](SourcePlace where, std::string message) {
    out.refused_at = where;
    out.refusal = std::move(message);
  };
  // At the end of a segment: a long segment with too many inline-table commas would
  // cost toml11 (commas x length).
  auto endSegment = [&] {
    if (first_comma_over && out.text.size() - segment_start > kLongLine) {
      const std::size_t length = lineLength(static_cast<std::size_t>(first_comma_over->line) - 1);
      refuse(*first_comma_over,
             "line " + std::to_string(first_comma_over->line) + " is " + std::to_string((length + 1023) / 1024) +
                 " KiB long with more than " + std::to_string(kMaxInlineTableCommas) +
                 " commas inside { }; a line over 1 KiB may hold at most " + std::to_string(kMaxInlineTableCommas) +
                 ": write the table as a [section] with one key per line");
      return false;
    }
    segment_start = out.text.size();
    segment_commas = 0;
    first_comma_over.reset();
    return true;
  };
  // Brackets nested too deep, or a line with too many dots: toml11 would recurse or go
  // quadratic on them.
  auto refuseTooDeep = [&] {
    refuse({line, column}, "nested too deeply for a zetian configuration (at most " + std::to_string(kMaxNesting) +
                               " levels of brackets, " + std::to_string(kMaxDotsPerLine) + " dots in a line)");
  };
  auto startLine = [&](std::size_t index) { long_line = lineLength(index) > kLongLine; };
  startLine(0);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    ++column;
    out.text += c;
    if (c == '\n') {
      if (!endSegment()) return out;
      ++line;
      column = 0;
      dots = 0;
      line_blank_so_far = true;
      startLine(static_cast<std::size_t>(line) - 1);
      if (in == In::Comment || in == In::Basic || in == In::Literal) in = In::Code;
      continue;
    }
    const auto starts_with = [&](std::string_view s) { return text.substr(i, s.size()) == s; };
    const auto skip = [&](std::size_t n) {
      out.text.append(text.substr(i + 1, n));
      i += n;
      column += static_cast<int>(n);
    };
    const bool blank_before = line_blank_so_far;
    if (c != ' ' && c != '\t') line_blank_so_far = false;
    switch (in) {
      case In::Comment: break;
      case In::Basic:
        if (c == '\\') {
          if (i + 1 < text.size() && text[i + 1] != '\n') skip(1);
        } else if (c == '"') {
          in = In::Code;
        }
        break;
      case In::Literal:
        if (c == '\'') in = In::Code;
        break;
      case In::MultiBasic:
        if (c == '\\') {
          if (i + 1 < text.size() && text[i + 1] != '\n') skip(1);
        } else if (starts_with("\"\"\"")) {
          in = In::Code;
          skip(2);
        }
        break;
      case In::MultiLiteral:
        if (starts_with("'''")) {
          in = In::Code;
          skip(2);
        }
        break;
      case In::Code:
        if (c == '#') {
          in = In::Comment;
        } else if (starts_with("\"\"\"")) {
          in = In::MultiBasic;
          skip(2);
        } else if (c == '"') {
          in = In::Basic;
        } else if (starts_with("'''")) {
          in = In::MultiLiteral;
          skip(2);
        } else if (c == '\'') {
          in = In::Literal;
        } else if (c == '[' || c == '{') {
          Bracket kind = c == '{' ? Bracket::InlineTable : Bracket::Array;
          // "[table]" and "[[table]]" open at the start of a line, outside any value.
          if (c == '[' && ((open.empty() && blank_before) || (!open.empty() && open.back() == Bracket::Header))) {
            kind = Bracket::Header;
          }
          open.push_back(kind);
          if (open.size() > static_cast<std::size_t>(kMaxNesting)) {
            refuseTooDeep();
            return out;
          }
        } else if (c == ']' || c == '}') {
          if (!open.empty()) open.pop_back();
        } else if (c == '.') {
          if (++dots > kMaxDotsPerLine) {
            refuseTooDeep();
            return out;
          }
        } else if (c == ',' && !open.empty()) {
          if (open.back() == Bracket::Array && long_line && i + 1 < text.size() && text[i + 1] != '\n' &&
              !(text[i + 1] == '\r' && i + 2 < text.size() && text[i + 2] == '\n')) {
            out.text += '\n';
            out.breaks.push_back(i + 1);
            if (!endSegment()) return out;
          } else if (open.back() == Bracket::InlineTable && ++segment_commas > kMaxInlineTableCommas &&
                     !first_comma_over) {
            first_comma_over = SourcePlace{line, column};
          }
        }
        break;
    }
  }
  endSegment();
  return out;
}

SourceMap::SourceMap(std::string_view original, std::string_view parsed, std::vector<std::size_t> breaks)
    : original_(original), parsed_(parsed) {
  original_line_starts_ = lineStarts(original);
  parsed_line_starts_ = lineStarts(parsed);
  parsed_breaks_ = std::move(breaks);
  // The i-th break was inserted before original offset b, so it sits at b + i in the
  // parsed text.
  for (std::size_t i = 0; i < parsed_breaks_.size(); ++i) parsed_breaks_[i] += i;
}

SourcePlace SourceMap::fromParsedOffset(std::size_t offset) const {
  if (empty()) return {};
  offset = std::min(offset, parsed_.size());
  // Every inserted break before `offset` shifted it by one; an inserted break itself
  // stands for the byte that follows it in the original.
  const auto before = static_cast<std::size_t>(
      std::lower_bound(parsed_breaks_.begin(), parsed_breaks_.end(), offset) - parsed_breaks_.begin());
  const std::size_t original = std::min(offset - before, original_.size());
  const std::size_t index = lineIndex(original_line_starts_, original);
  return {static_cast<int>(index) + 1, static_cast<int>(original - original_line_starts_[index]) + 1};
}

std::size_t SourceMap::parsedOffset(int line, int column) const {
  if (parsed_line_starts_.empty() || line < 1) return 0;
  const std::size_t index = std::min(static_cast<std::size_t>(line) - 1, parsed_line_starts_.size() - 1);
  return parsed_line_starts_[index] + static_cast<std::size_t>(std::max(column, 1) - 1);
}

SourcePlace SourceMap::fromParsed(int line, int column) const {
  if (empty()) return {line, column};
  return fromParsedOffset(parsedOffset(line, column));
}

std::string_view SourceMap::parsedLine(int line) const {
  if (parsed_line_starts_.empty() || line < 1 || static_cast<std::size_t>(line) > parsed_line_starts_.size()) return {};
  const std::size_t start = parsed_line_starts_[static_cast<std::size_t>(line) - 1];
  const std::size_t end = static_cast<std::size_t>(line) < parsed_line_starts_.size()
                              ? parsed_line_starts_[static_cast<std::size_t>(line)] - 1
                              : parsed_.size();
  return parsed_.substr(start, end - start);
}

int SourceMap::parsedLineOf(std::size_t offset) const {
  if (parsed_line_starts_.empty()) return 0;
  return static_cast<int>(lineIndex(parsed_line_starts_, offset)) + 1;
}

}  // namespace zetian::conf
