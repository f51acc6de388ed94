// The Raft driver's writer thread: runs storage jobs (append, fsync, hard state,
// snapshots) one at a time, in order, off the cluster thread, and hands each job's
// outcome back to the cluster thread. The cluster thread never waits for a disk.
//
// The Storage belongs to the writer thread once handed over: nothing else touches it.
// A job that throws leaves the storage unusable (storage.h: every later call throws
// until it is reopened); its error text goes back to the loop, and so does every later
// job's, so the driver sees the first failure and stops.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "cluster/loop.h"
#include "cluster/raft/storage.h"

namespace zetian::cluster::raft {

class StorageWriter {
 public:
  // `failure`: nullopt when the job ran to its end, else what went wrong.
  using Done = std::function<void(std::optional<std::string> failure)>;

  StorageWriter(Loop& loop, std::unique_ptr<Storage> storage);
  ~StorageWriter();  // stop()
  StorageWriter(const StorageWriter&) = delete;
  StorageWriter& operator=(const StorageWriter&) = delete;

  // Queues `job`; `done` runs on the loop thread after it, unless stop() came first.
  // Call on the loop thread.
  void submit(std::function<void(Storage&)> job, Done done);
  // Finishes the job under way (a write cut short is what a crash leaves, but nothing
  // makes it one), drops the queued ones, joins the thread. Later completions are
  // dropped. Idempotent.
  void stop();

 private:
  struct Job {
    std::function<void(Storage&)> run;
    Done done;
  };
  void work();

  Loop& loop_;
  std::unique_ptr<Storage> storage_;  // the writer thread's
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> jobs_;   // guarded by mutex_
  bool stopping_ = false;  // guarded by mutex_
  // Shared with every completion posted to the loop: false once stopped, so a late
  // completion does not call into a driver that is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::thread thread_;
};

}  // namespace zetian::cluster::raft
