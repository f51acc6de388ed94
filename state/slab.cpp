#include "state/slab.h"

#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
// Under ASan, memory the slab has not handed out is poisoned, so a use after
// release() (or past an entry's end) is reported as it would be with malloc.
#define ZETIAN_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define ZETIAN_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define ZETIAN_POISON(p, n) ((void)(p), (void)(n))
#define ZETIAN_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#include <cstdint>
#include <new>
#include <utility>

namespace zetian::state {
namespace {

constexpr std::size_t kHugePage = std::size_t{2} << 20;

std::size_t roundUp(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

}  // namespace

HugePageMapping::HugePageMapping(std::size_t bytes) {
  if (bytes == 0) return;
  const std::size_t size = roundUp(bytes, kHugePage);
  // Over-map by one huge page, then trim both ends so the start is 2 MiB aligned.
  void* raw = ::mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = roundUp(start, kHugePage);
  if (aligned > start) ::munmap(raw, aligned - start);
  const std::size_t tail = (start + size + kHugePage) - (aligned + size);
  if (tail > 0) ::munmap(reinterpret_cast<void*>(aligned + size), tail);
  data_ = reinterpret_cast<void*>(aligned);
  size_ = size;
#ifdef MADV_HUGEPAGE
  ::madvise(data_, size_, MADV_HUGEPAGE);  // advice only: 4 KiB pages still work
#endif
}

HugePageMapping::~HugePageMapping() {
  if (data_) {
    ZETIAN_UNPOISON(data_, size_);  // the address range may be mapped again later
    ::munmap(data_, size_);
  }
}

HugePageMapping::HugePageMapping(HugePageMapping&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

HugePageMapping& HugePageMapping::operator=(HugePageMapping&& other) noexcept {
  if (this != &other) {
    if (data_) {
      ZETIAN_UNPOISON(data_, size_);
      ::munmap(data_, size_);
    }
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

ChunkSource::ChunkSource(std::size_t block_bytes) : block_bytes_(block_bytes) {}

void* ChunkSource::takeBlock() {
  std::lock_guard lock(mu_);
  if (used_in_last_ + block_bytes_ > kChunkBytes) {
    chunks_.emplace_back(kChunkBytes);
    used_in_last_ = 0;
  }
  void* block = static_cast<char*>(chunks_.back().data()) + used_in_last_;
  used_in_last_ += block_bytes_;
  return block;
}

std::size_t ChunkSource::mappedBytes() const {
  std::lock_guard lock(mu_);
  return chunks_.size() * kChunkBytes;
}

std::size_t Slab::footprint(std::size_t bytes) {
  return bytes > kMaxBytes ? bytes : classOf(bytes) * kGranule;
}

void* Slab::allocate(std::size_t bytes) {
  if (bytes > kMaxBytes) return ::operator new(bytes);
  const std::size_t cls = classOf(bytes);
  const std::size_t size = cls * kGranule;
  if (FreeSlot* slot = free_[cls]) {
    free_[cls] = slot->next;
    ZETIAN_UNPOISON(slot, size);
    return slot;
  }
  if (cursor_ == nullptr || static_cast<std::size_t>(end_ - cursor_) < size) {
    // The tail of the old block (less than kMaxBytes) is left unused.
    cursor_ = static_cast<char*>(source_->takeBlock());
    end_ = cursor_ + source_->blockBytes();
    ZETIAN_POISON(cursor_, source_->blockBytes());
  }
  void* p = cursor_;
  cursor_ += size;
  ZETIAN_UNPOISON(p, size);
  return p;
}

void Slab::release(void* p, std::size_t bytes) {
  if (bytes > kMaxBytes) {
    ::operator delete(p);
    return;
  }
  const std::size_t cls = classOf(bytes);
  free_[cls] = new (p) FreeSlot{free_[cls]};
  ZETIAN_POISON(static_cast<char*>(p) + sizeof(FreeSlot), cls * kGranule - sizeof(FreeSlot));
}

}  // namespace zetian::state
