// Turning what the MTA tells us into rate-limit keys.
//
// Mail addresses are compared the way SMTP means them: the domain is
// case-insensitive, the local part is kept as written (RFC 5321 §2.4 leaves its case
// to the receiving host). The null sender `<>` of bounces is its own key value,
// "<>", which no real address or domain can spell, so it is never confused with an
// empty or missing address.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "conf/net.h"

namespace zetian::plugin {

inline constexpr std::string_view kNullSender = "<>";

struct Address {
  std::string local;   // as written
  std::string domain;  // lower case; empty when the address has no '@'
  bool null = false;   // the null sender <>

  // "<User@Example.ORG>", "user@example.org", " <user@x> ", "<>", "<@relay:user@x>"
  // (source routes are dropped, as RFC 5321 allows).
  static Address parse(std::string_view raw);
  // "User@example.org", or "<>" for the null sender.
  std::string normalized() const;
  // "example.org", "<>" for the null sender, "" without a domain.
  std::string domainKey() const;
};

// What is known of a session when a rule is evaluated.
struct SessionFacts {
  std::optional<conf::IpAddress> client_ip;
  std::string client_ip_text;       // client_ip in canonical form, made once per session
  std::string helo;                 // lower case
  std::optional<Address> sender;    // from MAIL FROM
  std::string sasl_user;            // empty: not authenticated
};

// Set client_ip and client_ip_text from the MTA's text ("192.0.2.1", "IPv6:...").
void setClientAddress(SessionFacts& facts, std::string_view text);

// The longest key value kept as it is. An SMTP path is at most 256 octets (RFC 5321
// §4.5.3.1.3), and a HELO name or a SASL login of that length is already absurd. A
// longer value would make one key cost what the MTA let through (a 60 KB sender cost
// 59 KB per key), so max_keys would not bound the store.
inline constexpr std::size_t kMaxKeyBytes = 256;

// Replace the key value that starts at `start` in `out`, when it is longer than
// kMaxKeyBytes, by its digest form: its first bytes (at most 223, cut at a UTF-8
// boundary), '#', and 32 hex digits of the SHA-256 of the whole value; at most 256
// bytes. Two long values share a key only if their SHA-256 prefixes collide.
void boundKeyValue(std::string& out, std::size_t start);

// Append the key value a rule is counted under to `out`, or return false (leaving
// `out` as it was) when the rule does not apply to this session (no client IP for
// client_ip, not authenticated for sasl_user...). `rcpt` is the recipient being
// checked at the rcpt stage. Appending lets the hot path build "rule\0value" in one
// reused buffer. The value is bounded by boundKeyValue.
bool appendKey(const conf::Rule& rule, const SessionFacts& facts, const Address* rcpt, std::string& out);

// The same as a value.
std::optional<std::string> extractKey(const conf::Rule& rule, const SessionFacts& facts,
                                      const Address* rcpt);

// Lower-case ASCII copy.
std::string toLowerAscii(std::string_view s);

}  // namespace zetian::plugin
