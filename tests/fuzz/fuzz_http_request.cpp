// libFuzzer target for the health server's request-head parser (cluster/http_request.h),
// which reads bytes from any local client. The input is cut at its first CRLF CRLF as
// the server cuts its input, and is also parsed whole. Whatever the bytes: no crash, no
// escaped exception; a refusal is 400, 501 or 505 with a message and leaves the
// Request as it was; an accepted head holds only what the server may route on (a
// token method, an origin-form path of printable ASCII, no Transfer-Encoding, a
// length or token only from their own fields) and re-parses to the same Request when
// written back canonically. An accepted query goes through parseQuery
// as the /limits endpoints decode it.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>

#include "cluster/http_request.h"
#include "cluster/query_string.h"

namespace cluster = zetian::cluster;

namespace {

bool isTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string lowerCase(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool isPrintableAscii(std::string_view s) {
  for (const char c : s) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f) return false;
  }
  return true;
}

bool sameRequest(const cluster::Request& a, const cluster::Request& b) {
  return a.method == b.method && a.path == b.path && a.query == b.query && a.authorization == b.authorization &&
         a.content_length == b.content_length && a.keep_alive == b.keep_alive;
}

void checkAccepted(std::string_view head, const cluster::Request& req) {
  if (!head.ends_with("\r\n\r\n")) std::abort();
  if (req.method.empty()) std::abort();
  for (const char c : req.method) {
    if (!isTokenChar(c)) std::abort();
  }
  if (req.path.empty() || req.path.front() != '/' || !isPrintableAscii(req.path)) std::abort();
  if (req.path.find_first_of("?#") != std::string::npos) std::abort();
  if (!isPrintableAscii(req.query) || req.query.find('#') != std::string::npos) std::abort();
  // The target is part of the request line, itself part of the head.
  if (req.method.size() + req.path.size() + req.query.size() > head.size()) std::abort();
  for (const char c : req.authorization) {
    const auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && c != '\t') || byte == 0x7f) std::abort();
  }
  if (!req.authorization.empty() && (req.authorization.front() == ' ' || req.authorization.front() == '\t' ||
                                     req.authorization.back() == ' ' || req.authorization.back() == '\t')) {
    std::abort();
  }
  // Framing comes from Content-Length alone: an accepted head has no Transfer-Encoding
  // field, and a length or a token only where the head has that field.
  const std::string lower = lowerCase(head);
  if (lower.find("\r\ntransfer-encoding:") != std::string::npos) std::abort();
  if (req.content_length != 0 && lower.find("\r\ncontent-length:") == std::string::npos) std::abort();
  if (!req.authorization.empty() && lower.find("\r\nauthorization:") == std::string::npos) std::abort();

  // Written back canonically, the head must parse to the same Request.
  std::string again = req.method + " " + req.path;
  if (!req.query.empty()) again += "?" + req.query;
  again += req.keep_alive ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n";
  if (!req.authorization.empty()) again += "Authorization: " + req.authorization + "\r\n";
  if (req.content_length != 0) {
    again += "Content-Length: " + std::to_string(req.content_length) + "\r\n";
  }
  again += "\r\n";
  cluster::Request back;
  cluster::ParseError error;
  // A saturated length is written back as SIZE_MAX's 20 digits, which saturate again.
  if (!cluster::parseRequestHead(again, &back, &error)) std::abort();
  if (!sameRequest(back, req)) std::abort();

  std::string query_error;
  const auto fields = cluster::parseQuery(req.query, &query_error);
  if (!fields) {
    if (query_error.empty()) std::abort();
    return;
  }
  for (const auto& [name, value] : *fields) {
    // A decoded NUL would cut a key short in C APIs: percentDecode refuses one.
    if (name.find('\0') != std::string::npos || value.find('\0') != std::string::npos) std::abort();
    if (cluster::percentDecode(cluster::percentEncode(name)) != name) std::abort();
    if (cluster::percentDecode(cluster::percentEncode(value)) != value) std::abort();
  }
}

// Parses `head`; returns whether it was accepted, after checking the invariants.
bool parseAndCheck(std::string_view head) {
  cluster::Request req;
  req.method = "untouched";
  req.content_length = 1234;
  cluster::ParseError error;
  error.status = 0;
  if (!cluster::parseRequestHead(head, &req, &error)) {
    if (error.status != 400 && error.status != 501 && error.status != 505) std::abort();
    if (error.message.empty()) std::abort();
    if (req.method != "untouched" || req.content_length != 1234 || !req.path.empty()) std::abort();
    return false;
  }
  checkAccepted(head, req);
  // Deterministic: the same bytes give the same answer.
  cluster::Request twice;
  if (!cluster::parseRequestHead(head, &twice, &error) || !sameRequest(twice, req)) std::abort();
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t end = input.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    // No empty line: the server would still be waiting for one. Parsed as a head
    // anyway, it must be refused.
    if (parseAndCheck(input)) std::abort();
    return 0;
  }
  const std::string_view head = input.substr(0, end + 4);
  parseAndCheck(head);
  // Anything after the first empty line is a body or the next request, never this head.
  if (head.size() < input.size() && parseAndCheck(input)) std::abort();
  return 0;
}
