// EventHook against real processes: small /bin/sh hooks in a temp folder, run on an
// event_base this test owns and turns by hand. Nothing waits by sleeping: every wait
// turns the loop (or polls the filesystem) until a condition holds or 10 s pass.
#include "cluster/events.h"

#include <event2/event.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/cluster/test_support.h"

namespace zetian::cluster {
namespace {

using namespace std::chrono_literals;

constexpr auto kDeadline = 10s;

struct LogLine {
  conf::LogLevel level;
  std::string text;
};

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool exists(const std::string& path) { return std::filesystem::exists(path); }

// Writes `body` as a /bin/sh script with mode `mode`. Close-on-exec, so that no
// child spawned meanwhile holds it open for writing (exec would fail with ETXTBSY).
void writeScript(const std::string& path, const std::string& body, mode_t mode = 0755) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  ASSERT_GE(fd, 0) << path;
  const std::string text = "#!/bin/sh\n" + body;
  ASSERT_EQ(write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ASSERT_EQ(close(fd), 0);
  ASSERT_EQ(chmod(path.c_str(), mode), 0);  // the umask may have narrowed it
}

// Shell lines that wait until `path` exists, but at most ~10 s, so that a failed test
// leaves no hook running behind it.
std::string waitForFile(const std::string& path) {
  return "i=0\nwhile [ ! -e '" + path + "' ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i + 1)); done\n";
}

// Polls without the loop (for a child the EventHook no longer owns).
bool waitFor(const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + kDeadline;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

// 'R', 'S', 'Z', ... for a live or zombie process; 0 once it is gone.
char processState(pid_t pid) {
  const std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  const std::size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return 0;
  return stat[paren + 2];
}

pid_t readPid(const std::string& path) { return static_cast<pid_t>(std::atoi(readFile(path).c_str())); }

// Sets a variable in this process for the length of a test.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

class EventHookTest : public ::testing::Test {
 protected:
  EventHookTest() : base_(event_base_new()) {}
  ~EventHookTest() override { event_base_free(base_); }

  LogSink sink() {
    return [this](conf::LogLevel level, std::string_view line) { log_.push_back({level, std::string(line)}); };
  }

  std::vector<LogLine> logged(std::string_view tag) const {
    std::vector<LogLine> out;
    for (const LogLine& line : log_) {
      if (line.text.rfind(std::string(tag) + " ", 0) == 0) out.push_back(line);
    }
    return out;
  }

  std::string writeHook(const std::string& body) {
    const std::string path = dir_.file("hook.sh");
    writeScript(path, body);
    return path;
  }

  // Turns the loop until `done` or the deadline. A loop with nothing registered
  // cannot change anything any more, so that ends the wait too.
  bool runUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      if (event_base_loop(base_, EVLOOP_ONCE) == 1) return done();
    }
    return true;
  }

  bool runUntilIdle(const EventHook& hook) {
    return runUntil([&] { return !hook.running() && hook.queued() == 0; });
  }

  event_base* base_;
  testing::TempDir dir_;
  std::vector<LogLine> log_;
};

TEST_F(EventHookTest, HookGetsTheEventNameAndItsVariablesButNothingFromTheParentEnvironment) {
  const std::string out = dir_.file("env.out");
  const std::string hook = writeHook("{ echo \"argc=$#\"; echo \"arg=$1\"; env;\n"
                                     "  echo \"stdin=$(readlink /proc/$$/fd/0)\"; } > '" +
                                     out + "'\n");
  ScopedEnv secret("ZETIAN_TEST_SECRET", "hunter2");
  EventHook hook_runner(base_, hook, sink());

  hook_runner.emit({"node_joined", {{"ZETIAN_NODE_ID", "mx2"}, {"ZETIAN_NODE_ADDRESS", "10.0.0.2:7946"}}});
  ASSERT_TRUE(runUntilIdle(hook_runner));

  std::set<std::string> lines;
  std::istringstream text(readFile(out));
  for (std::string line; std::getline(text, line);) lines.insert(line);
  EXPECT_TRUE(lines.count("argc=1"));
  EXPECT_TRUE(lines.count("arg=node_joined"));
  EXPECT_TRUE(lines.count("stdin=/dev/null"));
  EXPECT_TRUE(lines.count("ZETIAN_EVENT=node_joined"));
  EXPECT_TRUE(lines.count("ZETIAN_NODE_ID=mx2"));
  EXPECT_TRUE(lines.count("ZETIAN_NODE_ADDRESS=10.0.0.2:7946"));
  EXPECT_TRUE(lines.count("PATH=/usr/sbin:/usr/bin:/sbin:/bin"));
  // Only our variables, and PWD, which the shell sets for itself.
  const std::set<std::string> allowed = {"ZETIAN_EVENT", "ZETIAN_NODE_ID", "ZETIAN_NODE_ADDRESS", "PATH", "PWD"};
  for (const std::string& line : lines) {
    const std::size_t eq = line.find('=');
    const std::string name = line.substr(0, eq);
    if (name == "argc" || name == "arg" || name == "stdin") continue;
    EXPECT_TRUE(allowed.count(name)) << "unexpected variable in the hook: " << line;
  }
  EXPECT_EQ(hook_runner.started(), 1u);
  EXPECT_EQ(hook_runner.failed(), 0u);
  EXPECT_EQ(logged("event_hook_done").size(), 1u);
}

TEST_F(EventHookTest, HookInheritsNoDescriptorAboveStderr) {
#if !(defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34)))
  GTEST_SKIP() << "closing descriptors in posix_spawn needs glibc 2.34";
#endif
  // A descriptor without close-on-exec, as libmilter's sockets may be; above the
  // numbers the shell uses for itself.
  const int null_fd = open("/dev/null", O_RDONLY);
  ASSERT_GE(null_fd, 0);
  const int leaky_fd = fcntl(null_fd, F_DUPFD, 100);
  close(null_fd);
  ASSERT_GE(leaky_fd, 100);
  const std::string out = dir_.file("fd.out");
  const std::string hook = writeHook("if [ -e /proc/$$/fd/" + std::to_string(leaky_fd) +
                                     " ]; then echo open; else echo closed; fi > '" + out + "'\n");
  EventHook hook_runner(base_, hook, sink());

  hook_runner.emit({"node_left", {}});
  const bool idle = runUntilIdle(hook_runner);
  close(leaky_fd);

  ASSERT_TRUE(idle);
  EXPECT_EQ(readFile(out), "closed\n");
}

TEST_F(EventHookTest, HooksRunOneAtATimeInEmitOrder) {
  const std::string out = dir_.file("order.out");
  const std::string hook = writeHook("echo \"start $ZETIAN_SEQ\" >> '" + out + "'\nsleep 0.05\necho \"end $ZETIAN_SEQ\" >> '" +
                                     out + "'\n");
  EventHook hook_runner(base_, hook, sink());

  for (int seq = 1; seq <= 5; ++seq) {
    hook_runner.emit({"node_joined", {{"ZETIAN_SEQ", std::to_string(seq)}}});
  }
  EXPECT_EQ(hook_runner.started(), 1u);  // the rest wait behind it
  EXPECT_EQ(hook_runner.queued(), 4u);
  ASSERT_TRUE(runUntilIdle(hook_runner));

  EXPECT_EQ(readFile(out),
            "start 1\nend 1\nstart 2\nend 2\nstart 3\nend 3\nstart 4\nend 4\nstart 5\nend 5\n");
  EXPECT_EQ(hook_runner.started(), 5u);
  EXPECT_EQ(hook_runner.failed(), 0u);
}

TEST_F(EventHookTest, NonZeroExitIsLoggedAsAFailureAndCounted) {
  const std::string hook = writeHook("exit 3\n");
  EventHook hook_runner(base_, hook, sink());

  hook_runner.emit({"node_failed", {{"ZETIAN_NODE_ID", "mx3"}}});
  ASSERT_TRUE(runUntilIdle(hook_runner));

  EXPECT_EQ(hook_runner.started(), 1u);
  EXPECT_EQ(hook_runner.failed(), 1u);
  EXPECT_EQ(hook_runner.timed_out(), 0u);
  const auto lines = logged("event_hook_failed");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].level, conf::LogLevel::Warn);
  EXPECT_EQ(lines[0].text.rfind("event_hook_failed event=node_failed path=" + hook + " pid=", 0), 0u)
      << lines[0].text;
  EXPECT_NE(lines[0].text.find(" status=exit:3 "), std::string::npos) << lines[0].text;
}

TEST_F(EventHookTest, HookRunningPastTheTimeoutIsKilledWithItsChildrenAndTheNextEventRuns) {
  const std::string quick = dir_.file("quick.out");
  const std::string finished = dir_.file("finished.out");
  const std::string sleeper = dir_.file("sleeper.pid");
  const std::string hook = writeHook("if [ \"$ZETIAN_MODE\" = quick ]; then echo quick > '" + quick +
                                     "'; exit 0; fi\n"
                                     "sleep 30 &\n"
                                     "echo $! > '" + sleeper + "'\n"
                                     "wait\n"
                                     "echo finished > '" + finished + "'\n");
  EventHook hook_runner(base_, hook, sink(), 200ms);

  hook_runner.emit({"cluster_state_changed", {{"ZETIAN_MODE", "slow"}}});
  hook_runner.emit({"cluster_state_changed", {{"ZETIAN_MODE", "quick"}}});
  ASSERT_TRUE(runUntilIdle(hook_runner));

  EXPECT_EQ(hook_runner.timed_out(), 1u);
  EXPECT_EQ(hook_runner.failed(), 0u);  // a timeout is counted once, as a timeout
  EXPECT_EQ(hook_runner.started(), 2u);
  EXPECT_FALSE(exists(finished));
  EXPECT_EQ(readFile(quick), "quick\n");
  const auto lines = logged("event_hook_timeout");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].level, conf::LogLevel::Warn);
  EXPECT_NE(lines[0].text.find("event=cluster_state_changed"), std::string::npos) << lines[0].text;
  EXPECT_NE(lines[0].text.find(" timeout_ms=200 "), std::string::npos) << lines[0].text;

  // The shell's own child died with it (a zombie is dead too: whoever adopted it
  // may not reap it).
  ASSERT_TRUE(exists(sleeper));
  const pid_t sleeper_pid = readPid(sleeper);
  ASSERT_GT(sleeper_pid, 0);
  EXPECT_TRUE(waitFor([&] {
    const char state = processState(sleeper_pid);
    return state == 0 || state == 'Z';
  })) << "the hook's `sleep 30` outlived the timeout";
}

TEST_F(EventHookTest, EventsBeyondMaxQueuedAreDroppedLoggedAndCounted) {
  const std::string out = dir_.file("order.out");
  const std::string release = dir_.file("release");
  const std::string hook = writeHook("echo \"$ZETIAN_SEQ\" >> '" + out + "'\n" +
                                     waitForFile(release));
  EventHook hook_runner(base_, hook, sink(), 30s, 2);

  for (int seq = 1; seq <= 5; ++seq) {
    hook_runner.emit({"node_left", {{"ZETIAN_SEQ", std::to_string(seq)}}});
  }
  // 1 runs, 2 and 3 wait, 4 and 5 find the queue full.
  EXPECT_EQ(hook_runner.started(), 1u);
  EXPECT_EQ(hook_runner.queued(), 2u);
  EXPECT_EQ(hook_runner.dropped(), 2u);
  const auto lines = logged("event_hook_dropped");
  ASSERT_EQ(lines.size(), 2u);
  for (const LogLine& line : lines) {
    EXPECT_EQ(line.level, conf::LogLevel::Warn);
    EXPECT_NE(line.text.find("event=node_left"), std::string::npos) << line.text;
  }

  writeScript(release, "");
  ASSERT_TRUE(runUntilIdle(hook_runner));
  EXPECT_EQ(readFile(out), "1\n2\n3\n");
  EXPECT_EQ(hook_runner.started(), 3u);
  EXPECT_EQ(hook_runner.dropped(), 2u);
  EXPECT_EQ(hook_runner.failed(), 0u);
}

TEST_F(EventHookTest, MissingExecutableIsLoggedWithWhatToDoAndTheNextEventStillRuns) {
  const std::string folder = dir_.file("hook dir");  // a space, so the path is quoted
  ASSERT_TRUE(std::filesystem::create_directory(folder));
  const std::string hook = folder + "/hook.sh";
  EventHook hook_runner(base_, hook, sink());

  hook_runner.emit({"node_failed", {}});
  EXPECT_FALSE(hook_runner.running());
  EXPECT_EQ(hook_runner.started(), 0u);
  EXPECT_EQ(hook_runner.failed(), 1u);
  const auto lines = logged("event_hook_spawn_failed");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].level, conf::LogLevel::Error);
  EXPECT_EQ(lines[0].text.rfind("event_hook_spawn_failed event=node_failed path=\"" + hook +
                                    "\" error=\"No such file or directory\" hint=\"check that [events] exec",
                                0),
            0u)
      << lines[0].text;

  const std::string out = dir_.file("ran.out");
  writeScript(hook, "echo \"$ZETIAN_EVENT\" > '" + out + "'\n");
  hook_runner.emit({"node_recovered", {}});
  ASSERT_TRUE(runUntilIdle(hook_runner));
  EXPECT_EQ(readFile(out), "node_recovered\n");
  EXPECT_EQ(hook_runner.started(), 1u);
  EXPECT_EQ(hook_runner.failed(), 1u);
}

TEST_F(EventHookTest, NonExecutableFileIsLoggedWithWhatToDo) {
  const std::string hook = dir_.file("hook.sh");
  writeScript(hook, "exit 0\n", 0644);
  EventHook hook_runner(base_, hook, sink());

  hook_runner.emit({"node_joined", {}});

  EXPECT_EQ(hook_runner.failed(), 1u);
  const auto lines = logged("event_hook_spawn_failed");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].text.find("error=\"Permission denied\""), std::string::npos) << lines[0].text;
  EXPECT_NE(lines[0].text.find("chmod +x"), std::string::npos) << lines[0].text;
}

TEST_F(EventHookTest, EmptyExecPathDoesNothing) {
  EventHook hook_runner(base_, "", sink());

  hook_runner.emit({"node_joined", {{"ZETIAN_NODE_ID", "mx2"}}});

  EXPECT_FALSE(hook_runner.running());
  EXPECT_EQ(hook_runner.queued(), 0u);
  EXPECT_EQ(hook_runner.started(), 0u);
  EXPECT_EQ(hook_runner.failed(), 0u);
  EXPECT_EQ(hook_runner.dropped(), 0u);
  EXPECT_TRUE(log_.empty());
  EXPECT_EQ(event_base_get_num_events(base_, EVENT_BASE_COUNT_ADDED), 0);
}

TEST_F(EventHookTest, AVariableTheHookMayNotGetIsLeftOutWithAWarningAndTheHookStillRuns) {
  const std::string out = dir_.file("env.out");
  const std::string hook = writeHook("env > '" + out + "'\n");
  EventHook hook_runner(base_, hook, sink());

  hook_runner.emit({"node_joined", {{"PATH", "/tmp/evil"}, {"A=B", "x"}, {"", "y"}, {"ZETIAN_NODE_ID", "mx2"}}});
  ASSERT_TRUE(runUntilIdle(hook_runner));

  const std::string env = readFile(out);
  EXPECT_NE(env.find("ZETIAN_NODE_ID=mx2"), std::string::npos) << env;
  EXPECT_EQ(env.find("/tmp/evil"), std::string::npos) << env;
  EXPECT_EQ(env.find("A=B"), std::string::npos) << env;
  EXPECT_EQ(hook_runner.started(), 1u);
  const auto skipped = logged("event_hook_variable_skipped");
  ASSERT_EQ(skipped.size(), 3u);
  EXPECT_EQ(skipped[0].level, conf::LogLevel::Warn);
  EXPECT_NE(skipped[0].text.find("name=PATH"), std::string::npos) << skipped[0].text;
}

TEST_F(EventHookTest, AHookWithoutAnEventBaseIsRefused) {
  EXPECT_THROW(EventHook(nullptr, "/bin/true", sink()), std::invalid_argument);
  EventHook no_hook(nullptr, "", sink());  // nothing to run: no base needed
  EXPECT_EQ(no_hook.started(), 0u);
}

TEST_F(EventHookTest, ChildStartsWithAnEmptySignalMaskAndDefaultDispositions) {
  const std::string out = dir_.file("signals.out");
  // exec: grep then reads its own status, inherited unchanged from the spawned shell.
  // (Reading the shell's /proc/$$/status from a child races with the shell itself,
  // which blocks every signal around its fork and wait.)
  const std::string hook = writeHook("exec grep -E '^Sig(Blk|Ign):' /proc/self/status > '" + out + "'\n");
  EventHook hook_runner(base_, hook, sink());

  // As on the loop thread: SIGTERM and SIGHUP blocked, SIGPIPE ignored.
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGTERM);
  sigaddset(&blocked, SIGHUP);
  sigset_t previous_mask;
  ASSERT_EQ(pthread_sigmask(SIG_BLOCK, &blocked, &previous_mask), 0);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction previous_pipe {};
  ASSERT_EQ(sigaction(SIGPIPE, &ignore, &previous_pipe), 0);
  const std::string own_status = readFile("/proc/thread-self/status");

  hook_runner.emit({"node_joined", {}});
  const bool idle = runUntilIdle(hook_runner);

  sigaction(SIGPIPE, &previous_pipe, nullptr);
  pthread_sigmask(SIG_SETMASK, &previous_mask, nullptr);
  ASSERT_EQ(own_status.find("SigBlk:\t0000000000000000"), std::string::npos)
      << "the test did not manage to block signals";
  ASSERT_TRUE(idle);
  const std::string status = readFile(out);
  EXPECT_NE(status.find("SigBlk:\t0000000000000000\n"), std::string::npos) << status;
  const std::size_t ign = status.find("SigIgn:\t");
  ASSERT_NE(ign, std::string::npos) << status;
  std::uint64_t ignored = std::stoull(status.substr(ign + 8, 16), nullptr, 16);
  // glibc's posix_spawn leaves its own reserved real-time signals (32 and 33, below
  // SIGRTMIN) ignored whatever the flags; no application signal may be.
  for (int sig = 32; sig < SIGRTMIN; ++sig) ignored &= ~(std::uint64_t{1} << (sig - 1));
  EXPECT_EQ(ignored, 0u) << status;
}

TEST_F(EventHookTest, DestroyingTheRunnerLetsTheRunningHookFinishAndReapsIt) {
  const std::string pid_file = dir_.file("hook.pid");
  const std::string release = dir_.file("release");
  const std::string finished = dir_.file("finished.out");
  const std::string hook = writeHook("echo $$ > '" + pid_file + "'\n" +
                                     waitForFile(release) +
                                     "echo finished > '" + finished + "'\n");
  pid_t pid = 0;
  {
    EventHook hook_runner(base_, hook, sink());
    hook_runner.emit({"node_left", {{"ZETIAN_SEQ", "1"}}});
    hook_runner.emit({"node_left", {{"ZETIAN_SEQ", "2"}}});  // still queued at the end
    ASSERT_TRUE(runUntil([&] { return exists(pid_file) && readPid(pid_file) > 0; }));
    pid = readPid(pid_file);
  }
  const auto discarded = logged("event_hook_discarded");
  ASSERT_EQ(discarded.size(), 1u);
  EXPECT_NE(discarded[0].text.find("count=1"), std::string::npos) << discarded[0].text;
  const char state = processState(pid);
  EXPECT_TRUE(state != 0 && state != 'Z') << "the running hook was stopped, state " << state;

  writeScript(release, "");
  // Finished by itself, and no zombie left: someone waited for it.
  EXPECT_TRUE(waitFor([&] { return exists(finished) && processState(pid) == 0; }))
      << "state " << processState(pid);
  EXPECT_EQ(readFile(finished), "finished\n");
}

}  // namespace
}  // namespace zetian::cluster
