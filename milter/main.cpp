// zetian-milter: the MTA hosts. It speaks the milter protocol with Postfix or Sendmail
// (milter.socket) and Postfix's policy delegation protocol (policy.socket), either or
// both, and hands every stage to the engine (libzetian, zetian.h); it knows nothing of
// rules or clusters.
//
// Start-up order matters:
//   1. parse the configuration (engine open: no threads yet);
//   2. block the signals libmilter waits for (SIGHUP, SIGTERM, SIGINT) and SIGUSR1,
//      so every thread started from here on inherits the mask;
//   3. take the instance lock in node.state_dir before touching any file or socket:
//      a second instance on the same node refuses here and leaves the running one's
//      pid file and sockets alone; raise RLIMIT_NOFILE to its hard limit;
//   4. write the pid file, drop privileges, set the umask, remove a stale Unix socket
//      (only when no one answers on it), and open the milter socket as the
//      unprivileged user so the MTA's group can use a Unix socket;
//   5. start the engine (cluster thread, health socket) and the SIGUSR1 reload thread,
//      then tell systemd READY=1 (service_notify.h). The policy socket is opened the
//      same way, by the policy server (policy_server.h), which then runs on a thread
//      of its own;
//   6. smfi_main() until SIGTERM/SIGINT/SIGHUP (with the milter off, the control
//      thread's stop signal). At exit, stop the policy server, and remove only the pid
//      file and sockets this process created.
//
// The files beside this one, one concept each: options (command line), process
// (instance lock, file limit, pid file, privileges, stale socket), callbacks
// (libmilter ↔ engine), control_thread (signals, reload, waking the listener),
// connections (cap, silent connections, accept() out of descriptors), quickack
// (TCP_QUICKACK after libmilter's reads), interpose (the libc calls behind the last two).
#include <libmilter/mfapi.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "milter/callbacks.h"
#include "milter/connections.h"
#include "milter/control_thread.h"
#include "milter/log.h"
#include "milter/options.h"
#include "milter/policy_server.h"
#include "milter/process.h"
#include "milter/quickack.h"
#include "milter/service_notify.h"
#include "plugin/zetian.h"

using namespace zetian::milter;

namespace {

zetian_engine* g_engine = nullptr;

void logLine(int level, const std::string& line) { zetian::milter::logLine(g_engine, level, line); }

void printError(void*, const char* message) { std::fprintf(stderr, "%s\n", message); }

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (int rc = parseArgs(argc, argv, &options); rc >= 0) return rc;

  const char* config_path = nullptr;
  if (options.config_given) {
    config_path = options.config_path.c_str();
  } else if (access(kDefaultConfig, F_OK) == 0) {
    config_path = kDefaultConfig;
  }

  // Kept for the life of the process: the engine re-applies the same overrides on every
  // reload, and the environment of a running process does not change.
  const std::vector<std::string> from_environment = environmentOverrides(environ);
  std::vector<const char*> overrides;
  for (const auto& o : from_environment) overrides.push_back(o.c_str());
  for (const auto& o : options.overrides) overrides.push_back(o.c_str());

  if (options.check_config) {
    int rc = zetian_config_check(config_path, overrides.data(), overrides.size(), &printError, nullptr);
    if (rc == 0) std::printf("%s: configuration is valid\n", config_path ? config_path : "<embedded default>");
    return rc == 0 ? 0 : 1;
  }

  g_engine = zetian_engine_open(config_path, overrides.data(), overrides.size(), &printError, nullptr);
  if (!g_engine) {
    std::fprintf(stderr, "zetian-milter: configuration refused; fix the lines above (zetian-milter --check-config -c %s)\n",
                 config_path ? config_path : "FILE");
    return 1;
  }
  if (!config_path)
    logLine(1, std::string("no configuration file (") + kDefaultConfig +
                   " does not exist): running on the embedded default; see contrib/zetian.toml");

  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGHUP);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGINT);
  sigaddset(&blocked, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  signal(SIGPIPE, SIG_IGN);

  const std::string socket = zetian_engine_option(g_engine, "milter.socket");
  const bool milter_on = !socket.empty();
  const std::string pid_file = zetian_engine_option(g_engine, "milter.pid_file");
  const std::string umask_text = zetian_engine_option(g_engine, "milter.umask");
  const bool unix_socket = socket.rfind("unix:", 0) == 0 || socket.rfind("local:", 0) == 0;
  std::string policy_error;
  const auto policy_options = zetian::milter::policy::serverOptionsOf(g_engine, &policy_error);
  if (!policy_options) {
    std::fprintf(stderr, "zetian-milter: %s\n", policy_error.c_str());
    zetian_engine_close(g_engine);
    return 1;
  }
  const bool policy_on = !policy_options->socket.empty();
  if (!process::lockInstance(zetian_engine_option(g_engine, "node.state_dir"),
                             zetian_engine_option(g_engine, "milter.user"))) {
    zetian_engine_close(g_engine);
    return 1;
  }
  const unsigned long fd_limit = process::raiseFileLimit();
  logLine(2, "file_limit nofile=" + std::to_string(fd_limit) + " milter_connections_max=" +
                 std::to_string(fd_limit > connections::kFdReserve ? fd_limit - connections::kFdReserve : 0));
  // Before any thread exists: every close() in the process reads what this sets up.
  connections::configure(g_engine, fd_limit, std::atol(zetian_engine_option(g_engine, "milter.timeout_s")));

  int exit_code = 1;
  bool pid_file_written = false;
  bool socket_opened = false;
  std::string policy_socket_path;  // a Unix socket the policy server created
  std::unique_ptr<zetian::milter::policy::Server> policy;
  do {
    if (!process::writePidFile(pid_file)) break;
    pid_file_written = !pid_file.empty();
    if (!process::dropPrivileges(zetian_engine_option(g_engine, "milter.user"), zetian_engine_option(g_engine, "milter.group")))
      break;
    if (!umask_text.empty()) umask(static_cast<mode_t>(std::strtoul(umask_text.c_str(), nullptr, 8)));

    if (policy_on) {
      std::string stale;
      if (!process::clearStaleUnixSocket(policy_options->socket, &stale)) break;
      if (!stale.empty()) logLine(1, "stale_socket_removed path=" + stale + " reason=\"no one answered on it\"");
      policy = zetian::milter::policy::Server::open(g_engine, *policy_options, &policy_error);
      if (!policy) {
        std::fprintf(stderr, "zetian-milter: %s\n", policy_error.c_str());
        break;
      }
      if (policy->createdUnixSocket()) policy_socket_path = policy_options->socket.substr(policy_options->socket.find(':') + 1);
      zetian_engine_set_reporter(g_engine, &zetian::milter::policy::Server::report, policy.get());
    }

    if (!milter_on) {
      if (zetian_engine_start(g_engine, &printError, nullptr) != 0) break;
      control::start(g_engine, "");
      policy->start();
      logLine(2, "listening milter=off policy=" + policy_options->socket);
      service_notify::ready();
      control::waitForStop();
      service_notify::stopping();
      policy->stop();
      control::stop();
      logLine(2, "stopped status=clean");
      exit_code = 0;
      break;
    }

    quickack::enable(socket.rfind("inet", 0) == 0);
    if (smfi_register(callbacks::filterFor(g_engine)) != MI_SUCCESS) {
      std::fprintf(stderr, "zetian-milter: smfi_register failed\n");
      break;
    }
    if (smfi_setconn(const_cast<char*>(socket.c_str())) != MI_SUCCESS) {
      std::fprintf(stderr, "zetian-milter: bad milter.socket '%s'\n", socket.c_str());
      break;
    }
    smfi_settimeout(std::atoi(zetian_engine_option(g_engine, "milter.timeout_s")));
    smfi_setbacklog(128);
    std::string stale;
    if (!process::clearStaleUnixSocket(socket, &stale)) break;
    if (!stale.empty()) logLine(1, "stale_socket_removed path=" + stale + " reason=\"no one answered on it\"");
    // false: libmilter would remove whatever is at the path, a live socket included.
    if (smfi_opensocket(false) != MI_SUCCESS) {
      std::fprintf(stderr,
                   "zetian-milter: cannot listen on %s; is another milter running there, or is the path's "
                   "directory missing or not writable by the milter user?\n",
                   socket.c_str());
      break;
    }
    socket_opened = true;
    if (zetian_engine_start(g_engine, &printError, nullptr) != 0) break;

    connections::markListenerThread();
    control::start(g_engine, socket);
    if (policy) policy->start();
    logLine(2, "listening milter=" + socket + " policy=" + (policy_on ? policy_options->socket : std::string("off")));
    // The socket listens since smfi_opensocket(): connections queue in its backlog
    // until smfi_main() accepts them, so the MTA may start now.
    service_notify::ready();
    int rc = smfi_main();
    service_notify::stopping();
    if (policy) policy->stop();
    control::stop();
    logLine(2, std::string("stopped status=") + (rc == MI_SUCCESS ? "clean" : "error"));
    exit_code = rc == MI_SUCCESS ? 0 : 1;
  } while (false);

  // The engine's health thread may be reading the server's figures: unhook it first.
  zetian_engine_set_reporter(g_engine, nullptr, nullptr);
  policy.reset();

  if (pid_file_written && unlink(pid_file.c_str()) != 0 && errno != ENOENT) {
    logLine(1, "pid_file_left path=" + pid_file + " error=\"" + std::strerror(errno) +
                   "\" hint=\"put milter.pid_file in a folder milter.user may write, e.g. /run/zetian\"");
  }
  zetian_engine_close(g_engine);
  if (unix_socket && socket_opened) unlink(socket.substr(socket.find(':') + 1).c_str());
  if (!policy_socket_path.empty()) unlink(policy_socket_path.c_str());
  return exit_code;
}
