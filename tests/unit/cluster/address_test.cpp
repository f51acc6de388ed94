#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include "cluster/listen_address.h"
#include "cluster/query_string.h"

namespace zetian::cluster {
namespace {

TEST(PercentDecode, DecodesEscapesAndKeepsPlusLiteral) {
  EXPECT_EQ(percentDecode("user%2Btag%40example.com"), "user+tag@example.com");
  EXPECT_EQ(percentDecode("a+b"), "a+b");  // mail addresses: '+' is not a space
  EXPECT_EQ(percentDecode("%3c%3E"), "<>");
  EXPECT_EQ(percentDecode("%C3%A9"), "\xc3\xa9");
  EXPECT_EQ(percentDecode(""), "");
}

TEST(PercentDecode, RefusesMalformedEscapesAndNul) {
  EXPECT_FALSE(percentDecode("%"));
  EXPECT_FALSE(percentDecode("%4"));
  EXPECT_FALSE(percentDecode("abc%4"));
  EXPECT_FALSE(percentDecode("%zz"));
  EXPECT_FALSE(percentDecode("%g0"));
  EXPECT_FALSE(percentDecode("%00"));
}

TEST(PercentEncode, RoundTripsEveryByteExceptNul) {
  std::string all;
  for (int c = 1; c < 256; ++c) all.push_back(static_cast<char>(c));
  const std::string encoded = percentEncode(all);
  EXPECT_EQ(encoded.find_first_not_of(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%"),
            std::string::npos);
  EXPECT_EQ(percentDecode(encoded), all);
}

TEST(ParseQuery, SplitsAndDecodes) {
  std::string error;
  const auto q = parseQuery("rule=per-ip&key=192.0.2.1%2F24&&flag", &error);
  ASSERT_TRUE(q) << error;
  EXPECT_EQ(q->size(), 3u);
  EXPECT_EQ(q->at("rule"), "per-ip");
  EXPECT_EQ(q->at("key"), "192.0.2.1/24");
  EXPECT_EQ(q->at("flag"), "");
}

TEST(ParseQuery, ValueMayContainEqualsSigns) {
  std::string error;
  const auto q = parseQuery("key=a=b", &error);
  ASSERT_TRUE(q);
  EXPECT_EQ(q->at("key"), "a=b");
}

TEST(ParseQuery, RefusesDuplicatesAndBadEscapes) {
  std::string error;
  EXPECT_FALSE(parseQuery("rule=a&rule=b", &error));
  EXPECT_NE(error.find("more than once"), std::string::npos) << error;
  EXPECT_FALSE(parseQuery("key=%zz", &error));
  EXPECT_NE(error.find("percent-escape"), std::string::npos) << error;
}

TEST(ParseListenAddress, AcceptsNumericV4AndBracketedV6) {
  std::string error;
  auto v4 = parseListenAddress("127.0.0.1:9187", &error);
  ASSERT_TRUE(v4) << error;
  EXPECT_EQ(v4->family, AF_INET);
  const auto* in4 = reinterpret_cast<const sockaddr_in*>(&v4->addr);
  EXPECT_EQ(ntohs(in4->sin_port), 9187);
  EXPECT_EQ(ntohl(in4->sin_addr.s_addr), INADDR_LOOPBACK);

  auto v6 = parseListenAddress("[::1]:0", &error);
  ASSERT_TRUE(v6) << error;
  EXPECT_EQ(v6->family, AF_INET6);
  EXPECT_EQ(v6->length, sizeof(sockaddr_in6));
}

TEST(ParseListenAddress, RefusesNamesAndSaysWhatToWrite) {
  std::string error;
  EXPECT_FALSE(parseListenAddress("localhost:9187", &error));
  EXPECT_NE(error.find("not a numeric IP address"), std::string::npos) << error;
  EXPECT_NE(error.find("127.0.0.1"), std::string::npos) << error;
}

TEST(ParseListenAddress, RefusesMalformedInput) {
  std::string error;
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", ":9187", "127.0.0.1:65536",
                          "127.0.0.1:-1", "127.0.0.1:80x", "::1:9187", "[::1]", "[::1]9187",
                          "[127.0.0.1]:80", "[::1:80", "1.2.3:80", "256.0.0.1:80"}) {
    EXPECT_FALSE(parseListenAddress(bad, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

}  // namespace
}  // namespace zetian::cluster
