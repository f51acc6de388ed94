// The syntaxes of single configuration values that are more than a type: libmilter
// socket specs, HOST:PORT endpoints, octal modes, SMTP replies. Pure functions with no
// TOML in sight, so the engine and the cluster code can use the same rules.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>

#include "conf/config.h"

namespace zetian::conf {

// HostPort itself is in config.h, where the Redis endpoints hold it.

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

// What `redis.url` says: one server, over TCP or a Unix socket, and a database; or,
// without a host ("redis:///2", for Sentinel and Cluster mode), only a database.
struct RedisUrl {
  std::variant<std::monostate, RedisServer, RedisUnixSocket> server;  // monostate: no host
  int database = 0;
};

// The highest database number: Redis's `databases` setting is at most INT_MAX, and
// SELECT takes 0 to databases - 1.
inline constexpr int kMaxRedisDatabase = 2147483646;

// "redis://HOST[:PORT][/DB]" (HOST a name, an IPv4 address or an IPv6 address in
// brackets; PORT 6379 and DB 0 when absent), "redis:///DB" (no host), or
// "unix:/absolute/path[?db=DB]". Refused with a reason: rediss:// (no TLS in Debian
// 12's hiredis), any other scheme, a user or password in the URL (it would be logged;
// no message quotes such a URL), a query on redis://, a bad port or database. DB is
// 0 to kMaxRedisDatabase, decimal without leading zeros.
std::optional<RedisUrl> parseRedisUrl(std::string_view text, std::string* error = nullptr);

// A host name (RFC 1123 labels, '_' tolerated) or an IP address.
bool isHostName(std::string_view text);

// libmilter's socket syntax: "inet:PORT@HOST", "inet:PORT" (every address),
// "inet6:PORT@HOST", "inet6:PORT", "unix:/abs/path", "local:/abs/path".
bool checkMilterSocket(std::string_view text, std::string* error = nullptr);

// True when two valid libmilter socket specs would listen on the same address: the
// same Unix path (unix: and local: alike), or the same TCP port on the same host, where
// a spec without host (or 0.0.0.0, ::) takes every address of its family and an
// inet6 one every IPv4 address too (Linux's dual-stack default). Host names are
// compared as written: "localhost" and "127.0.0.1" are not found to collide.
bool listenersCollide(std::string_view a, std::string_view b);

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
