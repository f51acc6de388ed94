#include "cluster/statsd/exporter.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "conf/net.h"

namespace zetian::cluster::statsd {
namespace {

constexpr std::chrono::minutes kErrorLogInterval{1};

// A non-blocking UDP socket connected to `address` (numeric: connect() on UDP sends
// nothing and never waits). -1 with `error` on failure.
int openSocket(const conf::HostPort& address, std::string* error) {
  const auto ip = conf::IpAddress::parse(address.host);
  if (!ip) {
    *error = "metrics.statsd.address: " + address.host + " is not an IP address";
    return -1;
  }
  sockaddr_storage storage{};
  socklen_t length = 0;
  if (ip->v4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&storage);
    sin->sin_family = AF_INET;
    sin->sin_port = htons(address.port);
    std::memcpy(&sin->sin_addr, ip->bytes.data() + 12, 4);
    length = sizeof *sin;
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&storage);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(address.port);
    std::memcpy(&sin6->sin6_addr, ip->bytes.data(), 16);
    length = sizeof *sin6;
  }
  const int fd = ::socket(storage.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("metrics.statsd: socket(): ") + std::strerror(errno);
    return -1;
  }
  if (::connect(fd, reinterpret_cast<sockaddr*>(&storage), length) != 0) {
    *error = "metrics.statsd.address " + address.host + ":" + std::to_string(address.port) + ": connect(): " +
             std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

Exporter::Exporter(Loop& loop, RenderFn render, LogFn log)
    : loop_(loop), render_(std::move(render)), log_(std::move(log)) {
  loop_.checkThisThread();
}

Exporter::~Exporter() {
  loop_.checkThisThread();
  timer_.cancel();
  if (fd_ >= 0) ::close(fd_);
}

bool Exporter::configure(const conf::StatsdSection& settings, bool count_from_zero, std::string* error) {
  loop_.checkThisThread();
  const bool first = fd_ < 0;
  if (first || settings.address != settings_.address) {
    const int fd = openSocket(settings.address, error);
    if (fd < 0) return false;
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  if (first && !count_from_zero) encoder_.takeBaseline(parsePrometheusText(render_()));
  const bool rearm = first || settings.interval != settings_.interval;
  settings_ = settings;
  if (rearm) {
    timer_ = loop_.every(settings_.interval, [this] { push(); });
  }
  return true;
}

void Exporter::push() {
  loop_.checkThisThread();
  if (fd_ < 0) return;
  const std::vector<Sample> samples = parsePrometheusText(render_());
  const LineOptions options{settings_.prefix,
                            settings_.tags == conf::StatsdTags::None ? TagStyle::None : TagStyle::Dogstatsd};
  std::size_t dropped = 0;
  const std::vector<std::string> datagrams = packDatagrams(encoder_.encode(samples, options), kMaxDatagramBytes,
                                                           &dropped);
  ++stats_.pushes;
  stats_.lines_dropped += dropped;
  for (const std::string& datagram : datagrams) {
    const ssize_t n = ::send(fd_, datagram.data(), datagram.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      sendFailed(errno);
      continue;
    }
    ++stats_.datagrams_sent;
    stats_.bytes_sent += static_cast<std::uint64_t>(n);
  }
}

void Exporter::sendFailed(int err) {
  ++stats_.send_errors;
  ++unlogged_errors_;
  const auto now = std::chrono::steady_clock::now();
  if (error_logged_ && now - last_error_log_ < kErrorLogInterval) return;
  error_logged_ = true;
  last_error_log_ = now;
  if (log_) {
    log_(conf::LogLevel::Warn, "statsd_send_failed address=" + settings_.address.host + ":" +
                                   std::to_string(settings_.address.port) + " error=\"" + std::strerror(err) +
                                   "\" datagrams_lost=" + std::to_string(unlogged_errors_) +
                                   " next_report_in=60s");
  }
  unlogged_errors_ = 0;
}

}  // namespace zetian::cluster::statsd
