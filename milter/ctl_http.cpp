#include "milter/ctl_http.h"

#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <charconv>
#include <cstring>

namespace zetian::milter {
namespace {

constexpr std::size_t kMaxResponseBytes = 64u << 20;  // far above any real reply
constexpr std::size_t kMaxHeaderBytes = 64u << 10;

using Clock = std::chrono::steady_clock;

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool equalsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string connectError(const std::string& path, int err) {
  std::string message = "cannot connect to " + path + ": " + std::strerror(err);
  if (err == ENOENT || err == ECONNREFUSED) {
    message += " — is zetian-milter running? (use -s to choose another socket)";
  } else if (err == EACCES || err == EPERM) {
    struct stat st {};
    std::string group_name;
    if (stat(path.c_str(), &st) == 0) {
      if (const struct group* gr = getgrgid(st.st_gid); gr != nullptr && gr->gr_name != nullptr) {
        group_name = gr->gr_name;
      } else {
        group_name = std::to_string(st.st_gid);
      }
    }
    message += " — run as root or as a member of the socket's group";
    if (!group_name.empty()) message += " (" + group_name + ")";
  } else if (err == EAGAIN || err == ETIMEDOUT || err == EINPROGRESS) {
    message += " — zetian-milter is not accepting connections (overloaded or stuck?)";
  } else if (err == ENOTSOCK) {
    message += " — that path is not a socket (use -s to choose the health socket)";
  }
  return message;
}

int remainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

// Decodes a chunked body. False if malformed; *complete says whether the final
// zero-size chunk was seen.
bool decodeChunked(std::string_view data, std::string* body, bool* complete) {
  *complete = false;
  std::size_t pos = 0;
  while (true) {
    const std::size_t eol = data.find("\r\n", pos);
    if (eol == std::string_view::npos) return true;  // need more
    std::string_view size_text = data.substr(pos, eol - pos);
    if (const std::size_t semi = size_text.find(';'); semi != std::string_view::npos) {
      size_text = size_text.substr(0, semi);  // chunk extensions
    }
    size_text = trim(size_text);
    std::size_t size = 0;
    const auto [end, ec] =
        std::from_chars(size_text.data(), size_text.data() + size_text.size(), size, 16);
    if (size_text.empty() || ec != std::errc{} || end != size_text.data() + size_text.size() ||
        size > kMaxResponseBytes) {
      return false;
    }
    pos = eol + 2;
    if (size == 0) {
      *complete = true;  // trailers, if any, are ignored
      return true;
    }
    if (data.size() - pos < size + 2) return true;  // need more
    body->append(data.substr(pos, size));
    if (data.substr(pos + size, 2) != "\r\n") return false;
    pos += size + 2;
  }
}

// Parses as much of `raw` as is there. Returns false on malformed input; sets
// *complete once the whole response (per its framing) has arrived. With `at_eof`, a
// response without length runs to the end.
bool parsePartial(std::string_view raw, bool at_eof, HttpResponse* r, bool* complete,
                  std::string* error) {
  *complete = false;
  const std::size_t head_end = raw.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    if (raw.size() > kMaxHeaderBytes) {
      *error = "reply headers too large";
      return false;
    }
    if (at_eof) {
      *error = raw.empty() ? "the server closed the connection without answering"
                           : "the reply ended inside its headers";
      return false;
    }
    return true;
  }
  const std::string_view head = raw.substr(0, head_end);
  std::size_t line_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, line_end);
  // HTTP/1.x SP 3DIGIT [SP reason]
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ') {
    *error = "not an HTTP reply";
    return false;
  }
  int status = 0;
  const auto [end, ec] = std::from_chars(status_line.data() + 9, status_line.data() + 12, status);
  if (ec != std::errc{} || end != status_line.data() + 12 || status < 100 || status > 599 ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    *error = "bad HTTP status line";
    return false;
  }
  r->status = status;
  r->reason = std::string(trim(status_line.substr(12)));
  r->headers.clear();
  while (line_end != std::string_view::npos) {
    const std::size_t start = line_end + 2;
    line_end = head.find("\r\n", start);
    const std::string_view line = head.substr(start, line_end == std::string_view::npos
                                                         ? std::string_view::npos
                                                         : line_end - start);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      *error = "malformed header line in the reply";
      return false;
    }
    r->headers.emplace_back(std::string(line.substr(0, colon)), std::string(trim(line.substr(colon + 1))));
  }

  const std::string_view data = raw.substr(head_end + 4);
  r->body.clear();
  if (equalsNoCase(r->header("Transfer-Encoding"), "chunked")) {
    if (!decodeChunked(data, &r->body, complete)) {
      *error = "malformed chunked body";
      return false;
    }
  } else if (const std::string length = r->header("Content-Length"); !length.empty()) {
    std::size_t n = 0;
    const auto [lend, lec] = std::from_chars(length.data(), length.data() + length.size(), n);
    if (lec != std::errc{} || lend != length.data() + length.size() || n > kMaxResponseBytes) {
      *error = "bad Content-Length in the reply";
      return false;
    }
    if (data.size() >= n) {
      r->body.assign(data.substr(0, n));
      *complete = true;
    }
  } else if (status == 204 || status == 304) {
    *complete = true;
  } else if (at_eof) {
    r->body.assign(data);
    *complete = true;
  }
  if (at_eof && !*complete) {
    *error = "the reply was cut short";
    return false;
  }
  return true;
}

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (equalsNoCase(key, name)) return value;
  }
  return {};
}

bool parseHttpResponse(std::string_view raw, HttpResponse* response, std::string* error) {
  bool complete = false;
  return parsePartial(raw, /*at_eof=*/true, response, &complete, error);
}

bool httpRequest(const std::string& socket_path, std::string_view method, std::string_view target,
                 std::chrono::milliseconds timeout, HttpResponse* response, std::string* error) {
  const Clock::time_point deadline = Clock::now() + timeout;
  char seconds_buf[32];
  if (timeout.count() % 1000 == 0) {
    std::snprintf(seconds_buf, sizeof seconds_buf, "%llds", static_cast<long long>(timeout.count() / 1000));
  } else {
    std::snprintf(seconds_buf, sizeof seconds_buf, "%.1fs", static_cast<double>(timeout.count()) / 1000);
  }
  const std::string seconds = seconds_buf;

  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path) {
    *error = "cannot connect to " + socket_path + ": the path is " +
             (socket_path.empty() ? "empty" : "too long for a Unix socket");
    return false;
  }
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());

  const Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    *error = std::string("cannot create a socket: ") + std::strerror(errno);
    return false;
  }
  // A Unix-socket connect() waits for room in a full backlog for up to SO_SNDTIMEO.
  const int ms = remainingMs(deadline);
  const timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    *error = connectError(socket_path, errno);
    return false;
  }

  std::string request;
  request.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
  request += "Host: localhost\r\nUser-Agent: zetianctl\r\nAccept: */*\r\nConnection: close\r\n";
  if (method == "POST") request += "Content-Length: 0\r\n";
  request += "\r\n";

  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = (errno == EAGAIN || errno == EWOULDBLOCK)
                   ? "no answer from " + socket_path + " within " + seconds +
                         " — zetian-milter may be overloaded or stuck"
                   : "cannot send to " + socket_path + ": " + std::strerror(errno);
      return false;
    }
    sent += static_cast<std::size_t>(n);
  }

  std::string raw;
  char buf[16384];
  while (true) {
    bool complete = false;
    if (!parsePartial(raw, /*at_eof=*/false, response, &complete, error)) {
      *error = "bad reply from " + socket_path + ": " + *error;
      return false;
    }
    if (complete) return true;

    pollfd p{fd.get(), POLLIN, 0};
    const int ready = poll(&p, 1, remainingMs(deadline));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      *error = "no answer from " + socket_path + " within " + seconds +
               " — zetian-milter may be overloaded or stuck";
      return false;
    }
    const ssize_t n = recv(fd.get(), buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = "cannot read from " + socket_path + ": " + std::strerror(errno);
      return false;
    }
    if (n == 0) {
      if (!parsePartial(raw, /*at_eof=*/true, response, &complete, error)) {
        *error = "bad reply from " + socket_path + ": " + *error;
        return false;
      }
      return true;
    }
    raw.append(buf, static_cast<std::size_t>(n));
    if (raw.size() > kMaxResponseBytes) {
      *error = "bad reply from " + socket_path + ": larger than " +
               std::to_string(kMaxResponseBytes >> 20) + " MiB";
      return false;
    }
  }
}

}  // namespace zetian::milter
