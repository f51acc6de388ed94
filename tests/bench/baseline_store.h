// The obvious alternative to BucketStore, kept only to measure the choice against:
// per shard a std::list of nodes in LRU order and a std::unordered_map from the key
// (a string_view into the node's std::string, so the key is stored once) to the list
// iterator. Same sharding, same locking, same algorithms; no expiry.
#pragma once

#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "state/limit.h"

namespace zetian::bench {

class BaselineStore {
 public:
  BaselineStore(std::size_t max_keys, std::size_t shard_count)
      : shard_count_(shard_count), shards_(std::make_unique<Shard[]>(shard_count)) {
    for (std::size_t i = 0; i < shard_count; ++i) shards_[i].capacity = (max_keys + shard_count - 1) / shard_count;
  }

  state::Outcome charge(std::string_view key, state::Algorithm algo, const state::Limit& limit, state::Nanos now,
                        std::uint64_t cost) {
    const std::size_t hash = std::hash<std::string_view>{}(key);
    Shard& s = shards_[((hash >> 32) * shard_count_) >> 32];
    std::lock_guard lock(s.mu);
    auto it = s.index.find(key);
    if (it == s.index.end()) {
      if (s.lru.size() >= s.capacity) {
        s.index.erase(s.lru.back().key);
        s.lru.pop_back();
      }
      s.lru.push_front(Node{std::string(key), {}, 0, algo});
      it = s.index.emplace(s.lru.front().key, s.lru.begin()).first;
    } else if (it->second != s.lru.begin()) {
      s.lru.splice(s.lru.begin(), s.lru, it->second);
    }
    Node& node = *it->second;
    const state::Outcome o = state::charge(algo, limit, node.state, now, cost);
    node.idle_at = state::idleAt(algo, limit, node.state);
    return o;
  }

  std::size_t size() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < shard_count_; ++i) n += shards_[i].lru.size();
    return n;
  }

 private:
  struct Node {
    std::string key;
    state::BucketState state;
    state::Nanos idle_at;
    state::Algorithm algo;
  };
  struct Shard {
    std::mutex mu;
    std::list<Node> lru;
    std::unordered_map<std::string_view, std::list<Node>::iterator> index;
    std::size_t capacity = 0;
  };
  std::size_t shard_count_;
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace zetian::bench
