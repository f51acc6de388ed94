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

#include "cluster/log_budget.h"
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

// The summary of a window of refusals that left `left_out` lines out:
// "cluster_refusals_suppressed kind=garbage count=97 window=60s".
std::string refusalsSuppressedLine(RefusalKind kind, std::uint64_t left_out,
                                   std::chrono::steady_clock::duration window);

// Rate limits the log lines of refusals, one budget per kind (cluster/log_budget.h). A
// stranger can make us refuse as often as it likes; with a single shared budget its
// garbage would use up the lines and hide the one `bad MAC` from a misconfigured member
// that an operator needs to see.
static_assert(numberedInOrder(kRefusalKinds));
using RefusalBudget = LogBudget<RefusalKind, kRefusalKinds.size(), refusalsSuppressedLine>;

}  // namespace zetian::cluster
