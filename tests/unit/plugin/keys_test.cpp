#include "plugin/keys.h"

#include <gtest/gtest.h>

namespace zetian::plugin {
namespace {

conf::Rule ruleWithKey(conf::KeyKind key) {
  conf::Rule r;
  r.name = "r";
  r.key = key;
  return r;
}

TEST(Address, DomainIsCaseInsensitiveLocalPartKeptAsWritten) {
  auto a = Address::parse("<John.Doe@Example.ORG>");
  EXPECT_EQ(a.local, "John.Doe");
  EXPECT_EQ(a.domain, "example.org");
  EXPECT_EQ(a.normalized(), "John.Doe@example.org");
  EXPECT_FALSE(a.null);
}

TEST(Address, AngleBracketsAndSpacesAreOptional) {
  EXPECT_EQ(Address::parse("user@example.org").normalized(), "user@example.org");
  EXPECT_EQ(Address::parse("  <user@EXAMPLE.org>  ").normalized(), "user@example.org");
}

TEST(Address, NullSenderIsItsOwnKeyNeverEmpty) {
  auto a = Address::parse("<>");
  EXPECT_TRUE(a.null);
  EXPECT_EQ(a.normalized(), "<>");
  EXPECT_EQ(a.domainKey(), "<>");
  EXPECT_TRUE(Address::parse("< >").null);
}

TEST(Address, AddressWithoutDomainHasEmptyDomainKeyNotNull) {
  auto a = Address::parse("<postmaster>");
  EXPECT_FALSE(a.null);
  EXPECT_EQ(a.normalized(), "postmaster");
  EXPECT_EQ(a.domainKey(), "");
}

TEST(Address, SourceRouteIsDropped) {
  EXPECT_EQ(Address::parse("<@relay.example:user@Example.net>").normalized(), "user@example.net");
}

TEST(Address, QuotedLocalPartWithAtUsesLastAt) {
  auto a = Address::parse("<\"a@b\"@Example.com>");
  EXPECT_EQ(a.local, "\"a@b\"");
  EXPECT_EQ(a.domain, "example.com");
}

TEST(ExtractKey, ClientIpV4AndV6) {
  SessionFacts f;
  setClientAddress(f, "192.0.2.7");
  EXPECT_EQ(*extractKey(ruleWithKey(conf::KeyKind::ClientIp), f, nullptr), "192.0.2.7");
  setClientAddress(f, "2001:DB8::1");
  EXPECT_EQ(*extractKey(ruleWithKey(conf::KeyKind::ClientIp), f, nullptr), "2001:db8::1");
}

TEST(ExtractKey, ClientNetUsesTheFamilysPrefix) {
  auto rule = ruleWithKey(conf::KeyKind::ClientNet);
  rule.prefix_v4 = 24;
  rule.prefix_v6 = 48;
  SessionFacts f;
  setClientAddress(f, "198.51.100.77");
  EXPECT_EQ(*extractKey(rule, f, nullptr), "198.51.100.0/24");
  setClientAddress(f, "2001:db8:abcd:12::5");
  EXPECT_EQ(*extractKey(rule, f, nullptr), "2001:db8:abcd::/48");
}

TEST(ExtractKey, RuleDoesNotApplyWithoutTheFact) {
  SessionFacts f;
  EXPECT_FALSE(extractKey(ruleWithKey(conf::KeyKind::ClientIp), f, nullptr));
  EXPECT_FALSE(extractKey(ruleWithKey(conf::KeyKind::SaslUser), f, nullptr));
  EXPECT_FALSE(extractKey(ruleWithKey(conf::KeyKind::Sender), f, nullptr));
  EXPECT_FALSE(extractKey(ruleWithKey(conf::KeyKind::Rcpt), f, nullptr));
  EXPECT_EQ(*extractKey(ruleWithKey(conf::KeyKind::Global), f, nullptr), "*");
}

TEST(ExtractKey, SenderDomainAndRecipientKeys) {
  SessionFacts f;
  f.sender = Address::parse("<Alice@Mail.Example.COM>");
  EXPECT_EQ(*extractKey(ruleWithKey(conf::KeyKind::Sender), f, nullptr), "Alice@mail.example.com");
  EXPECT_EQ(*extractKey(ruleWithKey(conf::KeyKind::SenderDomain), f, nullptr), "mail.example.com");
  auto rcpt = Address::parse("<Bob@Dest.example>");
  EXPECT_EQ(*extractKey(ruleWithKey(conf::KeyKind::Rcpt), f, &rcpt), "Bob@dest.example");
  EXPECT_EQ(*extractKey(ruleWithKey(conf::KeyKind::RcptDomain), f, &rcpt), "dest.example");
}

TEST(ExtractKey, NullSenderDomainIsTheNullKey) {
  SessionFacts f;
  f.sender = Address::parse("<>");
  EXPECT_EQ(*extractKey(ruleWithKey(conf::KeyKind::SenderDomain), f, nullptr), "<>");
  EXPECT_EQ(*extractKey(ruleWithKey(conf::KeyKind::Sender), f, nullptr), "<>");
}

}  // namespace
}  // namespace zetian::plugin
