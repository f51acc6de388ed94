#include "conf/syntax.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>

#include "conf/net.h"
#include "conf/text.h"

namespace zetian::conf {
namespace {

bool fail(std::string* error, std::string message) {
  if (error) *error = std::move(message);
  return false;
}

bool isDigit(char c) { return c >= '0' && c <= '9'; }

bool allDigits(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), isDigit); }

std::optional<std::uint16_t> parsePort(std::string_view text, bool allow_zero = false) {
  if (!allDigits(text) || text.size() > 5) return std::nullopt;
  unsigned port = 0;
  std::from_chars(text.data(), text.data() + text.size(), port);
  if ((port < 1 && !allow_zero) || port > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(port);
}

// sizeof(sockaddr_un::sun_path) is 108 on Linux, and the path needs its NUL.
constexpr std::size_t kMaxUnixPath = 107;

constexpr std::array<std::string_view, 5> kPlaceholders{"rule", "key", "limit", "period", "retry_after"};

}  // namespace

bool isHostName(std::string_view text) {
  if (text.empty() || text.size() > 253) return false;
  if (IpAddress::parse(text)) return true;
  std::size_t label = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == '.') {
      // A trailing dot (fully qualified) is fine; an empty label elsewhere is not.
      if (label == 0 && !(i == text.size() && i > 0)) return false;
      if (label > 63) return false;
      label = 0;
      continue;
    }
    const char c = text[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || isDigit(c) || c == '-' || c == '_';
    if (!ok) return false;
    if (c == '-' && (label == 0 || i + 1 == text.size() || text[i + 1] == '.')) return false;
    ++label;
  }
  return true;
}

std::optional<HostPort> parseHostPort(std::string_view text, std::string* error, HostPortRules rules) {
  auto bad = [&](std::string message) -> std::optional<HostPort> {
    fail(error, std::move(message));
    return std::nullopt;
  };
  const bool port_optional = rules.default_port != 0;
  if (text.empty()) return bad("the address is empty: write HOST:PORT, e.g. \"127.0.0.1:9187\"");
  std::string_view host, port;
  bool has_port = true;
  if (text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return bad(quoteValue(text) + " has '[' without ']'; write e.g. \"[::1]:9187\"");
    host = text.substr(1, close - 1);
    const std::string_view rest = text.substr(close + 1);
    if (rest.empty() && port_optional) {
      has_port = false;
    } else if (rest.empty() || rest.front() != ':') {
      return bad(quoteValue(text) + " needs a port after the address: \"[" + std::string(host.substr(0, 45)) + "]:PORT\"");
    }
    port = rest.substr(std::min<std::size_t>(1, rest.size()));
    const auto addr = IpAddress::parse(host);
    if (!addr || addr->v4 || host.find(':') == std::string_view::npos) {
      return bad(quoteValue(host) + " in brackets must be an IPv6 address");
    }
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos && !port_optional) {
      return bad(quoteValue(text) + " needs a port: write HOST:PORT, e.g. \"127.0.0.1:9187\"");
    }
    has_port = colon != std::string_view::npos;
    host = text.substr(0, colon);
    if (has_port) port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return bad(quoteValue(text) + ": put an IPv6 address in brackets, e.g. \"[::1]:9187\"");
    }
    if (host.empty()) return bad(quoteValue(text) + " needs a host before the port, e.g. \"0.0.0.0:7946\"");
    if (!isHostName(host)) return bad(quoteValue(host) + " is neither an IP address nor a host name");
  }
  if (!has_port) return HostPort{std::string(host), rules.default_port};
  const auto p = parsePort(port, rules.allow_port_zero);
  if (!p) {
    return bad("the port in " + quoteValue(text) + " must be a number from " + (rules.allow_port_zero ? "0" : "1") +
               " to 65535");
  }
  return HostPort{std::string(host), *p};
}

std::optional<RedisUrl> parseRedisUrl(std::string_view text, std::string* error) {
  auto bad = [&](std::string message) -> std::optional<RedisUrl> {
    fail(error, std::move(message));
    return std::nullopt;
  };
  static constexpr std::string_view kForms = "write redis://HOST:PORT/DB or unix:/path";
  static constexpr std::string_view kSocketExample = "unix:/run/redis/redis-server.sock";
  // The database: decimal, one spelling per number ("02" is refused like "1h1h").
  auto database = [&](std::string_view digits, int& out) {
    if (!allDigits(digits) || digits.size() > 10 || (digits.size() > 1 && digits.front() == '0')) return false;
    std::int64_t n = 0;
    std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (n > kMaxRedisDatabase) return false;
    out = static_cast<int>(n);
    return true;
  };
  auto bad_database = [&](std::string_view digits) {
    return bad("the database in " + quoteValue(text) + " must be a number from 0 to " + std::to_string(kMaxRedisDatabase) +
               ", not " + quoteValue(digits));
  };
  const auto scheme_end = text.find(':');
  std::string scheme(text.substr(0, scheme_end == std::string_view::npos ? 0 : scheme_end));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; });
  const bool has_authority = scheme_end != std::string_view::npos && text.substr(scheme_end).starts_with("://");

  if (scheme == "unix" && scheme_end != std::string_view::npos) {
    std::string_view rest = text.substr(scheme_end + 1);
    if (rest.starts_with("//")) {
      return bad("write a Unix socket with one slash after unix:, as " + std::string(kSocketExample));
    }
    if (rest.empty() || rest.front() != '/') {
      return bad("the path after unix: must be absolute, e.g. " + std::string(kSocketExample));
    }
    RedisUrl url;
    if (const auto query = rest.find('?'); query != std::string_view::npos) {
      const std::string_view parameter = rest.substr(query + 1);
      rest = rest.substr(0, query);
      if (!parameter.starts_with("db=")) {
        return bad("after '?' a unix: URL takes only db=N, e.g. " + std::string(kSocketExample) + "?db=2");
      }
      if (!database(parameter.substr(3), url.database)) return bad_database(parameter.substr(3));
    }
    std::string why;
    if (!checkUnixSocketPath(rest, &why)) return bad(why);
    url.server = RedisUnixSocket{std::string(rest)};
    return url;
  }
  // A user or password before '@': checked before anything that quotes the text, so
  // no message ever repeats a password.
  if (text.find('@') != std::string_view::npos) {
    return bad("a user or password does not belong in the URL, which is logged and shown by /health: put the password "
               "in `redis.password_file` and the user in `redis.username`");
  }
  if (scheme == "rediss" && has_authority) {
    return bad("rediss:// (Redis over TLS) is not supported: Debian 12's hiredis 0.14 has no TLS. To reach a remote "
               "Redis safely, point the URL at the local end of a TLS tunnel (stunnel or spiped), e.g. "
               "redis://127.0.0.1:6380/0, or keep Redis on a private network");
  }
  if (scheme != "redis" || !has_authority) {
    if (has_authority) {
      std::string message = "unknown scheme " + quoteValue(scheme + "://") + "; " + std::string(kForms);
      if (scheme.find("sentinel") != std::string::npos) {
        message += "; for Sentinel, list the Sentinels in `redis.sentinels` and name the master in `redis.master_name`";
      }
      return bad(message);
    }
    if (parseHostPort(text, nullptr, {.default_port = 6379})) {
      return bad(quoteValue(text) + " is not a URL; did you mean \"redis://" + std::string(text.substr(0, 200)) + "\"?");
    }
    return bad(quoteValue(text) + " is not a Redis URL; " + std::string(kForms));
  }

  const std::string_view rest = text.substr(scheme_end + 3);
  const auto authority_end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, authority_end);
  const std::string_view tail = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
  if (tail.find_first_of("?#") != std::string_view::npos) {
    return bad("a redis:// URL takes no query or fragment: write the database as its path, e.g. redis://127.0.0.1:6379/2");
  }
  RedisUrl url;
  if (tail.size() > 1 && !database(tail.substr(1), url.database)) return bad_database(tail.substr(1));
  if (authority.empty()) return url;
  if (authority.front() == ':' && authority.find(':', 1) == std::string_view::npos) {  // "::1" is an unbracketed IPv6
    return bad(quoteValue(text) + " needs a host before the port, e.g. redis://127.0.0.1:6379/0");
  }
  std::string why;
  const auto address = parseHostPort(authority, &why, {.default_port = 6379});
  if (!address) return bad(why);
  url.server = RedisServer{*address};
  return url;
}

bool checkUnixSocketPath(std::string_view path, std::string* error) {
  if (path.empty()) return fail(error, "the socket path is empty");
  if (path.size() > kMaxUnixPath) {
    return fail(error, "the socket path is " + std::to_string(path.size()) + " bytes long; a Unix socket path can have at most " +
                           std::to_string(kMaxUnixPath));
  }
  if (path.find('\0') != std::string_view::npos) return fail(error, "the socket path contains a NUL byte");
  return true;
}

bool checkMilterSocket(std::string_view text, std::string* error) {
  static constexpr std::string_view kForms =
      "write inet:PORT@HOST, inet6:PORT@HOST or unix:/path (e.g. \"inet:8891@127.0.0.1\")";
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return fail(error, quoteValue(text) + " has no socket type; " + std::string(kForms));
  const std::string_view type = text.substr(0, colon);
  const std::string_view rest = text.substr(colon + 1);
  if (type == "unix" || type == "local") {
    if (rest.empty() || rest.front() != '/') {
      return fail(error, "the path of a unix socket must be absolute, e.g. \"unix:/run/zetian/milter.sock\"");
    }
    return checkUnixSocketPath(rest, error);
  }
  if (type != "inet" && type != "inet6") {
    return fail(error, "unknown socket type " + quoteValue(type) + "; " + std::string(kForms));
  }
  const auto at = rest.find('@');
  const std::string_view port = rest.substr(0, at);
  if (!parsePort(port)) return fail(error, "the port in " + quoteValue(text) + " must be a number from 1 to 65535");
  if (at == std::string_view::npos) return true;  // every address of the family
  const std::string_view host = rest.substr(at + 1);
  if (host.empty()) return fail(error, quoteValue(text) + " has '@' but no host after it");
  if (!host.empty() && host.front() == '[') {
    return fail(error, "write the host of " + quoteValue(text) + " without brackets, as libmilter expects");
  }
  const auto addr = IpAddress::parse(host);
  if (type == "inet" && host.find(':') != std::string_view::npos) {
    return fail(error, quoteValue(host) + " is an IPv6 address: use inet6:" + std::string(port) + "@" + std::string(host.substr(0, 45)));
  }
  if (type == "inet6" && addr && host.find(':') == std::string_view::npos) {
    return fail(error, quoteValue(host) + " is an IPv4 address: use inet:" + std::string(port) + "@" + std::string(host));
  }
  if (!addr && !isHostName(host)) return fail(error, quoteValue(host) + " is neither an IP address nor a host name");
  return true;
}

namespace {

// One listener of a libmilter spec, as far as an address clash is concerned.
struct ListenerAddress {
  bool unix_path = false;
  bool inet6 = false;
  std::string_view port;  // or the path
  std::string_view host;  // "" for every address
};

ListenerAddress listenerAddress(std::string_view spec) {
  ListenerAddress out;
  const auto colon = spec.find(':');
  const std::string_view type = spec.substr(0, colon);
  const std::string_view rest = colon == std::string_view::npos ? std::string_view() : spec.substr(colon + 1);
  if (type == "unix" || type == "local") {
    out.unix_path = true;
    out.port = rest;
    return out;
  }
  out.inet6 = type == "inet6";
  const auto at = rest.find('@');
  out.port = rest.substr(0, at);
  if (at != std::string_view::npos) out.host = rest.substr(at + 1);
  if (const auto addr = IpAddress::parse(out.host); addr && addr->masked(0) == *addr) out.host = {};
  return out;
}

bool sameHost(std::string_view a, std::string_view b) {
  const auto x = IpAddress::parse(a);
  const auto y = IpAddress::parse(b);
  if (x && y) return *x == *y;
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char c, char d) {
           return std::tolower(static_cast<unsigned char>(c)) == std::tolower(static_cast<unsigned char>(d));
         });
}

}  // namespace

bool listenersCollide(std::string_view a, std::string_view b) {
  const ListenerAddress x = listenerAddress(a);
  const ListenerAddress y = listenerAddress(b);
  if (x.unix_path || y.unix_path) return x.unix_path && y.unix_path && x.port == y.port;
  if (parsePort(x.port) != parsePort(y.port)) return false;
  if (x.host.empty() && y.host.empty()) return true;
  if (x.host.empty()) return x.inet6 || !y.inet6;
  if (y.host.empty()) return y.inet6 || !x.inet6;
  return sameHost(x.host, y.host);
}

std::optional<unsigned> parseOctalMode(std::string_view text, std::string* error) {
  const bool octal = !text.empty() && text.size() <= 4 &&
                     std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '7'; });
  if (!octal) {
    fail(error, quoteValue(text) + " is not an octal mode; write octal digits such as \"0660\"");
    return std::nullopt;
  }
  unsigned mode = 0;
  std::from_chars(text.data(), text.data() + text.size(), mode, 8);
  if (mode > 0777) {
    fail(error, quoteValue(text) + " has bits above 0777; only permission bits are allowed");
    return std::nullopt;
  }
  return mode;
}

std::span<const std::string_view> replyPlaceholders() { return kPlaceholders; }

bool checkReply(std::string_view reply, Action action, std::string* error) {
  if (action != Action::Tempfail && action != Action::Reject) {
    return fail(error, "a reply is only used with action \"tempfail\" or \"reject\", not \"" +
                           std::string(actionName(action)) + "\"");
  }
  const char want = action == Action::Tempfail ? '4' : '5';
  const std::string_view example =
      action == Action::Tempfail ? "\"451 4.7.1 Too many messages, try again later\"" : "\"550 5.7.1 Too many messages\"";
  if (reply.size() < 4 || !isDigit(reply[0]) || !isDigit(reply[1]) || !isDigit(reply[2]) || reply[3] != ' ') {
    return fail(error, "a reply must start with a three-digit SMTP code and a space, e.g. " + std::string(example));
  }
  if (reply[0] != want) {
    return fail(error, "action \"" + std::string(actionName(action)) + "\" needs a " + std::string(1, want) +
                           "xx reply code, not " + std::string(reply.substr(0, 3)));
  }
  if (reply[1] > '5') return fail(error, "the reply code " + std::string(reply.substr(0, 3)) + " is not an SMTP code");
  std::string_view text = reply.substr(4);
  // An enhanced status code (RFC 3463) is "class.subject.detail" right after the code.
  if (!text.empty() && isDigit(text.front()) && text.size() > 1 && text[1] == '.') {
    const auto space = text.find(' ');
    const std::string_view code = text.substr(0, space);
    const auto dot1 = code.find('.');
    const auto dot2 = code.find('.', dot1 + 1);
    const bool shape = dot2 != std::string_view::npos && dot1 == 1 &&
                       allDigits(code.substr(dot1 + 1, dot2 - dot1 - 1)) && dot2 - dot1 - 1 <= 3 &&
                       allDigits(code.substr(dot2 + 1)) && code.size() - dot2 - 1 <= 3;
    if (!shape) {
      return fail(error, "the enhanced status code " + quoteValue(code) + " must look like " + std::string(1, want) + ".7.1");
    }
    if (code[0] != reply[0]) {
      return fail(error, "the enhanced status code " + std::string(code) + " must be of class " + std::string(1, reply[0]) +
                             " like the reply code " + std::string(reply.substr(0, 3)));
    }
    text = space == std::string_view::npos ? std::string_view{} : text.substr(space + 1);
  }
  if (text.empty() || std::all_of(text.begin(), text.end(), [](char c) { return c == ' '; })) {
    return fail(error, "a reply needs a text after its code, e.g. " + std::string(example));
  }
  constexpr std::size_t kMaxReply = 400;
  if (reply.size() > kMaxReply) {
    return fail(error, "a reply can be at most " + std::to_string(kMaxReply) + " characters long (an SMTP line is 512)");
  }
  for (std::size_t i = 0; i < reply.size(); ++i) {
    const auto c = static_cast<unsigned char>(reply[i]);
    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      const char* what = c == '\r' ? "a carriage return (CR)" : c == '\n' ? "a line feed (LF)" : c == 0 ? "a NUL byte" : "a control character";
      return fail(error, std::string("a reply must stay on one line; it contains ") + what + " at character " + std::to_string(i + 1));
    }
    if (reply[i] == '%' && i + 1 < reply.size() && reply[i + 1] == '{') {
      const auto close = reply.find('}', i + 2);
      if (close == std::string_view::npos) return fail(error, "\"%{\" at character " + std::to_string(i + 1) + " is not closed by '}'");
      const std::string_view name = reply.substr(i + 2, close - i - 2);
      if (std::find(kPlaceholders.begin(), kPlaceholders.end(), name) == kPlaceholders.end()) {
        std::string message = "unknown placeholder %{" + quoteValue(name).substr(1, std::string::npos);
        message.back() = '}';
        message += "; known: %{rule}, %{key}, %{limit}, %{period}, %{retry_after}";
        if (auto near = closestMatch(name, kPlaceholders); !near.empty()) {
          message += "; did you mean `%{" + std::string(near) + "}`?";
        }
        return fail(error, message);
      }
      i = close;
    }
  }
  return true;
}

}  // namespace zetian::conf
