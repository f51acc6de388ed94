// Loop-owned objects stop the process when used from another thread, in every build
// (these tests run against the Release build, where assert() would be compiled out).
//
// Each death test builds its objects inside the statement, so only the child process
// (a fresh exec of this binary: the "threadsafe" style, safe with the threads a Loop
// starts) ever owns them; the parent only watches the child die.
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "cluster/health_server.h"
#include "cluster/loop.h"
#include "cluster/node.h"
#include "cluster/owner_thread.h"
#include "cluster/transport/peer_link.h"
#include "test_support.h"

namespace zetian::cluster {
namespace {

using namespace std::chrono_literals;

// The line every violation prints: which method was called, on which thread, and whose
// the object is.
// Clang's __builtin_FUNCTION() (owner_thread.h's CallSite there) names the method
// alone, "after" for GCC's "...Loop::after(...)", so under Clang the class and the
// parameter list are optional.
std::string violation(const std::string& method) {
#if defined(__clang__)
  std::string bare = method;
  if (bare.ends_with("\\(\\)")) bare.resize(bare.size() - 4);  // no parameter list either
  const auto colons = bare.rfind("::");
  const std::string name =
      colons == std::string::npos ? bare : "(" + bare.substr(0, colons + 2) + ")?" + bare.substr(colons + 2);
#else
  const std::string& name = method;
#endif
  return "thread ownership violated: .*" + name + ".* called on thread .* but the object belongs to ";
}

class OwnershipDeathTest : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

void touchFromAnywhere(const OwnerThread& owner) { owner.check(); }

TEST_F(OwnershipDeathTest, OwnerThreadPassesOnItsOwnThread) {
  const OwnerThread owner;
  touchFromAnywhere(owner);
  EXPECT_TRUE(owner.isThisThread());
  bool elsewhere = true;
  std::thread([&] { elsewhere = owner.isThisThread(); }).join();
  EXPECT_FALSE(elsewhere);
}

TEST_F(OwnershipDeathTest, OwnerThreadCheckedFromAnotherThreadAbortsNamingTheMethod) {
  EXPECT_DEATH(
      {
        const OwnerThread owner;
        std::thread([&] { touchFromAnywhere(owner); }).join();
      },
      violation("touchFromAnywhere") + "thread .*ownership_death_test\\.cpp:[0-9]+\\); aborting");
}

TEST_F(OwnershipDeathTest, HealthServerCalledOffTheLoopThreadAborts) {
  EXPECT_DEATH(
      {
        testing::TempDir dir;
        testing::FakeAdmin admin;
        Loop loop;
        loop.start();
        HealthServerOptions options;
        options.unix_path = dir.file("health.sock");
        std::unique_ptr<HealthServer> server;
        loop.call(
            [&] {
              server = std::make_unique<HealthServer>(loop.base(), admin, options);
              return true;
            },
            10s);
        std::string error;
        server->start(&error);  // on the test's thread, not the loop's
      },
      violation("HealthServer::start") + "thread");
  EXPECT_DEATH(
      {
        testing::FakeAdmin admin;
        Loop loop;
        loop.start();
        std::unique_ptr<HealthServer> server;
        loop.call(
            [&] {
              server = std::make_unique<HealthServer>(loop.base(), admin, HealthServerOptions{});
              return true;
            },
            10s);
        server->tcpPort();
      },
      violation("HealthServer::tcpPort"));
}

struct SilentOwner : transport::PeerLink::Owner {
  void onLinkEstablished(transport::PeerLink&) override {}
  void onLinkMessage(transport::PeerLink&, const wire::Message&) override {}
  void onLinkClosed(transport::PeerLink&, const std::string&, bool) override {}
  void onLinkWritable(transport::PeerLink&) override {}
};

TEST_F(OwnershipDeathTest, PeerLinkUsedByAnotherThreadThanItsCreatorAborts) {
  EXPECT_DEATH(
      {
        event_base* base = event_base_new();
        int fds[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return;
        SilentOwner owner;
        std::unique_ptr<transport::PeerLink> link;
        std::thread([&] {
          bufferevent* bev = bufferevent_socket_new(base, fds[0], BEV_OPT_CLOSE_ON_FREE);
          link = std::make_unique<transport::PeerLink>(bev, transport::PeerLink::Role::Acceptor, false, "test",
                                                       wire::NodeIdentity{"a", "a:7946", "zetian", "", 1},
                                                       "death-test-secret-0123456789abcdef", owner,
                                                       transport::LinkLimits{});
        }).join();
        link->send(wire::Goodbye{});  // the creating thread is gone; this one never owned it
      },
      violation("PeerLink::send") + "thread");
}

TEST_F(OwnershipDeathTest, ClusterNodeCalledOffTheLoopThreadAborts) {
  EXPECT_DEATH(
      {
        Loop loop;
        loop.start();
        NodeOptions options;
        options.node_id = "a";
        options.bind = "127.0.0.1:0";
        options.secret = "death-test-secret-0123456789abcdef";
        std::unique_ptr<ClusterNode> node;
        loop.call(
            [&] {
              node = std::make_unique<ClusterNode>(loop, options, nullptr, [] { return NodeLoad{}; });
              return true;
            },
            10s);
        node->members();
      },
      violation("ClusterNode::members\\(\\)") + "thread");
}

TEST_F(OwnershipDeathTest, LoopTimersAreArmedOnTheLoopThreadOnly) {
  EXPECT_DEATH(
      {
        Loop loop;
        loop.start();
        Timer timer = loop.after(1ms, [] {});
      },
      violation("Loop::after") + "thread");
  EXPECT_DEATH(
      {
        Loop loop;  // not started: nobody may arm a timer yet
        Timer timer = loop.every(1ms, [] {});
      },
      violation("Loop::every") + "the cluster thread \\(not running\\)");
}

}  // namespace
}  // namespace zetian::cluster
