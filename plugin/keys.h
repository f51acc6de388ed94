// Turning what the MTA tells us into rate-limit keys.
//
// Mail addresses are compared the way SMTP means them: the domain is
// case-insensitive, the local part is kept as written (RFC 5321 §2.4 leaves its case
// to the receiving host). The null sender `<>` of bounces is its own key value,
// "<>", which no real address or domain can spell, so it is never confused with an
// empty or missing address.
#pragma once

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

// Append the key value a rule is counted under to `out`, or return false (leaving
// `out` as it was) when the rule does not apply to this session (no client IP for
// client_ip, not authenticated for sasl_user...). `rcpt` is the recipient being
// checked at the rcpt stage. Appending lets the hot path build "rule\0value" in one
// reused buffer.
bool appendKey(const conf::Rule& rule, const SessionFacts& facts, const Address* rcpt, std::string& out);

// The same as a value.
std::optional<std::string> extractKey(const conf::Rule& rule, const SessionFacts& facts,
                                      const Address* rcpt);

// Lower-case ASCII copy.
std::string toLowerAscii(std::string_view s);

}  // namespace zetian::plugin
