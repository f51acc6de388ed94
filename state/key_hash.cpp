// SipHash-1-3, following the reference implementation by Aumasson and Bernstein
// (https://github.com/veorq/SipHash), little-endian message words.
#include "state/key_hash.h"

#include <bit>
#include <cstring>

namespace zetian::state {
namespace {

struct SipState {
  std::uint64_t v0, v1, v2, v3;

  void round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }
  template <int kRounds>
  void absorb(std::uint64_t m) {
    v3 ^= m;
    for (int i = 0; i < kRounds; ++i) round();
    v0 ^= m;
  }
};

std::uint64_t loadLittleEndian(const char* p, std::size_t n) {
  std::uint64_t v = 0;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&v, p, n);
  } else {
    for (std::size_t i = 0; i < n; ++i) v |= std::uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  }
  return v;
}

template <int kCompressionRounds, int kFinalRounds>
std::uint64_t sipHash(const HashKey& key, std::string_view data) {
  SipState s{key.k0 ^ 0x736f6d6570736575ULL, key.k1 ^ 0x646f72616e646f6dULL, key.k0 ^ 0x6c7967656e657261ULL,
             key.k1 ^ 0x7465646279746573ULL};
  const char* p = data.data();
  const std::size_t n = data.size();
  const std::size_t whole = n & ~std::size_t{7};
  for (std::size_t i = 0; i < whole; i += 8) s.absorb<kCompressionRounds>(loadLittleEndian(p + i, 8));
  s.absorb<kCompressionRounds>((std::uint64_t{n & 0xff} << 56) | loadLittleEndian(p + whole, n - whole));
  s.v2 ^= 0xff;
  for (int i = 0; i < kFinalRounds; ++i) s.round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

}  // namespace

std::uint64_t sipHash13(const HashKey& key, std::string_view data) { return sipHash<1, 3>(key, data); }
std::uint64_t sipHash24(const HashKey& key, std::string_view data) { return sipHash<2, 4>(key, data); }

}  // namespace zetian::state
