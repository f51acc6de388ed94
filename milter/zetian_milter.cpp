// zetian-milter: the libmilter host. It speaks the milter protocol with Postfix or
// Sendmail and hands every stage to the engine (libzetian, zetian.h); it knows
// nothing of rules or clusters.
//
// Start-up order matters:
//   1. parse the configuration (engine open: no threads yet);
//   2. block the signals libmilter waits for (SIGHUP, SIGTERM, SIGINT) and SIGUSR1,
//      so every thread started from here on inherits the mask;
//   3. write the pid file, drop privileges, set the umask, and open the milter
//      socket as the unprivileged user so the MTA's group can use a Unix socket;
//   4. start the engine (cluster thread, health socket) and the SIGUSR1 reload thread;
//   5. smfi_main() until SIGTERM/SIGINT/SIGHUP.
//
// Protocol economy: each connection negotiates away every stage no rule needs, and
// asks for no reply where no rule can answer (SMFIP_NR_*). Over TCP, Postfix then
// sends small packets without waiting for a reply, and its Nagle meets our delayed
// ACK: a 40 ms stall per message. quickack.cpp cures that (see there).
#include <grp.h>
#include <libmilter/mfapi.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "milter/quickack.h"
#include "plugin/zetian.h"

namespace {

constexpr const char* kDefaultConfig = "/etc/zetian/zetian.toml";

zetian_engine* g_engine = nullptr;

// Per-connection state, kept with smfi_setpriv from negotiation to close.
struct Connection {
  unsigned long protocol = 0;  // the SMFIP_* bits agreed for this connection
  zetian_session* session = nullptr;
};

Connection* connectionOf(SMFICTX* ctx) { return static_cast<Connection*>(smfi_getpriv(ctx)); }

void logLine(int level, const std::string& line) { zetian_log(g_engine, level, line.c_str()); }

// libmilter treats '%' in reply text as a format character: double it.
std::string escapePercent(const char* text) {
  std::string out;
  for (const char* p = text; *p; ++p) {
    out += *p;
    if (*p == '%') out += '%';
  }
  return out;
}

// Turn a verdict into libmilter's answer. `no_reply_bit` is the SMFIP_NR_* bit of
// this stage: when it was negotiated the MTA expects no answer, whatever we decided.
sfsistat answer(SMFICTX* ctx, const zetian_verdict& v, unsigned long no_reply_bit) {
  Connection* c = connectionOf(ctx);
  if (c && no_reply_bit && (c->protocol & no_reply_bit)) return SMFIS_NOREPLY;
  if (v.action == ZETIAN_CONTINUE) return SMFIS_CONTINUE;
  std::string text = escapePercent(v.text);
  if (smfi_setreply(ctx, const_cast<char*>(v.rcode), v.xcode[0] ? const_cast<char*>(v.xcode) : nullptr,
                    const_cast<char*>(text.c_str())) != MI_SUCCESS) {
    logLine(1, std::string("setreply_failed rule=") + v.rule + " rcode=" + v.rcode);
  }
  return v.action == ZETIAN_REJECT ? SMFIS_REJECT : SMFIS_TEMPFAIL;
}

sfsistat check(SMFICTX* ctx, zetian_stage stage, const char* arg, unsigned long no_reply_bit) {
  Connection* c = connectionOf(ctx);
  if (!c || !c->session) return (c && (c->protocol & no_reply_bit)) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
  zetian_verdict verdict = ZETIAN_VERDICT_INIT;
  zetian_session_check(c->session, stage, arg, &verdict);
  return answer(ctx, verdict, no_reply_bit);
}

sfsistat onNegotiate(SMFICTX* ctx, unsigned long f0, unsigned long f1, unsigned long, unsigned long,
                     unsigned long* pf0, unsigned long* pf1, unsigned long* pf2, unsigned long* pf3) {
  quickack::markMilterThread();
  const unsigned needs = zetian_engine_needs(g_engine);
  unsigned long actions = SMFIF_SETSYMLIST;
  if (needs & ZETIAN_NEED_ADD_HEADER) actions |= SMFIF_ADDHDRS;
  if (needs & ZETIAN_NEED_QUARANTINE) actions |= SMFIF_QUARANTINE;

  unsigned long skip = SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOBODY | SMFIP_NOUNKNOWN;
  if (!(needs & (ZETIAN_NEED_HELO | ZETIAN_NEED_HELO_REPLY))) skip |= SMFIP_NOHELO;
  if (!(needs & (ZETIAN_NEED_RCPT | ZETIAN_NEED_RCPT_REPLY))) skip |= SMFIP_NORCPT;
  if (!(needs & ZETIAN_NEED_DATA)) skip |= SMFIP_NODATA;
  if (!(needs & ZETIAN_NEED_CONNECT_REPLY)) skip |= SMFIP_NR_CONN;
  if (!(needs & ZETIAN_NEED_HELO_REPLY)) skip |= SMFIP_NR_HELO;
  if (!(needs & ZETIAN_NEED_MAIL_REPLY)) skip |= SMFIP_NR_MAIL;
  if (!(needs & ZETIAN_NEED_RCPT_REPLY)) skip |= SMFIP_NR_RCPT;
  if (!(needs & ZETIAN_NEED_DATA)) skip |= SMFIP_NR_DATA;
  // An MTA that does not offer a step or a no-reply bit keeps sending it: take only
  // what was offered.
  *pf0 = actions & f0;
  *pf1 = skip & f1;
  *pf2 = 0;
  *pf3 = 0;

  auto* c = new Connection;
  c->protocol = *pf1;
  smfi_setpriv(ctx, c);
  if (*pf0 & SMFIF_SETSYMLIST) {
    // Postfix sends {auth_authen} with MAIL FROM by default; ask for it explicitly
    // so a trimmed milter_mail_macros does not silently disable SASL rules.
    smfi_setsymlist(ctx, SMFIM_ENVFROM, const_cast<char*>("{auth_authen}"));
  }
  return SMFIS_CONTINUE;
}

sfsistat onConnect(SMFICTX* ctx, char* hostname, _SOCK_ADDR* hostaddr) {
  quickack::markMilterThread();
  Connection* c = connectionOf(ctx);
  if (!c) {  // an MTA that did not negotiate (milter protocol 2)
    c = new Connection;
    smfi_setpriv(ctx, c);
  }
  char addr[INET6_ADDRSTRLEN] = "";
  if (hostaddr && hostaddr->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(hostaddr)->sin_addr, addr, sizeof addr);
  } else if (hostaddr && hostaddr->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(hostaddr)->sin6_addr, addr, sizeof addr);
  }
  if (c->session) zetian_session_close(c->session);
  c->session = zetian_session_open(g_engine, addr, hostname);
  return check(ctx, ZETIAN_STAGE_CONNECT, nullptr, SMFIP_NR_CONN);
}

sfsistat onHelo(SMFICTX* ctx, char* helo) { return check(ctx, ZETIAN_STAGE_HELO, helo, SMFIP_NR_HELO); }

sfsistat onEnvFrom(SMFICTX* ctx, char** argv) {
  Connection* c = connectionOf(ctx);
  if (c && c->session)
    zetian_session_set_sasl_user(c->session, smfi_getsymval(ctx, const_cast<char*>("{auth_authen}")));
  return check(ctx, ZETIAN_STAGE_MAIL, argv && argv[0] ? argv[0] : "", SMFIP_NR_MAIL);
}

sfsistat onEnvRcpt(SMFICTX* ctx, char** argv) {
  return check(ctx, ZETIAN_STAGE_RCPT, argv && argv[0] ? argv[0] : "", SMFIP_NR_RCPT);
}

sfsistat onData(SMFICTX* ctx) { return check(ctx, ZETIAN_STAGE_DATA, nullptr, SMFIP_NR_DATA); }

void addHeader(void* ctx, const char* name, const char* value) {
  auto* milter_ctx = static_cast<SMFICTX*>(ctx);
  if (smfi_addheader(milter_ctx, const_cast<char*>(name), const_cast<char*>(value)) != MI_SUCCESS)
    logLine(1, std::string("addheader_failed header=") + name);
}

void quarantine(void* ctx, const char* reason) {
  auto* milter_ctx = static_cast<SMFICTX*>(ctx);
  std::string text = escapePercent(reason);
  if (smfi_quarantine(milter_ctx, const_cast<char*>(text.c_str())) != MI_SUCCESS)
    logLine(1, "quarantine_failed");
}

sfsistat onEom(SMFICTX* ctx) {
  Connection* c = connectionOf(ctx);
  if (c && c->session) {
    zetian_session_eom(c->session, &addHeader, &quarantine, ctx);
    zetian_session_reset(c->session);
  }
  return SMFIS_CONTINUE;
}

sfsistat onAbort(SMFICTX* ctx) {
  Connection* c = connectionOf(ctx);
  if (c && c->session) zetian_session_reset(c->session);
  return SMFIS_CONTINUE;
}

sfsistat onClose(SMFICTX* ctx) {
  Connection* c = connectionOf(ctx);
  if (c) {
    if (c->session) zetian_session_close(c->session);
    delete c;
    smfi_setpriv(ctx, nullptr);
  }
  return SMFIS_CONTINUE;
}

struct smfiDesc g_filter = {
    const_cast<char*>("zetian"),
    SMFI_VERSION,
    SMFIF_ADDHDRS | SMFIF_QUARANTINE | SMFIF_SETSYMLIST,
    onConnect,
    onHelo,
    onEnvFrom,
    onEnvRcpt,
    nullptr,  // header
    nullptr,  // eoh
    nullptr,  // body
    onEom,
    onAbort,
    onClose,
    nullptr,  // unknown
    onData,
    onNegotiate,
};

// ---- command line ----------------------------------------------------------

struct Options {
  std::string config_path;
  bool config_given = false;
  bool check_config = false;
  std::vector<std::string> overrides;
};

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
               "      --check-config   validate the configuration and exit: 0 when valid, else 1\n"
               "                       with one FILE:LINE:COL: message line per problem\n"
               "      --version        print the version and exit\n"
               "  -h, --help           this help\n",
               kDefaultConfig);
}

// Returns -1 to go on, or an exit code.
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

void printError(void*, const char* message) { std::fprintf(stderr, "%s\n", message); }

// ---- process set-up ----------------------------------------------------------

bool writePidFile(const std::string& path) {
  if (path.empty()) return true;
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "zetian-milter: cannot write pid file %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  std::fprintf(f, "%d\n", int(getpid()));
  std::fclose(f);
  return true;
}

bool dropPrivileges(const std::string& user, const std::string& group_name) {
  if (user.empty()) return true;
  errno = 0;
  passwd* pw = getpwnam(user.c_str());
  if (!pw) {
    std::fprintf(stderr, "zetian-milter: milter.user '%s' does not exist; create it (adduser --system %s) or unset it\n",
                 user.c_str(), user.c_str());
    return false;
  }
  gid_t gid = pw->pw_gid;
  if (!group_name.empty()) {
    struct group* gr = getgrnam(group_name.c_str());
    if (!gr) {
      std::fprintf(stderr, "zetian-milter: milter.group '%s' does not exist\n", group_name.c_str());
      return false;
    }
    gid = gr->gr_gid;
  }
  if (getuid() == pw->pw_uid && geteuid() == pw->pw_uid && getgid() == gid) return true;
  if (geteuid() != 0) {
    std::fprintf(stderr, "zetian-milter: milter.user is '%s' but we are not root and cannot switch; "
                         "start as root or unset milter.user\n", user.c_str());
    return false;
  }
  if (initgroups(pw->pw_name, gid) != 0 || setgid(gid) != 0 || setuid(pw->pw_uid) != 0) {
    std::fprintf(stderr, "zetian-milter: cannot switch to user %s: %s\n", user.c_str(), std::strerror(errno));
    return false;
  }
  if (setuid(0) == 0) {
    std::fprintf(stderr, "zetian-milter: privileges could be regained after switching to %s; refusing to run\n",
                 user.c_str());
    return false;
  }
  return true;
}

// libmilter's listener notices a stop request only when its poll() times out, every
// 5 s; a connection to its own socket wakes it at once. mi_stop() (exported by
// libmilter.so, not in mfapi.h) tells whether libmilter's signal thread has been asked
// to stop.
extern "C" int mi_stop(void);

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
std::string g_socket_spec;

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
  for (;;) {
    int sig = sigtimedwait(&set, nullptr, &tick);
    if (g_stopping.load()) break;
    if (sig == SIGUSR1) {
      logLine(2, "reload requested signal=SIGUSR1");
      zetian_engine_reload(
          g_engine, [](void*, const char* message) { logLine(0, std::string("reload_error ") + message); }, nullptr);
    } else if ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP) && !stopper.joinable()) {
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

int main(int argc, char** argv) {
  Options options;
  if (int rc = parseArgs(argc, argv, &options); rc >= 0) return rc;

  const char* config_path = nullptr;
  if (options.config_given) {
    config_path = options.config_path.c_str();
  } else if (access(kDefaultConfig, F_OK) == 0) {
    config_path = kDefaultConfig;
  }

  std::vector<const char*> overrides;
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
  const std::string pid_file = zetian_engine_option(g_engine, "milter.pid_file");
  const std::string umask_text = zetian_engine_option(g_engine, "milter.umask");
  int exit_code = 1;
  do {
    if (!writePidFile(pid_file)) break;
    if (!dropPrivileges(zetian_engine_option(g_engine, "milter.user"), zetian_engine_option(g_engine, "milter.group")))
      break;
    if (!umask_text.empty()) umask(static_cast<mode_t>(std::strtoul(umask_text.c_str(), nullptr, 8)));

    quickack::enable(socket.rfind("inet", 0) == 0);
    if (smfi_register(g_filter) != MI_SUCCESS) {
      std::fprintf(stderr, "zetian-milter: smfi_register failed\n");
      break;
    }
    if (smfi_setconn(const_cast<char*>(socket.c_str())) != MI_SUCCESS) {
      std::fprintf(stderr, "zetian-milter: bad milter.socket '%s'\n", socket.c_str());
      break;
    }
    smfi_settimeout(std::atoi(zetian_engine_option(g_engine, "milter.timeout_s")));
    smfi_setbacklog(128);
    if (smfi_opensocket(true) != MI_SUCCESS) {
      std::fprintf(stderr,
                   "zetian-milter: cannot listen on %s; is another milter running there, or is the path's "
                   "directory missing or not writable by the milter user?\n",
                   socket.c_str());
      break;
    }
    if (zetian_engine_start(g_engine, &printError, nullptr) != 0) break;

    g_socket_spec = socket;
    pthread_t control;
    pthread_create(&control, nullptr, &controlThread, nullptr);
    logLine(2, "listening milter=" + socket);
    int rc = smfi_main();
    g_stopping.store(true);
    pthread_join(control, nullptr);
    logLine(2, std::string("stopped status=") + (rc == MI_SUCCESS ? "clean" : "error"));
    exit_code = rc == MI_SUCCESS ? 0 : 1;
  } while (false);

  if (!pid_file.empty() && unlink(pid_file.c_str()) != 0 && errno != ENOENT) {
    logLine(1, "pid_file_left path=" + pid_file + " error=\"" + std::strerror(errno) +
                   "\" hint=\"put milter.pid_file in a folder milter.user may write, e.g. /run/zetian\"");
  }
  zetian_engine_close(g_engine);
  if (socket.rfind("unix:", 0) == 0 || socket.rfind("local:", 0) == 0) unlink(socket.substr(socket.find(':') + 1).c_str());
  return exit_code;
}
