// The C ABI: thin wrappers that turn every C++ exception into the configured
// default action, so a bug in the engine can never make the MTA lose or block mail.
//
// Lifetime at stop: libmilter's session threads are detached, and smfi_main() returns
// while some may still be inside a callback, or just starting one. So the handle pins
// the engine for every open session and every call in progress;
// zetian_engine_close() refuses new sessions, makes checks answer with the default
// action, waits (bounded) for the pins to go, and frees the engine only then. When the
// wait runs out, the engine is left to the last pin to go: a session thread must never
// run on freed memory. The handle itself (a few hundred bytes) is never freed, so a
// call racing with the close finds it closed instead of freed.
//
// Every exported function catches everything (`catch (...)`): an exception crossing
// into C is undefined behaviour, whatever its type.
#include "plugin/zetian.h"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <memory>
#include <string>
#include <type_traits>
#include <thread>
#include <vector>

#include "plugin/accounts.h"
#include "plugin/engine.h"
#include "plugin/zetian_internal.h"

#ifndef ZETIAN_VERSION
#error "ZETIAN_VERSION comes from the zetian_version CMake target (the project version)"
#endif

using zetian::plugin::Engine;
using zetian::plugin::Errors;

struct zetian_engine {
  // Set at open; reset (under mutex) only when no pin is left. A pin holder uses it
  // without the lock.
  std::unique_ptr<Engine> engine;
  std::atomic<bool> closing{false};  // close began: new sessions refused, checks answer the default
  std::mutex mutex;                  // guards engine's reset, pins, stopped, abandoned
  std::condition_variable drained;
  std::size_t pins = 0;    // open sessions + calls in progress
  bool stopped = false;    // close is stopping or has freed the engine: calls fall back
  bool abandoned = false;  // close gave up waiting: the last pin to go frees the engine
  // milter.default_action as it was at the close, for sessions refused after it.
  zetian::conf::DefaultAction closed_action = zetian::conf::DefaultAction::Accept;
};

struct zetian_session {
  // Null for a refused session (NULL engine, closing engine, no memory): it never
  // touches an engine and answers with `refused_action`.
  zetian_engine* owner = nullptr;
  std::unique_ptr<zetian::plugin::Session> session;
  zetian::conf::DefaultAction refused_action = zetian::conf::DefaultAction::Accept;
};

namespace {

// Returned when even a refused session cannot be allocated: "never returns NULL".
zetian_session g_unallocated_session;

std::vector<zetian::conf::Override> parseOverrides(const char* const* overrides, size_t count, Errors* errors) {
  std::vector<zetian::conf::Override> out;
  if (count > 0 && !overrides) {
    errors->push_back("overrides is NULL but override_count is " + std::to_string(count));
    return out;
  }
  for (size_t i = 0; i < count; ++i) {
    if (!overrides[i]) {
      errors->push_back("override " + std::to_string(i) + " is NULL; expected KEY=VALUE");
      continue;
    }
    std::string text = overrides[i];
    auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
      errors->push_back("--set " + text + ": expected KEY=VALUE, e.g. --set health.socket=/tmp/health.sock");
      continue;
    }
    out.push_back({text.substr(0, eq), text.substr(eq + 1)});
  }
  return out;
}

void report(const Errors& errors, zetian_error_fn on_error, void* ctx) noexcept {
  if (!on_error) return;
  for (const auto& e : errors) on_error(ctx, e.c_str());
}

void reportOne(const char* message, zetian_error_fn on_error, void* ctx) noexcept {
  if (on_error) on_error(ctx, message);
}

// A C caller may pass any int as a zetian_stage, and in C++ a value outside the enum's
// range may not even be read as one (Clang's -fsanitize=enum rightly stops there): the
// bytes are read as the underlying integer and only then compared.
zetian::conf::Stage toStage(const zetian_stage& stage) {
  std::underlying_type_t<zetian_stage> raw;
  static_assert(sizeof raw == sizeof stage);
  std::memcpy(&raw, &stage, sizeof raw);
  switch (raw) {
    case ZETIAN_STAGE_CONNECT: return zetian::conf::Stage::Connect;
    case ZETIAN_STAGE_HELO: return zetian::conf::Stage::Helo;
    case ZETIAN_STAGE_MAIL: return zetian::conf::Stage::Mail;
    case ZETIAN_STAGE_RCPT: return zetian::conf::Stage::Rcpt;
    case ZETIAN_STAGE_DATA: return zetian::conf::Stage::Data;
  }
  throw std::invalid_argument("unknown stage " + std::to_string(raw));
}

// The answer of a session that may not run a check (refused, or its engine closing).
void fillRefused(zetian_verdict* v, zetian::conf::DefaultAction action) {
  zetian::plugin::fillDefaultAction(v, action, "The rate limiter is not available, try again later");
}

// Copy the fields of `full` that lie entirely within out->size (a host built against
// an older header has a shorter struct).
void copyOut(const zetian_verdict& full, zetian_verdict* out) {
  const std::size_t size = out->size;
  const auto fits = [size](std::size_t offset, std::size_t length) { return offset + length <= size; };
  if (fits(offsetof(zetian_verdict, action), sizeof full.action)) out->action = full.action;
  if (fits(offsetof(zetian_verdict, rcode), sizeof full.rcode)) std::memcpy(out->rcode, full.rcode, sizeof full.rcode);
  if (fits(offsetof(zetian_verdict, xcode), sizeof full.xcode)) std::memcpy(out->xcode, full.xcode, sizeof full.xcode);
  if (fits(offsetof(zetian_verdict, text), sizeof full.text)) std::memcpy(out->text, full.text, sizeof full.text);
  if (fits(offsetof(zetian_verdict, rule), sizeof full.rule)) std::memcpy(out->rule, full.rule, sizeof full.rule);
}

// Handles never freed (see the top of the file); kept reachable so leak checkers see
// them as what they are.
std::mutex g_handles_mutex;
std::vector<std::unique_ptr<zetian_engine>>* g_handles = new std::vector<std::unique_ptr<zetian_engine>>;

// Pins the engine for one call; false when it is closed (the call falls back).
// Neither lets an exception out: they run outside the exported functions' try blocks.
bool pinCall(zetian_engine* e) noexcept {
  try {
    std::lock_guard lock(e->mutex);
    if (e->stopped) return false;
    ++e->pins;
    return true;
  } catch (...) {
    return false;
  }
}

void unpin(zetian_engine* e) noexcept {
  try {
    std::unique_ptr<Engine> last;
    {
      std::lock_guard lock(e->mutex);
      --e->pins;
      if (e->abandoned && e->pins == 0) last = std::move(e->engine);
      e->drained.notify_all();
    }
    // zetian_engine_close() gave up waiting for this one and left the engine to it.
    last.reset();
  } catch (...) {
  }
}

struct CallPin {
  explicit CallPin(zetian_engine* e) : engine(e && pinCall(e) ? e : nullptr) {}
  ~CallPin() {
    if (engine) unpin(engine);
  }
  CallPin(const CallPin&) = delete;
  CallPin& operator=(const CallPin&) = delete;
  zetian_engine* engine;  // null: no engine to call
};

// zetian_engine_start and zetian_engine_reload: `run` on the pinned engine, 0 when it
// succeeds, else -1 with its errors reported. `failed` ("internal error while ...")
// heads the report of an exception.
template <typename Run>
int runReported(zetian_engine* handle, const char* function, const char* failed, zetian_error_fn on_error,
                void* ctx, Run run) noexcept {
  CallPin engine(handle);
  try {
    if (!engine.engine) {
      reportOne((std::string(function) + (handle ? ": the engine is closed" : ": the engine is NULL")).c_str(),
                on_error, ctx);
      return -1;
    }
    Errors errors;
    try {
      if (run(*engine.engine->engine, &errors)) return 0;
    } catch (const std::exception& e) {
      errors.push_back(std::string(failed) + ": " + e.what());
    }
    report(errors, on_error, ctx);
  } catch (...) {
    reportOne(failed, on_error, ctx);
  }
  return -1;
}

}  // namespace

namespace zetian::plugin {

void closeEngine(zetian_engine* e, std::chrono::milliseconds drain_timeout) {
  if (!e || e->closing.exchange(true)) return;
  std::size_t still_open = 0;
  std::unique_ptr<Engine> engine;
  {
    std::unique_lock lock(e->mutex);
    e->drained.wait_for(lock, drain_timeout, [e] { return e->pins == 0; });
    e->stopped = true;
    e->closed_action = e->engine->defaultAction();
    still_open = e->pins;
    if (still_open == 0) engine = std::move(e->engine);
  }
  if (engine) return;  // freed here, every session gone
  try {
    e->engine->logger().log(conf::LogLevel::Warn,
                            "close: " + std::to_string(still_open) + " sessions (or calls) still open after " +
                                std::to_string(drain_timeout.count()) +
                                " ms; the engine stays allocated until the last one ends");
  } catch (...) {
  }
  // Stop the threads and sockets now; the memory stays for the sessions. Their
  // checks answer with the default action and touch nothing that shutdown() stops.
  try {
    e->engine->shutdown();
  } catch (...) {
  }
  {
    std::lock_guard lock(e->mutex);
    if (e->pins == 0) {
      engine = std::move(e->engine);
    } else {
      e->abandoned = true;
    }
  }
  // If a session never closes, the engine is leaked, deliberately: freeing it under a
  // thread that may still be inside a call would be a use-after-free.
}

}  // namespace zetian::plugin

extern "C" {

const char* zetian_version(void) { return ZETIAN_VERSION; }

int zetian_abi_version(void) { return ZETIAN_ABI_VERSION; }

zetian_engine* zetian_engine_open(const char* config_path, const char* const* overrides, size_t override_count,
                                  zetian_error_fn on_error, void* ctx) {
  try {
    Errors errors;
    try {
      auto parsed = parseOverrides(overrides, override_count, &errors);
      if (errors.empty()) {
        std::optional<std::string> path;
        if (config_path) path = config_path;
        auto engine = Engine::open(path, std::move(parsed), &errors);
        if (engine) {
          auto handle = std::make_unique<zetian_engine>();
          handle->engine = std::move(engine);
          std::lock_guard lock(g_handles_mutex);
          g_handles->push_back(std::move(handle));
          return g_handles->back().get();
        }
      }
    } catch (const std::exception& e) {
      errors.push_back(std::string("internal error while loading the configuration: ") + e.what());
    }
    report(errors, on_error, ctx);
  } catch (...) {
    reportOne("internal error while loading the configuration", on_error, ctx);
  }
  return nullptr;
}

int zetian_config_check(const char* config_path, const char* const* overrides, size_t override_count,
                        zetian_error_fn on_error, void* ctx) {
  try {
    Errors errors, warnings;
    try {
      auto parsed = parseOverrides(overrides, override_count, &errors);
      if (errors.empty()) {
        const zetian::conf::LoadOptions options{parsed, zetian::plugin::lookupSystemAccount};
        auto loaded = config_path ? zetian::conf::loadFile(config_path, options)
                                  : zetian::conf::loadEmbeddedDefault(options);
        for (const auto& e : loaded.errors) errors.push_back(e.format());
        // Warnings go through the same callback, marked, and do not fail the check.
        for (auto& w : loaded.warnings) {
          w.message.insert(0, "warning: ");
          warnings.push_back(w.format());
        }
      }
    } catch (const std::exception& e) {
      errors.push_back(std::string("internal error while checking the configuration: ") + e.what());
    }
    report(errors, on_error, ctx);
    report(warnings, on_error, ctx);
    return errors.empty() ? 0 : -1;
  } catch (...) {
    reportOne("internal error while checking the configuration", on_error, ctx);
  }
  return -1;
}

int zetian_engine_start(zetian_engine* handle, zetian_error_fn on_error, void* ctx) {
  return runReported(handle, "zetian_engine_start", "internal error while starting", on_error, ctx,
                     [](Engine& engine, Errors* errors) { return engine.start(errors); });
}

int zetian_engine_reload(zetian_engine* handle, zetian_error_fn on_error, void* ctx) {
  return runReported(handle, "zetian_engine_reload", "internal error while reloading", on_error, ctx,
                     [](Engine& engine, Errors* errors) { return engine.reload(errors); });
}

void zetian_engine_close(zetian_engine* engine) {
  try {
    zetian::plugin::closeEngine(engine, zetian::plugin::kCloseDrainTimeout);
  } catch (...) {
  }
}

const char* zetian_engine_option(zetian_engine* handle, const char* key) {
  CallPin engine(handle);
  if (!engine.engine || !key) return nullptr;
  try {
    return engine.engine->engine->option(key);
  } catch (...) {
    return nullptr;
  }
}

int zetian_engine_set_reporter(zetian_engine* handle, zetian_report_fn report, void* ctx) {
  if (!handle) return -1;
  // A closed engine calls no reporter any more (its health thread is stopped).
  CallPin engine(handle);
  if (!engine.engine) return -1;
  try {
    return engine.engine->engine->setReporter(report, ctx) ? 0 : -1;
  } catch (...) {
    return -1;
  }
}

unsigned zetian_engine_needs(zetian_engine* handle) {
  CallPin engine(handle);
  if (!engine.engine) return 0;
  try {
    return engine.engine->engine->needs();
  } catch (...) {
    return 0;
  }
}

void zetian_log(zetian_engine* handle, int level, const char* message) {
  if (level < 0) level = 0;
  if (level > 3) level = 3;
  CallPin engine(handle);
  if (!engine.engine) {
    std::fprintf(stderr, "zetian: %s\n", message ? message : "");
    return;
  }
  try {
    engine.engine->engine->logger().log(static_cast<zetian::conf::LogLevel>(level), message ? message : "");
  } catch (...) {
  }
}

zetian_session* zetian_session_open(zetian_engine* engine, const char* client_addr, const char* client_name) {
  zetian_session* s = nullptr;
  try {
    s = new zetian_session;
  } catch (...) {
    return &g_unallocated_session;
  }
  if (!engine) return s;
  try {
    {
      // Under the mutex the engine cannot be freed.
      std::lock_guard lock(engine->mutex);
      s->refused_action = engine->engine ? engine->engine->defaultAction() : engine->closed_action;
      if (engine->closing.load() || engine->stopped) return s;  // refused: the engine is going away
      ++engine->pins;
    }
    s->owner = engine;
    s->session = engine->engine->openSession(client_addr, client_name);
  } catch (...) {
    // Leave session null: checks on it answer with the default action.
  }
  return s;
}

void zetian_session_set_sasl_user(zetian_session* s, const char* login) {
  if (!s || !s->session) return;
  try {
    s->session->facts.sasl_user = login ? login : "";
  } catch (...) {
  }
}

int zetian_session_check(zetian_session* s, zetian_stage stage, const char* arg, zetian_verdict* verdict) {
  zetian_verdict full = ZETIAN_VERDICT_INIT;
  try {
    if (!s) {
      fillRefused(&full, zetian::conf::DefaultAction::Accept);
    } else if (!s->owner) {
      fillRefused(&full, s->refused_action);
    } else if (s->owner->closing.load(std::memory_order_relaxed)) {
      fillRefused(&full, s->owner->engine->defaultAction());  // pinned by this session
    } else {
      Engine& engine = *s->owner->engine;
      try {
        if (!s->session) throw std::runtime_error("session could not be created");
        engine.check(*s->session, toStage(stage), arg, &full);
      } catch (const std::exception& e) {
        engine.internalFailure("check", e.what(), &full);
      } catch (...) {
        engine.internalFailure("check", "unknown exception", &full);
      }
    }
  } catch (...) {
    fillRefused(&full, s ? s->refused_action : zetian::conf::DefaultAction::Accept);
  }
  if (verdict) copyOut(full, verdict);
  return full.action;
}

int zetian_session_check_async(zetian_session* s, zetian_stage stage, const char* arg, zetian_check_fn callback,
                               void* ctx) {
  if (!callback) return 1;
  // The verdict lives with the call until the callback has run.
  struct Call {
    zetian_verdict verdict = ZETIAN_VERDICT_INIT;
    zetian_check_fn callback;
    void* ctx;
    std::atomic<bool> returned{false};  // checkAsync() has returned
    std::atomic<bool> fired{false};     // the callback ran: never twice
  };
  auto call = std::make_shared<Call>();
  call->callback = callback;
  call->ctx = ctx;
  auto finish = [call] {
    if (!call->fired.exchange(true)) call->callback(call->ctx, &call->verdict, call->verdict.action);
  };
  std::atomic<bool> inline_done{false};
  try {
    if (!s) {
      fillRefused(&call->verdict, zetian::conf::DefaultAction::Accept);
    } else if (!s->owner) {
      fillRefused(&call->verdict, s->refused_action);
    } else if (s->owner->closing.load(std::memory_order_relaxed)) {
      fillRefused(&call->verdict, s->owner->engine->defaultAction());
    } else {
      Engine& engine = *s->owner->engine;
      try {
        if (!s->session) throw std::runtime_error("session could not be created");
        const std::thread::id caller = std::this_thread::get_id();
        engine.checkAsync(*s->session, toStage(stage), arg, &call->verdict, [call, finish, caller, &inline_done] {
          // Inline: report after returning from checkAsync (the caller's frame is
          // still there); later: call back now.
          if (std::this_thread::get_id() == caller && !call->returned.load()) {
            inline_done.store(true);
            return;
          }
          finish();
        });
        call->returned.store(true);
        if (!inline_done.load()) return 0;
      } catch (const std::exception& e) {
        engine.internalFailure("check", e.what(), &call->verdict);
      } catch (...) {
        engine.internalFailure("check", "unknown exception", &call->verdict);
      }
    }
  } catch (...) {
    fillRefused(&call->verdict, s ? s->refused_action : zetian::conf::DefaultAction::Accept);
  }
  finish();
  return 1;
}

void zetian_session_eom(zetian_session* s, zetian_header_fn add_header, zetian_quarantine_fn quarantine,
                        void* ctx) {
  if (!s || !s->owner || !s->session) return;
  Engine& engine = *s->owner->engine;
  try {
    try {
      engine.eom(*s->session, add_header, quarantine, ctx);
    } catch (const std::exception& e) {
      zetian_verdict ignored = ZETIAN_VERDICT_INIT;
      engine.internalFailure("eom", e.what(), &ignored);
    } catch (...) {
      zetian_verdict ignored = ZETIAN_VERDICT_INIT;
      engine.internalFailure("eom", "unknown exception", &ignored);
    }
  } catch (...) {
    // Even the failure could not be logged (no memory): nothing more to do.
  }
}

void zetian_session_reset(zetian_session* s) {
  if (!s || !s->owner || !s->session) return;
  try {
    s->owner->engine->resetMessage(*s->session);
  } catch (...) {
  }
}

void zetian_session_close(zetian_session* s) {
  if (!s || s == &g_unallocated_session) return;
  zetian_engine* owner = s->owner;
  try {
    if (owner) owner->engine->closeSession(std::move(s->session));
  } catch (...) {
  }
  delete s;
  if (!owner) return;
  try {
    unpin(owner);
  } catch (...) {
  }
}

}  // extern "C"
