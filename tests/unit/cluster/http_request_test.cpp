// The health server's request-head parser, one behaviour per test: what it accepts,
// and the status of everything it refuses (see cluster/http_request.h).
#include "cluster/http_request.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>

namespace zetian::cluster {
namespace {

struct Parsed {
  bool ok = false;
  Request req;
  ParseError error;
};

Parsed parse(std::string_view head) {
  Parsed p;
  p.ok = parseRequestHead(head, &p.req, &p.error);
  return p;
}

// Expects a refusal with `status`; the message must say something.
void expectRefused(std::string_view head, int status) {
  const Parsed p = parse(head);
  EXPECT_FALSE(p.ok) << head;
  EXPECT_EQ(p.error.status, status) << head;
  EXPECT_FALSE(p.error.message.empty()) << head;
}

TEST(HttpRequest, ParsesAGetWithPathAndQuery) {
  const Parsed p = parse("GET /limits?rule=a&key=b HTTP/1.1\r\nHost: localhost\r\n\r\n");
  ASSERT_TRUE(p.ok) << p.error.message;
  EXPECT_EQ(p.req.method, "GET");
  EXPECT_EQ(p.req.path, "/limits");
  EXPECT_EQ(p.req.query, "rule=a&key=b");
  EXPECT_EQ(p.req.content_length, 0u);
  EXPECT_TRUE(p.req.keep_alive);
  EXPECT_TRUE(p.req.authorization.empty());
}

TEST(HttpRequest, ParsesARequestLineWithNoFields) {
  const Parsed p = parse("GET /live HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(p.ok) << p.error.message;
  EXPECT_EQ(p.req.path, "/live");
  EXPECT_EQ(p.req.query, "");
}

TEST(HttpRequest, ParsesAPostWithContentLengthAndAuthorization) {
  const Parsed p = parse(
      "POST /reload HTTP/1.1\r\nAuthorization: Bearer s3cret\r\nContent-Length: 12\r\n\r\n");
  ASSERT_TRUE(p.ok) << p.error.message;
  EXPECT_EQ(p.req.method, "POST");
  EXPECT_EQ(p.req.path, "/reload");
  EXPECT_EQ(p.req.authorization, "Bearer s3cret");
  EXPECT_EQ(p.req.content_length, 12u);
}

TEST(HttpRequest, ParsesHeadAndKeepsTheMethodAsSent) {
  const Parsed head = parse("HEAD /health HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(head.ok);
  EXPECT_EQ(head.req.method, "HEAD");
  // Methods are case-sensitive: "get" is a different (unknown) method, the router's 405.
  const Parsed lower = parse("get /health HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(lower.ok);
  EXPECT_EQ(lower.req.method, "get");
}

TEST(HttpRequest, DropsTheFragmentAndSplitsAtTheFirstQuestionMark) {
  const Parsed p = parse("GET /limits?rule=a?b#frag?x HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.req.path, "/limits");
  EXPECT_EQ(p.req.query, "rule=a?b");
  const Parsed only_fragment = parse("GET /#x HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(only_fragment.ok);
  EXPECT_EQ(only_fragment.req.path, "/");
}

TEST(HttpRequest, LeavesThePathPercentEncoded) {
  const Parsed p = parse("GET /li%76e HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.req.path, "/li%76e");
}

TEST(HttpRequest, Http10ClosesUnlessKeepAliveIsAsked) {
  const Parsed plain = parse("GET /live HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(plain.ok);
  EXPECT_FALSE(plain.req.keep_alive);
  const Parsed asked = parse("GET /live HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
  ASSERT_TRUE(asked.ok);
  EXPECT_TRUE(asked.req.keep_alive);
}

TEST(HttpRequest, ConnectionCloseEndsAnHttp11Connection) {
  const Parsed p = parse("GET /live HTTP/1.1\r\nConnection: close\r\n\r\n");
  ASSERT_TRUE(p.ok);
  EXPECT_FALSE(p.req.keep_alive);
  const Parsed listed = parse("GET /live HTTP/1.1\r\nconnection: TE ,  CLOSE\r\n\r\n");
  ASSERT_TRUE(listed.ok);
  EXPECT_FALSE(listed.req.keep_alive);
  const Parsed other = parse("GET /live HTTP/1.1\r\nConnection: upgrade\r\n\r\n");
  ASSERT_TRUE(other.ok);
  EXPECT_TRUE(other.req.keep_alive);
}

TEST(HttpRequest, TheLastConnectionOptionNamedWins) {
  const Parsed p = parse("GET /live HTTP/1.1\r\nConnection: close, keep-alive\r\n\r\n");
  ASSERT_TRUE(p.ok);
  EXPECT_TRUE(p.req.keep_alive);
  const Parsed two = parse("GET /live HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n");
  ASSERT_TRUE(two.ok);
  EXPECT_FALSE(two.req.keep_alive);
}

TEST(HttpRequest, HeaderNamesAreCaseInsensitive) {
  const Parsed p = parse(
      "POST /reload HTTP/1.1\r\nAUTHORIZATION: Bearer t\r\ncontent-length: 3\r\nCoNnEcTiOn: close\r\n\r\n");
  ASSERT_TRUE(p.ok) << p.error.message;
  EXPECT_EQ(p.req.authorization, "Bearer t");
  EXPECT_EQ(p.req.content_length, 3u);
  EXPECT_FALSE(p.req.keep_alive);
  expectRefused("POST / HTTP/1.1\r\ntransfer-ENCODING: chunked\r\n\r\n", 501);
}

TEST(HttpRequest, TrimsSpacesAndTabsAroundValues) {
  const Parsed p = parse("POST /reload HTTP/1.1\r\nAuthorization:\t Bearer t \t\r\nContent-Length:  7 \r\n\r\n");
  ASSERT_TRUE(p.ok) << p.error.message;
  EXPECT_EQ(p.req.authorization, "Bearer t");
  EXPECT_EQ(p.req.content_length, 7u);
}

TEST(HttpRequest, KeepsTheFirstNonEmptyAuthorization) {
  const Parsed p = parse("POST /reload HTTP/1.1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n");
  ASSERT_TRUE(p.ok);
  EXPECT_EQ(p.req.authorization, "Bearer a");
  const Parsed after_empty = parse("POST /reload HTTP/1.1\r\nAuthorization:\r\nAuthorization: Bearer b\r\n\r\n");
  ASSERT_TRUE(after_empty.ok);
  EXPECT_EQ(after_empty.req.authorization, "Bearer b");
}

TEST(HttpRequest, IgnoresUnknownFieldsAndAcceptsObsTextInValues) {
  const Parsed p = parse("GET /live HTTP/1.1\r\nX-Custom: caf\xc3\xa9\r\nUser-Agent: curl/8\r\n\r\n");
  ASSERT_TRUE(p.ok) << p.error.message;
}

TEST(HttpRequest, RefusesOtherHttpVersionsWith505) {
  expectRefused("GET /live HTTP/2.0\r\n\r\n", 505);
  expectRefused("GET /live HTTP/0.9\r\n\r\n", 505);
  expectRefused("GET /live HTTP/1.2\r\n\r\n", 505);
}

TEST(HttpRequest, RefusesMalformedVersionsWith400) {
  expectRefused("GET /live HTTP/2\r\n\r\n", 400);
  expectRefused("GET /live http/1.1\r\n\r\n", 400);
  expectRefused("GET /live HTTP/1.10\r\n\r\n", 400);
  expectRefused("GET /live HTTP/a.b\r\n\r\n", 400);
  expectRefused("GET /live \r\n\r\n", 400);
}

TEST(HttpRequest, RefusesMalformedRequestLines) {
  expectRefused("GET /live\r\n\r\n", 400);                 // two parts
  expectRefused("GET\r\n\r\n", 400);                       // one part
  expectRefused("GET  /live HTTP/1.1\r\n\r\n", 400);       // double space
  expectRefused("GET /live HTTP/1.1 \r\n\r\n", 400);       // trailing space
  expectRefused("GET /a b HTTP/1.1\r\n\r\n", 400);         // space in the target
  expectRefused(" GET /live HTTP/1.1\r\n\r\n", 400);       // empty method
  expectRefused("G(T /live HTTP/1.1\r\n\r\n", 400);        // not a token
  expectRefused("GET\t/live\tHTTP/1.1\r\n\r\n", 400);      // tabs are not separators
  expectRefused("\r\nGET /live HTTP/1.1\r\n\r\n", 400);    // leading empty line
  expectRefused("\r\n\r\n", 400);
  expectRefused("GET /live HTTP/1.1\nHost: x\r\n\r\n", 400);  // bare LF ends no line
}

TEST(HttpRequest, RefusesTargetsThatAreNotOriginForm) {
  expectRefused("GET live HTTP/1.1\r\n\r\n", 400);
  expectRefused("GET http://localhost/live HTTP/1.1\r\n\r\n", 400);
  expectRefused("OPTIONS * HTTP/1.1\r\n\r\n", 400);
  expectRefused("CONNECT localhost:80 HTTP/1.1\r\n\r\n", 400);
}

TEST(HttpRequest, RefusesControlAndNonAsciiBytesInTheTarget) {
  expectRefused(std::string("GET /li\0ve HTTP/1.1\r\n\r\n", 24), 400);
  expectRefused("GET /li\x01ve HTTP/1.1\r\n\r\n", 400);
  expectRefused("GET /li\tve HTTP/1.1\r\n\r\n", 400);
  expectRefused("GET /li\x7fve HTTP/1.1\r\n\r\n", 400);
  expectRefused("GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", 400);
  expectRefused("GET /\xff HTTP/1.1\r\n\r\n", 400);
}

TEST(HttpRequest, RefusesObsoleteLineFolding) {
  expectRefused("GET /live HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n", 400);
  expectRefused("GET /live HTTP/1.1\r\nX-A: one\r\n\ttwo\r\n\r\n", 400);
  // A folded line that happens to hold a colon is no better.
  expectRefused("GET /live HTTP/1.1\r\nX-A: one\r\n Content-Length: 5\r\n\r\n", 400);
}

TEST(HttpRequest, RefusesMalformedFieldLines) {
  expectRefused("GET /live HTTP/1.1\r\nNoColon\r\n\r\n", 400);
  expectRefused("GET /live HTTP/1.1\r\n: value\r\n\r\n", 400);
  expectRefused("GET /live HTTP/1.1\r\nContent-Length : 5\r\n\r\n", 400);  // space before the colon
  expectRefused("GET /live HTTP/1.1\r\nX\x01Y: 1\r\n\r\n", 400);
  expectRefused("GET /live HTTP/1.1\r\nX-A: a\x01z\r\n\r\n", 400);
  expectRefused("GET /live HTTP/1.1\r\nX-A: a\x7fz\r\n\r\n", 400);
  expectRefused("GET /live HTTP/1.1\r\nX-A: a\rz\r\n\r\n", 400);  // bare CR
  expectRefused("GET /live HTTP/1.1\r\nX-A: a\nz\r\n\r\n", 400);  // bare LF
  expectRefused(std::string("GET /live HTTP/1.1\r\nX-A: a\0z\r\n\r\n", 31), 400);
}

TEST(HttpRequest, RefusesAHeadThatDoesNotEndAtItsFirstEmptyLine) {
  expectRefused("", 400);
  expectRefused("GET /live HTTP/1.1", 400);
  expectRefused("GET /live HTTP/1.1\r\n", 400);
  expectRefused("GET /live HTTP/1.1\r\nHost: x\r\n", 400);
  // A second request (or a body) after the empty line is not part of this head.
  expectRefused("GET /live HTTP/1.1\r\n\r\nGET /live HTTP/1.1\r\n\r\n", 400);
}

TEST(HttpRequest, RefusesMalformedContentLength) {
  for (const char* value : {"", "-1", "+5", "5, 5", "0x10", "1e3", "5 5", "five", "\t"}) {
    expectRefused(std::string("POST /reload HTTP/1.1\r\nContent-Length: ") + value + "\r\n\r\n", 400);
  }
}

TEST(HttpRequest, RefusesConflictingContentLengths) {
  // Two framings of one request are the classic smuggling vector.
  expectRefused("POST /reload HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
  expectRefused("POST /reload HTTP/1.1\r\nContent-Length: 0\r\ncontent-length: 100\r\n\r\n", 400);
  // Past what std::size_t holds, both would saturate: they still differ.
  expectRefused(
      "POST /reload HTTP/1.1\r\nContent-Length: 100000000000000000000\r\n"
      "Content-Length: 200000000000000000000\r\n\r\n",
      400);
}

TEST(HttpRequest, AcceptsRepeatedEqualContentLengths) {
  const Parsed p = parse("POST /reload HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 005\r\n\r\n");
  ASSERT_TRUE(p.ok) << p.error.message;
  EXPECT_EQ(p.req.content_length, 5u);
}

TEST(HttpRequest, LeadingZerosDoNotInflateTheLength) {
  const Parsed p = parse("POST /reload HTTP/1.1\r\nContent-Length: 0000000000000000000000000042\r\n\r\n");
  ASSERT_TRUE(p.ok) << p.error.message;
  EXPECT_EQ(p.req.content_length, 42u);
  const Parsed zero = parse("POST /reload HTTP/1.1\r\nContent-Length: 000\r\n\r\n");
  ASSERT_TRUE(zero.ok);
  EXPECT_EQ(zero.req.content_length, 0u);
}

TEST(HttpRequest, AHugeContentLengthSaturatesInsteadOfWrapping) {
  const Parsed max18 = parse("POST /reload HTTP/1.1\r\nContent-Length: 999999999999999999\r\n\r\n");
  ASSERT_TRUE(max18.ok);
  EXPECT_EQ(max18.req.content_length, 999999999999999999u);
  // 2^64 + 1 would wrap to 1 with a naive parse.
  const Parsed wrapped = parse("POST /reload HTTP/1.1\r\nContent-Length: 18446744073709551617\r\n\r\n");
  ASSERT_TRUE(wrapped.ok);
  EXPECT_EQ(wrapped.req.content_length, std::numeric_limits<std::size_t>::max());
  const Parsed long_digits = parse("POST /reload HTTP/1.1\r\nContent-Length: " + std::string(200, '9') + "\r\n\r\n");
  ASSERT_TRUE(long_digits.ok);
  EXPECT_EQ(long_digits.req.content_length, std::numeric_limits<std::size_t>::max());
}

TEST(HttpRequest, RefusesAnyTransferEncodingWith501) {
  expectRefused("POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501);
  expectRefused("POST /reload HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", 501);
  expectRefused("POST /reload HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 501);
  expectRefused("POST /reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 501);
}

TEST(HttpRequest, LeavesTheRequestUntouchedOnFailure) {
  Request req;
  req.method = "KEEP";
  req.path = "/kept";
  req.content_length = 7;
  ParseError error;
  EXPECT_FALSE(parseRequestHead("GET /live HTTP/1.1\r\nContent-Length: x\r\n\r\n", &req, &error));
  EXPECT_EQ(req.method, "KEEP");
  EXPECT_EQ(req.path, "/kept");
  EXPECT_EQ(req.content_length, 7u);
  EXPECT_EQ(error.status, 400);
  EXPECT_EQ(error.message, "malformed Content-Length");
}

}  // namespace
}  // namespace zetian::cluster
