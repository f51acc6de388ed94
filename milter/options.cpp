#include "milter/options.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "plugin/zetian.h"

namespace zetian::milter {

namespace {

void printUsage(std::FILE* out) {
  std::fprintf(out,
               "Usage: zetian-milter [-c FILE] [--set KEY=VALUE]... [--check-config]\n"
               "       zetian-milter --version | --help\n"
               "\n"
               "Cluster-wide rate limiting for Postfix and Sendmail (milter protocol).\n"
               "Runs in the foreground; stop it with SIGTERM, reload the policy with SIGUSR1\n"
               "or `zetianctl reload`.\n"
               "\n"
               "  -c, --config FILE    configuration file (default %s; when that file does\n"
               "                       not exist, the embedded default is used)\n"
               "      --set KEY=VALUE  override one setting, e.g. --set log.target=stderr\n"
               "                       (every key can also come from the environment as\n"
               "                       ZETIAN_SECTION_KEY, e.g. ZETIAN_NODE_ID; --set wins)\n"
               "      --check-config   validate the configuration and exit: 0 when valid, else 1\n"
               "                       with one FILE:LINE:COL: message line per problem\n"
               "      --version        print the version and exit\n"
               "  -h, --help           this help\n",
               kDefaultConfig);
}

}  // namespace

int parseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "zetian-milter: %s needs a value (see --help)\n", name);
        return nullptr;
      }
      return argv[++i];
    };
    if (arg == "-c" || arg == "--config") {
      const char* v = value("-c");
      if (!v) return 2;
      o->config_path = v;
      o->config_given = true;
    } else if (arg.rfind("--config=", 0) == 0) {
      o->config_path = arg.substr(9);
      o->config_given = true;
    } else if (arg == "--set") {
      const char* v = value("--set");
      if (!v) return 2;
      o->overrides.push_back(v);
    } else if (arg.rfind("--set=", 0) == 0) {
      o->overrides.push_back(arg.substr(6));
    } else if (arg == "--check-config") {
      o->check_config = true;
    } else if (arg == "--version" || arg == "-V") {
      std::printf("zetian-milter %s\n", zetian_version());
      return 0;
    } else if (arg == "-h" || arg == "--help") {
      printUsage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "zetian-milter: unknown argument '%s' (see --help)\n", arg.c_str());
      return 2;
    }
  }
  return -1;
}

std::vector<std::string> environmentOverrides(const char* const* envp) {
  std::vector<std::string> out;
  for (; envp && *envp; ++envp) {
    if (std::strncmp(*envp, "ZETIAN_", 7) == 0 && std::strchr(*envp, '=') != nullptr) out.emplace_back(*envp);
  }
  // The environment's order is whatever the parent left; errors come in name order.
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace zetian::milter
