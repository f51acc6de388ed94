#include "plugin/keys.h"

#include <openssl/sha.h>

#include <algorithm>

#include "conf/text.h"

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

void setClientAddress(SessionFacts& facts, std::string_view text) {
  facts.client_ip = conf::IpAddress::parse(text);
  facts.client_ip_text = facts.client_ip ? facts.client_ip->toString() : std::string();
}

namespace {

bool appendAddress(const Address& a, std::string& out) {
  if (a.null) {
    out += kNullSender;
  } else {
    out += a.local;
    if (!a.domain.empty()) {
      out += '@';
      out += a.domain;
    }
  }
  return true;
}

bool appendDomain(const Address& a, std::string& out) {
  out += a.null ? kNullSender : std::string_view(a.domain);
  return true;
}

constexpr std::size_t kDigestHexDigits = 32;  // 128 bits of the SHA-256
constexpr std::size_t kKeptPrefix = kMaxKeyBytes - 1 - kDigestHexDigits;

bool isUtf8Continuation(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

bool appendUnbounded(const conf::Rule& rule, const SessionFacts& facts, const Address* rcpt, std::string& out) {
  using conf::KeyKind;
  switch (rule.key) {
    case KeyKind::ClientIp:
      if (!facts.client_ip) return false;
      out += facts.client_ip_text;
      return true;
    case KeyKind::ClientNet: {
      if (!facts.client_ip) return false;
      int prefix = facts.client_ip->v4 ? rule.prefix_v4 : rule.prefix_v6;
      out += facts.client_ip->masked(prefix).toString();
      out += '/';
      out += std::to_string(prefix);
      return true;
    }
    case KeyKind::Helo:
      if (facts.helo.empty()) return false;
      out += facts.helo;
      return true;
    case KeyKind::Sender:
      return facts.sender && appendAddress(*facts.sender, out);
    case KeyKind::SenderDomain:
      return facts.sender && appendDomain(*facts.sender, out);
    case KeyKind::SaslUser:
      if (facts.sasl_user.empty()) return false;
      out += facts.sasl_user;
      return true;
    case KeyKind::Rcpt:
      return rcpt && appendAddress(*rcpt, out);
    case KeyKind::RcptDomain:
      return rcpt && appendDomain(*rcpt, out);
    case KeyKind::Global:
      out += '*';
      return true;
  }
  return false;
}

}  // namespace

void boundKeyValue(std::string& out, std::size_t start) {
  if (start > out.size() || out.size() - start <= kMaxKeyBytes) return;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(out.data() + start), out.size() - start, digest);
  // The kept prefix never ends inside a UTF-8 sequence, so a valid value stays valid.
  std::size_t keep = kKeptPrefix;
  while (keep > 0 && isUtf8Continuation(out[start + keep])) --keep;
  out.resize(start + keep);
  out += '#';
  for (std::size_t i = 0; i < kDigestHexDigits / 2; ++i) conf::appendHexEscape(out, "", digest[i]);
}

bool appendKey(const conf::Rule& rule, const SessionFacts& facts, const Address* rcpt, std::string& out) {
  const std::size_t start = out.size();
  if (!appendUnbounded(rule, facts, rcpt, out)) return false;
  if (out.size() - start > kMaxKeyBytes) boundKeyValue(out, start);
  return true;
}

std::optional<std::string> extractKey(const conf::Rule& rule, const SessionFacts& facts, const Address* rcpt) {
  std::string out;
  if (!appendKey(rule, facts, rcpt, out)) return std::nullopt;
  return out;
}

}  // namespace zetian::plugin
