// A host's own figures in the health socket's answers (zetian_engine_set_reporter).
//
// The host (the policy-delegation server in zetian-milter) keeps counters the engine
// cannot see: its connections, requests, malformed input. Rather than a second HTTP
// server, it hands the engine a reporter that the health thread calls while it builds
// GET /metrics (Prometheus lines, appended at the end) and GET /health (one JSON
// object, the value of "policy_host").
//
// The contract that lets a host free its context: the reporter is called with
// reporter_mutex_ held, and setReporter swaps it under the same mutex, so once
// setReporter returns no call to the old reporter is running or can start. The price
// is that a reporter must be quick (it holds up the swap, and the health thread), and
// must not set a reporter itself: that would wait for its own call to end. Such a call
// is refused instead of deadlocking.
//
// A reporter's answer is the host's text, not ours to trust blindly: it is bounded
// (kMaxReportBytes; more is dropped whole), and a HEALTH answer that is not one JSON
// object ({...}) is shown as null rather than breaking the /health document. Either
// problem is logged once per engine.
#include <cstddef>
#include <string>
#include <string_view>

#include "plugin/engine.h"

namespace zetian::plugin {
namespace {

// Far above what a host reports (a few dozen lines), far below what would strain the
// health thread or a Prometheus scrape.
constexpr std::size_t kMaxReportBytes = 1 << 20;

// The engine whose reporter this thread is running, if any.
thread_local const Engine* t_reporting = nullptr;

struct ReportSink {
  std::string text;
  bool overflowed = false;
};

// The `append` given to reporters: C code calls it, so nothing may escape.
void appendToSink(void* sink, const char* text, std::size_t length) noexcept {
  auto* s = static_cast<ReportSink*>(sink);
  if (s == nullptr || text == nullptr || length == 0 || s->overflowed) return;
  if (length > kMaxReportBytes - s->text.size()) {
    s->overflowed = true;
    return;
  }
  try {
    s->text.append(text, length);
  } catch (...) {
    s->overflowed = true;
  }
}

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trimmed(std::string_view text) {
  while (!text.empty() && isSpace(text.front())) text.remove_prefix(1);
  while (!text.empty() && isSpace(text.back())) text.remove_suffix(1);
  return text;
}

}  // namespace

bool Engine::setReporter(zetian_report_fn report, void* ctx) {
  if (t_reporting == this) return false;
  std::lock_guard lock(reporter_mutex_);
  reporter_ = report;
  reporter_ctx_ = report != nullptr ? ctx : nullptr;
  return true;
}

std::string Engine::hostReport(int what) {
  ReportSink sink;
  {
    std::lock_guard lock(reporter_mutex_);
    if (reporter_ == nullptr) return {};
    t_reporting = this;
    try {
      reporter_(reporter_ctx_, what, &appendToSink, &sink);
    } catch (...) {
      // A C++ host's exception through a C callback: treat the answer as unusable.
      sink.overflowed = true;
      sink.text.clear();
    }
    t_reporting = nullptr;
  }
  const char* problem = nullptr;
  if (sink.overflowed) {
    problem = "the host's report is over 1 MiB (or failed); it is left out";
  } else if (what == ZETIAN_REPORT_HEALTH) {
    const std::string_view object = trimmed(sink.text);
    if (object.empty()) return {};
    if (object.size() < 2 || object.front() != '{' || object.back() != '}') {
      problem = "the host's /health report is not a JSON object; policy_host is shown as null";
    } else {
      return std::string(object);
    }
  } else {
    if (!sink.text.empty() && sink.text.back() != '\n') sink.text += '\n';
    return std::move(sink.text);
  }
  if (!reporter_complained_.exchange(true)) {
    logger_->log(conf::LogLevel::Warn, std::string("host_report what=") + std::to_string(what) + " problem=\"" + problem +
                                           "\" (logged once)");
  }
  return {};
}

}  // namespace zetian::plugin
