// libFuzzer target for the decoders of Raft's durable records (state/raft_records.h):
// any bytes, read as a log segment (records one after another, as recovery walks
// them), as a hard state file and as a snapshot file, must decode without a crash, an
// out-of-bounds read or an escaped exception. An ok record must be canonical (encoding
// it gives back the consumed bytes); a refusal must say why.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "state/raft_records.h"

namespace zs = zetian::state;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  std::string_view rest = input;
  while (!rest.empty()) {
    const zs::LogRecordDecode d = zs::decodeLogRecord(rest);
    if (d.status != zs::RecordStatus::ok) {
      if (d.detail.empty()) std::abort();
      break;
    }
    if (d.size == 0 || d.size > rest.size()) std::abort();
    if (zs::encodeLogRecord(d.record) != rest.substr(0, d.size)) std::abort();
    rest.remove_prefix(d.size);
  }

  const zs::HardStateDecode hs = zs::decodeHardStateFile(input);
  if (hs.status == zs::RecordStatus::ok) {
    if (zs::encodeHardStateFile(hs.hard_state) != input) std::abort();
  } else if (hs.detail.empty()) {
    std::abort();
  }

  const zs::SnapshotDecode snap = zs::decodeSnapshotFile(input);
  if (snap.status == zs::RecordStatus::ok) {
    if (zs::encodeSnapshotFile(snap.header, snap.payload) != input) std::abort();
  } else if (snap.detail.empty()) {
    std::abort();
  }
  return 0;
}
