#include "milter/connections.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <string>

#include "milter/log.h"

namespace zetian::milter::connections {

namespace {

// Per descriptor number: 0 when it is not a silent milter connection, else the
// monotonic second (counted from the first call of nowSecond(), plus one) at which it
// was accepted. Written under g_mutex. The close() fast path reads it without the
// mutex: a descriptor that reads 0 there cannot turn tracked before its close
// completes (only accept() returning that number tracks it), so skipping the mutex
// cannot let shutDownSilent() reach a reused number.
std::atomic<std::uint32_t>* g_accepted_at = nullptr;
// Per descriptor number: 0 when it is not a milter connection, else the monotonic
// second of its last read that returned bytes (its accept to begin with). Set and
// cleared under g_mutex; updated without it by the read() of libmilter's worker that
// owns the descriptor, which cannot race with its close.
std::atomic<std::uint32_t>* g_last_io = nullptr;
unsigned long g_slots = 0;
// Guards tracking changes and shutdown(): a tracked descriptor is untracked and
// closed under it, so shutDownSilent() never shuts a number that was reused.
std::mutex g_mutex;
std::atomic<unsigned long> g_fd_limit{0};
std::atomic<long> g_timeout_s{10};
std::atomic<int> g_highest{-1};  // highest descriptor ever tracked (bounds the sweep)
zetian_engine* g_engine = nullptr;

int g_spare_fd = -1;  // listener thread only
thread_local bool t_listener = false;
thread_local int t_last_read_fd = -1;

std::uint32_t nowSecond() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  static const time_t epoch = ts.tv_sec;
  return static_cast<std::uint32_t>(ts.tv_sec - epoch + 1);
}

// One line per kind at most every 10 s, carrying how many events it stands for.
struct LogBudget {
  std::atomic<std::uint32_t> last{0};
  std::atomic<unsigned long> pending{0};
  void note(int level, const char* what, const std::string& detail, unsigned long events = 1) {
    const unsigned long count = pending.fetch_add(events) + events;
    const std::uint32_t now = nowSecond();
    std::uint32_t prev = last.load();
    if (prev != 0 && now - prev < 10) return;
    if (!last.compare_exchange_strong(prev, now)) return;
    pending.fetch_sub(count);
    if (g_engine)
      logLine(g_engine, level, std::string(what) + " count=" + std::to_string(count) + " " + detail);
  }
};
LogBudget g_over_cap_log;
LogBudget g_no_fd_log;
LogBudget g_silent_log;
LogBudget g_evicted_log;

bool track(int fd) {
  if (!g_accepted_at || fd < 0 || static_cast<unsigned long>(fd) >= g_slots) return false;
  std::lock_guard lock(g_mutex);
  const std::uint32_t now = nowSecond();
  g_accepted_at[fd].store(now);
  g_last_io[fd].store(now);
  int high = g_highest.load();
  while (fd > high && !g_highest.compare_exchange_weak(high, fd)) {
  }
  return true;
}

bool tracked(int fd) {
  return g_accepted_at && fd >= 0 && static_cast<unsigned long>(fd) < g_slots && g_accepted_at[fd].load() != 0;
}

// At the cap: shut down the connection that has waited longest for its next command,
// so the connection after the refused one finds room. A real MTA sends a command at
// once and then follows its SMTP client; connections that went quiet (negotiated, then
// nothing) would otherwise hold their descriptors until libmilter's sweep of waiting
// sessions, every 600 s, and keep every new session out meanwhile. One that read
// within the last second is never chosen: it is in the middle of a dialogue.
void evictLongestWaiting() {
  const std::uint32_t now = nowSecond();
  std::lock_guard lock(g_mutex);
  const int high = g_highest.load();
  int oldest = -1;
  std::uint32_t oldest_io = 0;
  for (int fd = 0; fd <= high; ++fd) {
    const std::uint32_t io = g_last_io[fd].load(std::memory_order_relaxed);
    if (io == 0 || now - io < 1) continue;
    if (oldest < 0 || io < oldest_io) {
      oldest = fd;
      oldest_io = io;
    }
  }
  if (oldest < 0) return;
  // shutdown(), not close(): the descriptor stays libmilter's until its worker reads
  // EOF and ends the session; the number is not reused under its feet.
  shutdown(oldest, SHUT_RDWR);
  g_last_io[oldest].store(0);
  g_accepted_at[oldest].store(0);
  g_evicted_log.note(1, "milter_idle_connection_evicted",
                     "reason=\"descriptor cap reached\" idle_s=" + std::to_string(now - oldest_io));
}

void reopenSpare() {
  if (g_spare_fd < 0) g_spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

}  // namespace

void configure(zetian_engine* engine, unsigned long fd_limit, long silent_timeout_s) {
  g_engine = engine;
  g_fd_limit.store(fd_limit);
  g_timeout_s.store(silent_timeout_s < 1 ? 1 : silent_timeout_s);
  nowSecond();
  if (!g_accepted_at && fd_limit > 0) {
    // One slot per possible descriptor; anonymous pages stay unbacked until touched.
    // Two tables: accepted_at, then last_io.
    void* mem = mmap(nullptr, 2 * fd_limit * sizeof(std::atomic<std::uint32_t>), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem != MAP_FAILED) {
      g_accepted_at = static_cast<std::atomic<std::uint32_t>*>(mem);
      g_last_io = g_accepted_at + fd_limit;
      g_slots = fd_limit;
    } else {
      logLine(engine, 1, "milter_connection_watch_disabled reason=\"no memory for the descriptor table\"");
    }
  }
}

void markListenerThread() {
  t_listener = true;
  reopenSpare();
}

void markSpoken() {
  const int fd = t_last_read_fd;
  if (!tracked(fd)) return;
  std::lock_guard lock(g_mutex);
  g_accepted_at[fd].store(0);
}

std::size_t shutDownSilent() {
  if (!g_accepted_at) return 0;
  const std::uint32_t now = nowSecond();
  const long timeout = g_timeout_s.load();
  std::size_t count = 0;
  std::lock_guard lock(g_mutex);
  const int high = g_highest.load();
  for (int fd = 0; fd <= high; ++fd) {
    const std::uint32_t at = g_accepted_at[fd].load();
    if (at == 0 || static_cast<long>(now - at) < timeout) continue;
    // The descriptor is still libmilter's (closing it would take the mutex): its
    // worker reads EOF and closes the session.
    shutdown(fd, SHUT_RDWR);
    g_accepted_at[fd].store(0);
    ++count;
  }
  if (count > 0)
    g_silent_log.note(1, "milter_silent_connections_closed",
                      "reason=\"no milter command within milter.timeout\" timeout_s=" + std::to_string(timeout),
                      count);
  return count;
}

int afterAccept(int listen_fd, int result, int saved_errno, AcceptFn real_accept, int (*real_close)(int)) {
  if (!t_listener) {
    errno = saved_errno;
    return result;
  }
  if (result >= 0) {
    const unsigned long limit = g_fd_limit.load();
    if (limit > kFdReserve && static_cast<unsigned long>(result) >= limit - kFdReserve) {
      real_close(result);
      g_over_cap_log.note(1, "milter_connection_refused",
                          "reason=\"fewer than " + std::to_string(kFdReserve) + " file descriptors left\" limit=" +
                              std::to_string(limit));
      evictLongestWaiting();
      errno = ECONNABORTED;
      return -1;
    }
    track(result);
    return result;
  }
  switch (saved_errno) {
    case EMFILE:
    case ENFILE:
      break;
    // Linux passes errors pending on the new connection to accept(); its manual asks
    // to retry them like EAGAIN. libmilter counts them instead, sleeping 1, 2, ... s
    // after each, and ends its listener after 16 in a row: hand it one it retries.
    case ENETDOWN:
    case EPROTO:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
      errno = ECONNABORTED;
      return -1;
    default:
      errno = saved_errno;
      return result;
  }
  // Out of descriptors: take the newest connection off the backlog and close it, so
  // the listener does not spin on a readable socket it cannot accept.
  // The poll() first: the listening socket blocks, and the connection that made it
  // readable may be gone already.
  pollfd pending{listen_fd, POLLIN, 0};
  if (g_spare_fd >= 0 && poll(&pending, 1, 0) == 1 && (pending.revents & POLLIN)) {
    real_close(g_spare_fd);
    g_spare_fd = -1;
    int shed = real_accept(listen_fd, nullptr, nullptr);
    if (shed >= 0) real_close(shed);
    reopenSpare();
  }
  if (g_spare_fd < 0) {
    const timespec pause{0, 100'000'000};
    nanosleep(&pause, nullptr);
    reopenSpare();
  }
  g_no_fd_log.note(0, "milter_accept_failed",
                   std::string("error=\"") + (saved_errno == EMFILE ? "too many open files" : "file table full") +
                       "\" action=\"newest connection closed\"");
  errno = ECONNABORTED;
  return -1;
}

void afterRead(int fd, ssize_t n) {
  // Every read, watched or not: a callback asks about the read just before it, and a
  // stale number from an earlier connection of this worker thread must not answer.
  if (n <= 0) return;
  t_last_read_fd = fd;
  if (g_last_io && fd >= 0 && static_cast<unsigned long>(fd) < g_slots &&
      g_last_io[fd].load(std::memory_order_relaxed) != 0) {
    g_last_io[fd].store(nowSecond(), std::memory_order_relaxed);
  }
}

int close(int fd, int (*real_close)(int)) {
  const bool watched = g_last_io && fd >= 0 && static_cast<unsigned long>(fd) < g_slots && g_last_io[fd].load() != 0;
  if (!watched && !tracked(fd)) return real_close(fd);
  std::lock_guard lock(g_mutex);
  g_accepted_at[fd].store(0);
  g_last_io[fd].store(0);
  return real_close(fd);
}

}  // namespace zetian::milter::connections
