// zetianctl's HTTP reply parsing.
#include "milter/ctl_http.h"

#include <gtest/gtest.h>

namespace zetian::milter {
namespace {

TEST(CtlHttp, ParsesAReplyWithContentLength) {
  HttpResponse r;
  std::string error;
  ASSERT_TRUE(parseHttpResponse(
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}", &r, &error))
      << error;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.reason, "OK");
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.body, "{}");
}

TEST(CtlHttp, ParsesAChunkedReply) {
  HttpResponse r;
  std::string error;
  ASSERT_TRUE(parseHttpResponse(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3;x=y\r\nefg\r\n0\r\n\r\n",
      &r, &error))
      << error;
  EXPECT_EQ(r.body, "abcdefg");
}

TEST(CtlHttp, ReadsToTheEndWithoutALength) {
  HttpResponse r;
  std::string error;
  ASSERT_TRUE(parseHttpResponse("HTTP/1.0 404 Not Found\r\n\r\nnope", &r, &error)) << error;
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, "nope");
}

TEST(CtlHttp, RefusesTruncatedOrMalformedReplies) {
  for (const char* bad : {"", "HTTP/1.1 200 OK\r\n", "SSH-2.0-OpenSSH\r\n\r\n",
                          "HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.1 abc OK\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
                          "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                          "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nab",
                          "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"}) {
    HttpResponse r;
    std::string error;
    EXPECT_FALSE(parseHttpResponse(bad, &r, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }
}

TEST(CtlHttp, PercentEncodesAllButUnreserved) {
  EXPECT_EQ(percentEncode("user+tag@example.com"), "user%2Btag%40example.com");
  EXPECT_EQ(percentEncode("a b&c=d/<>"), "a%20b%26c%3Dd%2F%3C%3E");
  EXPECT_EQ(percentEncode("AZaz09-._~"), "AZaz09-._~");
}

}  // namespace
}  // namespace zetian::milter
