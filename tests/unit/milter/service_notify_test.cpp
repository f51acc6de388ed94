// service_notify.h against a datagram socket standing in for systemd's NOTIFY_SOCKET:
// what a Type=notify unit sees over the milter's life. The stop state is global to
// the process, so one test walks through the whole life in order.
#include "milter/service_notify.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace {

class NotifySocket {
 public:
  NotifySocket() {
    char dir_template[] = "/tmp/zetian-notify-XXXXXX";
    dir_ = mkdtemp(dir_template);
    path_ = dir_ + "/notify";
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    bound_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  bool bound() const { return bound_; }
  const std::string& path() const { return path_; }

  // The next datagram, or "" when none arrives within `timeout_ms`.
  std::string next(int timeout_ms = 2000) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, timeout_ms) != 1) return "";
    char buf[512];
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  }

 private:
  std::string dir_;
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

using namespace zetian::milter;

TEST(ServiceNotify, ReadyReloadingReadyThenStoppingOnceAndNothingAfter) {
  NotifySocket systemd;
  ASSERT_TRUE(systemd.bound());
  ASSERT_EQ(setenv("NOTIFY_SOCKET", systemd.path().c_str(), 1), 0);

  service_notify::ready();
  EXPECT_EQ(systemd.next(), "READY=1");

  service_notify::reloading();
  const std::string reloading = systemd.next();
  ASSERT_EQ(reloading.rfind("RELOADING=1\nMONOTONIC_USEC=", 0), 0u) << reloading;
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  const unsigned long long usec = std::stoull(reloading.substr(reloading.find('=', 12) + 1));
  EXPECT_LE(usec, static_cast<unsigned long long>(now.tv_sec) * 1000000ULL + now.tv_nsec / 1000);
  EXPECT_GT(usec, 0u);
  service_notify::ready();  // after the reload: NOTIFY_SOCKET is still set
  EXPECT_EQ(systemd.next(), "READY=1");

  // The control thread and main() both report the stop: systemd hears it once, and a
  // reload finishing during the stop does not claim readiness again.
  service_notify::stopping();
  service_notify::stopping();
  service_notify::reloading();
  service_notify::ready();
  EXPECT_EQ(systemd.next(), "STOPPING=1");
  EXPECT_EQ(systemd.next(200), "");
  unsetenv("NOTIFY_SOCKET");
}

}  // namespace
