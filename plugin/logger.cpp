#include "plugin/logger.h"

#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "conf/text.h"

namespace zetian::plugin {

namespace {

int syslogPriority(conf::LogLevel level) {
  switch (level) {
    case conf::LogLevel::Error: return LOG_ERR;
    case conf::LogLevel::Warn: return LOG_WARNING;
    case conf::LogLevel::Info: return LOG_INFO;
    case conf::LogLevel::Debug: return LOG_DEBUG;
  }
  return LOG_INFO;
}

const char* levelName(conf::LogLevel level) {
  switch (level) {
    case conf::LogLevel::Error: return "error";
    case conf::LogLevel::Warn: return "warn";
    case conf::LogLevel::Info: return "info";
    case conf::LogLevel::Debug: return "debug";
  }
  return "info";
}

}  // namespace

Logger::Logger(const conf::LogSection& section, std::string ident)
    : level_(section.level),
      trace_heartbeats_(section.heartbeats),
      trace_sync_(section.sync),
      file_level_(section.level),
      target_(section.target), file_path_(section.file), ident_(std::move(ident)) {
  if (target_ == conf::LogTarget::Syslog) {
    openlog(ident_.c_str(), LOG_PID | LOG_NDELAY, LOG_MAIL);
    echo_to_stderr_ = isatty(STDERR_FILENO) != 0;
  }
}

Logger::~Logger() {
  if (file_) std::fclose(file_);
  if (target_ == conf::LogTarget::Syslog) closelog();
}

bool Logger::open(std::string* error) {
  if (target_ != conf::LogTarget::File) return true;
  std::lock_guard lock(mutex_);
  if (file_) return true;
  file_ = std::fopen(file_path_.c_str(), "a");
  if (!file_) {
    *error = "cannot open log file " + file_path_ + ": " + conf::errnoText(errno) +
             "; check that the directory exists and the milter user may write there";
    return false;
  }
  std::setvbuf(file_, nullptr, _IOLBF, 0);
  return true;
}

void Logger::log(conf::LogLevel level, std::string_view line) {
  if (!enabled(level)) return;
  if (target_ == conf::LogTarget::Syslog) {
    syslog(syslogPriority(level), "%.*s", int(line.size()), line.data());
    if (!echo_to_stderr_) return;
  }
  char stamp[32];
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  std::lock_guard lock(mutex_);
  std::FILE* out = (target_ == conf::LogTarget::File && file_) ? file_ : stderr;
  std::fprintf(out, "%s %s[%d]: level=%s %.*s\n", stamp, ident_.c_str(), int(getpid()), levelName(level),
               int(line.size()), line.data());
  std::fflush(out);
}

}  // namespace zetian::plugin
