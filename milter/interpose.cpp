// The libc calls libmilter makes, seen by us: read(), accept() and close().
//
// libmilter (a shared library) calls these through the PLT, so the definitions in the
// executable win; each forwards to the next definition (libc, or a sanitizer's
// interceptor) found with dlsym(RTLD_NEXT). They apply to the whole process, so each
// costs the rest of it no more than a thread-local or atomic test:
//   read()   TCP_QUICKACK on milter threads (quickack.h); which connection a milter
//            callback is answering (connections.h);
//   accept() only on libmilter's listener thread: the connection cap and EMFILE;
//   close()  a watched connection is untracked before its number can be reused.
#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "milter/connections.h"
#include "milter/quickack.h"

namespace {

using ReadFn = ssize_t (*)(int, void*, size_t);
using CloseFn = int (*)(int);
using zetian::milter::connections::AcceptFn;

// The next definitions, looked up on first use. Atomic, not function-local statics:
// close() runs on every thread, also while the process exits, and a racing first
// lookup only stores the same pointer twice.
std::atomic<ReadFn> g_read{nullptr};
std::atomic<CloseFn> g_close{nullptr};
std::atomic<AcceptFn> g_accept{nullptr};

template <typename Fn>
Fn next(std::atomic<Fn>& slot, const char* name) {
  Fn fn = slot.load(std::memory_order_acquire);
  if (!fn) {
    fn = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
    slot.store(fn, std::memory_order_release);
  }
  return fn;
}

int realClose(int fd) {
  CloseFn fn = next(g_close, "close");
  return fn ? fn(fd) : static_cast<int>(syscall(SYS_close, fd));
}

int realAccept(int fd, sockaddr* addr, socklen_t* len) {
  AcceptFn fn = next(g_accept, "accept");
  return fn ? fn(fd, addr, len) : static_cast<int>(syscall(SYS_accept, fd, addr, len));
}

}  // namespace

extern "C" ssize_t read(int fd, void* buf, size_t count) {
  ReadFn real = next(g_read, "read");
  ssize_t n = real ? real(fd, buf, count) : syscall(SYS_read, fd, buf, count);
  const int saved = errno;
  zetian::milter::quickack::afterRead(fd, n);
  zetian::milter::connections::afterRead(fd, n);
  errno = saved;
  return n;
}

extern "C" int accept(int fd, sockaddr* addr, socklen_t* len) {
  int result = realAccept(fd, addr, len);
  return zetian::milter::connections::afterAccept(fd, result, errno, &realAccept, &realClose);
}

extern "C" int close(int fd) { return zetian::milter::connections::close(fd, &realClose); }
