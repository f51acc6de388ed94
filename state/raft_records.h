// The bytes of Raft's durable records: log segment records, the hard state file and
// the snapshot file. Pure encoding and decoding; the files themselves are written and
// read by cluster/raft/storage.h. This folder knows nothing of cluster/, so the records
// are plain structs here and the storage layer converts them to the core's types.
//
// Framing, shared by all three:  [length u32][crc32c u32][record: length bytes]
// Integers are little-endian. The CRC (state/crc32c.h) covers the four length bytes and
// then the record, so a damaged length field is caught like damaged contents, and a run
// of zeros (what a crash can leave in a file's unwritten tail) never reads as a record.
//
//   log record:   [term u64][index u64][type u8][data ...]          (17 + data bytes)
//   hard state:   one frame, the whole file: ["ZRHS"][version u8 = 1][term u64][vote u64][commit u64]
//   snapshot:     a header frame ["ZRSN"][version u8 = 1][index u64][term u64]
//                 [payload size u64][payload crc32c u32][voter count u32][voter u64 ...],
//                 then exactly `payload size` bytes of payload.
//
// Decoding tells apart what a crash can leave from what it cannot:
//   torn:     the bytes end inside a frame (a short header or a short record): an
//             interrupted write at the end of a file;
//   corrupt:  the frame is complete but its CRC does not match;
//   invalid:  the CRC matches but the values are impossible (a length below the
//             record's minimum or above the cap, index or term 0, an unknown entry
//             type, a wrong magic or version, trailing bytes): written by something
//             else, or a bug.
// Decoders read only inside the view they are given, whatever its bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace zetian::state {

enum class RecordStatus : std::uint8_t { ok, torn, corrupt, invalid };
std::string_view recordStatusName(RecordStatus status);

inline constexpr std::size_t kRecordFrameHeaderBytes = 8;
// One record's cap. A policy document is kilobytes; the cap bounds what a damaged
// length field can make a reader allocate or skip.
inline constexpr std::uint32_t kMaxRecordBytes = 64u * 1024u * 1024u;
// The largest EntryType value (cluster/raft/types.h: normal, no_op, config); the
// storage layer checks at compile time that the two agree.
inline constexpr std::uint8_t kMaxRaftEntryType = 2;
inline constexpr std::size_t kLogRecordFixedBytes = 17;

struct RaftLogRecord {
  std::uint64_t term = 0;
  std::uint64_t index = 0;
  std::uint8_t type = 0;
  std::string data;
  bool operator==(const RaftLogRecord&) const = default;
};

// Appends the framed record to `out`. Throws std::invalid_argument for a record that
// decoding would refuse (term or index 0, unknown type, larger than kMaxRecordBytes).
void appendLogRecord(std::string& out, const RaftLogRecord& record);
std::string encodeLogRecord(const RaftLogRecord& record);

struct LogRecordDecode {
  RecordStatus status = RecordStatus::torn;
  RaftLogRecord record;   // when ok
  std::size_t size = 0;   // bytes of the frame, when ok
  std::string detail;     // when not ok: what is wrong, for the operator
};
// Decodes the frame at the start of `bytes` (the rest of a segment file).
LogRecordDecode decodeLogRecord(std::string_view bytes);

struct RaftHardStateRecord {
  std::uint64_t term = 0;
  std::uint64_t vote = 0;
  std::uint64_t commit = 0;
  bool operator==(const RaftHardStateRecord&) const = default;
};

// Throws std::invalid_argument for a vote without a term.
std::string encodeHardStateFile(const RaftHardStateRecord& hard_state);

struct HardStateDecode {
  RecordStatus status = RecordStatus::torn;
  RaftHardStateRecord hard_state;
  std::string detail;
};
HardStateDecode decodeHardStateFile(std::string_view file);

inline constexpr std::uint32_t kMaxSnapshotVoters = 1024;
inline constexpr std::uint64_t kMaxSnapshotPayloadBytes = 1024ull * 1024u * 1024u;

struct RaftSnapshotHeader {
  std::uint64_t index = 0;  // the last entry the snapshot covers
  std::uint64_t term = 0;   // that entry's term
  std::vector<std::uint64_t> voters;
  bool operator==(const RaftSnapshotHeader&) const = default;
};

// Throws std::invalid_argument for a header decoding would refuse (index or term 0,
// no voter, voter 0, a voter twice, too many voters, too large a payload).
std::string encodeSnapshotFile(const RaftSnapshotHeader& header, std::string_view payload);

struct SnapshotDecode {
  RecordStatus status = RecordStatus::torn;
  RaftSnapshotHeader header;
  std::string_view payload;  // a view into the decoded bytes, when ok
  std::string detail;
};
SnapshotDecode decodeSnapshotFile(std::string_view file);

}  // namespace zetian::state
