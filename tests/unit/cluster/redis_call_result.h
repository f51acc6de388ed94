// A call's answer, handed from the cluster thread (where the Redis clients call back)
// to the test thread, which waits for it with a deadline.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>

#include "cluster/limits/service.h"

namespace zetian::cluster::testing {

struct CallResultBox {
  std::mutex mutex;
  std::condition_variable cv;
  std::optional<limits::CallResult> value;
  void set(limits::CallResult r) {
    std::lock_guard lock(mutex);
    value = std::move(r);
    cv.notify_all();
  }
  std::optional<limits::CallResult> wait(std::chrono::milliseconds deadline = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex);
    cv.wait_for(lock, deadline, [&] { return value.has_value(); });
    return value;
  }
};

}  // namespace zetian::cluster::testing
