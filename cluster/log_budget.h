// A log budget per kind of line, for lines that something outside our control (a
// stranger at the cluster port, a busy cluster's traffic) can make us write as often
// as it likes. Each kind gets `lines_per_window` lines per window, a fixed window that
// starts at the kind's first line; the lines past it are counted, and once the window
// is over one summary line says how many were left out. Budgets are per kind so one
// noisy kind never uses up the lines of another.
//
// The refusal lines (cluster/log_sink.h) and the trace lines (cluster/trace_log.h) use
// it; each brings its kinds (an enum numbered 0..kKindCount-1) and its summary line.
// Pure: time is an argument. Not locked: its owner's thread only.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace zetian::cluster {

// The summary of one window of `kind` that left `left_out` lines out.
template <typename Kind>
using BudgetSummaryLine = std::string (*)(Kind kind, std::uint64_t left_out,
                                          std::chrono::steady_clock::duration window);

// Whether `kinds` lists every kind in the order of its number, as a budget's flush()
// takes them; each user checks its list of kinds with a static_assert.
template <typename Kind, std::size_t N>
constexpr bool numberedInOrder(const std::array<Kind, N>& kinds) {
  for (std::size_t i = 0; i < N; ++i) {
    if (static_cast<std::size_t>(kinds[i]) != i) return false;
  }
  return true;
}

template <typename Kind, std::size_t kKindCount, BudgetSummaryLine<Kind> kSummaryLine>
class LogBudget {
  static_assert(std::is_enum_v<Kind>);

 public:
  using Clock = std::chrono::steady_clock;
  LogBudget(std::size_t lines_per_window, Clock::duration window)
      : lines_per_window_(lines_per_window), window_(window) {}

  struct Decision {
    std::optional<std::string> summary;  // of this kind's previous window: log it first
    bool log_line = false;               // the budget allows this line
  };
  // Counts one line of `kind` at `now`. Deciding takes no line, so a caller builds its
  // line only when log_line says it will be logged: a dropped line costs no string work.
  Decision allow(Kind kind, Clock::time_point now) {
    Decision decision;
    decision.summary = closeWindowIfOver(kind, now);
    Budget& b = budgets_[index(kind)];
    if (!b.open) {
      b.open = true;
      b.window_start = now;
    }
    if (b.logged < lines_per_window_) {
      ++b.logged;
      decision.log_line = true;
    } else {
      ++b.suppressed;
      ++b.suppressed_total;
    }
    return decision;
  }
  // Summaries of windows that have ended with lines left out, in the kinds' order, so
  // that a summary comes even when no further line of that kind does. Call it now and
  // then (a timer, the node's tick).
  std::vector<std::string> flush(Clock::time_point now) {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < kKindCount; ++i) {
      if (auto summary = closeWindowIfOver(static_cast<Kind>(i), now)) out.push_back(std::move(*summary));
    }
    return out;
  }
  // Lines of this kind left out so far, summarised or not.
  std::uint64_t suppressed(Kind kind) const { return budgets_[index(kind)].suppressed_total; }

 private:
  struct Budget {
    bool open = false;  // a window is running
    Clock::time_point window_start{};
    std::size_t logged = 0;        // in this window
    std::uint64_t suppressed = 0;  // in this window
    std::uint64_t suppressed_total = 0;
  };
  static std::size_t index(Kind kind) { return static_cast<std::size_t>(kind); }
  // The summary of `kind`'s window if it is over and left lines out.
  std::optional<std::string> closeWindowIfOver(Kind kind, Clock::time_point now) {
    Budget& b = budgets_[index(kind)];
    if (!b.open || now - b.window_start < window_) return std::nullopt;
    const std::uint64_t left_out = b.suppressed;
    b.open = false;
    b.logged = 0;
    b.suppressed = 0;
    if (left_out == 0) return std::nullopt;
    return kSummaryLine(kind, left_out, window_);
  }

  std::size_t lines_per_window_;
  Clock::duration window_;
  std::array<Budget, kKindCount> budgets_{};
};

}  // namespace zetian::cluster
