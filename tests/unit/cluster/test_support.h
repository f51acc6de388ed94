// Helpers for the cluster tests: a temp folder, running code on a Loop and waiting for
// it, a fake engine behind AdminApi, a raw HTTP exchange over real sockets, and a
// subprocess runner for zetianctl.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster/admin_api.h"
#include "cluster/health_server.h"
#include "cluster/loop.h"

extern char** environ;

namespace zetian::cluster::testing {

// A fresh folder under /tmp (short, so socket paths fit in sun_path), removed at the end.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/zt-XXXXXX";
    if (mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ignored);
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Runs fn on the loop thread and waits for it (at most 10 s). Through Loop::call: fn
// never runs after the timeout, so it may capture the caller's frame by reference.
template <typename Fn>
auto runOnLoop(Loop& loop, Fn fn) -> decltype(fn()) {
  auto result = loop.call(std::move(fn), std::chrono::seconds(10));
  if (!result) throw std::runtime_error("loop did not run the task within 10 s (or refused it)");
  return std::move(*result);
}

// The engine's side, scripted. Replies and the call log are guarded by a mutex:
// the server calls in on the loop thread, the test reads from its own.
class FakeAdmin : public AdminApi {
 public:
  AdminReply health() override { return reply("health"); }
  AdminReply live() override { return reply("live"); }
  AdminReply ready() override { return reply("ready"); }
  AdminReply metrics() override { return reply("metrics"); }
  AdminReply reload() override { return reply("reload"); }
  // Recorded as limitsShow(RULE|KEY), with |limit=N|after=T when not the defaults.
  AdminReply limitsShow(const LimitsQuery& q) override {
    std::string key = q.key;
    if (q.limit != LimitsQuery::kDefaultLimit || !q.after.empty()) {
      key += "|limit=" + std::to_string(q.limit) + "|after=" + q.after;
    }
    return reply("limitsShow", q.rule, key);
  }
  AdminReply limitsReset(const std::string& rule, const std::string& key) override {
    return reply("limitsReset", rule, key);
  }
  AdminReply maintenance(bool enabled) override { return reply(enabled ? "maintenance(on)" : "maintenance(off)"); }
  // Recorded as logLevel(LEVEL) ("" for GET).
  AdminReply logLevel(const std::string& level) override { return reply("logLevel(" + level + ")"); }
  // Recorded as policyPut(BASE|TEXT) (BASE "" when none), clusterRemove(|NODE),
  // clusterTransferLeader(|NODE).
  void policyGetAsync(std::function<void(AdminReply)> respond) override { respond(reply("policyGet")); }
  void policyPutAsync(std::string text, std::optional<std::uint64_t> base_version,
                      std::function<void(AdminReply)> respond) override {
    respond(reply("policyPut", base_version ? std::to_string(*base_version) : "", text));
  }
  AdminReply policyHistory() override { return reply("policyHistory"); }
  void clusterRemoveAsync(const std::string& node_id, std::function<void(AdminReply)> respond) override {
    respond(reply("clusterRemove", "", node_id));
  }
  void clusterTransferLeaderAsync(const std::string& node_id, std::function<void(AdminReply)> respond) override {
    respond(reply("clusterTransferLeader", "", node_id));
  }

  void set(const std::string& method, AdminReply r) {
    std::lock_guard lock(mutex_);
    replies_[method] = std::move(r);
  }
  // The reply to one exact call, as calls() records it ("limitsShow(|k|limit=2|after=)");
  // it comes before the method's reply from set().
  void setCall(const std::string& call, AdminReply r) {
    std::lock_guard lock(mutex_);
    call_replies_[call] = std::move(r);
  }
  void throwOn(const std::string& method) {
    std::lock_guard lock(mutex_);
    throwing_ = method;
  }
  std::vector<std::string> calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  void clearCalls() {
    std::lock_guard lock(mutex_);
    calls_.clear();
  }

 private:
  AdminReply reply(const std::string& method, const std::string& rule = "",
                   const std::string& key = "") {
    std::lock_guard lock(mutex_);
    calls_.push_back(method == "limitsShow" || method == "limitsReset" || method == "policyPut" ||
                             method == "clusterRemove" || method == "clusterTransferLeader"
                         ? method + "(" + rule + "|" + key + ")"
                         : method);
    if (throwing_ == method) throw std::runtime_error("engine exploded");
    if (const auto exact = call_replies_.find(calls_.back()); exact != call_replies_.end()) {
      return exact->second;
    }
    const auto it = replies_.find(method);
    if (it != replies_.end()) return it->second;
    return AdminReply{200, "application/json", "{\"method\":\"" + method + "\"}"};
  }

  std::mutex mutex_;
  std::map<std::string, AdminReply> replies_;
  std::map<std::string, AdminReply> call_replies_;
  std::vector<std::string> calls_;
  std::string throwing_;
};

// A HealthServer living on its own Loop, built and destroyed on the loop thread.
class ServerHarness {
 public:
  explicit ServerHarness(AdminApi& api) : api_(api) { loop_.start(); }
  ~ServerHarness() { stop(); }

  // Returns "" on success, else start()'s error.
  std::string start(HealthServerOptions options) {
    return runOnLoop(loop_, [this, options]() mutable {
      server_ = std::make_unique<HealthServer>(loop_.base(), api_, std::move(options));
      std::string error;
      if (!server_->start(&error)) {
        server_.reset();
        return error.empty() ? std::string("start failed without a message") : error;
      }
      return std::string();
    });
  }
  // start() once more on the running server; returns its error ("" if it succeeded).
  std::string startAgain() {
    return runOnLoop(loop_, [this] {
      std::string error;
      return server_ && !server_->start(&error) ? error : std::string();
    });
  }
  std::uint16_t tcpPort() {
    return runOnLoop(loop_, [this] { return server_ ? server_->tcpPort() : std::uint16_t{0}; });
  }
  HealthServerStats stats() {
    return runOnLoop(loop_, [this] { return server_ ? server_->stats() : HealthServerStats{}; });
  }
  void destroyServer() {
    runOnLoop(loop_, [this] {
      server_.reset();
      return 0;
    });
  }
  void stop() {
    try {
      destroyServer();
    } catch (...) {
    }
    loop_.stop();
  }
  Loop& loop() { return loop_; }

 private:
  AdminApi& api_;
  Loop loop_;
  std::unique_ptr<HealthServer> server_;
};

// ---- raw sockets ----------------------------------------------------------------

inline int connectUnix(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline int connectTcp(std::uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

inline void sendAll(int fd, const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return;  // the server may hang up on garbage; that is allowed
    sent += static_cast<std::size_t>(n);
  }
}

// Reads until the peer closes or `timeout` passes. *closed says which.
inline std::string readUntilClose(int fd, std::chrono::milliseconds timeout, bool* closed = nullptr) {
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (closed != nullptr) *closed = false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return out;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return out;
    char buf[8192];
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      if (closed != nullptr) *closed = true;
      return out;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
}

struct RawReply {
  int status = 0;
  std::string head;  // status line and headers
  std::string body;
  std::string header(const std::string& name) const {
    std::string lower_head;
    for (char c : head) lower_head.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    std::string lower_name;
    for (char c : name) lower_name.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    const auto at = lower_head.find("\r\n" + lower_name + ":");
    if (at == std::string::npos) return {};
    const auto start = head.find(':', at) + 1;
    const auto end = head.find("\r\n", start);
    std::string value = head.substr(start, end - start);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    return value;
  }
};

inline RawReply parseRaw(const std::string& raw) {
  RawReply r;
  const auto split = raw.find("\r\n\r\n");
  r.head = raw.substr(0, split);
  if (raw.size() >= 12 && raw.compare(0, 5, "HTTP/") == 0) r.status = std::atoi(raw.c_str() + 9);
  if (split != std::string::npos) r.body = raw.substr(split + 4);
  return r;
}

// One request on a fresh connection; `fd` from connectUnix/connectTcp.
inline RawReply roundTrip(int fd, const std::string& request) {
  if (fd < 0) return {};
  sendAll(fd, request);
  const std::string raw = readUntilClose(fd, std::chrono::seconds(5));
  close(fd);
  return parseRaw(raw);
}

inline std::string simpleRequest(const std::string& method, const std::string& target,
                                 const std::string& extra_headers = "") {
  return method + " " + target + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" +
         (method == "POST" ? "Content-Length: 0\r\n" : "") + extra_headers + "\r\n";
}

// ---- subprocesses ---------------------------------------------------------------

struct ProcessResult {
  int exit_code = -1;  // -1: killed or did not finish
  std::string out;
  std::string err;
};

// Runs argv with the current environment minus ZETIAN_HEALTH_SOCKET, plus `env`.
inline ProcessResult runProcess(const std::vector<std::string>& argv,
                                const std::map<std::string, std::string>& env = {},
                                std::chrono::seconds timeout = std::chrono::seconds(30)) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    if (name == "ZETIAN_HEALTH_SOCKET" || env.count(name) != 0) continue;
    env_strings.push_back(entry);
  }
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv;
  std::vector<char*> argp;
  for (auto& s : args) argp.push_back(s.data());
  argp.push_back(nullptr);

  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error("pipe2 failed");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argp[0], &actions, nullptr, argp.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  ProcessResult result;
  if (rc != 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    result.err = std::string("posix_spawn failed: ") + std::strerror(rc);
    return result;
  }

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool out_open = true;
  bool err_open = true;
  while (out_open || err_open) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd fds[2] = {{out_open ? out_pipe[0] : -1, POLLIN, 0}, {err_open ? err_pipe[0] : -1, POLLIN, 0}};
    if (poll(fds, 2, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        (i == 0 ? out_open : err_open) = false;
      } else {
        (i == 0 ? result.out : result.err).append(buf, static_cast<std::size_t>(n));
      }
    }
  }
  close(out_pipe[0]);
  close(err_pipe[0]);
  if (out_open || err_open) kill(pid, SIGKILL);  // our own child, by pid
  int status = 0;
  waitpid(pid, &status, 0);
  if (!(out_open || err_open) && WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

}  // namespace zetian::cluster::testing
