// A keyed hash for bucket-store keys: SipHash-1-3 with a per-store random key.
//
// Store keys come from SMTP clients (addresses, HELO names), so an attacker chooses
// them. With an unkeyed hash they could pick thousands of keys that land in one chain
// and turn every lookup in that shard into a linear scan under the shard lock.
// SipHash is a PRF: without the 128-bit key, collisions cannot be aimed. The 1-3
// variant (one compression round, three finalisation rounds) is what Rust's HashMap
// and CPython use; for the 20-40 byte keys here it costs about 20 ns.
#pragma once

#include <cstdint>
#include <string_view>

namespace zetian::state {

struct HashKey {
  std::uint64_t k0 = 0;
  std::uint64_t k1 = 0;
};

std::uint64_t sipHash13(const HashKey& key, std::string_view data);

// The original SipHash-2-4 on the same code path: the published test vectors are for
// it, so the tests check the shared implementation through this one.
std::uint64_t sipHash24(const HashKey& key, std::string_view data);

}  // namespace zetian::state
