// HealthRoutes on its own, without sockets or a loop: what the trust rule admits, and
// that a route answered later asks the engine only when the server starts it.
// health_server_test.cpp covers the same routes through a real server.
#include "cluster/health_routes.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

#include "tests/unit/cluster/test_support.h"

namespace zetian::cluster {
namespace {

Request requestFor(const std::string& method, const std::string& path, const std::string& query = "",
                   const std::string& authorization = "") {
  Request req;
  req.method = method;
  req.path = path;
  req.query = query;
  req.authorization = authorization;
  return req;
}

TEST(HealthRoutesTest, UntrustedChangesNeedTheBearerTokenAndTrustedOnesNothing) {
  testing::FakeAdmin api;
  const HealthRoutes routes(api, "s3cret-token");
  EXPECT_FALSE(routes.admit(requestFor("POST", "/reload"), true).has_value());
  EXPECT_FALSE(routes.admit(requestFor("GET", "/health"), false).has_value());
  // The scheme is case-blind (RFC 9110), the token is not.
  EXPECT_FALSE(routes.admit(requestFor("POST", "/reload", "", "bearer s3cret-token"), false).has_value());
  for (const char* presented : {"", "Bearer s3cret-toke", "Bearer s3cret-token-and-more", "Basic s3cret-token"}) {
    const auto refused = routes.admit(requestFor("PUT", "/policy", "", presented), false);
    ASSERT_TRUE(refused.has_value()) << presented;
    EXPECT_EQ(refused->status, 403) << presented;
  }

  const HealthRoutes no_token(api, "");
  const auto refused = no_token.admit(requestFor("POST", "/reload", "", "Bearer "), false);
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->status, 403);
  EXPECT_NE(refused->body.find("admin_token"), std::string::npos) << refused->body;
  EXPECT_TRUE(api.calls().empty());
}

TEST(HealthRoutesTest, RoutingErrorsComeBeforeTheTrustCheck) {
  testing::FakeAdmin api;
  const HealthRoutes routes(api, "t");
  const auto unknown = routes.admit(requestFor("POST", "/nope"), false);
  ASSERT_TRUE(unknown.has_value());
  EXPECT_EQ(unknown->status, 404);
  const auto wrong_method = routes.admit(requestFor("DELETE", "/policy"), false);
  ASSERT_TRUE(wrong_method.has_value());
  EXPECT_EQ(wrong_method->status, 405);
  EXPECT_EQ(wrong_method->allow, "GET, HEAD, PUT");
}

TEST(HealthRoutesTest, ARouteAnsweredLaterAsksTheEngineOnlyWhenStarted) {
  testing::FakeAdmin api;
  HealthRoutes routes(api, "");
  HealthReply reply = routes.handle(requestFor("POST", "/cluster/remove", "node=n2"), true, "");
  ASSERT_TRUE(reply.later);
  EXPECT_TRUE(api.calls().empty());

  std::optional<AdminReply> answer;
  reply.later([&](AdminReply r) { answer = std::move(r); });
  ASSERT_TRUE(answer.has_value());
  EXPECT_EQ(answer->status, 200);
  ASSERT_EQ(api.calls().size(), 1u);
  EXPECT_EQ(api.calls()[0], "clusterRemove(|n2)");
}

TEST(HealthRoutesTest, ABadQueryIsRefusedWithoutAskingTheEngine) {
  testing::FakeAdmin api;
  HealthRoutes routes(api, "");
  struct Case {
    const char* method;
    const char* path;
    const char* query;
  };
  for (const Case& c : {Case{"GET", "/policy", "x=1"}, Case{"POST", "/cluster/remove", ""},
                        Case{"GET", "/limits", "limit=0"}, Case{"POST", "/maintenance", "state=maybe"}}) {
    const HealthReply reply = routes.handle(requestFor(c.method, c.path, c.query), true, "");
    EXPECT_EQ(reply.status, 400) << c.method << " " << c.path << "?" << c.query;
    EXPECT_FALSE(reply.later) << c.path;
  }
  EXPECT_TRUE(api.calls().empty());
}

}  // namespace
}  // namespace zetian::cluster
