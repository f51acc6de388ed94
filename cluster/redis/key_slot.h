// Which of a Redis Cluster's 16384 slots holds a key: CRC16 (XMODEM: polynomial
// 0x1021, initial value 0, no reflection) of the key, modulo 16384, exactly as Redis
// computes it (cluster.c, keyHashSlot). When the key holds a `{` followed later by a
// `}` with at least one byte between them, only the bytes between the first `{` and
// the first `}` after it are hashed (a hash tag); `{}` and a `{` without a `}` hash the
// whole key. Keys are arbitrary bytes (NUL included). Pure.
#pragma once

#include <cstdint>
#include <string_view>

namespace zetian::cluster::redis {

inline constexpr std::uint16_t kClusterSlots = 16384;

std::uint16_t crc16Xmodem(std::string_view bytes);
std::uint16_t keySlot(std::string_view key);

}  // namespace zetian::cluster::redis
