// The C ABI from a host's point of view: NULL arguments, the verdict's size, and the
// close while sessions are still open (libmilter's detached threads at stop).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "plugin/zetian.h"
#include "plugin/zetian_internal.h"
#include "tests/unit/cluster/test_support.h"

namespace {

using namespace std::chrono_literals;

class PluginAbiTest : public ::testing::Test {
 protected:
  // default_action tempfail, so a refused check is told apart from a passing one.
  zetian_engine* open(int limit = 1000) {
    std::ofstream(path_) << "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n"
                         << "[milter]\ndefault_action = \"tempfail\"\n"
                         << "[health]\nsocket = \"" << dir_ << "/health.sock\"\n"
                         << "[ratelimit]\nexempt = []\n[[ratelimit.rule]]\nname = \"per-ip\"\nkey = \"client_ip\"\n"
                         << "limit = " << limit << "\nperiod = \"1h\"\n";
    zetian_engine* e = zetian_engine_open(path_.c_str(), nullptr, 0, nullptr, nullptr);
    EXPECT_NE(e, nullptr);
    return e;
  }

  static int mail(zetian_session* s, zetian_verdict* v) {
    zetian_session_reset(s);
    return zetian_session_check(s, ZETIAN_STAGE_MAIL, "<a@example.org>", v);
  }

  zetian::cluster::testing::TempDir temp_;
  const std::string dir_ = temp_.path();
  const std::string path_ = dir_ + "/zetian.toml";
};

void collect(void* ctx, const char* message) { static_cast<std::vector<std::string>*>(ctx)->push_back(message); }

TEST_F(PluginAbiTest, VersionsComeFromTheBuild) {
  EXPECT_EQ(zetian_abi_version(), ZETIAN_ABI_VERSION);
  EXPECT_STREQ(zetian_version(), ZETIAN_VERSION);
}

TEST_F(PluginAbiTest, NullArgumentsGetTheirDocumentedAnswers) {
  std::vector<std::string> errors;
  EXPECT_EQ(zetian_engine_start(nullptr, &collect, &errors), -1);
  EXPECT_EQ(zetian_engine_reload(nullptr, &collect, &errors), -1);
  EXPECT_EQ(errors, (std::vector<std::string>{"zetian_engine_start: the engine is NULL",
                                              "zetian_engine_reload: the engine is NULL"}));
  EXPECT_EQ(zetian_engine_option(nullptr, "milter.socket"), nullptr);
  EXPECT_EQ(zetian_engine_needs(nullptr), 0u);
  EXPECT_EQ(zetian_engine_set_reporter(nullptr, nullptr, nullptr), -1);
  zetian_log(nullptr, 2, "a line with no engine");
  zetian_log(nullptr, 2, nullptr);
  zetian_engine_close(nullptr);

  zetian_verdict v = ZETIAN_VERDICT_INIT;
  EXPECT_EQ(zetian_session_check(nullptr, ZETIAN_STAGE_MAIL, "<a@example.org>", &v), ZETIAN_CONTINUE);
  EXPECT_EQ(v.action, ZETIAN_CONTINUE);
  zetian_session_set_sasl_user(nullptr, "user");
  zetian_session_eom(nullptr, nullptr, nullptr, nullptr);
  zetian_session_reset(nullptr);
  zetian_session_close(nullptr);

  // A NULL engine still gives a session, which accepts everything.
  zetian_session* s = zetian_session_open(nullptr, "192.0.2.1", nullptr);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(zetian_session_check(s, ZETIAN_STAGE_MAIL, "<a@example.org>", &v), ZETIAN_CONTINUE);
  zetian_session_close(s);

  const char* bad[] = {"health.socket=/tmp/x", nullptr};
  errors.clear();
  EXPECT_EQ(zetian_engine_open(path_.c_str(), bad, 2, &collect, &errors), nullptr);
  EXPECT_EQ(zetian_engine_open(path_.c_str(), nullptr, 1, &collect, &errors), nullptr);
  EXPECT_EQ(zetian_config_check(path_.c_str(), nullptr, 3, nullptr, nullptr), -1);
  EXPECT_EQ(errors.size(), 2u);

  zetian_engine* e = open(1);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(zetian_engine_option(e, nullptr), nullptr);
  s = zetian_session_open(e, nullptr, nullptr);
  zetian_session_close(s);
  s = zetian_session_open(e, "192.0.2.1", nullptr);
  // NULL verdict: the check still runs (and charges); only the action comes back.
  EXPECT_EQ(mail(s, nullptr), ZETIAN_CONTINUE);
  EXPECT_EQ(mail(s, nullptr), ZETIAN_TEMPFAIL);
  // An unknown stage is an internal failure: the default action, not a crash.
  EXPECT_EQ(zetian_session_check(s, static_cast<zetian_stage>(99), nullptr, &v), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.xcode, "4.3.0");
  zetian_session_close(s);
  zetian_engine_close(e);
}

TEST_F(PluginAbiTest, TheEngineWritesOnlyTheFieldsWithinTheCallersSize) {
  zetian_engine* e = open(1);
  ASSERT_NE(e, nullptr);
  zetian_session* s = zetian_session_open(e, "192.0.2.1", nullptr);
  EXPECT_EQ(mail(s, nullptr), ZETIAN_CONTINUE);

  // A host built against a header whose verdict ended after `rcode`.
  zetian_verdict v;
  std::memset(&v, 'X', sizeof v);
  v.size = offsetof(zetian_verdict, rcode) + sizeof v.rcode;
  EXPECT_EQ(mail(s, &v), ZETIAN_TEMPFAIL);
  EXPECT_EQ(v.action, ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.rcode, "451");
  for (std::size_t i = offsetof(zetian_verdict, xcode); i < sizeof v; ++i) {
    ASSERT_EQ(reinterpret_cast<const char*>(&v)[i], 'X') << "byte " << i << " is beyond the caller's size";
  }

  // Too small for even the action: nothing is written, the action is returned.
  std::memset(&v, 'X', sizeof v);
  v.size = sizeof v.size;
  EXPECT_EQ(mail(s, &v), ZETIAN_TEMPFAIL);
  for (std::size_t i = sizeof v.size; i < sizeof v; ++i) ASSERT_EQ(reinterpret_cast<const char*>(&v)[i], 'X');

  zetian_verdict full = ZETIAN_VERDICT_INIT;
  EXPECT_EQ(mail(s, &full), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(full.xcode, "4.7.1");
  EXPECT_STREQ(full.rule, "per-ip");
  zetian_session_close(s);
  zetian_engine_close(e);
}

// Session threads hold their sessions while the close runs: the close waits for them,
// refuses new sessions and answers checks with the default action meanwhile, and
// returns once the last one closed. Under ASan this is also the no-use-after-free test.
TEST_F(PluginAbiTest, CloseWaitsForOpenSessionsAndRefusesNewOnesMeanwhile) {
  zetian_engine* e = open();
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(zetian_engine_start(e, nullptr, nullptr), 0);

  constexpr int kThreads = 4;
  std::mutex mutex;
  std::condition_variable cv;
  int ready = 0;
  bool go = false;
  std::atomic<int> refused_after_close{0};
  std::vector<std::thread> sessions;
  for (int t = 0; t < kThreads; ++t) {
    sessions.emplace_back([&, t] {
      const std::string ip = "192.0.2." + std::to_string(t + 1);
      zetian_session* s = zetian_session_open(e, ip.c_str(), nullptr);
      zetian_verdict v = ZETIAN_VERDICT_INIT;
      EXPECT_EQ(mail(s, &v), ZETIAN_CONTINUE);
      {
        std::unique_lock lock(mutex);
        ++ready;
        cv.notify_all();
        cv.wait(lock, [&] { return go; });
      }
      // The close has begun: the check answers with the default action.
      if (mail(s, &v) == ZETIAN_TEMPFAIL && std::strcmp(v.xcode, "4.3.0") == 0) ++refused_after_close;
      zetian_session_set_sasl_user(s, "late");
      zetian_session_eom(s, nullptr, nullptr, nullptr);
      zetian_session_close(s);
    });
  }
  {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return ready == kThreads; });
  }
  std::atomic<bool> closed{false};
  std::thread closer([&] {
    zetian::plugin::closeEngine(e, 60s);
    closed.store(true);
  });

  // A session opened now is refused; poll until the close has begun.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  bool refused = false;
  while (!refused && std::chrono::steady_clock::now() < deadline) {
    zetian_session* late = zetian_session_open(e, "198.51.100.1", nullptr);
    zetian_verdict v = ZETIAN_VERDICT_INIT;
    refused = mail(late, &v) == ZETIAN_TEMPFAIL && std::strcmp(v.xcode, "4.3.0") == 0;
    zetian_session_close(late);
    if (!refused) std::this_thread::yield();
  }
  ASSERT_TRUE(refused) << "the close never began refusing new sessions";
  EXPECT_FALSE(closed.load()) << "the close returned while sessions were open";
  {
    std::lock_guard lock(mutex);
    go = true;
  }
  cv.notify_all();
  for (auto& t : sessions) t.join();
  closer.join();
  EXPECT_TRUE(closed.load());
  EXPECT_EQ(refused_after_close.load(), kThreads);

  // The handle stays a closed handle: a racing call gets the closed answers.
  EXPECT_EQ(zetian_engine_needs(e), 0u);
  EXPECT_EQ(zetian_engine_option(e, "milter.socket"), nullptr);
  std::vector<std::string> closed_errors;
  EXPECT_EQ(zetian_engine_reload(e, &collect, &closed_errors), -1);
  EXPECT_EQ(zetian_engine_start(e, &collect, &closed_errors), -1);
  EXPECT_EQ(closed_errors, (std::vector<std::string>{"zetian_engine_reload: the engine is closed",
                                                     "zetian_engine_start: the engine is closed"}));
  zetian_session* after = zetian_session_open(e, "192.0.2.9", nullptr);
  zetian_verdict v = ZETIAN_VERDICT_INIT;
  EXPECT_EQ(mail(after, &v), ZETIAN_TEMPFAIL);
  zetian_session_close(after);
  zetian_engine_close(e);  // a second close does nothing
}

// A session that outlives the bounded wait: the close returns, the session keeps
// answering with the default action, and its close frees the engine.
TEST_F(PluginAbiTest, ASessionOutlivingTheCloseKeepsTheEngineUntilItCloses) {
  zetian_engine* e = open();
  ASSERT_NE(e, nullptr);
  ASSERT_EQ(zetian_engine_start(e, nullptr, nullptr), 0);
  zetian_session* s = zetian_session_open(e, "192.0.2.1", nullptr);
  zetian_verdict v = ZETIAN_VERDICT_INIT;
  EXPECT_EQ(mail(s, &v), ZETIAN_CONTINUE);

  zetian::plugin::closeEngine(e, 50ms);
  // The health socket is gone: the engine was stopped, only its memory stays.
  EXPECT_FALSE(std::filesystem::exists(dir_ + "/health.sock"));
  EXPECT_EQ(mail(s, &v), ZETIAN_TEMPFAIL);
  EXPECT_STREQ(v.rcode, "451");
  EXPECT_STREQ(v.xcode, "4.3.0");
  zetian_session_set_sasl_user(s, "late");
  zetian_session_eom(s, nullptr, nullptr, nullptr);
  zetian_session_reset(s);
  zetian_session_close(s);  // frees the engine (ASan/LSan: no leak, no use after free)
  EXPECT_EQ(zetian_engine_needs(e), 0u);
}

}  // namespace
