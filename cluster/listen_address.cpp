#include "cluster/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "cluster/log_sink.h"
#include "conf/syntax.h"

namespace zetian::cluster {

std::optional<ListenAddress> parseListenAddress(std::string_view text, std::string* error) {
  const auto fail = [&](const std::string& why) -> std::optional<ListenAddress> {
    *error = why;
    return std::nullopt;
  };

  // Port 0 lets the kernel choose; the caller reads the port back from the socket.
  const auto parts = conf::parseHostPort(text, error, {.allow_port_zero = true});
  if (!parts) return std::nullopt;

  ListenAddress result;
  const std::string& host_text = parts->host;
  // parseHostPort lets a ':' into the host only as a bracketed IPv6 address.
  if (host_text.find(':') == std::string::npos) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&result.addr);
    if (inet_pton(AF_INET, host_text.c_str(), &v4->sin_addr) != 1) {
      return fail(backquoted(host_text) +
                  " is not a numeric IP address; write 127.0.0.1 or [::1] (host names are "
                  "not looked up here)");
    }
    v4->sin_family = AF_INET;
    v4->sin_port = htons(parts->port);
    result.length = sizeof(sockaddr_in);
    result.family = AF_INET;
  } else {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&result.addr);
    if (inet_pton(AF_INET6, host_text.c_str(), &v6->sin6_addr) != 1) {
      return fail(backquoted(host_text) + " is not a numeric IPv6 address");
    }
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(parts->port);
    result.length = sizeof(sockaddr_in6);
    result.family = AF_INET6;
  }
  return result;
}

std::optional<std::string> addressText(const sockaddr* addr) {
  char text[INET6_ADDRSTRLEN];
  if (addr == nullptr) return std::nullopt;
  if (addr->sa_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(addr);
    if (inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text) != nullptr) return text;
  } else if (addr->sa_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(addr);
    if (inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text) != nullptr) return text;
  }
  return std::nullopt;
}

std::string endpointText(const sockaddr* addr) {
  const auto host = addressText(addr);
  if (!host) return "unknown";
  const std::uint16_t port = addr->sa_family == AF_INET
                                 ? ntohs(reinterpret_cast<const sockaddr_in*>(addr)->sin_port)
                                 : ntohs(reinterpret_cast<const sockaddr_in6*>(addr)->sin6_port);
  const std::string port_text = std::to_string(port);
  return addr->sa_family == AF_INET6 ? "[" + *host + "]:" + port_text : *host + ":" + port_text;
}

}  // namespace zetian::cluster
