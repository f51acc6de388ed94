// "HOST:PORT" / "[V6]:PORT" for listeners, numeric addresses only.
//
// The cluster thread must never block, and a name lookup can block for seconds, so
// host names are refused with a message that says what to write instead.
#pragma once

#include <sys/socket.h>

#include <optional>
#include <string>
#include <string_view>

namespace zetian::cluster {

struct ListenAddress {
  sockaddr_storage addr{};
  socklen_t length = 0;
  int family = 0;  // AF_INET or AF_INET6
};

// nullopt with *error set ("`localhost` is not a numeric IP address; ...") if `text`
// is not HOST:PORT as conf::parseHostPort reads it, with a numeric IPv4 or bracketed
// IPv6 address and a port in 0..65535.
std::optional<ListenAddress> parseListenAddress(std::string_view text, std::string* error);

// The numeric address of an AF_INET/AF_INET6 sockaddr ("192.0.2.1", "2001:db8::1");
// nullopt for other families.
std::optional<std::string> addressText(const sockaddr* addr);
// "HOST:PORT" or "[V6]:PORT" of an AF_INET/AF_INET6 sockaddr, for log lines;
// "unknown" for other families.
std::string endpointText(const sockaddr* addr);

}  // namespace zetian::cluster
