// What the zetianctl tests share: the binary run as a subprocess (ctlRaw), a real
// HealthServer with a scripted engine behind it (ZetianctlTest), and a ScriptedServer
// for the replies and failures a healthy server never produces (ZetianctlScripted).
// The tests: zetianctl_test.cpp (command line, connecting, odd replies),
// zetianctl_commands_test.cpp (the node's commands), zetianctl_policy_test.cpp (the
// replicated policy and cluster commands).
#pragma once

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "plugin/zetian.h"
#include "tests/unit/cluster/test_support.h"

#ifndef ZETIANCTL_PATH
#error "ZETIANCTL_PATH must name the zetianctl binary under test"
#endif

namespace zetian::cluster::ctl_test {

using namespace std::chrono_literals;
using testing::FakeAdmin;
using testing::ProcessResult;
using testing::ServerHarness;
using testing::TempDir;
using testing::runProcess;

inline constexpr const char* kHealth =
    R"({"node_id":"mx1","status":"ok","version":"0.1.0","uptime_s":93784,"maintenance":false,)"
    R"("members":[{"id":"mx1","address":"10.0.0.1:7946","region":"eu","status":"alive",)"
    R"("last_seen":"2026-11-27T05:28:29.161Z","keys_owned":1234,)"
    R"("load":{"sessions":12,"messages_per_s":3.25}},)"
    R"({"id":"mx2","address":"10.0.0.2:7946","status":"suspect",)"
    R"("load":{"sessions":0,"messages_per_s":0}}]})";

inline constexpr const char* kLimits =
    R"({"limits":[{"rule":"per-client-ip","key":"192.0.2.1","remaining":3,"retry_after_s":0,)"
    R"("limit":100,"period":"1h"},{"rule":"per-sender","key":"user+tag@example.com",)"
    R"("remaining":0,"retry_after_s":12.5,"limit":10,"period":"1m"}]})";

// A listening Unix socket at `path` that nobody accepts on unless the test does.
inline int listenUnix(const std::string& path, int backlog) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd, backlog) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Answers every connection on a Unix socket with the same bytes, sent as they are:
// replies with framing, faults or timing that HealthServer never produces. It keeps
// each connection open after answering while `hold_open`, so the client sees no end.
class ScriptedServer {
 public:
  ScriptedServer(const std::string& path, std::string reply, bool hold_open = false)
      : path_(path), reply_(std::move(reply)), hold_open_(hold_open),
        listener_(listenUnix(path, 8)) {
    if (listener_ < 0 || pipe2(stop_, O_CLOEXEC) != 0) throw std::runtime_error("ScriptedServer");
    thread_ = std::thread([this] { serve(); });
  }
  ~ScriptedServer() {
    const char byte = 0;
    (void)!write(stop_[1], &byte, 1);
    thread_.join();
    close(listener_);
    unlink(path_.c_str());
    close(stop_[0]);
    close(stop_[1]);
  }
  // The request heads received so far, in order.
  std::vector<std::string> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

 private:
  // Waits for `fd` to be readable; false once the test stops the server.
  bool waitFor(int fd) {
    pollfd p[2] = {{fd, POLLIN, 0}, {stop_[0], POLLIN, 0}};
    while (true) {
      if (poll(p, 2, -1) < 0) return false;
      if (p[1].revents != 0) return false;
      if (p[0].revents != 0) return true;
    }
  }
  void serve() {
    while (waitFor(listener_)) {
      const int fd = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos && waitFor(fd)) {
        const ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        head.append(buf, static_cast<std::size_t>(n));
      }
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(head);
      }
      testing::sendAll(fd, reply_);
      if (hold_open_) {
        pollfd p{stop_[0], POLLIN, 0};
        (void)poll(&p, 1, -1);
      }
      close(fd);
    }
  }

  const std::string path_;
  const std::string reply_;
  const bool hold_open_;
  const int listener_;
  int stop_[2] = {-1, -1};
  std::mutex mutex_;
  std::vector<std::string> requests_;  // guarded by mutex_
  std::thread thread_;
};

inline ProcessResult ctlRaw(const std::vector<std::string>& args,
                     const std::map<std::string, std::string>& env = {}) {
  std::vector<std::string> argv = {ZETIANCTL_PATH};
  argv.insert(argv.end(), args.begin(), args.end());
  return runProcess(argv, env);
}

class ZetianctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    api.set("health", {200, "application/json", kHealth});
    api.set("limitsShow", {200, "application/json", kLimits});
    api.set("reload", {200, "application/json", R"({"ok":true})"});
    api.set("limitsReset", {200, "application/json", R"({"ok":true})"});
    api.set("metrics", {200, "text/plain; version=0.0.4", "# TYPE zetian_sessions_total counter\n"
                                                         "zetian_sessions_total 7\n"});
    HealthServerOptions o;
    o.unix_path = socket_path;
    ASSERT_EQ(harness.start(o), "");
  }
  ProcessResult ctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"-s", socket_path});
    return ctlRaw(args);
  }

  TempDir dir;
  std::string socket_path = dir.file("health.sock");
  FakeAdmin api;
  ServerHarness harness{api};
};


class ZetianctlScripted : public ::testing::Test {
 protected:
  ProcessResult ctl(const std::string& reply, std::vector<std::string> args,
                    bool hold_open = false) {
    ScriptedServer server(socket_path, reply, hold_open);
    args.insert(args.begin(), {"-s", socket_path});
    ProcessResult r = ctlRaw(args);
    requests = server.requests();
    return r;
  }

  TempDir dir;
  std::string socket_path = dir.file("scripted.sock");
  std::vector<std::string> requests;
};

}  // namespace zetian::cluster::ctl_test
