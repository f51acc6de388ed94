// ThreadSanitizer suppressions for the tests that run HTTP clients as threads of the
// same process as the server.
//
// TSan models each file descriptor number as a memory location. libevent 2.1's evhttp
// closes a connection's socket before its bufferevent removes the fd from epoll, so
// the loop thread's epoll_ctl(DEL) can land on a number that a client thread of this
// test process has just reused for its own socket. The kernel call is harmless
// (EBADF/ENOENT, and only the loop thread registers fds in its epoll), and with real
// clients in other processes the situation cannot arise; only this report is hidden.
extern "C" const char* __tsan_default_suppressions() { return "race:epoll_ctl\n"; }
