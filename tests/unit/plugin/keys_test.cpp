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

// ---------------------------------------------------------------- key size

std::string senderKey(const std::string& address) {
  SessionFacts f;
  f.sender = Address::parse("<" + address + ">");
  return *extractKey(ruleWithKey(conf::KeyKind::Sender), f, nullptr);
}

TEST(KeysCap, AKeyUpToTheLongestSmtpPathIsKeptAsItIs) {
  const std::string local(256 - std::string("@example.org").size(), 'a');
  const std::string address = local + "@example.org";
  ASSERT_EQ(address.size(), kMaxKeyBytes);
  EXPECT_EQ(senderKey(address), address);
}

TEST(KeysCap, ALongerKeyIsBoundedAndKeepsItsStart) {
  const std::string address = std::string(60 * 1024, 'x') + "@example.org";
  const std::string key = senderKey(address);
  EXPECT_LE(key.size(), kMaxKeyBytes);
  EXPECT_EQ(key.substr(0, 200), address.substr(0, 200));
  EXPECT_EQ(key, senderKey(address)) << "the same value always gives the same key";
  EXPECT_EQ(senderKey(std::string(257 - 12, 'y') + "@example.org").size(), kMaxKeyBytes);
}

TEST(KeysCap, TwoLongKeysThatDifferOnlyAtTheEndStayDistinct) {
  const std::string common(60 * 1024, 'x');
  const std::string a = senderKey(common + "a@example.org");
  const std::string b = senderKey(common + "b@example.org");
  EXPECT_NE(a, b);
  EXPECT_LE(a.size(), kMaxKeyBytes);
  EXPECT_LE(b.size(), kMaxKeyBytes);
  // Nor does a long value collide with the short value it starts with.
  EXPECT_NE(senderKey(common.substr(0, 223) + "@example.org"), a);
}

TEST(KeysCap, EveryKeyKindIsBounded) {
  SessionFacts f;
  f.helo = std::string(5000, 'h');
  f.sasl_user = std::string(5000, 'u');
  f.sender = Address::parse("<s@" + std::string(5000, 'd') + ">");
  const auto rcpt = Address::parse("<r@" + std::string(5000, 'e') + ">");
  for (auto kind : {conf::KeyKind::Helo, conf::KeyKind::SaslUser, conf::KeyKind::Sender, conf::KeyKind::SenderDomain,
                    conf::KeyKind::Rcpt, conf::KeyKind::RcptDomain}) {
    const auto key = extractKey(ruleWithKey(kind), f, &rcpt);
    ASSERT_TRUE(key.has_value());
    EXPECT_LE(key->size(), kMaxKeyBytes) << static_cast<int>(kind);
  }
}

TEST(KeysCap, OnlyTheValueAfterWhatIsAlreadyInTheBufferIsBounded) {
  // The engine builds "rule\0value" in one buffer: the rule's name is not counted.
  SessionFacts f;
  f.helo = std::string(1000, 'h');
  std::string buffer = std::string(64, 'r') + '\0';
  ASSERT_TRUE(appendKey(ruleWithKey(conf::KeyKind::Helo), f, nullptr, buffer));
  EXPECT_EQ(buffer.substr(0, 65), std::string(64, 'r') + '\0');
  EXPECT_EQ(buffer.size(), 65 + kMaxKeyBytes);
  EXPECT_EQ(buffer.substr(65), *extractKey(ruleWithKey(conf::KeyKind::Helo), f, nullptr));
}

TEST(KeysCap, TheKeptStartIsNeverCutInsideAUtf8Character) {
  // "ab" then two-byte characters: the 224th byte is the second half of one of them.
  std::string helo = "ab";
  while (helo.size() < 600) helo += "\xc3\xa9";
  SessionFacts f;
  f.helo = helo;
  const std::string key = *extractKey(ruleWithKey(conf::KeyKind::Helo), f, nullptr);
  const auto hash = key.rfind('#');
  ASSERT_NE(hash, std::string::npos);
  EXPECT_EQ(hash, 222u) << "222 bytes: \"ab\" and 110 whole characters";
  EXPECT_EQ(key.substr(0, hash), helo.substr(0, hash));
  EXPECT_EQ(key.size() - hash - 1, 32u);
}

}  // namespace
}  // namespace zetian::plugin
