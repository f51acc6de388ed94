#include "milter/quickack.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>

namespace zetian::milter::quickack {

namespace {
std::atomic<bool> g_enabled{false};
thread_local bool t_milter_thread = false;
}  // namespace

void enable(bool on) { g_enabled.store(on, std::memory_order_relaxed); }
void markMilterThread() { t_milter_thread = true; }

void afterRead(int fd, ssize_t n) {
  if (n > 0 && t_milter_thread && g_enabled.load(std::memory_order_relaxed)) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
  }
}

}  // namespace zetian::milter::quickack
