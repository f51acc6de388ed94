#include "cluster/listen_address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>

#include "cluster/log_sink.h"

namespace zetian::cluster {

std::optional<ListenAddress> parseListenAddress(std::string_view text, std::string* error) {
  const std::string quoted = backquoted(text);
  const auto fail = [&](const std::string& why) -> std::optional<ListenAddress> {
    *error = why;
    return std::nullopt;
  };

  std::string_view host;
  std::string_view port;
  bool bracketed = false;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail(quoted + " is not an address: write [IPV6]:PORT, e.g. [::1]:9187");
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    bracketed = true;
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return fail(quoted + " has no port: write HOST:PORT, e.g. 127.0.0.1:9187");
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return fail(quoted + ": put an IPv6 address in brackets, e.g. [::1]:9187");
    }
  }
  if (host.empty()) {
    return fail(quoted + " has no host: write 127.0.0.1:PORT (or 0.0.0.0:PORT to listen on all "
                         "addresses)");
  }

  unsigned port_number = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), port_number);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() ||
      port_number > 65535) {
    return fail(quoted + ": the port must be a number from 0 to 65535");
  }

  ListenAddress result;
  const std::string host_text(host);
  if (!bracketed) {
    auto* v4 = reinterpret_cast<sockaddr_in*>(&result.addr);
    if (inet_pton(AF_INET, host_text.c_str(), &v4->sin_addr) != 1) {
      return fail(backquoted(host_text) +
                  " is not a numeric IP address; write 127.0.0.1 or [::1] (host names are "
                  "not looked up here)");
    }
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(port_number));
    result.length = sizeof(sockaddr_in);
    result.family = AF_INET;
  } else {
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&result.addr);
    if (inet_pton(AF_INET6, host_text.c_str(), &v6->sin6_addr) != 1) {
      return fail(backquoted(host_text) + " is not a numeric IPv6 address");
    }
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(port_number));
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
