// Milter connections as file descriptors: the cap, the silent ones, and accept()
// failing for want of descriptors.
//
// What libmilter (Debian's build: _FFR_WORKERS_POOL, poll()) does by itself, read from
// its listener.c and worker.c:
//   - a new connection goes to the pool; once it has no command to read it waits in
//     the pool controller's poll() set. Waiting sessions are swept only every 600 s
//     (DT_CHECK_OLD_SESSIONS), closing those idle longer than smfi_settimeout(). So a
//     connection that never sends a command holds its descriptor for up to 10 minutes;
//   - accept() failing with EMFILE/ENFILE is retried at once without a pause: the
//     listener spins at 100% CPU for as long as descriptors are exhausted (other accept
//     errors sleep and, after 16 in a row, end the listener for good);
//   - there is no cap on connections.
//
// What we add, from the libc calls libmilter makes (interpose.cpp):
//   - the cap: a new connection whose descriptor would leave fewer than kFdReserve
//     descriptors under RLIMIT_NOFILE is closed at once (descriptors are handed out
//     lowest first, so a number that high means the ones below are all in use). The
//     rest of the process (health socket, cluster links, log, hooks) keeps its margin;
//   - silent connections: one that has not delivered its first command (negotiation
//     or connect, which Postfix and Sendmail send at once) within milter.timeout is
//     shut down. shutdown(), not close(): the descriptor stays libmilter's, its worker
//     reads EOF and ends the session the usual way, and no descriptor number is
//     reused under libmilter's feet. Connections past their first command are left to
//     libmilter: they follow the SMTP client's pace, which can legitimately pause;
//   - at the cap, the connection that has waited longest for its next command (none
//     read within the last second) is shut down as the newest is refused, so the
//     next connection finds room: connections that negotiate and then go quiet would
//     otherwise hold the cap until libmilter's 600 s sweep and keep every MTA session
//     out. Logged as milter_idle_connection_evicted;
//   - EMFILE/ENFILE: a spare descriptor is closed to accept the newest connection and
//     close it at once (the client sees it closed, the listener sees ECONNABORTED and
//     carries on); without a spare, the listener pauses 100 ms instead of spinning.
//   - the network errors Linux reports through accept() for a connection that died
//     in the backlog (EPROTO, ENETUNREACH, ...) reach libmilter as ECONNABORTED, which
//     it retries at once instead of counting toward its 16-failure exit.
//   Each refusal is logged, at most one line per kind every 10 s, with counts.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>

#include "plugin/zetian.h"

namespace zetian::milter::connections {

// Descriptors kept free for everything that is not a milter connection.
inline constexpr unsigned long kFdReserve = 64;

// Once, before any other thread starts (the close() interposer reads the table it
// sets up without a lock). `fd_limit` is RLIMIT_NOFILE's soft limit; `silent_timeout_s` is
// milter.timeout (at least 1 s is used).
void configure(zetian_engine* engine, unsigned long fd_limit, long silent_timeout_s);
// The calling thread runs libmilter's listener (the one calling smfi_main()): its
// accept() calls are watched. No other accept() in the process is.
void markListenerThread();
// From a milter callback: the connection this thread last read from has delivered a
// command, so it is no longer silent.
void markSpoken();
// Shut down the silent connections past their deadline; returns how many. From the
// control thread, about once a second.
std::size_t shutDownSilent();

// For interpose.cpp. `result` and `saved_errno` are what the real accept() gave;
// returns what libmilter's accept() returns (errno set).
using AcceptFn = int (*)(int, struct sockaddr*, socklen_t*);
int afterAccept(int listen_fd, int result, int saved_errno, AcceptFn real_accept, int (*real_close)(int));
void afterRead(int fd, ssize_t n);
// Closes `fd` with `real_close`, untracking it first when it is a watched connection.
int close(int fd, int (*real_close)(int));

}  // namespace zetian::milter::connections
