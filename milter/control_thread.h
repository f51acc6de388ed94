// The control thread: signals, reload, and waking libmilter's listener at stop.
//
// libmilter blocks SIGHUP, SIGTERM and SIGINT and waits for them on its own thread,
// where SIGHUP means stop too: reload therefore uses SIGUSR1. This thread waits for
// SIGUSR1 and for the stop signals as well, competing with libmilter's signal thread:
// whichever receives a stop signal, the listener is asked to stop and then woken,
// because it notices a stop only when its poll() returns (every 5 s otherwise).
//
// Once a second it also shuts down the milter connections that stayed silent past
// milter.timeout (connections.h): a thread of ours that already wakes up regularly.
//
// Every thread must have these signals blocked before this one starts (main() blocks
// them before the engine starts its threads), or the kernel may deliver them elsewhere.
#pragma once

#include <pthread.h>

#include <string>

#include "plugin/zetian.h"

namespace zetian::milter::control {

// Start the thread. `socket_spec` is the milter socket (libmilter's syntax), used to
// wake the listener; "" when the milter listener is off (policy host only): a stop
// signal then ends waitForStop().
void start(zetian_engine* engine, const std::string& socket_spec);
// With the milter off: block until SIGTERM, SIGINT or SIGHUP arrived.
void waitForStop();
// After smfi_main() (or waitForStop()) has returned: end the thread and wait for it.
void stop();

}  // namespace zetian::milter::control
