// Tells systemd where the daemon is in its life (sd_notify, for the unit's
// Type=notify): READY=1 once the milter (or policy) socket listens, RELOADING=1 and
// READY=1 again around a SIGUSR1 reload, STOPPING=1 when a stop begins.
//
// Without NOTIFY_SOCKET in the environment (not started by systemd) every call does
// nothing; built without libsystemd (ZETIAN_HAVE_SYSTEMD unset) likewise, and the
// installed unit then says Type=simple (CMakeLists.txt of this folder).
#pragma once

namespace zetian::milter::service_notify {

void ready();
// Before a reload; ready() after it, whatever its outcome.
void reloading();
// Idempotent: the control thread and main() may both call it.
void stopping();

}  // namespace zetian::milter::service_notify
