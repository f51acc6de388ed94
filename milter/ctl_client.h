// zetianctl's client for the health socket: one HTTP/1.1 request over a Unix socket
// through libcurl, bounded by a connect and a total deadline so a stuck daemon never
// hangs the operator's shell.
//
// Every way a request can fail is told in the operator's words, with what to do
// next (is zetian-milter running, who may use the socket, is the daemon stuck, is
// this the health socket at all); curl's own text appears only as the detail of a
// reply that is not HTTP, never a bare error code.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace zetian::milter {

// A Unix-socket connect only waits while the daemon's accept backlog is full, that is
// when it has stopped accepting: no reason to wait as long as for a slow answer.
inline constexpr std::chrono::milliseconds kConnectTimeout{2000};
// Far above any real reply (a full /limits page is a few MiB); a wrong socket that
// streams without end cannot fill memory.
inline constexpr std::size_t kMaxReplyBytes = 64u << 20;

struct HttpReply {
  long status = 0;
  std::string reason;  // from the status line, e.g. "Internal Server Error"
  std::string body;
};

// Sends `method target` to the Unix socket `socket_path` and reads the whole reply:
// GET and POST without a body, PUT with `body`. Connecting gives up after min(kConnectTimeout, timeout), waiting for
// room in a full backlog meanwhile; the whole exchange after `timeout`. Any HTTP
// status is a reply; false with *error set when no complete reply arrived. The
// message can quote bytes from the other end: escape it before printing.
// Needs a live CurlLibrary.
bool healthRequest(const std::string& socket_path, std::string_view method,
                   const std::string& target, std::chrono::milliseconds timeout,
                   HttpReply* reply, std::string* error, std::string_view body = {});

// RFC 3986 percent-encoding of a query value: everything but unreserved characters.
std::string percentEncode(const std::string& text);

// libcurl's process-wide set-up, for the lifetime of this object. Its set-up is not
// thread-safe and not free, so it happens once, in main, rather than implicitly in
// the first request.
class CurlLibrary {
 public:
  CurlLibrary();
  ~CurlLibrary();
  CurlLibrary(const CurlLibrary&) = delete;
  CurlLibrary& operator=(const CurlLibrary&) = delete;
  bool ready() const { return ready_; }

 private:
  bool ready_;
};

}  // namespace zetian::milter
