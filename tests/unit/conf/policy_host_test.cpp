// [policy]: the policy-delegation host's section, and the two listeners together
// ([milter] socket = "" turns the milter off; one of them must listen, never both on
// one address).
#include <gtest/gtest.h>

#include "conf/syntax.h"
#include "tests/unit/conf/load_support.h"

namespace zetian::conf {
namespace {

using namespace std::chrono_literals;

TEST(PolicyHostConfig, OffByDefaultWithTheDocumentedLimits) {
  const Config c = good("");
  EXPECT_EQ(c.policy_host.socket, "");
  EXPECT_EQ(c.policy_host.max_connections, 1000);
  EXPECT_EQ(c.policy_host.idle_timeout, 10min);
  EXPECT_EQ(c.policy_host.request_timeout, 10s);
  EXPECT_EQ(c.policy_host.session_timeout, 10min);
  EXPECT_EQ(c.policy_host.max_sessions, 100000);
  EXPECT_EQ(c.policy_host.tempfail_action, PolicyTempfailAction::Reply);
  EXPECT_EQ(c.milter.socket, "inet:8891@127.0.0.1");
}

TEST(PolicyHostConfig, EveryKeyIsRead) {
  const Config c = good(R"(
[policy]
socket = "inet:10031@127.0.0.1"
max_connections = 64
idle_timeout = "5m"
request_timeout = "2s"
session_timeout = "1h30m"
max_sessions = 500
tempfail_action = "defer_if_permit"
)");
  EXPECT_EQ(c.policy_host.socket, "inet:10031@127.0.0.1");
  EXPECT_EQ(c.policy_host.max_connections, 64);
  EXPECT_EQ(c.policy_host.idle_timeout, 5min);
  EXPECT_EQ(c.policy_host.request_timeout, 2s);
  EXPECT_EQ(c.policy_host.session_timeout, 90min);
  EXPECT_EQ(c.policy_host.max_sessions, 500);
  EXPECT_EQ(c.policy_host.tempfail_action, PolicyTempfailAction::DeferIfPermit);
  EXPECT_EQ(c.milter.socket, "inet:8891@127.0.0.1");  // both listen
}

TEST(PolicyHostConfig, TheBoundsOfTheCountsAreAccepted) {
  const Config low = good("[policy]\nmax_connections = 1\nmax_sessions = 1\n");
  EXPECT_EQ(low.policy_host.max_connections, 1);
  EXPECT_EQ(low.policy_host.max_sessions, 1);
  const Config high = good("[policy]\nmax_connections = 1000000\nmax_sessions = 10000000\n");
  EXPECT_EQ(high.policy_host.max_connections, 1'000'000);
  EXPECT_EQ(high.policy_host.max_sessions, 10'000'000);
}

TEST(PolicyHostConfig, EverySocketFormOfTheMilterIsAccepted) {
  for (const char* socket : {"inet:10031", "inet:10031@127.0.0.1", "inet:10031@localhost", "inet6:10031@::1",
                             "inet6:10031", "unix:/run/zetian/policy.sock", "local:/run/zetian/policy.sock"}) {
    EXPECT_EQ(good(std::string("[policy]\nsocket = \"") + socket + "\"\n").policy_host.socket, socket);
  }
}

TEST(PolicyHostConfig, AnEmptyMilterSocketTurnsTheMilterOff) {
  const Config c = good("[milter]\nsocket = \"\"\n[policy]\nsocket = \"unix:/run/zetian/policy.sock\"\n");
  EXPECT_EQ(c.milter.socket, "");
  EXPECT_EQ(c.policy_host.socket, "unix:/run/zetian/policy.sock");
}

TEST(PolicyHostConfig, AnOverrideCanSwitchTheListeners) {
  const Config c = good("", {{"milter.socket", ""}, {"policy.socket", "inet:10031@127.0.0.1"}});
  EXPECT_EQ(c.milter.socket, "");
  EXPECT_EQ(c.policy_host.socket, "inet:10031@127.0.0.1");
}

TEST(PolicyHostConfigErrors, ABadSocketSaysWhy) {
  EXPECT_ERROR_AT(onlyError("[policy]\nsocket = \"10031\"\n"), 2, 10, "`policy.socket`: \"10031\" has no socket type");
  EXPECT_ERROR_AT(onlyError("[policy]\nsocket = \"tcp:10031@127.0.0.1\"\n"), 2, 10, "unknown socket type \"tcp\"");
  EXPECT_ERROR_AT(onlyError("[policy]\nsocket = \"inet:0@127.0.0.1\"\n"), 2, 10, "from 1 to 65535");
  EXPECT_ERROR_AT(onlyError("[policy]\nsocket = \"unix:policy.sock\"\n"), 2, 10, "must be absolute");
  EXPECT_ERROR_AT(onlyError("[policy]\nsocket = \"inet:10031@::1\"\n"), 2, 10, "use inet6:10031@::1");
  EXPECT_ERROR_AT(onlyError("[policy]\nsocket = 10031\n"), 2, 10, "must be a string");
}

TEST(PolicyHostConfigErrors, CountsOutOfRange) {
  EXPECT_ERROR_AT(onlyError("[policy]\nmax_connections = 0\n"), 2, 19, "`policy.max_connections` must be from 1 to 1000000, not 0");
  EXPECT_ERROR_AT(onlyError("[policy]\nmax_connections = 1000001\n"), 2, 19, "from 1 to 1000000");
  EXPECT_ERROR_AT(onlyError("[policy]\nmax_connections = \"10\"\n"), 2, 19, "must be an integer");
  EXPECT_ERROR_AT(onlyError("[policy]\nmax_sessions = 0\n"), 2, 16, "`policy.max_sessions` must be from 1 to 10000000, not 0");
  EXPECT_ERROR_AT(onlyError("[policy]\nmax_sessions = 10000001\n"), 2, 16, "from 1 to 10000000");
}

TEST(PolicyHostConfigErrors, TimeoutsMustBeDurationsAboveZero) {
  for (const char* key : {"idle_timeout", "request_timeout", "session_timeout"}) {
    const std::string k = key;
    const int column = static_cast<int>(k.size()) + 4;
    EXPECT_ERROR_AT(onlyError("[policy]\n" + k + " = \"0s\"\n"), 2, column, "`policy." + k + "` must be longer than 0s");
    EXPECT_ERROR_AT(onlyError("[policy]\n" + k + " = \"10\"\n"), 2, column, "needs a unit");
    EXPECT_ERROR_AT(onlyError("[policy]\n" + k + " = 10\n"), 2, column, "needs a unit");
    EXPECT_ERROR_AT(onlyError("[policy]\n" + k + " = \"1.5s\"\n"), 2, column, "whole numbers");
  }
}

TEST(PolicyHostConfigErrors, TempfailActionListsTheChoices) {
  EXPECT_ERROR_AT(onlyError("[policy]\ntempfail_action = \"defer\"\n"), 2, 19,
                  "must be one of reply, defer_if_permit, not \"defer\"");
}

TEST(PolicyHostConfigErrors, UnknownKeysGetADidYouMean) {
  EXPECT_ERROR_AT(onlyError("[policy]\nmax_conections = 5\n"), 2, 1, "did you mean `policy.max_connections`?");
  EXPECT_ERROR_AT(onlyError("[policy]\nsocke = \"inet:10031\"\n"), 2, 1, "did you mean `policy.socket`?");
  EXPECT_ERROR_AT(onlyError("[polcy]\nsocket = \"inet:10031\"\n"), 1, 2, "did you mean `policy`?");
}

TEST(PolicyHostConfigErrors, NothingToListenOn) {
  EXPECT_ERROR_AT(onlyError("[milter]\nsocket = \"\"\n"), 2, 10,
                  "nothing to listen on: set milter.socket or policy.socket (or both)");
  EXPECT_ERROR_AT(onlyError("[milter]\nsocket = \"\"\n[policy]\nsocket = \"\"\n"), 2, 10, "nothing to listen on");
  // Nowhere in the file to point at: the override is named.
  const auto e = onlyError("", {{"milter.socket", ""}});
  EXPECT_NE(e.message.find("nothing to listen on"), std::string::npos) << e.format();
}

TEST(PolicyHostConfigErrors, BothListenersOnOneAddressAreRefusedAtThePolicySocket) {
  EXPECT_ERROR_AT(onlyError("[milter]\nsocket = \"inet:8891@127.0.0.1\"\n[policy]\nsocket = \"inet:8891@127.0.0.1\"\n"), 4,
                  10, "`policy.socket` \"inet:8891@127.0.0.1\" is the same address as `milter.socket`");
  // The default milter socket counts.
  EXPECT_ERROR_AT(onlyError("[policy]\nsocket = \"inet:8891@127.0.0.1\"\n"), 2, 10, "same address as `milter.socket`");
  EXPECT_ERROR_AT(onlyError("[milter]\nsocket = \"unix:/run/z.sock\"\n[policy]\nsocket = \"local:/run/z.sock\"\n"), 4, 10,
                  "same address");
  EXPECT_ERROR_AT(onlyError("[policy]\nsocket = \"inet:8891\"\n"), 2, 10, "same address");
}

TEST(ListenersCollide, SamePathOrSamePortOnAnOverlappingHost) {
  EXPECT_TRUE(listenersCollide("unix:/run/a.sock", "local:/run/a.sock"));
  EXPECT_FALSE(listenersCollide("unix:/run/a.sock", "unix:/run/b.sock"));
  EXPECT_FALSE(listenersCollide("unix:/run/8891", "inet:8891"));
  EXPECT_TRUE(listenersCollide("inet:8891@127.0.0.1", "inet:8891@127.0.0.1"));
  EXPECT_TRUE(listenersCollide("inet:08891@127.0.0.1", "inet:8891@127.0.0.1"));  // one port, two spellings
  EXPECT_FALSE(listenersCollide("inet:8891@127.0.0.1", "inet:10031@127.0.0.1"));
  EXPECT_FALSE(listenersCollide("inet:8891@127.0.0.1", "inet:8891@127.0.0.2"));
  EXPECT_TRUE(listenersCollide("inet:8891@MX.example.net", "inet:8891@mx.example.net"));
  EXPECT_TRUE(listenersCollide("inet6:8891@::1", "inet6:8891@0:0::1"));
  // Every address of the family overlaps each of them.
  EXPECT_TRUE(listenersCollide("inet:8891", "inet:8891@127.0.0.1"));
  EXPECT_TRUE(listenersCollide("inet:8891@0.0.0.0", "inet:8891@127.0.0.1"));
  EXPECT_TRUE(listenersCollide("inet6:8891@::1", "inet6:8891@::"));
  // An IPv6 wildcard takes the IPv4 addresses too; an IPv4 one no IPv6 address.
  EXPECT_TRUE(listenersCollide("inet6:8891", "inet:8891@127.0.0.1"));
  EXPECT_FALSE(listenersCollide("inet:8891", "inet6:8891@::1"));
  EXPECT_FALSE(listenersCollide("inet:8891@127.0.0.1", "inet6:8891@::1"));
}

}  // namespace
}  // namespace zetian::conf
