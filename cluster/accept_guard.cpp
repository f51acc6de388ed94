#include "cluster/accept_guard.h"

#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "cluster/clock.h"

namespace zetian::cluster {

bool ThrottledLog::admit(std::chrono::steady_clock::time_point now, std::uint64_t* held_back) {
  if (logged_once_ && now - last_ < every_) {
    ++held_back_;
    return false;
  }
  *held_back = held_back_;
  held_back_ = 0;
  last_ = now;
  logged_once_ = true;
  return true;
}

namespace {

int openSpare() { return open("/dev/null", O_RDONLY | O_CLOEXEC); }

}  // namespace

AcceptGuard::AcceptGuard(event_base* base, evconnlistener* listener, AcceptGuardOptions options, LogSink log,
                         OnAccept on_accept)
    : listener_(listener),
      options_(std::move(options)),
      log_(std::move(log)),
      on_accept_(std::move(on_accept)),
      resume_(evtimer_new(base, &AcceptGuard::onResumeCb, this)),
      spare_fd_(openSpare()),
      throttle_(options_.log_every) {
  evconnlistener_set_cb(listener_, &AcceptGuard::onAcceptCb, this);
  evconnlistener_set_error_cb(listener_, &AcceptGuard::onErrorCb);
}

AcceptGuard::~AcceptGuard() {
  evconnlistener_set_error_cb(listener_, nullptr);
  evconnlistener_set_cb(listener_, nullptr, nullptr);
  if (resume_ != nullptr) event_free(resume_);
  if (spare_fd_ >= 0) close(spare_fd_);
}

void AcceptGuard::onAcceptCb(evconnlistener*, int fd, sockaddr* addr, int addr_len, void* arg) {
  static_cast<AcceptGuard*>(arg)->on_accept_(fd, addr, addr_len);
}

void AcceptGuard::onErrorCb(evconnlistener*, void* arg) {
  // First thing: anything we call may overwrite errno.
  const int err = EVUTIL_SOCKET_ERROR();
  static_cast<AcceptGuard*>(arg)->onError(err);
}

void AcceptGuard::onError(int err) {
  ++errors_;
  if (err == EMFILE || err == ENFILE) shedNewest();
  // Every non-retriable failure backs off: ENOBUFS/ENOMEM pass the same way.
  if (!backing_off_ && resume_ != nullptr) {
    evconnlistener_disable(listener_);
    backing_off_ = true;
    const timeval delay = toTimeval(options_.backoff);
    evtimer_add(resume_, &delay);
  }
  std::uint64_t held_back = 0;
  if (throttle_.admit(std::chrono::steady_clock::now(), &held_back)) {
    log("accept_failed listener=" + options_.name + " error=" + logValue(std::strerror(err)) +
        " failures_since_last_line=" + std::to_string(held_back + 1) + " total_failures=" +
        std::to_string(errors_) + " shed_total=" + std::to_string(shed_) +
        " backoff_ms=" + std::to_string(options_.backoff.count()));
  }
}

void AcceptGuard::shedNewest() {
  if (spare_fd_ < 0) {
    spare_fd_ = openSpare();
    return;
  }
  close(spare_fd_);
  spare_fd_ = -1;
  const int fd = accept4(evconnlistener_get_fd(listener_), nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) {
    close(fd);
    ++shed_;
  }
  spare_fd_ = openSpare();
}

void AcceptGuard::onResumeCb(int, short, void* arg) {
  auto* self = static_cast<AcceptGuard*>(arg);
  self->backing_off_ = false;
  evconnlistener_enable(self->listener_);
}

void AcceptGuard::log(const std::string& line) {
  if (log_) {
    log_(conf::LogLevel::Warn, line);
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

}  // namespace zetian::cluster
