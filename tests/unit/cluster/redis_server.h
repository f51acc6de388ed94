// A real redis-server for a test: its own port (or Unix socket) and folder, started
// with the arguments the test gives, stopped (SIGTERM, then SIGKILL) at the end.
// Readiness is polled (PING over a plain socket, with a deadline), never slept for.
// redis-server must be installed (the Makefile's packages): a test that cannot start
// it fails, it does not skip.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace zetian::cluster::testing {

inline std::uint16_t freeTcpPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (fd >= 0) ::close(fd);
    throw std::runtime_error("no free port");
  }
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

class RedisServer {
 public:
  // `dir`: its working folder (dump and AOF files); `extra`: more redis-server arguments;
  // `config_file`: a configuration file to start from (a Sentinel needs one it can
  // rewrite), before the arguments.
  RedisServer(std::string dir, std::vector<std::string> extra = {}, std::uint16_t port = 0,
              std::string config_file = {})
      : dir_(std::move(dir)),
        extra_(std::move(extra)),
        config_file_(std::move(config_file)),
        port_(port ? port : freeTcpPort()) {}
  ~RedisServer() { stop(); }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  std::uint16_t port() const { return port_; }

  // Starts it and waits until it answers PING (at most `deadline`). Throws on failure.
  void start(std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    std::vector<std::string> args{"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                  "--dir", dir_, "--save", "", "--daemonize", "no", "--logfile",
                                  dir_ + "/redis-" + std::to_string(port_) + ".log"};
    if (!config_file_.empty()) args.insert(args.begin() + 1, config_file_);
    args.insert(args.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    // fork + exec rather than posix_spawn: the child asks to be killed when the test
    // dies (a crashed or aborted test leaves no server behind).
    pid_ = fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      execvp("redis-server", argv.data());
      _exit(127);
    }
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      if (ping()) return;
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error(WIFEXITED(status) && WEXITSTATUS(status) == 127
                                     ? "cannot run redis-server: install it (apt-get install redis-server)"
                                     : "redis-server exited at start; see its log in " + dir_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling with a deadline
    }
    throw std::runtime_error("redis-server did not answer PING within the deadline");
  }

  // Gone at once, as a crash.
  void kill() { signalAndWait(SIGKILL); }
  void stop() { signalAndWait(SIGTERM); }
  bool running() const { return pid_ > 0; }

  // One command in the inline protocol over a fresh connection; the raw reply.
  std::string command(const std::string& line) const {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port_);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      if (fd >= 0) ::close(fd);
      return "";
    }
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::string out = line + "\r\n";
    if (::write(fd, out.data(), out.size()) != ssize_t(out.size())) {
      ::close(fd);
      return "";
    }
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    return n > 0 ? std::string(buf, std::size_t(n)) : "";
  }

  // Answering at all (a server with a password answers -NOAUTH).
  bool ping() const {
    const std::string reply = command("PING");
    return reply.rfind("+PONG", 0) == 0 || reply.rfind("-NOAUTH", 0) == 0;
  }

 private:
  void signalAndWait(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    int status = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > until) {
        ::kill(pid_, SIGKILL);
        waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // polling with a deadline
    }
    pid_ = -1;
  }

  std::string dir_;
  std::vector<std::string> extra_;
  std::string config_file_;
  std::uint16_t port_;
  pid_t pid_ = -1;
};

}  // namespace zetian::cluster::testing
