// zetianctl's output helpers: the server's JSON parsed and made safe for a terminal.

#include "milter/ctl_output.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <ctime>

namespace zetian::milter::ctl {
namespace {

// The server nests four levels deep; the cap keeps printing, which recurses, from
// running off the stack whatever arrives.
constexpr int kMaxJsonDepth = 64;

struct NestedTooDeeply {};

}  // namespace

std::string displayText(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const bool c1 = c == 0xC2 && i + 1 < text.size() &&
                    static_cast<unsigned char>(text[i + 1]) >= 0x80 &&
                    static_cast<unsigned char>(text[i + 1]) <= 0x9F;
    if (c < 0x20 || c == 0x7F || c1) {
      const auto shown = c1 ? static_cast<unsigned char>(text[++i]) : c;
      out += "\\x";
      out.push_back(kHex[shown >> 4]);
      out.push_back(kHex[shown & 0xF]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

std::string displayLines(std::string_view text) {
  std::string out;
  std::size_t from = 0;
  while (from < text.size()) {
    const std::size_t end = text.find_first_of("\n\t", from);
    out += displayText(text.substr(from, end == std::string_view::npos ? std::string_view::npos : end - from));
    if (end == std::string_view::npos) break;
    out.push_back(text[end]);
    from = end + 1;
  }
  return out;
}

// nlohmann escapes C0 controls but writes DEL and C1 (U+0080-U+009F) as they are;
// those can only occur inside strings, where \u escapes mean the same.
std::string jsonText(const Json& value, int indent) {
  const std::string raw = value.dump(indent, ' ', false, Json::error_handler_t::replace);
  std::string out;
  out.reserve(raw.size());
  char escape[8];
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const auto c = static_cast<unsigned char>(raw[i]);
    if (c == 0x7F) {
      out += "\\u007f";
    } else if (c == 0xC2 && i + 1 < raw.size() && static_cast<unsigned char>(raw[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(raw[i + 1]) <= 0x9F) {
      std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned char>(raw[++i]));
      out += escape;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

const Json* member(const Json& value, const char* key) {
  if (!value.is_object()) return nullptr;
  const auto it = value.find(key);
  return it == value.end() ? nullptr : &*it;
}

const std::string& textOf(const Json& value) { return value.get_ref<const std::string&>(); }

std::string formatNumber(const Json& v) {
  if (v.is_number_integer()) return v.dump();  // int64 or uint64, exact
  const double number = v.get<double>();
  if (number < 1e15 && number > -1e15 &&
      number == static_cast<double>(static_cast<long long>(number))) {
    return std::to_string(static_cast<long long>(number));
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", number);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

std::string cell(const Json* v) {
  if (v == nullptr || v->is_null()) return "-";
  if (v->is_string()) return textOf(*v).empty() ? "\"\"" : displayText(textOf(*v));
  if (v->is_number()) return formatNumber(*v);
  if (v->is_boolean()) return v->get<bool>() ? "true" : "false";
  return displayText(jsonText(*v, -1));
}

std::string uptimeText(const Json* v) {
  if (v == nullptr || !v->is_number() || v->get<double>() < 0) return cell(v);
  auto total = static_cast<long long>(v->get<double>());
  const long long days = total / 86400;
  const long long hours = total / 3600 % 24;
  const long long minutes = total / 60 % 60;
  const long long seconds = total % 60;
  std::string out;
  if (days > 0) out += std::to_string(days) + "d ";
  if (days > 0 || hours > 0) out += std::to_string(hours) + "h ";
  if (days > 0 || hours > 0 || minutes > 0) out += std::to_string(minutes) + "m ";
  out += std::to_string(seconds) + "s";
  return out;
}

std::string retryAfterText(const Json* v) {
  if (v == nullptr || !v->is_number()) return cell(v);
  if (v->get<double>() <= 0) return "-";
  return formatNumber(*v) + "s";
}

std::string utcTime(const Json* unix_ms) {
  if (unix_ms == nullptr || !unix_ms->is_number_unsigned()) return cell(unix_ms);
  const auto ms = unix_ms->get<std::uint64_t>();
  const auto seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  if (gmtime_r(&seconds, &tm) == nullptr) return cell(unix_ms);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

std::size_t width(std::string_view s) {
  std::size_t w = 0;
  for (const char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++w;
  }
  return w;
}

void printTable(const std::vector<std::string>& header,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) widths[c] = width(header[c]);
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size() && c < widths.size(); ++c) {
      widths[c] = std::max(widths[c], width(row[c]));
    }
  }
  const auto printRow = [&](const std::vector<std::string>& row) {
    std::string line;
    for (std::size_t c = 0; c < row.size(); ++c) {
      line += row[c];
      if (c + 1 < row.size()) line.append(widths[c] - width(row[c]) + 2, ' ');
    }
    std::printf("%s\n", line.c_str());
  };
  printRow(header);
  for (const auto& row : rows) printRow(row);
}

void printRaw(const std::string& body) {
  std::fwrite(body.data(), 1, body.size(), stdout);
  if (body.empty() || body.back() != '\n') std::fputc('\n', stdout);
}

std::optional<Json> parseDocument(const std::string& text, std::string* error) {
  const Json::parser_callback_t limitDepth = [](int depth, Json::parse_event_t, Json&) {
    if (depth > kMaxJsonDepth) throw NestedTooDeeply{};
    return true;
  };
  try {
    return Json::parse(text, limitDepth);
  } catch (const NestedTooDeeply&) {
    *error = "nested more than " + std::to_string(kMaxJsonDepth) + " levels deep";
  } catch (const Json::parse_error& e) {
    // what(): "[json.exception.parse_error.101] parse error at line 1, column 13: why"
    std::string_view why = e.what();
    if (const std::size_t colon = why.find(": "); colon != std::string_view::npos) {
      why.remove_prefix(colon + 2);
    }
    *error = "at byte " + std::to_string(e.byte) + ": " + displayText(why);
  } catch (const Json::exception& e) {
    // Numbers out of double range: "[json.exception.out_of_range.406] number overflow ..."
    std::string_view why = e.what();
    if (const std::size_t bracket = why.find("] "); bracket != std::string_view::npos) {
      why.remove_prefix(bracket + 2);
    }
    *error = displayText(why);
  }
  return std::nullopt;
}

}  // namespace zetian::milter::ctl
