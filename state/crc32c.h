// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of the Raft log
// segments, hard state and snapshot files (state/raft_records.h). Our own slicing-by-8
// table: no SSE4.2 intrinsic, so the value is the same on every machine the files may
// move to. The standard check value: crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstdint>
#include <string_view>

namespace zetian::state {

// The CRC of `data`; pass a previous result as `crc` to continue over a second piece
// (crc32c(b, crc32c(a)) == crc32c(a + b)).
std::uint32_t crc32c(std::string_view data, std::uint32_t crc = 0);

}  // namespace zetian::state
