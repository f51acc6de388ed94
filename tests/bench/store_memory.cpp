// Memory per key of the bucket store: fills N keys (default 1,000,000) shaped like the
// engine's and reports, per key, the growth of the resident set (the figure that
// counts), of malloc's bytes in use (glibc mallinfo2, with allocator headers and
// rounding; the store maps its own memory, so ~0 for it) and the store's own
// stats().bytes. Does the same for the std::list + std::unordered_map layout in
// baseline_store.h, for comparison.
//
//   store_memory [N] [--thp=off]
#include <malloc.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "state/bucket_store.h"
#include "tests/bench/baseline_store.h"

namespace {

using namespace zetian;

const state::Limit kLimit{100, 3600 * state::kNanosPerSecond, 100};

std::string engineKey(std::size_t i) { return std::string("sender\0u", 8) + std::to_string(i) + "@example.net"; }

struct Usage {
  double heap;  // bytes in use by malloc
  double rss;   // resident bytes
  double huge;  // resident bytes in transparent huge pages
};

double smapsRollup(const std::string& field) {
  std::ifstream in("/proc/self/smaps_rollup");
  std::string name;
  double kib = 0;
  while (in >> name) {
    if (name == field + ":") {
      in >> kib;
      return kib * 1024;
    }
  }
  return 0;
}

Usage usage() {
  malloc_trim(0);
  const struct mallinfo2 mi = mallinfo2();
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return Usage{double(mi.uordblks + mi.hblkhd), double(pages_resident) * double(sysconf(_SC_PAGESIZE)),
               smapsRollup("AnonHugePages")};
}

std::uint64_t statedBytes(const state::BucketStore& s) { return s.stats().bytes; }
std::uint64_t statedBytes(const bench::BaselineStore&) { return 0; }

template <class Store>
void measure(const char* name, std::size_t n) {
  std::string key;  // one reused buffer: only the store's allocations remain
  key.reserve(64);
  const Usage before = usage();
  double key_bytes = 0;
  {
    auto store = std::make_unique<Store>(n, 64);
    for (std::size_t i = 0; i < n; ++i) {
      key = engineKey(i);
      key_bytes += double(key.size());
      store->charge(key, state::Algorithm::TokenBucket, kLimit, 0, 1);
    }
    const Usage after = usage();
    std::printf("%-24s keys=%zu avg_key=%.1f B  rss/key=%.1f B  (malloc/key=%.1f B, stats.bytes/key=%.1f B, "
                "in huge pages: %.0f%%)\n",
                name, n, key_bytes / double(n), (after.rss - before.rss) / double(n),
                (after.heap - before.heap) / double(n), double(statedBytes(*store)) / double(n),
                100.0 * (after.huge - before.huge) / std::max(1.0, after.rss - before.rss));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t n = 1'000'000;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--thp=off")
      ::prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);  // to see the figures without huge pages
    else
      n = std::strtoull(argv[i], nullptr, 10);
  }
  if (n == 0) return 2;
  measure<state::BucketStore>("BucketStore (intrusive)", n);
  measure<bench::BaselineStore>("std::list+unordered_map", n);
  return 0;
}
