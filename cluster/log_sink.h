// How code on the cluster thread logs: one key=value line per event, handed to the
// engine's logger (plugin/logger.h), which adds time, level and target. Cluster code
// never formats secrets, keys or MACs into a line.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "conf/config.h"

namespace zetian::cluster {

using LogSink = std::function<void(conf::LogLevel level, std::string_view line)>;

// Quote a value for a key=value log line when it needs it (empty, spaces, quotes, '=',
// backslashes, control or non-ASCII bytes); control bytes are escaped as \xNN so one
// event stays one line whatever a peer or a config file put in the value. The engine's
// logger (plugin/logger.h) uses this same function.
std::string logValue(std::string_view value);

// `text` in backquotes, for error messages that quote what the operator wrote.
std::string backquoted(std::string_view text);

}  // namespace zetian::cluster
