#include "milter/quickack.h"

#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace zetian::milter::quickack {

namespace {
std::atomic<bool> g_enabled{false};
thread_local bool t_milter_thread = false;

using ReadFn = ssize_t (*)(int, void*, size_t);

ReadFn realRead() {
  static ReadFn fn = reinterpret_cast<ReadFn>(dlsym(RTLD_NEXT, "read"));
  return fn;
}
}  // namespace

void enable(bool on) { g_enabled.store(on, std::memory_order_relaxed); }
void markMilterThread() { t_milter_thread = true; }

}  // namespace zetian::milter::quickack

// libmilter (a shared library) calls read() through the PLT; the definition in the
// executable wins. Everything else in the process is unaffected but for one
// thread-local test.
extern "C" ssize_t read(int fd, void* buf, size_t count) {
  using namespace zetian::milter::quickack;
  ReadFn real = realRead();
  ssize_t n = real ? real(fd, buf, count) : syscall(SYS_read, fd, buf, count);
  if (n > 0 && t_milter_thread && g_enabled.load(std::memory_order_relaxed)) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
  }
  return n;
}
