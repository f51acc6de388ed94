// Little-endian fixed-width integers in byte strings: the one writer and reader of the
// durable and replicated records (state/raft_records, conf/policy_document,
// cluster/raft/policy_state). Pure; every read checks that its bytes are there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace zetian::state::le {

inline void putU8(std::string& out, std::uint8_t v) { out.push_back(static_cast<char>(v)); }
inline void putU32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}
inline void putU64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}

// Exactly 4 or 8 bytes at `at`; the caller has checked the size.
inline std::uint32_t getU32(std::string_view in, std::size_t at) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= std::uint32_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  return v;
}
inline std::uint64_t getU64(std::string_view in, std::size_t at) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  return v;
}

// Reads forward through a view; a read past the end gives nullopt and moves nothing.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  std::size_t left() const { return bytes_.size() - at_; }
  // An unsigned integer of `width` bytes (1 to 8).
  std::optional<std::uint64_t> u(int width) {
    if (left() < static_cast<std::size_t>(width)) return std::nullopt;
    std::uint64_t v = 0;
    for (int i = 0; i < width; ++i) v |= std::uint64_t{static_cast<unsigned char>(bytes_[at_ + i])} << (8 * i);
    at_ += static_cast<std::size_t>(width);
    return v;
  }
  std::optional<std::string_view> take(std::size_t n) {
    if (left() < n) return std::nullopt;
    const std::string_view out = bytes_.substr(at_, n);
    at_ += n;
    return out;
  }
  // A u8 length and that many bytes.
  std::optional<std::string_view> shortString() {
    const auto size = u(1);
    if (!size) return std::nullopt;
    return take(static_cast<std::size_t>(*size));
  }

 private:
  std::string_view bytes_;
  std::size_t at_ = 0;
};

}  // namespace zetian::state::le
