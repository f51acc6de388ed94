// The command line of zetian-milter. Everything operational lives in the
// configuration file; the command line only picks the file, overrides single keys
// (--set, for tests and one-off runs) and chooses the mode (run, --check-config).
#pragma once

#include <string>
#include <vector>

namespace zetian::milter {

inline constexpr const char* kDefaultConfig = "/etc/zetian/zetian.toml";

struct Options {
  std::string config_path;
  bool config_given = false;
  bool check_config = false;
  std::vector<std::string> overrides;
};

// Returns -1 to go on, or an exit code (0 after --help/--version, 2 on a bad argument,
// with the message already printed).
int parseArgs(int argc, char** argv, Options* o);

// The "ZETIAN_...=VALUE" entries of `envp`, sorted by name: overrides the engine
// resolves against the configuration schema (conf/env.h). They go before the --set
// ones, so --set wins over the environment, which wins over the file.
std::vector<std::string> environmentOverrides(const char* const* envp);

}  // namespace zetian::milter
