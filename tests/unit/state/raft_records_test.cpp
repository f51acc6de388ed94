// The encoding of Raft's durable records (state/raft_records.h) and its CRC32C: round
// trips, and for every way the bytes can be wrong, the status a crash-recovery reader
// relies on (torn only for a cut, corrupt for a flipped bit, invalid for a value no
// writer produces), without reading past the view.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "state/crc32c.h"
#include "state/raft_records.h"

namespace zs = zetian::state;

namespace {

// A heap copy of exactly the view's bytes, so ASan catches any read past the end.
zs::LogRecordDecode decodeExact(std::string_view bytes) {
  auto copy = std::make_unique<char[]>(bytes.size() + 1);
  std::copy(bytes.begin(), bytes.end(), copy.get());
  return zs::decodeLogRecord(std::string_view(copy.get(), bytes.size()));
}

zs::RaftLogRecord sample() { return {7, 42, 0, std::string("policy v3\0x", 11)}; }

}  // namespace

TEST(Crc32c, MatchesTheStandardCheckValue) {
  EXPECT_EQ(zs::crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(zs::crc32c(""), 0u);
  // RFC 3720 B.4: 32 bytes of zeros, and of 0xFF.
  EXPECT_EQ(zs::crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(zs::crc32c(std::string(32, '\xFF')), 0x62A8AB43u);
}

TEST(Crc32c, ContinuesAcrossPiecesAtEveryCut) {
  const std::string text = "The quick brown fox jumps over the lazy dog, twice over.";
  const std::uint32_t whole = zs::crc32c(text);
  for (std::size_t cut = 0; cut <= text.size(); ++cut) {
    const std::string_view v(text);
    EXPECT_EQ(zs::crc32c(v.substr(cut), zs::crc32c(v.substr(0, cut))), whole) << cut;
  }
}

TEST(RaftRecords, LogRecordRoundTrips) {
  for (std::uint8_t type = 0; type <= zs::kMaxRaftEntryType; ++type) {
    zs::RaftLogRecord r = sample();
    r.type = type;
    const std::string bytes = zs::encodeLogRecord(r);
    EXPECT_EQ(bytes.size(), zs::kRecordFrameHeaderBytes + zs::kLogRecordFixedBytes + r.data.size());
    const auto d = decodeExact(bytes + "trailing");
    ASSERT_EQ(d.status, zs::RecordStatus::ok) << d.detail;
    EXPECT_EQ(d.record, r);
    EXPECT_EQ(d.size, bytes.size());
  }
  const auto empty = decodeExact(zs::encodeLogRecord({1, 1, 1, ""}));
  ASSERT_EQ(empty.status, zs::RecordStatus::ok);
  EXPECT_TRUE(empty.record.data.empty());
}

TEST(RaftRecords, EveryPrefixOfARecordIsTorn) {
  const std::string bytes = zs::encodeLogRecord(sample());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    const auto d = decodeExact(std::string_view(bytes).substr(0, n));
    EXPECT_EQ(d.status, zs::RecordStatus::torn) << n;
    EXPECT_FALSE(d.detail.empty());
  }
}

TEST(RaftRecords, EveryFlippedBitIsCaught) {
  const std::string bytes = zs::encodeLogRecord(sample());
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = bytes;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      const auto d = decodeExact(bad);
      // A flipped length bit may make the record look longer than the bytes (torn) or
      // out of range (invalid); anything else is a CRC mismatch. Never ok.
      EXPECT_NE(d.status, zs::RecordStatus::ok) << i << ":" << bit;
      if (i >= 4) {
        EXPECT_EQ(d.status, zs::RecordStatus::corrupt) << i << ":" << bit;
      }
    }
  }
}

TEST(RaftRecords, ZerosAreNeverARecord) {
  EXPECT_EQ(decodeExact(std::string(64, '\0')).status, zs::RecordStatus::invalid);
  std::string zeros_len(64, '\0');
  zeros_len[0] = 17;  // a plausible length over zeros: the CRC covers the length
  EXPECT_EQ(decodeExact(zeros_len).status, zs::RecordStatus::corrupt);
}

TEST(RaftRecords, ImpossibleValuesAreInvalid) {
  EXPECT_THROW(zs::encodeLogRecord({0, 1, 0, "x"}), std::invalid_argument);
  EXPECT_THROW(zs::encodeLogRecord({1, 0, 0, "x"}), std::invalid_argument);
  EXPECT_THROW(zs::encodeLogRecord({1, 1, 3, "x"}), std::invalid_argument);
  // Hand-made frames with a valid CRC over impossible contents.
  auto frame = [](std::uint64_t term, std::uint64_t index, std::uint8_t type) {
    std::string rec;
    for (int i = 0; i < 8; ++i) rec.push_back(static_cast<char>(term >> (8 * i)));
    for (int i = 0; i < 8; ++i) rec.push_back(static_cast<char>(index >> (8 * i)));
    rec.push_back(static_cast<char>(type));
    std::string len;
    for (int i = 0; i < 4; ++i) len.push_back(static_cast<char>(rec.size() >> (8 * i)));
    const std::uint32_t crc = zs::crc32c(rec, zs::crc32c(len));
    std::string out = len;
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(crc >> (8 * i)));
    return out + rec;
  };
  ASSERT_EQ(decodeExact(frame(1, 1, 2)).status, zs::RecordStatus::ok);
  EXPECT_EQ(decodeExact(frame(0, 1, 0)).status, zs::RecordStatus::invalid);
  EXPECT_EQ(decodeExact(frame(1, 0, 0)).status, zs::RecordStatus::invalid);
  EXPECT_EQ(decodeExact(frame(1, 1, 9)).status, zs::RecordStatus::invalid);
  std::string huge = frame(1, 1, 0);
  huge[3] = 0x7F;  // length far above the cap
  const auto d = decodeExact(huge);
  EXPECT_EQ(d.status, zs::RecordStatus::invalid);
  EXPECT_NE(d.detail.find("outside"), std::string::npos) << d.detail;
}

TEST(RaftRecords, HardStateRoundTripsAndRefusesDamage) {
  const zs::RaftHardStateRecord hs{5, 3, 17};
  const std::string file = zs::encodeHardStateFile(hs);
  const auto ok = zs::decodeHardStateFile(file);
  ASSERT_EQ(ok.status, zs::RecordStatus::ok) << ok.detail;
  EXPECT_EQ(ok.hard_state, hs);
  for (std::size_t n = 0; n < file.size(); ++n) {
    EXPECT_EQ(zs::decodeHardStateFile(file.substr(0, n)).status, zs::RecordStatus::torn) << n;
  }
  for (std::size_t i = 4; i < file.size(); ++i) {
    std::string bad = file;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    EXPECT_EQ(zs::decodeHardStateFile(bad).status, zs::RecordStatus::corrupt) << i;
  }
  EXPECT_EQ(zs::decodeHardStateFile(file + "x").status, zs::RecordStatus::invalid);
  EXPECT_THROW(zs::encodeHardStateFile({0, 2, 0}), std::invalid_argument);
  EXPECT_EQ(zs::decodeHardStateFile(zs::encodeHardStateFile({})).hard_state, zs::RaftHardStateRecord{});
}

TEST(RaftRecords, SnapshotFileRoundTripsAndRefusesDamage) {
  const zs::RaftSnapshotHeader h{120, 4, {1, 2, 3}};
  const std::string payload = "[ratelimit]\nrules = []\n";
  const std::string file = zs::encodeSnapshotFile(h, payload);
  const auto ok = zs::decodeSnapshotFile(file);
  ASSERT_EQ(ok.status, zs::RecordStatus::ok) << ok.detail;
  EXPECT_EQ(ok.header, h);
  EXPECT_EQ(ok.payload, payload);
  for (std::size_t n = 0; n < file.size(); ++n) {
    const auto d = zs::decodeSnapshotFile(std::string_view(file).substr(0, n));
    EXPECT_EQ(d.status, zs::RecordStatus::torn) << n << " " << d.detail;
  }
  for (std::size_t i = 4; i < file.size(); ++i) {
    std::string bad = file;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    EXPECT_EQ(zs::decodeSnapshotFile(bad).status, zs::RecordStatus::corrupt) << i;
  }
  EXPECT_EQ(zs::decodeSnapshotFile(file + "x").status, zs::RecordStatus::invalid);
  EXPECT_THROW(zs::encodeSnapshotFile({0, 1, {1}}, ""), std::invalid_argument);
  EXPECT_THROW(zs::encodeSnapshotFile({1, 1, {}}, ""), std::invalid_argument);
  EXPECT_THROW(zs::encodeSnapshotFile({1, 1, {0}}, ""), std::invalid_argument);
  EXPECT_THROW(zs::encodeSnapshotFile({1, 1, {2, 2}}, ""), std::invalid_argument);
  const auto empty = zs::decodeSnapshotFile(zs::encodeSnapshotFile({1, 1, {9}}, ""));
  ASSERT_EQ(empty.status, zs::RecordStatus::ok) << empty.detail;
  EXPECT_TRUE(empty.payload.empty());
}
