#include "raft_records.h"

#include <algorithm>
#include <stdexcept>
#include <unordered_set>

#include "crc32c.h"
#include "little_endian.h"

namespace zetian::state {
namespace {

constexpr std::string_view kHardStateMagic = "ZRHS";
constexpr std::string_view kSnapshotMagic = "ZRSN";
constexpr std::uint8_t kFormatVersion = 1;
constexpr std::size_t kHardStateRecordBytes = 4 + 1 + 3 * 8;
constexpr std::size_t kSnapshotHeaderFixedBytes = 4 + 1 + 8 + 8 + 8 + 4 + 4;

using le::getU32;
using le::getU64;
using le::putU32;
using le::putU64;

std::uint32_t frameCrc(std::string_view length_bytes, std::string_view record) {
  return crc32c(record, crc32c(length_bytes));
}

// Wraps `record` (already in `out` from `start` + 8 on) with its length and CRC.
void closeFrame(std::string& out, std::size_t start) {
  const std::size_t length = out.size() - start - kRecordFrameHeaderBytes;
  std::string header;
  putU32(header, static_cast<std::uint32_t>(length));
  putU32(header, frameCrc(std::string_view(header).substr(0, 4),
                          std::string_view(out).substr(start + kRecordFrameHeaderBytes)));
  out.replace(start, kRecordFrameHeaderBytes, header);
}

struct Frame {
  RecordStatus status = RecordStatus::torn;
  std::string_view record;
  std::size_t size = 0;
  std::string detail;
};

// The frame at the start of `bytes`, its record checked against [min, max] bytes.
Frame readFrame(std::string_view bytes, std::size_t min_record, std::size_t max_record) {
  Frame f;
  if (bytes.size() < kRecordFrameHeaderBytes) {
    f.status = RecordStatus::torn;
    f.detail = "a record header cut short (" + std::to_string(bytes.size()) + " of " +
               std::to_string(kRecordFrameHeaderBytes) + " bytes)";
    return f;
  }
  const std::uint32_t length = getU32(bytes, 0);
  const std::uint32_t stored_crc = getU32(bytes, 4);
  // A length out of range cannot be told from a damaged one before the CRC is known, but
  // a record that long cannot be read either: it is invalid whatever follows.
  if (length < min_record || length > max_record) {
    f.status = RecordStatus::invalid;
    f.detail = "a record length of " + std::to_string(length) + " bytes, outside [" +
               std::to_string(min_record) + ", " + std::to_string(max_record) + "]";
    return f;
  }
  if (bytes.size() - kRecordFrameHeaderBytes < length) {
    f.status = RecordStatus::torn;
    f.detail = "a record cut short (" + std::to_string(bytes.size() - kRecordFrameHeaderBytes) +
               " of " + std::to_string(length) + " bytes)";
    return f;
  }
  const std::string_view record = bytes.substr(kRecordFrameHeaderBytes, length);
  if (frameCrc(bytes.substr(0, 4), record) != stored_crc) {
    f.status = RecordStatus::corrupt;
    f.detail = "a record whose CRC32C does not match its contents";
    return f;
  }
  f.status = RecordStatus::ok;
  f.record = record;
  f.size = kRecordFrameHeaderBytes + length;
  return f;
}

}  // namespace

std::string_view recordStatusName(RecordStatus status) {
  switch (status) {
    case RecordStatus::ok: return "ok";
    case RecordStatus::torn: return "torn";
    case RecordStatus::corrupt: return "corrupt";
    case RecordStatus::invalid: return "invalid";
  }
  return "unknown";
}

void appendLogRecord(std::string& out, const RaftLogRecord& record) {
  if (record.term == 0 || record.index == 0) {
    throw std::invalid_argument("a Raft log record needs a term and an index above 0");
  }
  if (record.type > kMaxRaftEntryType) {
    throw std::invalid_argument("unknown Raft entry type " + std::to_string(record.type));
  }
  if (record.data.size() > kMaxRecordBytes - kLogRecordFixedBytes) {
    throw std::invalid_argument("a Raft log record of " + std::to_string(record.data.size()) +
                                " bytes exceeds the cap of " + std::to_string(kMaxRecordBytes));
  }
  const std::size_t start = out.size();
  out.append(kRecordFrameHeaderBytes, '\0');
  putU64(out, record.term);
  putU64(out, record.index);
  out.push_back(static_cast<char>(record.type));
  out.append(record.data);
  closeFrame(out, start);
}

std::string encodeLogRecord(const RaftLogRecord& record) {
  std::string out;
  appendLogRecord(out, record);
  return out;
}

LogRecordDecode decodeLogRecord(std::string_view bytes) {
  LogRecordDecode d;
  Frame f = readFrame(bytes, kLogRecordFixedBytes, kMaxRecordBytes);
  if (f.status != RecordStatus::ok) {
    d.status = f.status;
    d.detail = std::move(f.detail);
    return d;
  }
  RaftLogRecord r;
  r.term = getU64(f.record, 0);
  r.index = getU64(f.record, 8);
  r.type = static_cast<std::uint8_t>(f.record[16]);
  if (r.term == 0 || r.index == 0 || r.type > kMaxRaftEntryType) {
    d.status = RecordStatus::invalid;
    d.detail = "a log record with term " + std::to_string(r.term) + ", index " +
               std::to_string(r.index) + ", type " + std::to_string(r.type) +
               " (term and index start at 1, types at most " + std::to_string(kMaxRaftEntryType) + ")";
    return d;
  }
  r.data.assign(f.record.substr(kLogRecordFixedBytes));
  d.status = RecordStatus::ok;
  d.record = std::move(r);
  d.size = f.size;
  return d;
}

std::string encodeHardStateFile(const RaftHardStateRecord& hard_state) {
  if (hard_state.term == 0 && hard_state.vote != 0) {
    throw std::invalid_argument("a Raft hard state cannot vote in term 0");
  }
  std::string out(kRecordFrameHeaderBytes, '\0');
  out.append(kHardStateMagic);
  out.push_back(static_cast<char>(kFormatVersion));
  putU64(out, hard_state.term);
  putU64(out, hard_state.vote);
  putU64(out, hard_state.commit);
  closeFrame(out, 0);
  return out;
}

HardStateDecode decodeHardStateFile(std::string_view file) {
  HardStateDecode d;
  Frame f = readFrame(file, kHardStateRecordBytes, kHardStateRecordBytes);
  if (f.status != RecordStatus::ok) {
    d.status = f.status;
    d.detail = std::move(f.detail);
    return d;
  }
  if (f.record.substr(0, 4) != kHardStateMagic || static_cast<std::uint8_t>(f.record[4]) != kFormatVersion) {
    d.status = RecordStatus::invalid;
    d.detail = "not a hard state record of format version 1";
    return d;
  }
  if (f.size != file.size()) {
    d.status = RecordStatus::invalid;
    d.detail = std::to_string(file.size() - f.size) + " bytes after the hard state record";
    return d;
  }
  RaftHardStateRecord hs{getU64(f.record, 5), getU64(f.record, 13), getU64(f.record, 21)};
  if (hs.term == 0 && hs.vote != 0) {
    d.status = RecordStatus::invalid;
    d.detail = "a vote for node " + std::to_string(hs.vote) + " in term 0";
    return d;
  }
  d.status = RecordStatus::ok;
  d.hard_state = hs;
  return d;
}

namespace {

// Why a snapshot header cannot be written or read, or empty when it is fine.
std::string snapshotHeaderProblem(const RaftSnapshotHeader& h, std::uint64_t payload_size) {
  if (h.index == 0 || h.term == 0) return "a snapshot needs an index and a term above 0";
  if (h.voters.empty()) return "a snapshot without a voter";
  if (h.voters.size() > kMaxSnapshotVoters) {
    return std::to_string(h.voters.size()) + " voters in a snapshot, more than " +
           std::to_string(kMaxSnapshotVoters);
  }
  std::unordered_set<std::uint64_t> seen;
  for (const std::uint64_t v : h.voters) {
    if (v == 0) return "voter 0 in a snapshot (0 is no node)";
    if (!seen.insert(v).second) return "voter " + std::to_string(v) + " twice in a snapshot";
  }
  if (payload_size > kMaxSnapshotPayloadBytes) {
    return "a snapshot payload of " + std::to_string(payload_size) + " bytes, above the cap of " +
           std::to_string(kMaxSnapshotPayloadBytes);
  }
  return {};
}

}  // namespace

std::string encodeSnapshotFile(const RaftSnapshotHeader& header, std::string_view payload) {
  if (std::string problem = snapshotHeaderProblem(header, payload.size()); !problem.empty()) {
    throw std::invalid_argument(problem);
  }
  std::string out(kRecordFrameHeaderBytes, '\0');
  out.append(kSnapshotMagic);
  out.push_back(static_cast<char>(kFormatVersion));
  putU64(out, header.index);
  putU64(out, header.term);
  putU64(out, payload.size());
  putU32(out, crc32c(payload));
  putU32(out, static_cast<std::uint32_t>(header.voters.size()));
  for (const std::uint64_t v : header.voters) putU64(out, v);
  closeFrame(out, 0);
  out.append(payload);
  return out;
}

SnapshotDecode decodeSnapshotFile(std::string_view file) {
  SnapshotDecode d;
  Frame f = readFrame(file, kSnapshotHeaderFixedBytes,
                      kSnapshotHeaderFixedBytes + std::size_t{kMaxSnapshotVoters} * 8);
  if (f.status != RecordStatus::ok) {
    d.status = f.status;
    d.detail = "snapshot header: " + f.detail;
    return d;
  }
  const std::string_view rec = f.record;
  if (rec.substr(0, 4) != kSnapshotMagic || static_cast<std::uint8_t>(rec[4]) != kFormatVersion) {
    d.status = RecordStatus::invalid;
    d.detail = "not a snapshot header of format version 1";
    return d;
  }
  RaftSnapshotHeader h;
  h.index = getU64(rec, 5);
  h.term = getU64(rec, 13);
  const std::uint64_t payload_size = getU64(rec, 21);
  const std::uint32_t payload_crc = getU32(rec, 29);
  const std::uint32_t voter_count = getU32(rec, 33);
  if (rec.size() != kSnapshotHeaderFixedBytes + std::uint64_t{voter_count} * 8) {
    d.status = RecordStatus::invalid;
    d.detail = "a snapshot header of " + std::to_string(rec.size()) + " bytes for " +
               std::to_string(voter_count) + " voters";
    return d;
  }
  for (std::uint32_t i = 0; i < voter_count; ++i) {
    h.voters.push_back(getU64(rec, kSnapshotHeaderFixedBytes + std::size_t{i} * 8));
  }
  if (std::string problem = snapshotHeaderProblem(h, payload_size); !problem.empty()) {
    d.status = RecordStatus::invalid;
    d.detail = std::move(problem);
    return d;
  }
  const std::string_view rest = file.substr(f.size);
  if (rest.size() < payload_size) {
    d.status = RecordStatus::torn;
    d.detail = "a snapshot payload cut short (" + std::to_string(rest.size()) + " of " +
               std::to_string(payload_size) + " bytes)";
    return d;
  }
  if (rest.size() > payload_size) {
    d.status = RecordStatus::invalid;
    d.detail = std::to_string(rest.size() - payload_size) + " bytes after the snapshot payload";
    return d;
  }
  if (crc32c(rest) != payload_crc) {
    d.status = RecordStatus::corrupt;
    d.detail = "a snapshot payload whose CRC32C does not match";
    return d;
  }
  d.status = RecordStatus::ok;
  d.header = std::move(h);
  d.payload = rest;
  return d;
}

}  // namespace zetian::state
