#include "cluster/raft/storage_writer.h"

#include <chrono>
#include <exception>
#include <utility>

namespace zetian::cluster::raft {

StorageWriter::StorageWriter(Loop& loop, std::unique_ptr<Storage> storage)
    : loop_(loop), storage_(std::move(storage)) {
  thread_ = std::thread([this] { work(); });
}

StorageWriter::~StorageWriter() { stop(); }

void StorageWriter::submit(std::function<void(Storage&)> job, Done done) {
  loop_.checkThisThread();
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    jobs_.push_back(Job{std::move(job), std::move(done)});
  }
  wake_.notify_one();
}

void StorageWriter::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    jobs_.clear();
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  // The loop thread reads this flag in completions; stop() runs there too (or after
  // the loop has stopped), so plain writes do not race.
  *alive_ = false;
}

void StorageWriter::work() {
  std::optional<std::string> broken;  // the first failure: every later job reports it
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (stopping_) return;
      job = std::move(jobs_.front());
      jobs_.pop_front();
    }
    std::optional<std::string> failure = broken;
    if (!failure) {
      try {
        job.run(*storage_);
      } catch (const std::exception& e) {
        failure = e.what();
        broken = failure;
      }
    }
    // The completion must reach the loop: a full mailbox is waited out (it drains in
    // microseconds), a loop that is stopping takes nothing more.
    auto alive = alive_;
    auto done = [alive, done = std::move(job.done), failure]() mutable {
      if (*alive) done(std::move(failure));
    };
    for (;;) {
      if (loop_.post(done)) break;
      {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
}

}  // namespace zetian::cluster::raft
