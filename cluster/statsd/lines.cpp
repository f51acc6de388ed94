#include "cluster/statsd/lines.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <unordered_set>

namespace zetian::cluster::statsd {
namespace {

enum class FamilyType { Counter, Gauge, Histogram };

bool isNameChar(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' || (!first && c >= '0' && c <= '9');
}

std::string_view trimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool endsWith(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// `name{labels} value [timestamp]`; false when the line is not that.
bool parseSampleLine(std::string_view line, Sample& out) {
  std::size_t i = 0;
  while (i < line.size() && isNameChar(line[i], i == 0)) ++i;
  if (i == 0) return false;
  out.name.assign(line.substr(0, i));
  out.labels.clear();
  if (i < line.size() && line[i] == '{') {
    ++i;
    while (true) {
      while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
      if (i < line.size() && line[i] == '}') {
        ++i;
        break;
      }
      const std::size_t key_start = i;
      while (i < line.size() && isNameChar(line[i], i == key_start)) ++i;
      if (i == key_start || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') return false;
      std::string key(line.substr(key_start, i - key_start));
      i += 2;
      std::string value;
      bool closed = false;
      while (i < line.size()) {
        const char c = line[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\' && i < line.size()) {
          const char e = line[i++];
          value += e == 'n' ? '\n' : e;
        } else {
          value += c;
        }
      }
      if (!closed) return false;
      out.labels.emplace_back(std::move(key), std::move(value));
    }
  }
  std::string_view rest = trimSpaces(line.substr(i));
  if (rest.empty() || i == 0) return false;
  const std::size_t space = rest.find_first_of(" \t");
  const std::string value_text(rest.substr(0, space));
  if (value_text == "+Inf" || value_text == "-Inf" || value_text == "NaN") {
    out.value = NAN;
    return true;
  }
  char* end = nullptr;
  out.value = std::strtod(value_text.c_str(), &end);
  return end != nullptr && *end == '\0';
}

std::string seriesKey(const Sample& s) {
  std::string key = s.name;
  for (const auto& [k, v] : s.labels) {
    key += '\x1f';
    key += k;
    key += '=';
    key += v;
  }
  return key;
}

// Characters that cannot appear in a StatsD name part or a DogStatsD tag become '_'.
std::string cleaned(std::string_view text, bool tag_value) {
  std::string out(text);
  for (char& c : out) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                    c == '-' || (tag_value && (c == '.' || c == '/' || c == ':'));
    if (!ok) c = '_';
  }
  return out;
}

void appendNumber(std::string& out, double v) {
  // Whole numbers without a fraction or exponent (every counter, most gauges); others
  // in the shortest form that reads back the same.
  if (std::fabs(v) < 9007199254740992.0 && v == std::floor(v)) {
    char buf[32];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(v));
    out.append(buf, end);
    return;
  }
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}

}  // namespace

std::vector<Sample> parsePrometheusText(std::string_view text, std::size_t* skipped) {
  std::unordered_map<std::string, FamilyType> types;
  std::vector<Sample> samples;
  std::size_t bad = 0;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    std::string_view line = trimSpaces(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.empty()) continue;
    if (line.front() == '#') {
      // "# TYPE name kind"; HELP and other comments carry nothing to push.
      if (line.substr(0, 7) == "# TYPE ") {
        std::string_view rest = line.substr(7);
        const std::size_t space = rest.find(' ');
        if (space == std::string_view::npos) continue;
        const std::string_view kind = trimSpaces(rest.substr(space + 1));
        const FamilyType type = kind == "counter"                              ? FamilyType::Counter
                                : kind == "histogram" || kind == "summary"     ? FamilyType::Histogram
                                                                               : FamilyType::Gauge;
        types[std::string(rest.substr(0, space))] = type;
      }
      continue;
    }
    Sample s;
    if (!parseSampleLine(line, s)) {
      ++bad;
      continue;
    }
    if (!std::isfinite(s.value)) continue;
    FamilyType type = FamilyType::Gauge;
    if (auto it = types.find(s.name); it != types.end()) {
      type = it->second;
    } else {
      for (std::string_view tail : {"_bucket", "_count", "_sum"}) {
        if (!endsWith(s.name, tail)) continue;
        auto base = types.find(s.name.substr(0, s.name.size() - tail.size()));
        if (base == types.end() || base->second != FamilyType::Histogram) continue;
        type = tail == "_bucket" ? FamilyType::Histogram : FamilyType::Counter;
        break;
      }
    }
    // A histogram's buckets (and a summary's quantiles, which carry the family name).
    if (type == FamilyType::Histogram) continue;
    s.kind = type == FamilyType::Counter ? SampleKind::Counter : SampleKind::Gauge;
    samples.push_back(std::move(s));
  }
  if (skipped) *skipped = bad;
  return samples;
}

std::string statsdName(std::string_view prometheus_name, std::string_view prefix) {
  std::string_view base = prometheus_name;
  if (base.substr(0, 7) == "zetian_") base.remove_prefix(7);
  std::string out;
  if (!prefix.empty()) {
    out.assign(prefix);
    out += '.';
  }
  out += cleaned(base, false);
  return out;
}

std::vector<std::string> LineEncoder::encode(const std::vector<Sample>& samples, const LineOptions& options) {
  std::vector<std::string> lines;
  lines.reserve(samples.size());
  std::unordered_map<std::string, double> seen;
  seen.reserve(samples.size());
  for (const Sample& s : samples) {
    std::string name = statsdName(s.name, options.prefix);
    std::string tags;
    for (const auto& [key, value] : s.labels) {
      if (value.empty()) continue;
      if (options.tags == TagStyle::None) {
        name += '.';
        name += cleaned(value, false);
      } else {
        tags += tags.empty() ? "|#" : ",";
        tags += cleaned(key, false);
        tags += ':';
        tags += cleaned(value, true);
      }
    }
    double value = s.value;
    if (s.kind == SampleKind::Counter) {
      std::string key = seriesKey(s);
      auto it = last_.find(key);
      const double before = it == last_.end() ? 0 : it->second;
      value = s.value >= before ? s.value - before : s.value;  // lower: the counter was reset
      seen.emplace(std::move(key), s.value);
    }
    const char* type = s.kind == SampleKind::Counter ? "|c" : "|g";
    if (s.kind == SampleKind::Gauge && value < 0) {
      lines.push_back(name + ":0|g" + tags);
    }
    std::string line = name;
    line += ':';
    appendNumber(line, value);
    line += type;
    line += tags;
    lines.push_back(std::move(line));
  }
  last_ = std::move(seen);
  return lines;
}

void LineEncoder::takeBaseline(const std::vector<Sample>& samples) {
  last_.clear();
  for (const Sample& s : samples) {
    if (s.kind == SampleKind::Counter) last_[seriesKey(s)] = s.value;
  }
}

std::vector<std::string> packDatagrams(const std::vector<std::string>& lines, std::size_t max_bytes,
                                       std::size_t* dropped) {
  std::vector<std::string> datagrams;
  std::size_t too_long = 0;
  std::string current;
  for (const std::string& line : lines) {
    if (line.size() > max_bytes) {
      ++too_long;
      continue;
    }
    if (!current.empty() && current.size() + 1 + line.size() > max_bytes) {
      datagrams.push_back(std::move(current));
      current.clear();
    }
    if (!current.empty()) current += '\n';
    current += line;
  }
  if (!current.empty()) datagrams.push_back(std::move(current));
  if (dropped) *dropped = too_long;
  return datagrams;
}

}  // namespace zetian::cluster::statsd
