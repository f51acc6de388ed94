// Time conversions shared by the code on the cluster thread. Timeouts and ages use
// std::chrono::steady_clock; the wall clock is only for what is shown or stamped
// (last_seen, beacon times, hook variables), never to time anything.
#pragma once

#include <sys/time.h>

#include <chrono>
#include <cstdint>

namespace zetian::cluster {

// libevent takes its delays as timevals.
template <typename Rep, typename Period>
timeval toTimeval(std::chrono::duration<Rep, Period> d) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  return timeval{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
}

// Wall-clock Unix time in milliseconds (0 for a clock set before 1970).
inline std::uint64_t unixMillis() {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  return ms > 0 ? static_cast<std::uint64_t>(ms) : 0;
}

}  // namespace zetian::cluster
