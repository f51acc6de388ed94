// Memory for the bucket store: entries carved from large, huge-page-backed chunks.
//
// Why not malloc: a store of 1M keys is ~100 MB touched at random, one key per call,
// and a charge makes about three dependent loads into it (bucket head, entry, LRU
// neighbours). With 4 KiB pages nearly each of them also misses the TLB, and in a
// virtual machine a page walk is two-dimensional: on the 2-core test VM a dependent
// random load over 128 MB costs ~300 ns with 4 KiB pages and ~240 ns with 2 MiB pages,
// and charge() on 1M keys takes 15-25% less CPU with huge pages (docs/BENCHMARKS.md).
// Carving entries out of 2 MiB-aligned chunks marked MADV_HUGEPAGE lets the kernel back
// them with huge pages (THP "madvise" mode, the Debian default), and drops malloc's
// 8-byte header and 16-byte rounding per entry (120 -> 104 bytes for a 26-byte key).
//
// Structure: one ChunkSource per store hands out blocks (a few KiB to 64 KiB) under its
// own mutex, rarely; each shard owns a Slab that bump-allocates from its current block
// and keeps a free list per 8-byte size class, all under the shard's lock. Sizes above
// Slab::kMaxBytes go to operator new. Memory returns to the system only when the store
// is destroyed: a freed slot waits for the next entry of its size class. The store
// never holds more than max_keys entries, so the high-water mark is bounded (a shift
// in key lengths can leave one class's free slots unused meanwhile).
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <vector>

namespace zetian::state {

// Anonymous memory aligned to 2 MiB, advised for transparent huge pages, zero-filled.
// Throws std::bad_alloc on failure.
class HugePageMapping {
 public:
  HugePageMapping() = default;
  explicit HugePageMapping(std::size_t bytes);
  ~HugePageMapping();
  HugePageMapping(HugePageMapping&& other) noexcept;
  HugePageMapping& operator=(HugePageMapping&& other) noexcept;
  HugePageMapping(const HugePageMapping&) = delete;
  HugePageMapping& operator=(const HugePageMapping&) = delete;

  void* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

class ChunkSource {
 public:
  explicit ChunkSource(std::size_t block_bytes);
  // A block of blockBytes(); valid until the source is destroyed. Thread-safe.
  void* takeBlock();
  std::size_t blockBytes() const { return block_bytes_; }
  std::size_t mappedBytes() const;

 private:
  static constexpr std::size_t kChunkBytes = std::size_t{2} << 20;

  const std::size_t block_bytes_;
  mutable std::mutex mu_;
  std::vector<HugePageMapping> chunks_;  // guarded by mu_
  std::size_t used_in_last_ = kChunkBytes;  // guarded by mu_
};

// Not thread-safe: each shard guards its own with the shard lock.
class Slab {
 public:
  static constexpr std::size_t kGranule = 8;
  static constexpr std::size_t kMaxBytes = 512;

  Slab() = default;
  void useSource(ChunkSource& source) { source_ = &source; }
  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;

  // Memory for `bytes`, aligned to 8. release() must get the same `bytes`.
  void* allocate(std::size_t bytes);
  void release(void* p, std::size_t bytes);

  // Bytes the slab's entries occupy, with rounding to the size class.
  static std::size_t footprint(std::size_t bytes);

 private:
  struct FreeSlot {
    FreeSlot* next;
  };
  static std::size_t classOf(std::size_t bytes) { return (bytes + kGranule - 1) / kGranule; }

  ChunkSource* source_ = nullptr;
  std::array<FreeSlot*, kMaxBytes / kGranule + 1> free_{};  // by size class
  char* cursor_ = nullptr;
  char* end_ = nullptr;
};

}  // namespace zetian::state
