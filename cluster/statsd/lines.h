// StatsD lines from the Prometheus text of GET /metrics: the pure half of the StatsD
// exporter (exporter.h sends what this makes).
//
// One source of truth: the exporter does not keep a second list of metrics. It renders
// the same text a Prometheus scrape gets and turns each sample into a StatsD line, so
// a metric added to /metrics is pushed too, under the name an operator can predict:
//
//   zetian_sessions_total            ->  PREFIX.sessions_total          (PREFIX "zetian" by default)
//   zetian_decisions_total{rule="per_ip",verdict="allow"}
//     tags = "dogstatsd"             ->  PREFIX.decisions_total:N|c|#rule:per_ip,verdict:allow
//     tags = "none"                  ->  PREFIX.decisions_total.per_ip.allow:N|c
//
// The leading "zetian_" becomes the prefix and a dot (an empty prefix drops it).
// With tags = "none" each label value is appended as one more dot-separated part, in
// the order /metrics writes the labels; characters a StatsD name cannot hold become
// '_'. A label with an empty value is no label (as in Prometheus) and is left out.
//
// Counters go out as the change since the previous push (StatsD counters add up at the
// agent); a counter lower than before was reset and counts from zero again. Gauges go
// out as they are. A histogram gives its _count and _sum as counters; its _bucket
// series stay with Prometheus (sixteen series per histogram is a scrape's job).
// Traps: a StatsD gauge written with a sign ("-3") is a change to the previous value
// for Etsy statsd and Telegraf, so a negative gauge is sent as 0 then the value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace zetian::cluster::statsd {

enum class TagStyle { Dogstatsd, None };

enum class SampleKind { Counter, Gauge };

struct Sample {
  std::string name;  // as in /metrics: "zetian_decisions_total"
  std::vector<std::pair<std::string, std::string>> labels;  // in the order written, values unescaped
  SampleKind kind = SampleKind::Gauge;
  double value = 0;
};

// The samples of a Prometheus text exposition (format 0.0.4). A family's kind comes
// from its "# TYPE" line (untyped: a gauge). Lines that do not parse, bucket lines and
// values that are not finite are left out; `skipped` counts the lines that did not parse.
std::vector<Sample> parsePrometheusText(std::string_view text, std::size_t* skipped = nullptr);

// "zetian_sessions_total" with prefix "zetian" -> "zetian.sessions_total".
std::string statsdName(std::string_view prometheus_name, std::string_view prefix);

struct LineOptions {
  std::string prefix = "zetian";
  TagStyle tags = TagStyle::Dogstatsd;
};

// Remembers each counter's last value between pushes.
class LineEncoder {
 public:
  // The lines of one push. A counter series seen for the first time counts from zero
  // (all of it is new since the process started) unless a baseline was taken.
  std::vector<std::string> encode(const std::vector<Sample>& samples, const LineOptions& options);
  // Remember the counters' current values without sending them: for an exporter
  // started after the process (at a reload), whose first push must not send
  // everything counted before it existed.
  void takeBaseline(const std::vector<Sample>& samples);

 private:
  // Series key (name and labels) -> the value last pushed. Series gone from /metrics
  // are forgotten at the next push.
  std::unordered_map<std::string, double> last_;
};

// Lines joined by '\n' into datagrams of at most `max_bytes`, in order. A line longer
// than `max_bytes` on its own cannot be sent whole and is dropped (counted in `dropped`).
std::vector<std::string> packDatagrams(const std::vector<std::string>& lines, std::size_t max_bytes,
                                       std::size_t* dropped = nullptr);

}  // namespace zetian::cluster::statsd
