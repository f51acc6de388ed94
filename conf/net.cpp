// IP address and CIDR parsing. The text forms accepted are the ones an operator writes
// in zetian.toml and the ones an MTA hands us: plain IPv4 and IPv6 (every compressed
// form), "[::1]" and "[192.0.2.1]" address literals, and Postfix's "IPv6:2001:db8::1".
//
// Trap: an IPv4 client of an MTA listening on an IPv6 socket shows up as
// ::ffff:192.0.2.1. Such an address is normalised to IPv4 here, so that exemptions
// like 127.0.0.0/8 and client_net /24 buckets treat it as the IPv4 client it is.
#include "conf/net.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>

namespace zetian::conf {
namespace {

constexpr std::array<std::uint8_t, 12> kMappedPrefix{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool isMapped(const std::array<std::uint8_t, 16>& b) {
  return std::equal(kMappedPrefix.begin(), kMappedPrefix.end(), b.begin());
}

bool startsWithIpv6Tag(std::string_view s) {
  if (s.size() < 5) return false;
  static constexpr std::string_view tag = "ipv6:";
  for (std::size_t i = 0; i < tag.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != tag[i]) return false;
  }
  return true;
}

// Bits of the 16-byte representation that a family prefix covers.
int absolutePrefix(bool v4, int prefix_len) { return v4 ? 96 + prefix_len : prefix_len; }

int familyBits(bool v4) { return v4 ? 32 : 128; }

}  // namespace

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
  }
  bool tagged_v6 = false;
  if (startsWithIpv6Tag(text)) {
    text = text.substr(5);
    tagged_v6 = true;
  }
  // Longest valid text: "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255" (45 chars).
  if (text.empty() || text.size() > 45) return std::nullopt;
  char buf[46];
  std::copy(text.begin(), text.end(), buf);
  buf[text.size()] = '\0';

  IpAddress addr;
  if (!tagged_v6 && text.find(':') == std::string_view::npos) {
    std::uint8_t v4[4];
    if (inet_pton(AF_INET, buf, v4) != 1) return std::nullopt;
    std::copy(kMappedPrefix.begin(), kMappedPrefix.end(), addr.bytes.begin());
    std::copy(v4, v4 + 4, addr.bytes.begin() + 12);
    addr.v4 = true;
    return addr;
  }
  if (inet_pton(AF_INET6, buf, addr.bytes.data()) != 1) return std::nullopt;
  addr.v4 = isMapped(addr.bytes);
  return addr;
}

std::string IpAddress::toString() const {
  char out[64];
  if (v4) {
    std::snprintf(out, sizeof out, "%u.%u.%u.%u", bytes[12], bytes[13], bytes[14], bytes[15]);
    return out;
  }
  // RFC 5952: lower case, leading zeros dropped, the longest run (first on a tie) of
  // two or more zero groups written as "::".
  std::array<unsigned, 8> groups{};
  for (int i = 0; i < 8; ++i) groups[i] = (unsigned{bytes[2 * i]} << 8) | bytes[2 * i + 1];
  int best_start = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (groups[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && groups[j] == 0) ++j;
    if (j - i > best_len) {
      best_start = i;
      best_len = j - i;
    }
    i = j;
  }
  if (best_len < 2) best_start = -1;
  std::string s;
  for (int i = 0; i < 8; ++i) {
    if (i == best_start) {
      s += "::";
      i += best_len - 1;
      continue;
    }
    if (!s.empty() && s.back() != ':') s += ':';
    std::snprintf(out, sizeof out, "%x", groups[i]);
    s += out;
  }
  return s;
}

IpAddress IpAddress::masked(int prefix_len) const {
  prefix_len = std::clamp(prefix_len, 0, familyBits(v4));
  const int keep = absolutePrefix(v4, prefix_len);
  IpAddress out = *this;
  for (int i = 0; i < 16; ++i) {
    const int bit_start = i * 8;
    if (bit_start >= keep) {
      out.bytes[i] = 0;
    } else if (bit_start + 8 > keep) {
      const int kept_bits = keep - bit_start;
      out.bytes[i] &= static_cast<std::uint8_t>(0xff << (8 - kept_bits));
    }
  }
  return out;
}

std::optional<Cidr> Cidr::parse(std::string_view text, std::string* error) {
  auto fail = [&](std::string message) -> std::optional<Cidr> {
    if (error) *error = std::move(message);
    return std::nullopt;
  };
  const auto slash = text.find('/');
  const std::string_view addr_text = text.substr(0, slash);
  auto addr = IpAddress::parse(addr_text);
  if (!addr) return fail("\"" + std::string(addr_text) + "\" is not an IPv4 or IPv6 address");

  int prefix = familyBits(addr->v4);
  if (slash != std::string_view::npos) {
    const std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return fail("the prefix length after '/' must be a number");
    }
    prefix = std::stoi(std::string(digits));
    // An IPv4-mapped network written in IPv6 form ("::ffff:10.0.0.0/104") counts its
    // prefix over 128 bits; a prefix that reaches into the mapping prefix itself makes
    // it an IPv6 network.
    const bool written_as_v6 = addr_text.find(':') != std::string_view::npos;
    if (addr->v4 && written_as_v6) {
      if (prefix > 128) return fail("the prefix length of an IPv6 network must be 0..128");
      if (prefix >= 96) {
        prefix -= 96;
      } else {
        addr->v4 = false;
      }
    }
    if (prefix > familyBits(addr->v4)) {
      return fail(addr->v4 ? "the prefix length of an IPv4 network must be 0..32"
                           : "the prefix length of an IPv6 network must be 0..128");
    }
  }
  Cidr cidr;
  cidr.network = addr->masked(prefix);
  cidr.prefix_len = prefix;
  if (!(cidr.network == *addr)) {
    return fail("host bits are set below the /" + std::to_string(prefix) + " prefix; did you mean " +
                cidr.toString() + "?");
  }
  return cidr;
}

bool Cidr::contains(const IpAddress& addr) const {
  if (addr.v4 != network.v4) return false;
  return addr.masked(prefix_len) == network;
}

std::string Cidr::toString() const { return network.toString() + "/" + std::to_string(prefix_len); }

}  // namespace zetian::conf
