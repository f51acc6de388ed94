#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <set>
#include <vector>

#include "state/slab.h"

namespace zetian::state {
namespace {

TEST(SlabMapping, IsAlignedToTwoMebibytesAndZeroFilled) {
  HugePageMapping m(100);
  ASSERT_NE(m.data(), nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(m.data()) % (2u << 20), 0u);
  EXPECT_EQ(m.size(), 2u << 20);
  const auto* bytes = static_cast<const unsigned char*>(m.data());
  for (std::size_t i = 0; i < m.size(); i += 4096) EXPECT_EQ(bytes[i], 0);
  HugePageMapping moved = std::move(m);
  EXPECT_EQ(m.data(), nullptr);
  EXPECT_NE(moved.data(), nullptr);
}

TEST(Slab, ReusesAReleasedSlotForTheSameSizeClassOnly) {
  ChunkSource source(4096);
  Slab slab;
  slab.useSource(source);
  void* a = slab.allocate(90);
  void* b = slab.allocate(90);
  EXPECT_NE(a, b);
  slab.release(a, 90);
  void* c = slab.allocate(200);  // another class: not a's slot
  EXPECT_NE(c, a);
  EXPECT_EQ(slab.allocate(95), a);  // 90 and 95 round to the same 96-byte class
  EXPECT_EQ(Slab::footprint(90), 96u);
  EXPECT_EQ(Slab::footprint(96), 96u);
  EXPECT_EQ(Slab::footprint(1000), 1000u);
}

TEST(Slab, HandsOutAlignedNonOverlappingSlotsAcrossBlocks) {
  ChunkSource source(4096);
  Slab slab;
  slab.useSource(source);
  struct Held {
    unsigned char* p;
    std::size_t n;
  };
  std::vector<Held> held;
  for (std::size_t i = 0; i < 5000; ++i) {
    const std::size_t n = 1 + (i * 37) % 700;  // some above kMaxBytes: operator new
    auto* p = static_cast<unsigned char*>(slab.allocate(n));
    ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % 8, 0u);
    std::memset(p, static_cast<int>(i & 0xff), n);
    held.push_back({p, n});
  }
  for (std::size_t i = 0; i < held.size(); ++i) {
    for (std::size_t j = 0; j < held[i].n; ++j) ASSERT_EQ(held[i].p[j], i & 0xff) << i;
  }
  EXPECT_GT(source.mappedBytes(), 0u);
  for (const Held& h : held) slab.release(h.p, h.n);
}

}  // namespace
}  // namespace zetian::state
