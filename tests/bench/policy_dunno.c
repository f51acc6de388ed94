/* The floor under any Postfix policy-delegation host: a policy service that answers
 * every request with "action=DUNNO" and does nothing else (issue 11's baseline, the
 * `dunno` mode of tests/bench/postfix_throughput.py).
 *
 *   build/tests/bench/policy_dunno PORT [MAX_CONNECTIONS]
 *
 * Listens on 127.0.0.1:PORT (0: a free port) and prints
 * "policy_dunno: listening on 127.0.0.1:PORT" once it accepts connections. One thread,
 * one epoll set, many persistent connections at once, as smtpd keeps its policy
 * connection open across SMTP sessions (smtpd_policy_service_max_idle / _max_ttl).
 *
 * Protocol (Postfix SMTPD_POLICY_README): a request is "name=value" lines, each ended
 * by "\n", and an empty line; the answer is "action=DUNNO\n\n". A client may send
 * several requests before reading (pipelining); they are answered in order. Nothing
 * of a request is stored: a scanner tracks where a line starts, so memory per
 * connection is constant, and an answer is a counter of pending copies of one fixed
 * string. A line over 8 KiB, a line without '=', a request of more than 1,000
 * attributes or with none closes the connection (counted as malformed). A client that
 * sends without reading is not read from while 1,024 answers wait for it. At EOF the
 * answers still pending are written, then the connection is closed.
 *
 * SIGUSR1 prints "policy_dunno: connections=N open=N requests=N malformed=N" (stdout,
 * flushed): the benchmark checks that Postfix consulted it and kept its connections.
 * SIGTERM and SIGINT print the same line and exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
  kMaxLineBytes = 8192,
  kMaxAttributes = 1000,
  /* Past this many unwritten answers a connection is not read from until they drain. */
  kMaxPendingAnswers = 1024,
  kDefaultMaxConnections = 4096,
};

static const char kAnswer[] = "action=DUNNO\n\n";
#define ANSWER_LEN (sizeof kAnswer - 1)
/* Answers written per send(): a run of copies of kAnswer. */
#define ANSWERS_PER_SEND 64
static char answer_run[ANSWERS_PER_SEND * ANSWER_LEN];

struct conn {
  int fd;
  bool at_line_start;   /* the next byte starts a line (an empty line ends a request) */
  bool line_has_equals; /* the current line has its '=' */
  bool eof;             /* the client closed its side: flush, then close */
  bool reading;         /* EPOLLIN is in the interest set */
  bool writing;         /* EPOLLOUT is in the interest set */
  uint32_t line_bytes;
  uint32_t attributes; /* lines of the current request */
  uint32_t pending;    /* answers not yet completely written */
  uint32_t written;    /* bytes of the first pending answer already written */
};

struct stats {
  unsigned long long connections;
  unsigned long long requests;
  unsigned long long malformed;
  unsigned open;
};

/* epoll data.ptr of the two non-connection descriptors. */
static int listener_tag, signals_tag;

static struct stats stats;
static struct conn** conns; /* by fd */
static size_t conns_size;
static unsigned max_connections;
static int epfd, listen_fd;
static bool listener_armed;

static void print_stats(void) {
  printf("policy_dunno: connections=%llu open=%u requests=%llu malformed=%llu\n", stats.connections,
         stats.open, stats.requests, stats.malformed);
  fflush(stdout);
}

static void close_conn(struct conn* c) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  conns[c->fd] = NULL;
  free(c);
  stats.open--;
  /* A slot is free again: accept once more if the cap had stopped it. */
  if (!listener_armed) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener_tag};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) == 0) listener_armed = true;
  }
}

static void malformed(struct conn* c, const char* why) {
  fprintf(stderr, "policy_dunno: closing connection fd %d: %s\n", c->fd, why);
  stats.malformed++;
  close_conn(c);
}

/* Sets the interest set to what the connection needs now; false if epoll refused. */
static bool update_interest(struct conn* c) {
  const bool want_read = !c->eof && c->pending < kMaxPendingAnswers;
  const bool want_write = c->pending > 0;
  if (want_read == c->reading && want_write == c->writing) return true;
  struct epoll_event ev = {.events = (want_read ? EPOLLIN : 0u) | (want_write ? EPOLLOUT : 0u),
                           .data.ptr = c};
  if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) return false;
  c->reading = want_read;
  c->writing = want_write;
  return true;
}

/* Writes pending answers until none is left or the socket is full. False: the
 * connection is gone (closed here). */
static bool flush(struct conn* c) {
  while (c->pending > 0) {
    const uint32_t answers = c->pending < ANSWERS_PER_SEND ? c->pending : ANSWERS_PER_SEND;
    const size_t len = answers * ANSWER_LEN - c->written;
    const ssize_t n = send(c->fd, answer_run + c->written, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EINTR) continue;
      close_conn(c); /* the client went away (EPIPE, ECONNRESET): nothing to answer */
      return false;
    }
    const size_t total = c->written + (size_t)n;
    c->pending -= (uint32_t)(total / ANSWER_LEN);
    c->written = (uint32_t)(total % ANSWER_LEN);
  }
  if (c->pending == 0 && c->eof) {
    close_conn(c);
    return false;
  }
  if (!update_interest(c)) {
    close_conn(c);
    return false;
  }
  return true;
}

/* Scans received bytes; false if the input was malformed (connection closed here). */
static bool scan(struct conn* c, const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const char ch = p[i];
    if (ch == '\n') {
      if (c->at_line_start) {
        if (c->attributes == 0) {
          malformed(c, "empty request");
          return false;
        }
        c->attributes = 0;
        c->pending++;
        stats.requests++;
      } else {
        if (!c->line_has_equals) {
          malformed(c, "attribute line without '='");
          return false;
        }
        if (++c->attributes > kMaxAttributes) {
          malformed(c, "more than 1000 attributes");
          return false;
        }
        c->at_line_start = true;
      }
      continue;
    }
    if (c->at_line_start) {
      c->at_line_start = false;
      c->line_has_equals = false;
      c->line_bytes = 0;
    }
    if (++c->line_bytes > kMaxLineBytes) {
      malformed(c, "line over 8192 bytes");
      return false;
    }
    if (ch == '=') c->line_has_equals = true;
  }
  return true;
}

static void on_readable(struct conn* c) {
  char buf[16384];
  const ssize_t n = recv(c->fd, buf, sizeof buf, 0);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) close_conn(c);
    return;
  }
  if (n == 0) {
    c->eof = true; /* a partial request at EOF is dropped: nobody is left to answer */
    flush(c);
    return;
  }
  if (scan(c, buf, (size_t)n)) flush(c);
}

static void on_acceptable(void) {
  while (stats.open < max_connections) {
    const int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) perror("policy_dunno: accept");
      return;
    }
    struct conn* c = (size_t)fd < conns_size ? calloc(1, sizeof *c) : NULL;
    if (c == NULL) {
      fprintf(stderr, "policy_dunno: no room for connection fd %d\n", fd);
      close(fd);
      continue;
    }
    c->fd = fd;
    c->at_line_start = true;
    c->reading = true;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      perror("policy_dunno: epoll_ctl");
      close(fd);
      free(c);
      continue;
    }
    conns[fd] = c;
    stats.open++;
    stats.connections++;
  }
  /* At the cap: stop watching the listener (level-triggered, it would spin) until a
   * connection closes; the kernel's backlog holds the waiting clients. */
  if (listener_armed && epoll_ctl(epfd, EPOLL_CTL_DEL, listen_fd, NULL) == 0) listener_armed = false;
}

/* True when the process should exit. */
static bool on_signal(int sfd) {
  struct signalfd_siginfo si;
  bool stop = false;
  while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
    print_stats();
    if (si.ssi_signo != SIGUSR1) stop = true;
  }
  return stop;
}

static int parse_uint(const char* s, unsigned long min, unsigned long max, unsigned long* out) {
  char* end;
  errno = 0;
  const unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min || v > max) return -1;
  *out = v;
  return 0;
}

int main(int argc, char** argv) {
  unsigned long port, cap = kDefaultMaxConnections;
  if (argc < 2 || argc > 3 || parse_uint(argv[1], 0, 65535, &port) != 0 ||
      (argc == 3 && parse_uint(argv[2], 1, 1000000, &cap) != 0)) {
    fprintf(stderr, "usage: policy_dunno PORT(0-65535, 0: any free port) [MAX_CONNECTIONS(>=1)]\n");
    return 2;
  }
  for (size_t i = 0; i < ANSWERS_PER_SEND; ++i) memcpy(answer_run + i * ANSWER_LEN, kAnswer, ANSWER_LEN);

  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) != 0) {
    perror("policy_dunno: getrlimit");
    return 1;
  }
  /* Raise the soft limit as far as allowed, so MAX_CONNECTIONS is what caps. */
  if (nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
    getrlimit(RLIMIT_NOFILE, &nofile);
  }
  conns_size = nofile.rlim_cur == RLIM_INFINITY || nofile.rlim_cur > 1048576 ? 1048576 : nofile.rlim_cur;
  max_connections = (unsigned)cap;
  conns = calloc(conns_size, sizeof *conns);
  if (conns == NULL) {
    perror("policy_dunno: calloc");
    return 1;
  }

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGUSR1);
  if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0) {
    perror("policy_dunno: sigprocmask");
    return 1;
  }
  const int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (sfd < 0 || listen_fd < 0 || epfd < 0) {
    perror("policy_dunno: signalfd/socket/epoll_create1");
    return 1;
  }
  const int one = 1;
  setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t addr_len = sizeof addr;
  if (bind(listen_fd, (struct sockaddr*)&addr, sizeof addr) != 0 || listen(listen_fd, 1024) != 0 ||
      getsockname(listen_fd, (struct sockaddr*)&addr, &addr_len) != 0) {
    fprintf(stderr, "policy_dunno: cannot listen on 127.0.0.1:%lu: %s\n", port, strerror(errno));
    return 1;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listener_tag};
  struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &signals_tag};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev) != 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &sev) != 0) {
    perror("policy_dunno: epoll_ctl");
    return 1;
  }
  listener_armed = true;
  printf("policy_dunno: listening on 127.0.0.1:%u\n", (unsigned)ntohs(addr.sin_port));
  fflush(stdout);

  struct epoll_event events[256];
  for (;;) {
    const int n = epoll_wait(epfd, events, 256, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      perror("policy_dunno: epoll_wait");
      return 1;
    }
    /* Only a connection's own event closes it (or the exit below), and a descriptor
     * appears once per batch: no later event of a batch points at a freed one. */
    for (int i = 0; i < n; ++i) {
      void* tag = events[i].data.ptr;
      if (tag == &listener_tag) {
        on_acceptable();
      } else if (tag == &signals_tag) {
        if (on_signal(sfd)) goto out;
      } else {
        struct conn* c = tag;
        const uint32_t e = events[i].events;
        if (e & (EPOLLIN | EPOLLHUP | EPOLLERR) && c->reading) {
          on_readable(c);
        } else if (e & (EPOLLHUP | EPOLLERR)) {
          close_conn(c);
        } else if (e & EPOLLOUT) {
          flush(c);
        }
      }
    }
  }
out:
  for (size_t fd = 0; fd < conns_size; ++fd) {
    if (conns[fd] != NULL) close_conn(conns[fd]);
  }
  free(conns);
  close(listen_fd);
  close(epfd);
  close(sfd);
  return 0;
}
