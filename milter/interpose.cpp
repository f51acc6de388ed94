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

#include <cerrno>

#include "milter/connections.h"
#include "milter/quickack.h"

namespace {

using ReadFn = ssize_t (*)(int, void*, size_t);
using CloseFn = int (*)(int);

template <typename Fn>
Fn next(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_NEXT, name));
}

ReadFn realRead() {
  static ReadFn fn = next<ReadFn>("read");
  return fn;
}

int realClose(int fd) {
  static CloseFn fn = next<CloseFn>("close");
  return fn ? fn(fd) : static_cast<int>(syscall(SYS_close, fd));
}

int realAccept(int fd, sockaddr* addr, socklen_t* len) {
  static zetian::milter::connections::AcceptFn fn = next<zetian::milter::connections::AcceptFn>("accept");
  return fn ? fn(fd, addr, len) : static_cast<int>(syscall(SYS_accept, fd, addr, len));
}

}  // namespace

extern "C" ssize_t read(int fd, void* buf, size_t count) {
  ReadFn real = realRead();
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
