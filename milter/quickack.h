// TCP_QUICKACK after every read on libmilter's sockets.
//
// When a milter negotiates away steps and replies, Postfix sends several small
// packets in a row with no answer in between. Its Nagle algorithm holds the second
// until the first is ACKed, and Linux delays our ACK by up to 40 ms: every message
// stalls for that long. TCP_NODELAY on our side cannot help (it is Postfix that
// waits); acknowledging at once can. Linux clears TCP_QUICKACK again by itself, so
// it must be set after each read. libmilter does its reads inside the library, so
// we interpose read() (interpose.cpp) and set the option on milter threads only.
#pragma once

#include <sys/types.h>

namespace zetian::milter::quickack {

// Turn the interposer on (the milter socket is TCP) or off (a Unix socket).
void enable(bool on);
// Mark the calling thread as one of libmilter's: its reads get the option.
void markMilterThread();
// From the read() interposer, after every read of the process.
void afterRead(int fd, ssize_t n);

}  // namespace zetian::milter::quickack

namespace quickack = zetian::milter::quickack;
