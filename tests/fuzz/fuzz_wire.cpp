// libFuzzer target for the node-link frame decoder: any bytes must decode to NeedMore,
// Ok or Error without a crash, an out-of-bounds read or an escaped exception; an Ok
// frame must be canonical (encode gives back the consumed bytes) and round-trip.
// encode() throws for a message outside the codec's caps (counts, summed limit items,
// enum ranges, finite levels), and a throw here is a finding: so the round trip also
// checks that decode() accepts nothing the caps forbid, for every message type.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cluster/wire/codec.h"

namespace wire = zetian::cluster::wire;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string_view rest = input;
  // Walk the frames the way a link would, stopping at the first non-Ok answer.
  while (true) {
    const wire::DecodeResult r = wire::decode(rest);
    if (r.status == wire::DecodeStatus::NeedMore) {
      if (r.bytes_needed == 0) std::abort();
      return 0;
    }
    if (r.status == wire::DecodeStatus::Error) {
      if (r.detail.empty() || wire::nameOf(r.error).empty()) std::abort();
      return 0;
    }
    if (r.bytes_consumed == 0 || r.bytes_consumed > rest.size()) std::abort();
    const std::string again = wire::encode(r.message);
    if (again != rest.substr(0, r.bytes_consumed)) std::abort();
    const wire::DecodeResult back = wire::decode(again);
    if (back.status != wire::DecodeStatus::Ok || !(back.message == r.message) ||
        back.bytes_consumed != again.size()) {
      std::abort();
    }
    rest.remove_prefix(r.bytes_consumed);
  }
}
