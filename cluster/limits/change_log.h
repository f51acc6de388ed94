// Keys this node charged as their owner, from the milter threads to the cluster thread,
// which replicates their state (limits/service.h). Thread-safe: any thread adds, the
// cluster thread takes. Bounded: past kMaxPending unread changes, new ones are dropped
// and counted (the keys are then replicated only when charged again).
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "state/limit.h"

namespace zetian::cluster::limits {

struct KeyChange {
  std::string key;        // store key
  std::string placement;  // placement descriptor (placement/view.h)
  state::Algorithm algorithm = state::Algorithm::TokenBucket;
  state::Limit limit;
};

class ChangeLog {
 public:
  static constexpr std::size_t kMaxPending = 1 << 20;

  void add(std::string_view key, std::string_view placement, state::Algorithm algorithm, const state::Limit& limit) {
    std::lock_guard lock(mutex_);
    if (changes_.size() >= kMaxPending) {
      ++dropped_;
      return;
    }
    changes_.push_back(KeyChange{std::string(key), std::string(placement), algorithm, limit});
  }

  std::vector<KeyChange> take() {
    std::vector<KeyChange> out;
    std::lock_guard lock(mutex_);
    out.swap(changes_);
    return out;
  }

  std::uint64_t dropped() const {
    std::lock_guard lock(mutex_);
    return dropped_;
  }

 private:
  mutable std::mutex mutex_;  // guards changes_ and dropped_
  std::vector<KeyChange> changes_;
  std::uint64_t dropped_ = 0;
};

}  // namespace zetian::cluster::limits
