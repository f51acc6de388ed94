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

// What parseHostPort accepts beyond HOST:PORT with a port from 1 to 65535.
struct HostPortRules {
  // The port of a text that has none ("mx2.example.net", "[::1]"); 0: the text must
  // carry a port.
  std::uint16_t default_port = 0;
  // Port 0 asks the kernel to choose one: fine for a listener, never for an address
  // to connect to.
  bool allow_port_zero = false;
};

// "127.0.0.1:9187", "[::1]:9187", "mx2.example.net:7946". The host is an IP address or
// a host name; an IPv6 address must be in brackets, and only an IPv6 address goes in
// them. The one reader of HOST:PORT for the configuration check and the cluster alike,
// so both agree on what an endpoint is; callers check what they need on top (a numeric
// address, a multicast group).
std::optional<HostPort> parseHostPort(std::string_view text, std::string* error = nullptr,
                                      HostPortRules rules = {});

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
