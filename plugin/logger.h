// The engine's log: one line per event in key=value form, to syslog (facility mail),
// stderr or a file, as [log] says. Safe from any thread; a line is written whole.
#pragma once

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>
#include <string_view>

#include "cluster/log_sink.h"
#include "conf/config.h"

namespace zetian::plugin {

class Logger {
 public:
  // `ident` is the syslog identity ("zetian-milter").
  Logger(const conf::LogSection& section, std::string ident);
  ~Logger();
  Logger(const Logger&) = delete;
  Logger& operator=(const Logger&) = delete;

  bool enabled(conf::LogLevel level) const { return level <= level_.load(std::memory_order_relaxed); }
  // A reload applies a new [log] level live; lines already being written keep theirs.
  void setLevel(conf::LogLevel level) { level_.store(level, std::memory_order_relaxed); }
  conf::LogLevel level() const { return level_.load(std::memory_order_relaxed); }
  // [log] heartbeats and sync (cluster/trace_log.h), read on the cluster thread; a
  // reload applies them live. Their lines are debug lines: wanted only at that level.
  void setTrace(bool heartbeats, bool sync) {
    trace_heartbeats_.store(heartbeats, std::memory_order_relaxed);
    trace_sync_.store(sync, std::memory_order_relaxed);
  }
  bool traceSwitch(bool heartbeats) const {
    return (heartbeats ? trace_heartbeats_ : trace_sync_).load(std::memory_order_relaxed);
  }
  bool traceWanted(bool heartbeats) const { return enabled(conf::LogLevel::Debug) && traceSwitch(heartbeats); }
  // The level [log] asks for, as of the start or the last reload; level() may differ
  // after `zetianctl log level`.
  void setFileLevel(conf::LogLevel level) { file_level_.store(level, std::memory_order_relaxed); }
  conf::LogLevel fileLevel() const { return file_level_.load(std::memory_order_relaxed); }
  void log(conf::LogLevel level, std::string_view line);

  // Open the file target; false with *error set when it cannot be opened.
  bool open(std::string* error);

 private:
  std::atomic<conf::LogLevel> level_;
  std::atomic<bool> trace_heartbeats_;
  std::atomic<bool> trace_sync_;
  std::atomic<conf::LogLevel> file_level_;
  conf::LogTarget target_;
  std::string file_path_;
  std::string ident_;
  bool echo_to_stderr_ = false;  // syslog target, but started from a terminal

  std::mutex mutex_;  // guards file_ and the order of lines on stderr/file
  std::FILE* file_ = nullptr;
};

// Quote a value for a key=value log line when it needs it: cluster/log_sink.h.
using cluster::logValue;

}  // namespace zetian::plugin
