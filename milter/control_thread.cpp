#include "milter/control_thread.h"

#include <libmilter/mfapi.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <cstring>
#include <string>
#include <thread>

#include "milter/connections.h"
#include "milter/log.h"
#include "milter/service_notify.h"

// libmilter's listener notices a stop request only when its poll() times out, every
// 5 s; a connection to its own socket wakes it at once. mi_stop() (exported by
// libmilter.so, not in mfapi.h) tells whether libmilter's signal thread has been asked
// to stop.
extern "C" int mi_stop(void);

namespace zetian::milter::control {

namespace {

zetian_engine* g_engine = nullptr;
pthread_t g_thread;

void logLine(int level, const std::string& line) { milter::logLine(g_engine, level, line); }

// Connect once to our own milter socket, so a listener asked to stop notices now.
void wakeListener(const std::string& spec) {
  auto colon = spec.find(':');
  std::string kind = colon == std::string::npos ? "unix" : spec.substr(0, colon);
  std::string rest = colon == std::string::npos ? spec : spec.substr(colon + 1);
  int fd = -1;
  if (kind == "unix" || kind == "local") {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (rest.size() >= sizeof sun.sun_path) return;
    std::memcpy(sun.sun_path, rest.c_str(), rest.size() + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun);
  } else {
    auto at = rest.find('@');
    std::string port = rest.substr(0, at);
    std::string host = at == std::string::npos ? "" : rest.substr(at + 1);
    const bool v6 = kind == "inet6";
    if (host.empty() || host == "0.0.0.0" || host == "*") host = v6 ? "::1" : "127.0.0.1";
    if (host == "::" || host == "[::]") host = "::1";
    addrinfo hints{};
    hints.ai_family = v6 ? AF_INET6 : AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0 || !res) return;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
  }
  if (fd >= 0) close(fd);
}

// The control thread: SIGUSR1 reloads the policy (libmilter owns SIGHUP, where it
// means stop). It also waits for the stop signals, competing with libmilter's own
// signal thread: whichever receives one, the listener is asked to stop and woken.
std::atomic<bool> g_stopping{false};
std::string g_socket_spec;  // "": the milter listener is off
std::mutex g_stop_mutex;
std::condition_variable g_stop_cv;
bool g_stop_requested = false;

void* controlThread(void*) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  const timespec tick{0, 50'000'000};
  bool woken = false;
  std::thread stopper;
  int ticks = 0;
  for (;;) {
    int sig = sigtimedwait(&set, nullptr, &tick);
    if (g_stopping.load()) break;
    if (++ticks % 20 == 0) connections::shutDownSilent();
    if (sig == SIGUSR1) {
      logLine(2, "reload requested signal=SIGUSR1");
      service_notify::reloading();
      zetian_engine_reload(
          g_engine, [](void*, const char* message) { logLine(0, std::string("reload_error ") + message); }, nullptr);
      service_notify::ready();
    } else if ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP) && g_socket_spec.empty()) {
      service_notify::stopping();
      logLine(2, std::string("stop requested signal=") +
                     (sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGHUP"));
      std::lock_guard lock(g_stop_mutex);
      g_stop_requested = true;
      g_stop_cv.notify_all();
    } else if (g_socket_spec.empty()) {
      continue;  // no libmilter listener to stop or wake
    } else if ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP) && !stopper.joinable()) {
      service_notify::stopping();
      logLine(2, std::string("stop requested signal=") +
                     (sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "SIGHUP"));
      // smfi_stop() marks the stop, then waits for the listener's lock, which the
      // listener holds through its poll(): call it aside, and wake the listener below.
      stopper = std::thread([] { smfi_stop(); });
    } else if (!woken && mi_stop() != 0) {
      // A stop was requested (by us, or libmilter's signal thread took the signal).
      wakeListener(g_socket_spec);
      woken = true;
    }
  }
  if (stopper.joinable()) stopper.join();
  return nullptr;
}

}  // namespace

void start(zetian_engine* engine, const std::string& socket_spec) {
  g_engine = engine;
  g_socket_spec = socket_spec;
  pthread_create(&g_thread, nullptr, &controlThread, nullptr);
}

void waitForStop() {
  std::unique_lock lock(g_stop_mutex);
  g_stop_cv.wait(lock, [] { return g_stop_requested; });
}

void stop() {
  g_stopping.store(true);
  pthread_join(g_thread, nullptr);
}

}  // namespace zetian::milter::control
