// See http_request.h for what is accepted and refused.
#include "cluster/http_request.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace zetian::cluster {
namespace {

bool isTokenChar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool isToken(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), isTokenChar);
}

bool isDigit(char c) { return c >= '0' && c <= '9'; }

std::string_view trimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool equalsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

bool fail(ParseError* error, int status, std::string message) {
  error->status = status;
  error->message = std::move(message);
  return false;
}

}  // namespace

bool parseRequestHead(std::string_view head, Request* out, ParseError* error) {
  // Every line below is then found by its CRLF, and the field loop always stops at an
  // empty line inside `head`.
  if (!head.ends_with("\r\n\r\n")) return fail(error, 400, "the request head must end with an empty line");
  Request parsed;
  Request* req = &parsed;
  std::size_t eol = head.find("\r\n");
  const std::string_view line = head.substr(0, eol);
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return fail(error, 400, "malformed request line");
  }
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!isToken(method)) return fail(error, 400, "malformed request method");
  if (version == "HTTP/1.1") {
    req->keep_alive = true;
  } else if (version == "HTTP/1.0") {
    req->keep_alive = false;
  } else if (version.size() == 8 && version.starts_with("HTTP/") && isDigit(version[5]) && version[6] == '.' &&
             isDigit(version[7])) {
    return fail(error, 505, "only HTTP/1.0 and HTTP/1.1 are served");
  } else {
    return fail(error, 400, "malformed HTTP version");
  }
  if (target.empty() || target.front() != '/') return fail(error, 400, "the request target must start with /");
  for (const char c : target) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f) return fail(error, 400, "invalid byte in the request target");
  }
  const std::string_view no_fragment = target.substr(0, target.find('#'));
  const std::size_t question = no_fragment.find('?');
  req->method = std::string(method);
  req->path = std::string(no_fragment.substr(0, question));
  req->query = question == std::string_view::npos ? std::string() : std::string(no_fragment.substr(question + 1));

  // The first Content-Length's digits without leading zeros, to compare repeats by
  // value even past what std::size_t holds.
  std::string_view length_digits;
  bool have_length = false;
  while (true) {
    const std::size_t begin = eol + 2;
    eol = head.find("\r\n", begin);
    if (eol == begin) break;  // the empty line
    const std::string_view field = head.substr(begin, eol - begin);
    const std::size_t colon = field.find(':');
    if (colon == std::string_view::npos || !isToken(field.substr(0, colon))) {
      return fail(error, 400, "malformed header line");  // also a folded (obsolete) line
    }
    const std::string_view name = field.substr(0, colon);
    const std::string_view value = trimSpaces(field.substr(colon + 1));
    for (const char c : value) {
      const auto byte = static_cast<unsigned char>(c);
      if ((byte < 0x20 && c != '\t') || byte == 0x7f) return fail(error, 400, "invalid byte in a header value");
    }
    if (equalsNoCase(name, "Content-Length")) {
      if (value.empty() || !std::all_of(value.begin(), value.end(), isDigit)) {
        return fail(error, 400, "malformed Content-Length");
      }
      std::string_view digits = value.substr(std::min(value.find_first_not_of('0'), value.size()));
      if (digits.empty()) digits = "0";
      if (have_length && digits != length_digits) return fail(error, 400, "conflicting Content-Length headers");
      // 18 digits always fit; anything longer is far over every body limit.
      req->content_length = digits.size() > 18 ? std::numeric_limits<std::size_t>::max()
                                               : static_cast<std::size_t>(std::stoull(std::string(digits)));
      length_digits = digits;
      have_length = true;
    } else if (equalsNoCase(name, "Transfer-Encoding")) {
      return fail(error, 501, "request bodies with a Transfer-Encoding are not accepted");
    } else if (equalsNoCase(name, "Connection")) {
      std::string_view rest = value;
      while (!rest.empty()) {
        const std::size_t comma = rest.find(',');
        const std::string_view option = trimSpaces(rest.substr(0, comma));
        if (equalsNoCase(option, "close")) req->keep_alive = false;
        if (equalsNoCase(option, "keep-alive")) req->keep_alive = true;
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
      }
    } else if (equalsNoCase(name, "Authorization") && req->authorization.empty()) {
      req->authorization = std::string(value);
    }
  }
  if (eol + 2 != head.size()) return fail(error, 400, "bytes after the empty line that ends the request head");
  *out = std::move(parsed);
  return true;
}

}  // namespace zetian::cluster
