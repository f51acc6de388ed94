#include <gtest/gtest.h>

#include <set>
#include <string>

#include "state/key_hash.h"

namespace zetian::state {
namespace {

HashKey referenceKey() {
  // Key bytes 00 01 .. 0f, read little-endian, as in the SipHash paper.
  return HashKey{0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
}

std::string bytesUpTo(std::size_t n) {
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s.push_back(static_cast<char>(i));
  return s;
}

TEST(KeyHash, SipHash24MatchesThePublishedVectors) {
  // Appendix A of "SipHash: a fast short-input PRF" and the reference vectors.h.
  EXPECT_EQ(sipHash24(referenceKey(), bytesUpTo(15)), 0xa129ca6149be45e5ULL);
  EXPECT_EQ(sipHash24(referenceKey(), bytesUpTo(0)), 0x726fdb47dd0e0e31ULL);
  EXPECT_EQ(sipHash24(referenceKey(), bytesUpTo(8)), 0x93f5f5799a932462ULL);
}

TEST(KeyHash, SipHash13MatchesOtherImplementations) {
  // The values Rust's SipHasher13 and Ruby's digest-sip_hash give.
  EXPECT_EQ(sipHash13(HashKey{}, ""), 0xd1fba762150c532cULL);
  EXPECT_EQ(sipHash13(referenceKey(), ""), 0xabac0158050fc4dcULL);
}

TEST(KeyHash, SipHash13DependsOnKeyAndEveryByte) {
  const std::string key("rule\0user@example.com", 21);
  const HashKey k = referenceKey();
  std::set<std::uint64_t> seen{sipHash13(k, key)};
  for (std::size_t i = 0; i < key.size(); ++i) {
    std::string changed = key;
    changed[i] ^= 1;
    seen.insert(sipHash13(k, changed));
  }
  seen.insert(sipHash13(HashKey{k.k0 + 1, k.k1}, key));
  seen.insert(sipHash13(k, key.substr(0, 20)));
  EXPECT_EQ(seen.size(), key.size() + 3);
}

}  // namespace
}  // namespace zetian::state
