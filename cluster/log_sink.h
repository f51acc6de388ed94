// How code on the cluster thread logs: one key=value line per event, handed to the
// engine's logger (plugin/logger.h), which adds time, level and target. Cluster code
// never formats secrets, keys or MACs into a line.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace zetian::cluster {

using LogSink = std::function<void(conf::LogLevel level, std::string_view line)>;

// Quote a value for a key=value log line when it needs it (empty, spaces, quotes, '=',
// backslashes, control or non-ASCII bytes). Control bytes, bytes that are not part of
// well-formed UTF-8, and valid characters that some viewers take as line breaks (C1
// controls, U+2028, U+2029) are escaped as \xNN, one per byte; other UTF-8 is kept as
// it is. So one event stays one line of valid UTF-8 whatever a peer, a mail client or
// a config file put in the value. The engine's logger (plugin/logger.h) uses this same
// function.
std::string logValue(std::string_view value);

// `text` in backquotes, for error messages that quote what the operator wrote.
std::string backquoted(std::string_view text);

// The kinds of refusal a connection to the cluster port can earn, each with its own
// log budget (RefusalBudget) and its own label in the metrics. A link reports all but
// admission as the reason its handshake failed (PeerLink::handshakeFailure).
enum class RefusalKind : std::uint8_t {
  garbage,            // undecodable or oversized frames, messages out of order, wrong nonces
  handshake_timeout,  // connected, and no handshake within handshake_timeout
  gave_up,            // closed or reset by the other end in the middle of the handshake
  bad_mac,            // wrong shared secret, or another cluster
  duplicate_id,       // a second live node with an id already in use, or our own id
  tls,                // TLS handshake or certificate failure
  admission,          // no handshake slot: per-address cap, table full, or evicted
};
inline constexpr std::array kRefusalKinds{
    RefusalKind::garbage, RefusalKind::handshake_timeout, RefusalKind::gave_up, RefusalKind::bad_mac,
    RefusalKind::duplicate_id, RefusalKind::tls, RefusalKind::admission};
std::string_view nameOf(RefusalKind kind);

// Rate limits the log lines of refusals, one budget per kind. A stranger can make us
// refuse as often as it likes; with a single shared budget its garbage would use up
// the lines and hide the one `bad MAC` from a misconfigured member that an operator
// needs to see. Each kind gets `lines_per_window` lines per window, which starts at
// the kind's first refusal; the rest are counted, and once the window is over a
// summary line says how many were left out. Pure: time is an argument.
class RefusalBudget {
 public:
  using Clock = std::chrono::steady_clock;
  RefusalBudget(std::size_t lines_per_window, Clock::duration window);

  struct Decision {
    std::optional<std::string> summary;  // of this kind's previous window: log it first
    bool log_line = false;               // the budget allows this refusal's own line
  };
  // Counts one refusal at `now`. Deciding takes no line, so a caller builds its line
  // only when log_line says it will be logged: a dropped refusal costs no string work.
  Decision allow(RefusalKind kind, Clock::time_point now);
  // Summaries of windows that have ended with lines left out, so that a summary comes
  // even when no refusal of that kind follows. Call it now and then (a timer).
  std::vector<std::string> flush(Clock::time_point now);
  // Lines of this kind left out so far, summarised or not.
  std::uint64_t suppressed(RefusalKind kind) const { return budgets_[index(kind)].suppressed_total; }

 private:
  struct Budget {
    bool open = false;  // a window is running
    Clock::time_point window_start{};
    std::size_t logged = 0;            // in this window
    std::uint64_t suppressed = 0;      // in this window
    std::uint64_t suppressed_total = 0;
  };
  static std::size_t index(RefusalKind kind) { return static_cast<std::size_t>(kind); }
  // The summary of `kind`'s window if it is over and left lines out.
  std::optional<std::string> closeWindowIfOver(RefusalKind kind, Clock::time_point now);

  std::size_t lines_per_window_;
  Clock::duration window_;
  std::array<Budget, kRefusalKinds.size()> budgets_{};
};

}  // namespace zetian::cluster
