// What one wake-up of a sleeping thread on another CPU costs on this machine: the floor
// under a remote cluster check, which wakes a sleeping thread four times (the milter
// thread's post wakes its cluster thread, the frame wakes the owner's cluster thread,
// the reply wakes the caller's cluster thread, which wakes the milter thread).
//
// Two threads pinned to CPUs 0 and 1 pass one byte through a pair of pipes; before each
// round trip the first sleeps 200 us, so the second is asleep (its CPU idle) when the
// byte arrives, as between paced checks. A round trip is two such wake-ups.
//
//   build/tests/bench/wakeup_pingpong [round_trips]      (default 5000)
// Not registered with CTest. Figures: docs/BENCHMARKS.md ("Cluster-scope checks").
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

namespace {

bool pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  const long rounds = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 5000;
  if (rounds < 1) {
    std::fprintf(stderr, "usage: wakeup_pingpong [round_trips >= 1]\n");
    return 2;
  }
  int there[2], back[2];
  if (pipe(there) != 0 || pipe(back) != 0) return 1;
  std::thread echo([&] {
    pin(1);
    char c;
    while (read(there[0], &c, 1) == 1 && c != 'q') {
      if (write(back[1], &c, 1) != 1) return;
    }
  });
  if (!pin(0)) std::fprintf(stderr, "wakeup_pingpong: could not pin to CPU 0 (fewer than 2 CPUs?)\n");
  std::vector<double> us;
  us.reserve(std::size_t(rounds));
  char c = 'x';
  for (long i = 0; i < rounds; ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    const auto t0 = std::chrono::steady_clock::now();
    if (write(there[1], &c, 1) != 1 || read(back[0], &c, 1) != 1) return 1;
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }
  c = 'q';
  if (write(there[1], &c, 1) != 1) return 1;
  echo.join();
  std::sort(us.begin(), us.end());
  auto at = [&](double p) { return us[std::size_t(p * double(us.size() - 1))]; };
  std::printf("round trip, two cross-CPU wake-ups of a sleeping thread (us): p50=%.1f p90=%.1f p99=%.1f\n",
              at(0.5), at(0.9), at(0.99));
  return 0;
}
