// Reading zetian.toml: parse with toml11, check every key against the schema, and
// build a Config. Every problem found is reported, not only the first, each with the
// place it was found so an operator can go straight to it.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace zetian::conf {

struct ConfigError {
  std::string file;
  int line = 0;    // 1-based; 0 when the error has no place (a missing file, a --set)
  int column = 0;  // 1-based
  std::string message;

  // "FILE:LINE:COL: message" (or "FILE: message" without a place).
  std::string format() const;
};

struct LoadResult {
  std::optional<Config> config;  // set only when errors is empty
  std::vector<ConfigError> errors;
  // What is valid but probably not meant (no rule at all, a world-writable admin
  // socket). Warnings never refuse a file; they are reported by --check-config and
  // logged at start.
  std::vector<ConfigError> warnings;
  bool ok() const { return errors.empty(); }
};

// An override from the command line: "health.socket=/tmp/h.sock". The value is read
// as a TOML value when it parses as one ("10", "true", "[\"a\"]"), else as a string.
// A key spelled as an environment variable ("ZETIAN_NODE_ID", conf/env.h) is resolved
// against the schema first, and errors about it name the variable; the known ZETIAN_
// variables that are no configuration key are skipped. Later overrides win.
struct Override {
  std::string key;
  std::string value;
};

enum class AccountKind { User, Group };

struct AccountLookup {
  bool exists = false;
  // Set when the lookup itself failed (an NSS source down, ...): neither found nor
  // known to be absent.
  std::string error;
};

// Whether a user or group of that name exists on this machine. conf never asks the
// system itself (it stays pure); the program passes getpwnam_r/getgrnam_r, tests a fake.
using AccountLookupFn = std::function<AccountLookup(AccountKind kind, const std::string& name)>;

struct LoadOptions {
  std::vector<Override> overrides;
  // When set, a non-empty `milter.user` or `milter.group` must name an existing
  // account. Unset: not checked (the unit tests, the fuzzer).
  AccountLookupFn account_lookup;
};

LoadResult loadFile(const std::string& path, const LoadOptions& options);
LoadResult loadString(std::string_view text, const std::string& name, const LoadOptions& options);
LoadResult loadFile(const std::string& path, const std::vector<Override>& overrides = {});
LoadResult loadString(std::string_view text, const std::string& name,
                      const std::vector<Override>& overrides = {});

// The built-in configuration used when no file is given: the TOML text and its result.
std::string_view embeddedDefaultText();
LoadResult loadEmbeddedDefault(const LoadOptions& options);
LoadResult loadEmbeddedDefault(const std::vector<Override>& overrides = {});

}  // namespace zetian::conf
