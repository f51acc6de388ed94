// Counts the bytes allocated while a test has it switched on (g_counting), to show that
// a decoder given forged counts and lengths reserves nothing they name. It replaces the
// global operator new and delete: include it from exactly one source file of a test
// binary. GCC 12 sees the inlined replacement pair (malloc in new, free in delete) as a
// mismatch; it is the matching pair.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<bool> g_counting{false};
std::atomic<std::size_t> g_counted_bytes{0};
}  // namespace

void* operator new(std::size_t size) {
  if (g_counting.load(std::memory_order_relaxed)) g_counted_bytes += size;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
