#include "milter/service_notify.h"

#include <time.h>

#include <atomic>
#include <string>

#ifdef ZETIAN_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace zetian::milter::service_notify {

namespace {

std::atomic<bool> g_stopping{false};

void send(const std::string& state) {
#ifdef ZETIAN_HAVE_SYSTEMD
  // unset_environment = 0: a reload notifies again, so NOTIFY_SOCKET must stay.
  sd_notify(0, state.c_str());
#else
  (void)state;
#endif
}

}  // namespace

void ready() {
  if (!g_stopping.load()) send("READY=1");
}

void reloading() {
  if (g_stopping.load()) return;
  // systemd 253+ (Type=notify-reload) matches RELOADING=1 with the monotonic time of
  // the request; older versions ignore the field.
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  const unsigned long long usec =
      static_cast<unsigned long long>(now.tv_sec) * 1000000ULL + static_cast<unsigned long long>(now.tv_nsec) / 1000ULL;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

void stopping() {
  if (!g_stopping.exchange(true)) send("STOPPING=1");
}

}  // namespace zetian::milter::service_notify
