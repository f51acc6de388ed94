// libFuzzer target for the RaftFrame payload decoder (cluster/wire/raft_codec.h): any
// bytes must decode or be refused without a crash, an out-of-bounds read, an escaped
// exception or an allocation the bytes cannot back. An ok message must be canonical
// (encoding it gives back the input) and, framed, must come back from the link decoder
// unchanged; a refusal must say why, and the framed payload must be refused alike.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "cluster/wire/codec.h"
#include "cluster/wire/raft_codec.h"

namespace wire = zetian::cluster::wire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const wire::RaftDecodeResult r = wire::decodeRaftMessage(input);

  // The same bytes as a frame's payload, which is how a link meets them.
  if (size > wire::kMaxRaftPayloadBytes) return 0;
  std::string frame;
  const std::size_t length = size + 2;
  for (int shift = 24; shift >= 0; shift -= 8) frame.push_back(static_cast<char>((length >> shift) & 0xff));
  frame.push_back(static_cast<char>(wire::kProtocolVersion));
  frame.push_back(static_cast<char>(wire::MessageType::RaftFrame));
  frame.append(input);
  const wire::DecodeResult framed = wire::decode(frame);

  if (!r.ok) {
    if (r.detail.empty() || wire::nameOf(r.error).empty()) std::abort();
    if (framed.status != wire::DecodeStatus::Error || framed.error != r.error) std::abort();
    return 0;
  }
  if (wire::encodeRaftMessage(r.message) != input) std::abort();
  if (wire::raftPayloadBytes(r.message) != size) std::abort();
  if (framed.status != wire::DecodeStatus::Ok || framed.bytes_consumed != frame.size()) std::abort();
  const auto* carried = std::get_if<wire::RaftFrame>(&framed.message);
  if (!carried || !(carried->message == r.message)) std::abort();
  if (wire::encode(framed.message) != frame) std::abort();
  return 0;
}
