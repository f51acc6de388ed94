// The syntaxes of single configuration values that are more than a type: libmilter
// socket specs, HOST:PORT endpoints, octal modes, SMTP replies. Pure functions with no
// TOML in sight, so the engine and the cluster code can use the same rules.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "conf/config.h"

namespace zetian::conf {

struct HostPort {
  std::string host;  // a name or an address; an IPv6 address without its brackets
  std::uint16_t port = 0;
};

// "127.0.0.1:9187", "[::1]:9187", "mx2.example.net:7946". The port is 1..65535; an
// IPv6 address must be in brackets.
std::optional<HostPort> parseHostPort(std::string_view text, std::string* error = nullptr);

// A host name (RFC 1123 labels, '_' tolerated) or an IP address.
bool isHostName(std::string_view text);

// libmilter's socket syntax: "inet:PORT@HOST", "inet:PORT" (every address),
// "inet6:PORT@HOST", "inet6:PORT", "unix:/abs/path", "local:/abs/path".
bool checkMilterSocket(std::string_view text, std::string* error = nullptr);

// A Unix socket path: non-empty, fits in sockaddr_un.
bool checkUnixSocketPath(std::string_view path, std::string* error = nullptr);

// "0660", "0007", "660": octal digits, at most 0777.
std::optional<unsigned> parseOctalMode(std::string_view text, std::string* error = nullptr);

// The placeholders a rule's reply may use, without "%{" "}".
std::span<const std::string_view> replyPlaceholders();

// A rule's custom reply: "DDD text" or "DDD X.Y.Z text"; 4xx with tempfail, 5xx with
// reject, the enhanced code's class equal to the reply's; no control characters other
// than tab; only known %{placeholders}. A '%' not followed by '{' is a literal '%'.
bool checkReply(std::string_view reply, Action action, std::string* error = nullptr);

}  // namespace zetian::conf
