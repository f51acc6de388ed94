#include "plugin/keys.h"

#include <algorithm>

namespace zetian::plugin {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::string toLowerAscii(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : char(c); });
  return out;
}

Address Address::parse(std::string_view raw) {
  std::string_view s = trim(raw);
  if (s.size() >= 2 && s.front() == '<' && s.back() == '>') s = trim(s.substr(1, s.size() - 2));
  // A source route "@relay1,@relay2:user@domain" is obsolete; the mailbox is what follows ':'.
  if (!s.empty() && s.front() == '@') {
    auto colon = s.find(':');
    s = colon == std::string_view::npos ? std::string_view{} : s.substr(colon + 1);
  }
  Address a;
  if (s.empty()) {
    a.null = true;
    return a;
  }
  // The domain starts after the last '@': a quoted local part may contain '@'.
  auto at = s.rfind('@');
  if (at == std::string_view::npos) {
    a.local = std::string(s);
  } else {
    a.local = std::string(s.substr(0, at));
    a.domain = toLowerAscii(s.substr(at + 1));
  }
  return a;
}

std::string Address::normalized() const {
  if (null) return std::string(kNullSender);
  if (domain.empty()) return local;
  return local + "@" + domain;
}

std::string Address::domainKey() const {
  if (null) return std::string(kNullSender);
  return domain;
}

std::optional<std::string> extractKey(const conf::Rule& rule, const SessionFacts& facts,
                                      const Address* rcpt) {
  using conf::KeyKind;
  switch (rule.key) {
    case KeyKind::ClientIp:
      if (!facts.client_ip) return std::nullopt;
      return facts.client_ip->toString();
    case KeyKind::ClientNet: {
      if (!facts.client_ip) return std::nullopt;
      int prefix = facts.client_ip->v4 ? rule.prefix_v4 : rule.prefix_v6;
      return facts.client_ip->masked(prefix).toString() + "/" + std::to_string(prefix);
    }
    case KeyKind::Helo:
      if (facts.helo.empty()) return std::nullopt;
      return facts.helo;
    case KeyKind::Sender:
      if (!facts.sender) return std::nullopt;
      return facts.sender->normalized();
    case KeyKind::SenderDomain:
      if (!facts.sender) return std::nullopt;
      return facts.sender->domainKey();
    case KeyKind::SaslUser:
      if (facts.sasl_user.empty()) return std::nullopt;
      return facts.sasl_user;
    case KeyKind::Rcpt:
      if (!rcpt) return std::nullopt;
      return rcpt->normalized();
    case KeyKind::RcptDomain:
      if (!rcpt) return std::nullopt;
      return rcpt->domainKey();
    case KeyKind::Global:
      return std::string("*");
  }
  return std::nullopt;
}

}  // namespace zetian::plugin
