#include <gtest/gtest.h>

#include "conf/net.h"

namespace zetian::conf {
namespace {

IpAddress ip(std::string_view text) {
  auto a = IpAddress::parse(text);
  EXPECT_TRUE(a.has_value()) << text;
  return a.value_or(IpAddress{});
}

Cidr cidr(std::string_view text) {
  std::string why;
  auto c = Cidr::parse(text, &why);
  EXPECT_TRUE(c.has_value()) << text << ": " << why;
  return c.value_or(Cidr{});
}

TEST(IpAddress, ParsesIpv4) {
  const auto a = ip("192.0.2.1");
  EXPECT_TRUE(a.v4);
  EXPECT_EQ(a.toString(), "192.0.2.1");
  EXPECT_EQ(a.bytes[10], 0xff);
  EXPECT_EQ(a.bytes[11], 0xff);
  EXPECT_EQ(a.bytes[15], 1);
}

TEST(IpAddress, RefusesMalformedIpv4) {
  for (auto bad : {"192.0.2", "192.0.2.256", "192.0.2.1.5", "01.2.3.4", "a.b.c.d", "", " 192.0.2.1", "192.0.2.1/24"}) {
    EXPECT_FALSE(IpAddress::parse(bad).has_value()) << bad;
  }
}

TEST(IpAddress, ParsesIpv6InEveryCompressedForm) {
  EXPECT_EQ(ip("2001:db8:0:0:0:0:0:1"), ip("2001:db8::1"));
  EXPECT_EQ(ip("2001:0db8:0000:0000:0000:0000:0000:0001"), ip("2001:db8::1"));
  EXPECT_EQ(ip("::"), ip("0:0:0:0:0:0:0:0"));
  EXPECT_EQ(ip("::1").toString(), "::1");
  EXPECT_EQ(ip("2001:DB8::A").toString(), "2001:db8::a");
  EXPECT_EQ(ip("2001:db8:0:0:1:0:0:1").toString(), "2001:db8::1:0:0:1");  // first longest run
  EXPECT_EQ(ip("2001:db8:0:1:1:1:1:1").toString(), "2001:db8:0:1:1:1:1:1");  // one zero group stays
  EXPECT_EQ(ip("fe80::").toString(), "fe80::");
  EXPECT_FALSE(ip("2001:db8::1").v4);
}

TEST(IpAddress, RefusesMalformedIpv6) {
  for (auto bad : {"2001:db8:::1", "2001::db8::1", "1:2:3:4:5:6:7:8:9", "2001:db8::g", "fe80::1%eth0", "[::1", "IPv6:1.2.3.4"}) {
    EXPECT_FALSE(IpAddress::parse(bad).has_value()) << bad;
  }
}

TEST(IpAddress, Ipv4MappedIsIpv4) {
  const auto a = ip("::ffff:192.0.2.1");
  EXPECT_TRUE(a.v4);
  EXPECT_EQ(a, ip("192.0.2.1"));
  EXPECT_EQ(a.toString(), "192.0.2.1");
  EXPECT_EQ(ip("::ffff:c000:201"), ip("192.0.2.1"));
}

TEST(IpAddress, AcceptsBracketsAndPostfixIpv6Tag) {
  EXPECT_EQ(ip("[::1]"), ip("::1"));
  EXPECT_EQ(ip("IPv6:2001:db8::1"), ip("2001:db8::1"));
  EXPECT_EQ(ip("ipv6:2001:db8::1"), ip("2001:db8::1"));
  EXPECT_EQ(ip("[IPv6:2001:db8::1]"), ip("2001:db8::1"));
  EXPECT_EQ(ip("[192.0.2.1]"), ip("192.0.2.1"));
}

TEST(IpAddress, MaskedCountsBitsInTheFamily) {
  EXPECT_EQ(ip("192.0.2.77").masked(24), ip("192.0.2.0"));
  EXPECT_EQ(ip("192.0.2.77").masked(0), ip("0.0.0.0"));
  EXPECT_EQ(ip("192.0.2.77").masked(32), ip("192.0.2.77"));
  EXPECT_EQ(ip("192.0.2.77").masked(25), ip("192.0.2.0"));
  EXPECT_EQ(ip("192.0.2.200").masked(25), ip("192.0.2.128"));
  EXPECT_TRUE(ip("192.0.2.77").masked(8).v4);
  EXPECT_EQ(ip("2001:db8:1234:5678::1").masked(48), ip("2001:db8:1234::"));
  EXPECT_EQ(ip("2001:db8:1234:5678::1").masked(64), ip("2001:db8:1234:5678::"));
  EXPECT_EQ(ip("2001:db8::ff").masked(127), ip("2001:db8::fe"));
  EXPECT_EQ(ip("2001:db8::1").masked(0), ip("::"));
}

TEST(Cidr, ParsesNetworksAndBareAddresses) {
  EXPECT_EQ(cidr("10.0.0.0/8").toString(), "10.0.0.0/8");
  EXPECT_EQ(cidr("2001:db8::/32").toString(), "2001:db8::/32");
  EXPECT_EQ(cidr("192.0.2.1").prefix_len, 32);
  EXPECT_EQ(cidr("::1").prefix_len, 128);
  EXPECT_EQ(cidr("0.0.0.0/0").prefix_len, 0);
  EXPECT_EQ(cidr("::/0").prefix_len, 0);
}

TEST(Cidr, RefusesHostBitsAndSaysWhatWasMeant) {
  std::string why;
  EXPECT_FALSE(Cidr::parse("10.0.0.1/8", &why));
  EXPECT_NE(why.find("host bits"), std::string::npos) << why;
  EXPECT_NE(why.find("10.0.0.0/8"), std::string::npos) << why;
  EXPECT_FALSE(Cidr::parse("2001:db8::1/64", &why));
  EXPECT_NE(why.find("2001:db8::/64"), std::string::npos) << why;
}

TEST(Cidr, RefusesBadPrefixes) {
  for (auto bad : {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x", "10.0.0.0/ 8", "nope/8", "/8"}) {
    std::string why;
    EXPECT_FALSE(Cidr::parse(bad, &why).has_value()) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
}

TEST(Cidr, ContainsWithinTheSameFamily) {
  EXPECT_TRUE(cidr("127.0.0.0/8").contains(ip("127.1.2.3")));
  EXPECT_FALSE(cidr("127.0.0.0/8").contains(ip("128.0.0.1")));
  EXPECT_TRUE(cidr("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
  EXPECT_FALSE(cidr("2001:db8::/32").contains(ip("2001:db9::1")));
  EXPECT_TRUE(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
  EXPECT_TRUE(cidr("192.0.2.1").contains(ip("192.0.2.1")));
  EXPECT_FALSE(cidr("192.0.2.1").contains(ip("192.0.2.2")));
}

TEST(Cidr, ContainsAcrossFamilies) {
  // An IPv4 block holds the IPv4-mapped form of its addresses...
  EXPECT_TRUE(cidr("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
  EXPECT_TRUE(cidr("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
  EXPECT_EQ(cidr("::ffff:10.0.0.0/104").toString(), "10.0.0.0/8");
  // ...but never an IPv6 address, and an IPv6 block never an IPv4 one.
  EXPECT_FALSE(cidr("0.0.0.0/0").contains(ip("::1")));
  EXPECT_FALSE(cidr("::/0").contains(ip("127.0.0.1")));
  EXPECT_FALSE(cidr("::1/128").contains(ip("127.0.0.1")));
  EXPECT_TRUE(cidr("::1/128").contains(ip("[::1]")));
  EXPECT_TRUE(cidr("2001:db8::/32").contains(ip("IPv6:2001:db8::25")));
}

}  // namespace
}  // namespace zetian::conf
