// zetianctl's HTTP/1.1 client for the health socket: one request per connection
// (`Connection: close`), plain POSIX sockets, one overall deadline.
//
// Kept apart from libevent on purpose: the CLI must work even when the thing it
// diagnoses is the library setup, and a blocking client with a deadline is all it needs.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cluster/query_string.h"

namespace zetian::milter {

struct HttpResponse {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  // The first header named `name` (case-insensitive), or "".
  std::string header(std::string_view name) const;
};

// Sends `method target` over the Unix socket at `socket_path` and reads the whole reply
// within `timeout`. On failure returns false with *error set to a message for the
// operator that says what to do ("... — is zetian-milter running? ...").
bool httpRequest(const std::string& socket_path, std::string_view method, std::string_view target,
                 std::chrono::milliseconds timeout, HttpResponse* response, std::string* error);

// Parses a complete HTTP/1.x response (status line, headers, body by Content-Length,
// chunked encoding, or up to the end). False with *error if malformed or truncated.
bool parseHttpResponse(std::string_view raw, HttpResponse* response, std::string* error);

// RFC 3986 percent-encoding for query values: the server's own (cluster/query_string.h).
using cluster::percentEncode;

}  // namespace zetian::milter
