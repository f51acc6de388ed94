// The health-server test fixture: a real HealthServer on its own loop thread, with a
// fake engine, in a temp folder (health_server_test.cpp, health_server_abuse_test.cpp).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "cluster/health_server.h"
#include "tests/unit/cluster/test_support.h"

namespace zetian::cluster {

using namespace std::chrono_literals;
using testing::FakeAdmin;
using testing::RawReply;
using testing::ServerHarness;
using testing::TempDir;
using testing::connectTcp;
using testing::connectUnix;
using testing::roundTrip;
using testing::simpleRequest;

class HealthServerTest : public ::testing::Test {
 protected:
  HealthServerOptions options(const std::string& tcp = "", const std::string& token = "") {
    HealthServerOptions o;
    o.unix_path = socket_path;
    o.tcp_listen = tcp;
    o.admin_token = token;
    return o;
  }
  void startOrFail(HealthServerOptions o) {
    const std::string error = harness.start(std::move(o));
    ASSERT_EQ(error, "");
  }
  RawReply overUnix(const std::string& method, const std::string& target,
                    const std::string& headers = "") {
    return roundTrip(connectUnix(socket_path), simpleRequest(method, target, headers));
  }
  RawReply overTcp(const std::string& method, const std::string& target,
                   const std::string& headers = "") {
    return roundTrip(connectTcp(harness.tcpPort()), simpleRequest(method, target, headers));
  }

  TempDir dir;
  std::string socket_path = dir.file("health.sock");
  FakeAdmin api;
  ServerHarness harness{api};
};

}  // namespace zetian::cluster
