// libFuzzer target for everything the engine takes from the SMTP dialogue (through
// the MTA, so from any client on the Internet): addresses, client addresses, HELO
// names, and reply rendering with those values as %{key}. None of it may crash, and
// the invariants the rest of the engine relies on must hold for any bytes:
//   - a parsed address is either the null sender or has no '<' '>' wrapping;
//   - a rendered reply never contains CR, LF or NUL (it goes on an SMTP line).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "conf/net.h"
#include "plugin/keys.h"
#include "plugin/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace zetian;
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  plugin::Address a = plugin::Address::parse(text);
  if (a.null && (!a.local.empty() || !a.domain.empty())) std::abort();
  (void)a.normalized();
  (void)a.domainKey();

  plugin::SessionFacts facts;
  plugin::setClientAddress(facts, text);
  if (facts.client_ip) {
    // A canonical address must parse back to itself.
    auto again = conf::IpAddress::parse(facts.client_ip_text);
    if (!again || !(*again == *facts.client_ip)) std::abort();
    (void)facts.client_ip->masked(static_cast<int>(size % 129));
  }
  std::string error;
  if (auto cidr = conf::Cidr::parse(text, &error)) {
    if (facts.client_ip) (void)cidr->contains(*facts.client_ip);
    (void)cidr->toString();
  }

  facts.helo = plugin::toLowerAscii(text);
  facts.sender = a;
  facts.sasl_user = std::string(text);
  conf::Rule rule;
  rule.name = "fuzz";
  rule.limit = 10;
  rule.period = std::chrono::hours(1);
  rule.burst = 10;
  for (auto kind : {conf::KeyKind::ClientIp, conf::KeyKind::ClientNet, conf::KeyKind::Helo, conf::KeyKind::Sender,
                    conf::KeyKind::SenderDomain, conf::KeyKind::SaslUser, conf::KeyKind::Rcpt,
                    conf::KeyKind::RcptDomain, conf::KeyKind::Global}) {
    rule.key = kind;
    auto key = plugin::extractKey(rule, facts, &a);
    if (!key) continue;
    rule.action = conf::Action::Tempfail;
    rule.reply = "451 4.7.1 %{rule} %{key} %{limit}/%{period} %{retry_after}";
    plugin::Reply r = plugin::renderReply(rule, *key, static_cast<std::int64_t>(size) * 1'000'000);
    for (char c : r.text)
      if (c == '\r' || c == '\n' || c == '\0') std::abort();
    if (r.text.size() > plugin::kMaxReplyText) std::abort();
  }
  return 0;
}
