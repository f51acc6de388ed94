// The event hook runner: a FIFO of events, at most one child at a time, reaped by a
// poll timer. See events.h for the contract; the notes here are about the mechanics.
//
// - glibc's posix_spawn runs the child on the parent's memory (CLONE_VFORK) and
//   returns only once exec has succeeded or failed, so a missing or non-executable
//   hook comes back as the return value (ENOENT, EACCES, ENOEXEC), not as a child
//   that exits 127. Other C libraries may report it as exit:127; that is counted
//   as failed just the same.
// - The poll timer is one-shot and re-armed after every look: every kPollInterval, or
//   sooner when the timeout falls earlier, so a 200 ms timeout is met to within the
//   loop's own latency instead of a whole poll interval late.
// - After SIGKILL the child is still ours to reap: the process group stays valid
//   (its leader is at worst a zombie we have not collected), so the pid cannot be
//   reused under us and kill(-pid) cannot hit a stranger.
// - If the process ignores SIGCHLD, the kernel reaps our children itself and waitpid
//   fails with ECHILD; the event then ends with a warning and an unknown status.
#include "cluster/events.h"

#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <thread>

#include "cluster/clock.h"
#include "conf/text.h"

namespace zetian::cluster {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::chrono::milliseconds kPollInterval{50};
constexpr const char* kPathVariable = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

using conf::errnoText;

// What an operator should do about a failed spawn.
std::string spawnHint(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return "check that [events] exec names an existing executable file (absolute path)";
    case EACCES:
    case EPERM:
      return "check that [events] exec is an executable file (chmod +x) in directories the "
             "milter's user may enter, on a filesystem not mounted noexec";
    case ENOEXEC:
      return "check that [events] exec is an executable file; a script needs a #! line";
    case ETXTBSY:
      return "the hook file is being written; retry once it is complete";
    default:
      return "check that [events] exec is an executable file";
  }
}

// "exit:3", "signal:9".
std::string describeStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return "exit:" + std::to_string(WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) return "signal:" + std::to_string(WTERMSIG(wait_status));
  return "unknown:" + std::to_string(wait_status);
}

bool validVariableName(const std::string& name) {
  return !name.empty() && name.find('=') == std::string::npos &&
         name.find('\0') == std::string::npos && name != "ZETIAN_EVENT" && name != "PATH";
}

long long millisSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// posix_spawn's two attribute objects, destroyed on every path out of spawn().
class SpawnSetup {
 public:
  SpawnSetup() {
    actions_ok_ = posix_spawn_file_actions_init(&actions_) == 0;
    attr_ok_ = posix_spawnattr_init(&attr_) == 0;
  }
  ~SpawnSetup() {
    if (actions_ok_) posix_spawn_file_actions_destroy(&actions_);
    if (attr_ok_) posix_spawnattr_destroy(&attr_);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;

  // 0 or an errno value.
  int configure() {
    if (!actions_ok_ || !attr_ok_) return ENOMEM;
    int rc = posix_spawn_file_actions_addopen(&actions_, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    // Our sockets are close-on-exec, libmilter's may not be: a hook must not hold the
    // milter or health listener open (a restart would fail with EADDRINUSE while a
    // slow hook still runs). stdout and stderr stay inherited on purpose: under
    // systemd they are the journal, so whatever a hook prints lands beside our log
    // lines, and since we never read them a chatty hook cannot block us.
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions_, STDERR_FILENO + 1);
#endif
    sigset_t empty;
    sigemptyset(&empty);
    // SIGKILL/SIGSTOP in the set are skipped by the C library. glibc's sigfillset
    // leaves out its two reserved real-time signals (32, 33), and its posix_spawn
    // sets them to SIG_IGN in every child whatever we ask; harmless, as no program
    // but glibc itself uses them and glibc installs its handlers when it needs them.
    sigset_t all;
    sigfillset(&all);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attr_, &empty);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attr_, &all);
    // Process group 0: the child leads a new group, which the timeout kills whole.
    // Being out of the terminal's foreground group does not matter: stdin is
    // /dev/null, so a hook never stops on SIGTTIN.
    if (rc == 0) rc = posix_spawnattr_setpgroup(&attr_, 0);
    if (rc == 0) {
      rc = posix_spawnattr_setflags(
          &attr_, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
    }
    return rc;
  }

  const posix_spawn_file_actions_t* actions() const { return &actions_; }
  const posix_spawnattr_t* attr() const { return &attr_; }

 private:
  posix_spawn_file_actions_t actions_;
  posix_spawnattr_t attr_;
  bool actions_ok_ = false;
  bool attr_ok_ = false;
};

// Waits for `pid` on a detached thread. The thread starts with every signal blocked
// so that it never takes a signal meant for libmilter's sigwait thread; the caller's
// mask is restored at once. False if no thread could be created.
bool reapInBackground(pid_t pid) {
  sigset_t all;
  sigfillset(&all);
  sigset_t previous;
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  bool ok = true;
  try {
    std::thread([pid] {
      while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
      }
    }).detach();
  } catch (const std::exception&) {
    ok = false;
  }
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  return ok;
}

}  // namespace

EventHook::EventHook(event_base* base, std::string exec_path, LogSink log,
                     std::chrono::milliseconds timeout, std::size_t max_queued)
    : exec_path_(std::move(exec_path)),
      log_(std::move(log)),
      timeout_(timeout),
      max_queued_(max_queued) {
  if (exec_path_.empty()) return;
  if (base == nullptr) throw std::invalid_argument("EventHook needs an event_base to run a hook");
  poll_timer_ = evtimer_new(base, &EventHook::onPollTimer, this);
  if (poll_timer_ == nullptr) {
    // Without the timer no child could be reaped: refuse to start any.
    this->log(conf::LogLevel::Error, "event_hook_disabled path=" + logValue(exec_path_) +
                                         " error=" + logValue("cannot create a timer (out of memory?)"));
  }
}

EventHook::~EventHook() {
  owner_.check();
  if (poll_timer_ != nullptr) event_free(poll_timer_);
  if (!queue_.empty()) {
    log(conf::LogLevel::Warn,
        "event_hook_discarded count=" + std::to_string(queue_.size()) + " path=" + logValue(exec_path_) +
            " reason=" + logValue("the hook runner stopped with events still queued"));
  }
  if (!child_) return;
  int status = 0;
  if (waitpid(child_->pid, &status, WNOHANG) != 0) return;  // done (or not ours after all)
  if (!reapInBackground(child_->pid)) {
    log(conf::LogLevel::Warn, "event_hook_unreaped event=" + logValue(child_->event_name) +
                                  " pid=" + std::to_string(child_->pid) +
                                  " error=" + logValue("cannot start a thread to wait for it"));
  }
}

void EventHook::emit(ClusterEvent event) {
  owner_.check();
  if (exec_path_.empty()) return;
  if (child_) {
    if (queue_.size() >= max_queued_) {
      ++dropped_;
      log(conf::LogLevel::Warn,
          "event_hook_dropped event=" + logValue(event.name) + " path=" + logValue(exec_path_) +
              " queued=" + std::to_string(queue_.size()) + " running=" + logValue(child_->event_name) +
              " hint=" + logValue("hooks run one at a time and the queue is full; make the hook return sooner"));
      return;
    }
    queue_.push_back(std::move(event));
    return;
  }
  queue_.push_back(std::move(event));
  startNext();
}

void EventHook::startNext() {
  // A spawn that fails leaves child_ empty, so the loop goes on to the next event.
  while (!child_ && !queue_.empty()) {
    ClusterEvent event = std::move(queue_.front());
    queue_.pop_front();
    spawn(event);
  }
}

void EventHook::spawn(const ClusterEvent& event) {
  const auto spawnFailed = [&](const std::string& error, const std::string& hint) {
    ++failed_;
    log(conf::LogLevel::Error, "event_hook_spawn_failed event=" + logValue(event.name) +
                                   " path=" + logValue(exec_path_) + " error=" + logValue(error) +
                                   " hint=" + logValue(hint));
  };
  if (poll_timer_ == nullptr) {
    spawnFailed("no timer to reap the hook with", "restart the milter (it was out of memory)");
    return;
  }

  std::vector<std::string> argv_strings{exec_path_, event.name};
  std::vector<std::string> env_strings{"ZETIAN_EVENT=" + event.name};
  for (const auto& [name, value] : event.env) {
    if (validVariableName(name)) {
      env_strings.push_back(name + "=" + value);
    } else {
      log(conf::LogLevel::Warn, "event_hook_variable_skipped event=" + logValue(event.name) + " name=" +
                                    logValue(name) + " reason=" + logValue("not a variable name the hook may get"));
    }
  }
  env_strings.emplace_back(kPathVariable);
  const auto pointers = [](std::vector<std::string>& strings) {
    std::vector<char*> out;
    out.reserve(strings.size() + 1);
    for (std::string& s : strings) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
  };
  std::vector<char*> argv = pointers(argv_strings);
  std::vector<char*> envp = pointers(env_strings);

  SpawnSetup setup;
  int rc = setup.configure();
  pid_t pid = -1;
  if (rc == 0) {
    rc = posix_spawn(&pid, exec_path_.c_str(), setup.actions(), setup.attr(), argv.data(), envp.data());
  }
  if (rc != 0) {
    spawnFailed(errnoText(rc), spawnHint(rc));
    return;
  }
  ++started_;
  child_ = Child{pid, event.name, Clock::now(), false};
  log(conf::LogLevel::Debug, "event_hook_started event=" + logValue(event.name) +
                                 " path=" + logValue(exec_path_) + " pid=" + std::to_string(pid));
  schedulePoll();
}

void EventHook::onPollTimer(int, short, void* arg) { static_cast<EventHook*>(arg)->poll(); }

void EventHook::poll() {
  owner_.check();
  if (!child_) return;  // the timer is armed only while a child runs; nothing to reap
  int status = 0;
  const pid_t rc = waitpid(child_->pid, &status, WNOHANG);
  if (rc == 0 || (rc < 0 && errno == EINTR)) {
    if (!child_->killed && Clock::now() - child_->started_at >= timeout_) killOnTimeout();
    schedulePoll();
    return;
  }
  if (rc < 0) {
    const int err = errno;
    log(conf::LogLevel::Warn,
        "event_hook_status_unknown event=" + logValue(child_->event_name) + " path=" + logValue(exec_path_) +
            " pid=" + std::to_string(child_->pid) + " error=" + logValue(errnoText(err)) +
            " hint=" + logValue("is SIGCHLD ignored in this process? then the kernel reaps hooks itself"));
  } else {
    finish(status);
  }
  child_.reset();
  startNext();
}

void EventHook::finish(int wait_status) {
  const std::string head = "event=" + logValue(child_->event_name) + " path=" + logValue(exec_path_) +
                           " pid=" + std::to_string(child_->pid);
  const std::string elapsed = " elapsed_ms=" + std::to_string(millisSince(child_->started_at));
  if (child_->killed) {
    log(conf::LogLevel::Debug, "event_hook_reaped " + head + " status=" + describeStatus(wait_status) + elapsed);
    return;  // counted in timed_out() when it was killed
  }
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0) {
    log(conf::LogLevel::Debug, "event_hook_done " + head + elapsed);
    return;
  }
  ++failed_;
  log(conf::LogLevel::Warn, "event_hook_failed " + head + " status=" + describeStatus(wait_status) + elapsed);
}

void EventHook::killOnTimeout() {
  // The whole group: a shell script's `sleep` or `curl` dies with it.
  if (kill(-child_->pid, SIGKILL) != 0) kill(child_->pid, SIGKILL);
  child_->killed = true;
  ++timed_out_;
  log(conf::LogLevel::Warn,
      "event_hook_timeout event=" + logValue(child_->event_name) + " path=" + logValue(exec_path_) +
          " pid=" + std::to_string(child_->pid) + " timeout_ms=" + std::to_string(timeout_.count()) +
          " action=killed hint=" + logValue("the hook must return within the timeout; hand slow work to a queue"));
}

void EventHook::schedulePoll() {
  auto delay = std::chrono::duration_cast<std::chrono::microseconds>(kPollInterval);
  if (!child_->killed) {
    const auto until_timeout =
        std::chrono::duration_cast<std::chrono::microseconds>(child_->started_at + timeout_ - Clock::now());
    delay = std::max(std::chrono::microseconds(0), std::min(delay, until_timeout));
  }
  const timeval tv = toTimeval(delay);
  evtimer_add(poll_timer_, &tv);
}

void EventHook::log(conf::LogLevel level, const std::string& line) const {
  if (log_) log_(level, line);
}

}  // namespace zetian::cluster
