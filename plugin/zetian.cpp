// The C ABI: thin wrappers that turn every C++ exception into the configured
// default action, so a bug in the engine can never make the MTA lose or block mail.
#include "plugin/zetian.h"

#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "plugin/accounts.h"
#include "plugin/engine.h"

using zetian::plugin::Engine;
using zetian::plugin::Errors;

struct zetian_engine {
  std::unique_ptr<Engine> engine;
};

struct zetian_session {
  Engine* engine;
  std::unique_ptr<zetian::plugin::Session> session;
};

namespace {

std::vector<zetian::conf::Override> parseOverrides(const char* const* overrides, size_t count, Errors* errors) {
  std::vector<zetian::conf::Override> out;
  for (size_t i = 0; i < count; ++i) {
    std::string text = overrides[i] ? overrides[i] : "";
    auto eq = text.find('=');
    if (eq == std::string::npos || eq == 0) {
      errors->push_back("--set " + text + ": expected KEY=VALUE, e.g. --set health.socket=/tmp/health.sock");
      continue;
    }
    out.push_back({text.substr(0, eq), text.substr(eq + 1)});
  }
  return out;
}

void report(const Errors& errors, zetian_error_fn on_error, void* ctx) {
  if (!on_error) return;
  for (const auto& e : errors) on_error(ctx, e.c_str());
}

zetian::conf::Stage toStage(zetian_stage stage) {
  switch (stage) {
    case ZETIAN_STAGE_CONNECT: return zetian::conf::Stage::Connect;
    case ZETIAN_STAGE_HELO: return zetian::conf::Stage::Helo;
    case ZETIAN_STAGE_MAIL: return zetian::conf::Stage::Mail;
    case ZETIAN_STAGE_RCPT: return zetian::conf::Stage::Rcpt;
    case ZETIAN_STAGE_DATA: return zetian::conf::Stage::Data;
  }
  return zetian::conf::Stage::Mail;
}

}  // namespace

extern "C" {

const char* zetian_version(void) { return "0.1.0"; }

zetian_engine* zetian_engine_open(const char* config_path, const char* const* overrides, size_t override_count,
                                  zetian_error_fn on_error, void* ctx) {
  Errors errors;
  try {
    auto parsed = parseOverrides(overrides, override_count, &errors);
    if (errors.empty()) {
      std::optional<std::string> path;
      if (config_path) path = config_path;
      auto engine = Engine::open(path, std::move(parsed), &errors);
      if (engine) return new zetian_engine{std::move(engine)};
    }
  } catch (const std::exception& e) {
    errors.push_back(std::string("internal error while loading the configuration: ") + e.what());
  }
  report(errors, on_error, ctx);
  return nullptr;
}

int zetian_config_check(const char* config_path, const char* const* overrides, size_t override_count,
                        zetian_error_fn on_error, void* ctx) {
  Errors errors, warnings;
  try {
    auto parsed = parseOverrides(overrides, override_count, &errors);
    if (errors.empty()) {
      const zetian::conf::LoadOptions options{parsed, zetian::plugin::lookupSystemAccount};
      auto loaded = config_path ? zetian::conf::loadFile(config_path, options)
                                : zetian::conf::loadEmbeddedDefault(options);
      for (const auto& e : loaded.errors) errors.push_back(e.format());
      // Warnings go through the same callback, marked, and do not fail the check.
      for (auto w : loaded.warnings) warnings.push_back((w.message.insert(0, "warning: "), w.format()));
    }
  } catch (const std::exception& e) {
    errors.push_back(std::string("internal error while checking the configuration: ") + e.what());
  }
  report(errors, on_error, ctx);
  report(warnings, on_error, ctx);
  return errors.empty() ? 0 : -1;
}

int zetian_engine_start(zetian_engine* engine, zetian_error_fn on_error, void* ctx) {
  Errors errors;
  try {
    if (engine->engine->start(&errors)) return 0;
  } catch (const std::exception& e) {
    errors.push_back(std::string("internal error while starting: ") + e.what());
  }
  report(errors, on_error, ctx);
  return -1;
}

int zetian_engine_reload(zetian_engine* engine, zetian_error_fn on_error, void* ctx) {
  Errors errors;
  try {
    if (engine->engine->reload(&errors)) return 0;
  } catch (const std::exception& e) {
    errors.push_back(std::string("internal error while reloading: ") + e.what());
  }
  report(errors, on_error, ctx);
  return -1;
}

void zetian_engine_close(zetian_engine* engine) { delete engine; }

const char* zetian_engine_option(zetian_engine* engine, const char* key) {
  if (!engine || !key) return nullptr;
  return engine->engine->option(key);
}

unsigned zetian_engine_needs(zetian_engine* engine) { return engine->engine->needs(); }

void zetian_log(zetian_engine* engine, int level, const char* message) {
  if (level < 0) level = 0;
  if (level > 3) level = 3;
  try {
    engine->engine->logger().log(static_cast<zetian::conf::LogLevel>(level), message ? message : "");
  } catch (...) {
  }
}

zetian_session* zetian_session_open(zetian_engine* engine, const char* client_addr, const char* client_name) {
  auto* s = new zetian_session{engine->engine.get(), nullptr};
  try {
    s->session = engine->engine->openSession(client_addr, client_name);
  } catch (...) {
    // Leave session null: checks on it answer with the default action.
  }
  return s;
}

void zetian_session_set_sasl_user(zetian_session* s, const char* login) {
  if (!s->session) return;
  try {
    s->session->facts.sasl_user = login ? login : "";
  } catch (...) {
  }
}

int zetian_session_check(zetian_session* s, zetian_stage stage, const char* arg, zetian_verdict* verdict) {
  try {
    if (!s->session) throw std::runtime_error("session could not be created");
    return s->engine->check(*s->session, toStage(stage), arg, verdict);
  } catch (const std::exception& e) {
    s->engine->internalFailure("check", e.what(), verdict);
  } catch (...) {
    s->engine->internalFailure("check", "unknown exception", verdict);
  }
  return verdict->action;
}

void zetian_session_eom(zetian_session* s, zetian_header_fn add_header, zetian_quarantine_fn quarantine,
                        void* ctx) {
  if (!s->session) return;
  try {
    s->engine->eom(*s->session, add_header, quarantine, ctx);
  } catch (const std::exception& e) {
    zetian_verdict ignored;
    s->engine->internalFailure("eom", e.what(), &ignored);
  }
}

void zetian_session_reset(zetian_session* s) {
  if (s->session) s->engine->resetMessage(*s->session);
}

void zetian_session_close(zetian_session* s) {
  if (!s) return;
  try {
    s->engine->closeSession(std::move(s->session));
  } catch (...) {
  }
  delete s;
}

}  // extern "C"
