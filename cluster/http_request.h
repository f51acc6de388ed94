// The request head of the health server's HTTP/1.1: the request line and the header
// fields, parsed from bytes any local client sent. Pure: no I/O, no libevent; fuzzed
// by tests/fuzz/fuzz_http_request.cpp.
//
// Accepted: `METHOD SP /target SP HTTP/1.1` (or HTTP/1.0), CRLF line ends, then
// `name: value` fields up to the first empty line. The method is any RFC 9110 token,
// compared by the caller as sent (case-sensitive). The target is origin-form only:
// it starts with `/` and holds printable ASCII (0x21-0x7e); a `#fragment` is dropped,
// the rest is split at the first `?` into path (not percent-decoded: no route needs
// it) and query (decoded later by parseQuery). No Host field is required. Header
// names are compared case-insensitively; the fields used are Content-Length,
// Transfer-Encoding, Connection and Authorization (the first non-empty one).
//
// Limits: the parser has none of its own; the caller bounds the head (431 past
// max_header_bytes) and the body (413 past max_body_bytes) before and after it.
// A Content-Length too big for std::size_t becomes SIZE_MAX, so it is over any
// body limit and never wraps.
//
// Refused, with the status to answer and the connection closed by the caller:
// - 400: a request line that is not exactly three parts separated by single spaces
//   (a leading empty line too), a method that is not a token, a version that is not
//   `HTTP/d.d`, a target not starting with `/` or with a control, space or non-ASCII
//   byte, a field line without a colon or whose name is not a token (this covers a
//   space before the colon and obsolete line folding), a control byte other than tab
//   in a field value, a Content-Length that is not all digits (signs, lists and empty
//   values included), two Content-Length fields with different values (a smuggling
//   vector: equal repeats are one value, as RFC 9112 section 6.3 allows), a head that
//   does not end with the empty line.
// - 505: a well-formed version other than HTTP/1.0 and HTTP/1.1 (HTTP/2.0, HTTP/0.9).
// - 501: any Transfer-Encoding, so a body's length is only ever Content-Length and a
//   request cannot be framed two ways.
//
// Keep-alive: HTTP/1.1 keeps the connection, HTTP/1.0 does not; a Connection field's
// `close` or `keep-alive` option overrides that, the last one named winning.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace zetian::cluster {

struct Request {
  std::string method;
  std::string path;   // starts with '/'
  std::string query;  // after the first '?', still percent-encoded
  std::string authorization;
  std::size_t content_length = 0;
  bool keep_alive = true;
};

struct ParseError {
  int status = 400;     // 400, 501 or 505
  std::string message;  // for the client, in the {"error":...} body
};

// `head` is the request line and the header fields, ending with the empty line
// (CRLF CRLF), as the caller cut it from its input. On success fills *req; on failure
// fills *error and leaves *req as it was.
bool parseRequestHead(std::string_view head, Request* req, ParseError* error);

}  // namespace zetian::cluster
