// IP addresses and CIDR blocks, parsed and compared without touching the network.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace zetian::conf {

// An IPv4 or IPv6 address. IPv4 is kept as an IPv4-mapped IPv6 address
// (::ffff:a.b.c.d) so one comparison serves both families; `v4` remembers the family.
// An IPv4-mapped IPv6 address in the input ("::ffff:192.0.2.1", what an MTA on an IPv6
// socket reports for an IPv4 client) is an IPv4 address: v4 is set and toString()
// prints "192.0.2.1".
struct IpAddress {
  std::array<std::uint8_t, 16> bytes{};
  bool v4 = false;

  static std::optional<IpAddress> parse(std::string_view text);  // "192.0.2.1", "2001:db8::1", "[::1]", "IPv6:..."
  std::string toString() const;
  // The address with all bits after `prefix_len` cleared (prefix counted in the family's bits).
  IpAddress masked(int prefix_len) const;
  bool operator==(const IpAddress&) const = default;
};

struct Cidr {
  IpAddress network;  // already masked
  int prefix_len = 0; // in the family's bits: 0..32 for IPv4, 0..128 for IPv6

  // "10.0.0.0/8", "2001:db8::/32", or a bare address (a /32 or /128). Host bits set
  // below the prefix are an error ("10.0.0.1/8"), as in most firewalls' syntax.
  static std::optional<Cidr> parse(std::string_view text, std::string* error = nullptr);
  // Families never mix: an IPv4 block holds IPv4 addresses (IPv4-mapped ones too, as
  // they parse as IPv4), an IPv6 block holds IPv6 addresses only, even ::/0.
  bool contains(const IpAddress& addr) const;
  std::string toString() const;
  bool operator==(const Cidr&) const = default;
};

}  // namespace zetian::conf
