// The cost of making Raft's state durable (cluster/raft/storage.h) on a real disk:
// append + sync of one entry, of a batch of ten under one sync, and a hard state save
// (temp file, fsync, rename, folder fsync). p50/p99 over COUNT rounds each.
//   raft_storage_latency [PARENT_DIR [COUNT]]   (default: the current folder, 500)
// Runs in a fresh folder under PARENT_DIR, removed at the end; PARENT_DIR must be on
// the disk to measure (tmpfs makes every fsync free).
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cluster/raft/storage.h"

namespace raft = zetian::cluster::raft;
using Clock = std::chrono::steady_clock;

namespace {

void report(const char* what, std::vector<double>& ms) {
  std::sort(ms.begin(), ms.end());
  std::printf("%-28s p50 %7.3f ms   p99 %7.3f ms   (%zu rounds)\n", what, ms[ms.size() / 2],
              ms[std::min(ms.size() - 1, ms.size() * 99 / 100)], ms.size());
}

double since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path parent = argc > 1 ? argv[1] : ".";
  const int count = argc > 2 ? std::max(1, std::atoi(argv[2])) : 500;
  std::string tmpl = (parent / "raft-storage-bench-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::filesystem::path dir = tmpl;
  int rc = 0;
  try {
    auto opened = raft::Storage::open(dir / "raft");
    raft::Storage& s = *opened.storage;
    const std::string policy(2000, 'p');  // about the size of a policy document
    raft::Index next = 1;
    std::vector<double> one, ten, hard;
    for (int i = 0; i < count; ++i) {
      auto t0 = Clock::now();
      s.append({raft::Entry{1, next++, raft::EntryType::normal, policy}});
      s.sync();
      one.push_back(since(t0));

      std::vector<raft::Entry> batch;
      for (int k = 0; k < 10; ++k) batch.push_back(raft::Entry{1, next++, raft::EntryType::normal, policy});
      t0 = Clock::now();
      s.append(batch);
      s.sync();
      ten.push_back(since(t0));

      t0 = Clock::now();
      s.saveHardState({1, 1, next - 1});
      hard.push_back(since(t0));
    }
    report("append 1 entry + sync", one);
    report("append 10 entries + sync", ten);
    report("saveHardState", hard);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
