// RaftFrame: one raft::Message on a node link (cluster/wire/raft_codec.h).
#include "cluster/wire/raft_codec.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster/wire/codec.h"

#include "tests/unit/cluster/allocation_counter.h"

namespace zetian::cluster::wire {
namespace {

using raft::Entry;
using raft::EntryType;
using RaftMessage = raft::Message;
using RaftKind = raft::MessageType;

const std::vector<RaftKind> kAllKinds = {
    RaftKind::vote,        RaftKind::vote_response,      RaftKind::pre_vote,
    RaftKind::pre_vote_response, RaftKind::append,       RaftKind::append_response,
    RaftKind::heartbeat,   RaftKind::heartbeat_response, RaftKind::timeout_now,
    RaftKind::read_index,  RaftKind::read_index_response, RaftKind::snapshot,
};

RaftMessage base(RaftKind kind) {
  RaftMessage m;
  m.type = kind;
  m.from = 1;
  m.to = 2;
  m.term = 7;
  m.log_term = 6;
  m.index = 41;
  m.commit = 40;
  return m;
}

std::vector<Entry> someEntries() {
  return {Entry{6, 42, EntryType::no_op, ""},
          Entry{7, 43, EntryType::normal, std::string("[ratelimit]\nrules = []\n\0\xff", 26)},
          Entry{7, 44, EntryType::config, "add 3 learner"}};
}

// Every kind, with and without entries and context, plus the extremes of every field.
// An InstallSnapshot: the snapshot rides in its section (raft_codec.h).
RaftMessage withSnapshot() {
  RaftMessage m = base(RaftKind::snapshot);
  raft::Snapshot snap;
  snap.index = 120;
  snap.term = 7;
  snap.voters = {1, 2, 3};
  snap.learners = {4};
  snap.removed = {9};
  snap.data = std::string("policy\0text", 11);
  m.snapshot = snap;
  return m;
}

std::vector<RaftMessage> samples() {
  std::vector<RaftMessage> out;
  for (RaftKind kind : kAllKinds) {
    out.push_back(base(kind));
    RaftMessage full = base(kind);
    full.entries = someEntries();
    full.context = std::string("read\0ctx", 8);
    full.reject = true;
    full.reject_hint = 39;
    full.transfer = kind == RaftKind::vote;
    out.push_back(full);
    RaftMessage only_context = base(kind);
    only_context.context = "c";
    out.push_back(only_context);
    RaftMessage only_entries = base(kind);
    only_entries.entries = {Entry{1, 1, EntryType::normal, "x"}};
    out.push_back(only_entries);
  }
  RaftMessage extremes;
  extremes.type = RaftKind::append;
  extremes.from = ~std::uint64_t{0};
  extremes.to = ~std::uint64_t{0} - 1;
  extremes.term = extremes.log_term = extremes.index = extremes.commit = extremes.reject_hint = ~std::uint64_t{0};
  extremes.reject = extremes.transfer = true;
  extremes.context = std::string(kMaxStringBytes, 'c');
  out.push_back(extremes);
  out.push_back(withSnapshot());
  RaftMessage empty_snapshot = base(RaftKind::snapshot);
  empty_snapshot.snapshot = raft::Snapshot{};
  out.push_back(empty_snapshot);
  return out;
}

// A few small messages, for the byte-by-byte tests (each byte of each is cut or flipped).
std::vector<RaftMessage> smallSamples() {
  RaftMessage append = base(RaftKind::append);
  append.entries = {Entry{6, 42, EntryType::no_op, ""}, Entry{7, 43, EntryType::normal, "ab"}};
  RaftMessage read = base(RaftKind::read_index_response);
  read.context = "rc";
  RaftMessage refused = base(RaftKind::append_response);
  refused.reject = true;
  refused.reject_hint = 3;
  RaftMessage transfer = base(RaftKind::vote);
  transfer.transfer = true;
  return {append, read, refused, transfer, base(RaftKind::heartbeat)};
}

std::string payloadOfFrame(const std::string& frame) { return frame.substr(kLengthPrefixBytes + 2); }

std::string frameOf(const std::string& payload) {
  std::string body = std::string("\x01", 1) + static_cast<char>(MessageType::RaftFrame) + payload;
  std::string out;
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((body.size() >> shift) & 0xff));
  return out + body;
}

void expectRefused(const std::string& payload, DecodeError error, const std::string& why) {
  const RaftDecodeResult r = decodeRaftMessage(payload);
  ASSERT_FALSE(r.ok) << why;
  EXPECT_EQ(r.error, error) << why << ": " << r.detail;
  EXPECT_FALSE(r.detail.empty()) << why;
  // The link's decoder gives the same answer for the framed payload.
  const DecodeResult framed = decode(frameOf(payload));
  ASSERT_EQ(framed.status, DecodeStatus::Error) << why;
  EXPECT_EQ(framed.error, error) << why;
  EXPECT_EQ(framed.detail, r.detail) << why;
}

TEST(RaftWire, EveryKindRoundTripsWithAndWithoutEntriesAndContext) {
  std::set<RaftKind> kinds;
  for (const RaftMessage& m : samples()) {
    SCOPED_TRACE(raft::describe(m));
    const std::string payload = encodeRaftMessage(m);
    EXPECT_EQ(payload.size(), raftPayloadBytes(m));
    const RaftDecodeResult r = decodeRaftMessage(payload);
    ASSERT_TRUE(r.ok) << r.detail;
    EXPECT_EQ(r.message, m);

    const std::string frame = encode(RaftFrame{m});
    EXPECT_EQ(payloadOfFrame(frame), payload);
    const DecodeResult d = decode(frame);
    ASSERT_EQ(d.status, DecodeStatus::Ok) << d.detail;
    EXPECT_EQ(d.bytes_consumed, frame.size());
    EXPECT_EQ(typeOf(d.message), MessageType::RaftFrame);
    EXPECT_EQ(std::get<RaftFrame>(d.message).message, m);
    kinds.insert(m.type);
  }
  EXPECT_EQ(kinds.size(), kAllKinds.size());
}

TEST(RaftWire, LayoutIsKindNodesNumbersFlagsHintContextEntries) {
  RaftMessage m;
  m.type = RaftKind::append;  // 4
  m.from = 0x0102030405060708;
  m.to = 2;
  m.term = 3;
  m.log_term = 4;
  m.index = 5;
  m.commit = 6;
  m.reject = true;
  m.transfer = true;
  m.reject_hint = 7;
  m.context = "c";
  m.entries = {Entry{8, 9, EntryType::config, "d"}};
  const std::string expected = std::string(
      "\x04"
      "\x01\x02\x03\x04\x05\x06\x07\x08" "\0\0\0\0\0\0\0\x02"
      "\0\0\0\0\0\0\0\x03" "\0\0\0\0\0\0\0\x04" "\0\0\0\0\0\0\0\x05" "\0\0\0\0\0\0\0\x06"
      "\x03" "\0\0\0\0\0\0\0\x07"
      "\0\x01" "c"
      "\0\x01" "\0\0\0\0\0\0\0\x08" "\0\0\0\0\0\0\0\x09" "\x02" "\0\0\0\x01" "d",
      kRaftMessageFixedBytes + 1 + kRaftEntryOverheadBytes + 1);
  EXPECT_EQ(encodeRaftMessage(m), expected);
}

TEST(RaftWire, EveryTruncationIsRefusedAsTruncated) {
  for (const RaftMessage& m : smallSamples()) {
    const std::string payload = encodeRaftMessage(m);
    for (std::size_t keep = 0; keep < payload.size(); ++keep) {
      expectRefused(payload.substr(0, keep), DecodeError::Truncated, "kept " + std::to_string(keep));
    }
  }
}

TEST(RaftWire, EveryBitFlipIsRefusedOrDecodesCanonicallyToAnotherMessage) {
  for (const RaftMessage& m : smallSamples()) {
    const std::string payload = encodeRaftMessage(m);
    for (std::size_t i = 0; i < payload.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        std::string corrupt = payload;
        corrupt[i] = static_cast<char>(corrupt[i] ^ (1 << bit));
        const RaftDecodeResult r = decodeRaftMessage(corrupt);
        if (r.ok) {
          EXPECT_NE(r.message, m) << "byte " << i << " bit " << bit;
          EXPECT_EQ(encodeRaftMessage(r.message), corrupt) << "byte " << i << " bit " << bit;
        } else {
          EXPECT_FALSE(r.detail.empty());
        }
      }
    }
  }
}

TEST(RaftWire, ASnapshotSectionCutShortIsTruncatedAndAWrongLengthIsABadValue) {
  const RaftMessage m = withSnapshot();
  const std::string payload = encodeRaftMessage(m);
  RaftMessage bare = m;
  bare.snapshot.reset();
  const std::size_t section = encodeRaftMessage(bare).size();  // where the section starts
  // Cut before the section, the message is one without a snapshot (a frame carries its
  // own length, so a cut payload never arrives whole); cut inside it, it is refused.
  for (std::size_t keep = section + 1; keep < payload.size(); ++keep) {
    expectRefused(payload.substr(0, keep), DecodeError::Truncated, "kept " + std::to_string(keep));
  }
  // The section's length one byte short of its contents, with a byte of padding after.
  std::string wrong = payload + std::string(1, '\0');
  const std::size_t length_at = section + 1;
  wrong[length_at + 3] = static_cast<char>(wrong[length_at + 3] + 1);
  expectRefused(wrong, DecodeError::BadValue, "section length one more than its contents");
  // Bytes after the section.
  expectRefused(payload + "x", DecodeError::TrailingBytes, "a byte after the snapshot section");
}

TEST(RaftWire, ASnapshotLargerThanAFrameIsRefusedByTheEncoder) {
  RaftMessage m = withSnapshot();
  m.snapshot->data.assign(kMaxRaftPayloadBytes, 'p');
  EXPECT_THROW(encodeRaftMessage(m), std::invalid_argument);
}

TEST(RaftWire, UnknownKindIsABadValue) {
  std::string payload = encodeRaftMessage(base(RaftKind::vote));
  for (int kind : {12, 13, 0x80, 0xff}) {
    payload[0] = static_cast<char>(kind);
    expectRefused(payload, DecodeError::BadValue, "kind " + std::to_string(kind));
  }
}

TEST(RaftWire, NodeZeroAsSenderOrReceiverIsABadValue) {
  const std::string payload = encodeRaftMessage(base(RaftKind::vote));
  std::string no_from = payload;
  no_from.replace(1, 8, std::string(8, '\0'));
  expectRefused(no_from, DecodeError::BadValue, "from 0");
  std::string no_to = payload;
  no_to.replace(9, 8, std::string(8, '\0'));
  expectRefused(no_to, DecodeError::BadValue, "to 0");
}

constexpr std::size_t kFlagsAt = 1 + 16 + 32;
constexpr std::size_t kContextLengthAt = kFlagsAt + 1 + 8;

TEST(RaftWire, UnknownFlagBitsAreBadValues) {
  std::string payload = encodeRaftMessage(base(RaftKind::vote));
  for (int flags : {4, 8, 0x80, 0xff}) {
    payload[kFlagsAt] = static_cast<char>(flags);
    expectRefused(payload, DecodeError::BadValue, "flags " + std::to_string(flags));
  }
}

TEST(RaftWire, ContextLongerThanTheLimitIsABadValue) {
  std::string payload = encodeRaftMessage(base(RaftKind::read_index));
  const std::size_t too_long = kMaxStringBytes + 1;
  payload[kContextLengthAt] = static_cast<char>(too_long >> 8);
  payload[kContextLengthAt + 1] = static_cast<char>(too_long & 0xff);
  payload.insert(kContextLengthAt + 2, std::string(too_long, 'c'));
  expectRefused(payload, DecodeError::BadValue, "context");
}

TEST(RaftWire, ContextLengthBeyondThePayloadIsTruncated) {
  std::string payload = encodeRaftMessage(base(RaftKind::read_index));
  payload[kContextLengthAt] = 0x03;  // 768 bytes, within the limit, absent
  expectRefused(payload, DecodeError::Truncated, "context");
}

TEST(RaftWire, EntryCountAboveTheLimitIsABadValue) {
  std::string payload = encodeRaftMessage(base(RaftKind::append));
  const std::size_t n = kMaxRaftEntries + 1;
  payload[payload.size() - 2] = static_cast<char>(n >> 8);
  payload[payload.size() - 1] = static_cast<char>(n & 0xff);
  payload += std::string(n * kRaftEntryOverheadBytes, '\0');
  expectRefused(payload, DecodeError::BadValue, "count");
}

TEST(RaftWire, EntryCountLargerThanTheBytesLeftIsTruncated) {
  RaftMessage m = base(RaftKind::append);
  m.entries = {Entry{1, 42, EntryType::normal, "x"}};
  std::string payload = encodeRaftMessage(m);
  const std::size_t count_at = kContextLengthAt + 2;
  for (int count : {2, 0xff, 0x0fff}) {
    payload[count_at] = static_cast<char>(count >> 8);
    payload[count_at + 1] = static_cast<char>(count & 0xff);
    expectRefused(payload, DecodeError::Truncated, "count " + std::to_string(count));
  }
}

TEST(RaftWire, EntryDataLengthBeyondThePayloadIsTruncated) {
  RaftMessage m = base(RaftKind::append);
  m.entries = {Entry{1, 42, EntryType::normal, "x"}};
  std::string payload = encodeRaftMessage(m);
  const std::size_t length_at = payload.size() - 1 - 4;
  for (std::uint32_t length : {2u, 0x00100000u, 0xffffffffu}) {
    for (int i = 0; i < 4; ++i) payload[length_at + i] = static_cast<char>((length >> (24 - 8 * i)) & 0xff);
    expectRefused(payload, DecodeError::Truncated, "length " + std::to_string(length));
  }
}

// Bytes the decoder allocates for `payload`, which it must refuse.
std::size_t allocatedRefusing(const std::string& payload) {
  g_counted_bytes = 0;
  g_counting = true;
  const RaftDecodeResult r = decodeRaftMessage(payload);
  g_counting = false;
  EXPECT_FALSE(r.ok);
  return g_counted_bytes.load();
}

TEST(RaftWire, ForgedCountsAndLengthsAllocateNothingTheyName) {
  RaftMessage m = base(RaftKind::append);
  m.entries = {Entry{1, 42, EntryType::normal, "x"}};
  const std::string payload = encodeRaftMessage(m);
  const std::size_t count_at = kContextLengthAt + 2;

  // kMaxRaftEntries entries claimed, one present: reserving them would take
  // kMaxRaftEntries * sizeof(Entry) bytes.
  std::string many = payload;
  many[count_at] = static_cast<char>(kMaxRaftEntries >> 8);
  many[count_at + 1] = static_cast<char>(kMaxRaftEntries & 0xff);
  EXPECT_LT(allocatedRefusing(many), 1024u);

  // A 4 GiB entry.
  std::string huge = payload;
  for (std::size_t i = 0; i < 4; ++i) huge[payload.size() - 1 - 4 + i] = '\xff';
  EXPECT_LT(allocatedRefusing(huge), 1024u);

  // A context of kMaxStringBytes claimed, none present.
  std::string context = payload;
  context[kContextLengthAt] = static_cast<char>(kMaxStringBytes >> 8);
  context[kContextLengthAt + 1] = static_cast<char>(kMaxStringBytes & 0xff);
  EXPECT_LT(allocatedRefusing(context), 512u);
}

TEST(RaftWire, UnknownEntryTypeIsABadValue) {
  RaftMessage m = base(RaftKind::append);
  m.entries = {Entry{1, 42, EntryType::normal, "x"}};
  std::string payload = encodeRaftMessage(m);
  payload[payload.size() - 1 - 4 - 1] = 3;
  expectRefused(payload, DecodeError::BadValue, "entry type");
}

TEST(RaftWire, BytesAfterTheEntriesAreTrailingBytes) {
  for (const RaftMessage& m : smallSamples()) {
    // Tag 0 and tag 2 name no section (1 is the snapshot's).
    for (const std::string& tail : {std::string(1, '\0'), std::string("\x02\0\0\0\0", 5), std::string("junk")}) {
      expectRefused(encodeRaftMessage(m) + tail, DecodeError::TrailingBytes, raft::describe(m));
    }
  }
}

TEST(RaftWire, TheLargestAppendThatFitsIsAcceptedAndOneByteMoreIsRefusedByTheEncoder) {
  RaftMessage m = base(RaftKind::append);
  m.context = std::string(kMaxStringBytes, 'c');
  m.entries = {Entry{7, 42, EntryType::normal, ""}, Entry{7, 43, EntryType::normal, ""}};
  m.entries[1].data.assign(kMaxRaftPayloadBytes - raftPayloadBytes(m), 'd');
  ASSERT_EQ(raftPayloadBytes(m), kMaxRaftPayloadBytes);
  const std::string frame = encode(RaftFrame{m});
  EXPECT_EQ(frame.size(), kLengthPrefixBytes + kMaxFrameBytes);
  const DecodeResult d = decode(frame);
  ASSERT_EQ(d.status, DecodeStatus::Ok) << d.detail;
  EXPECT_EQ(std::get<RaftFrame>(d.message).message, m);

  m.entries[1].data.push_back('d');
  EXPECT_THROW(encodeRaftMessage(m), std::invalid_argument);
  EXPECT_THROW(encode(RaftFrame{m}), std::invalid_argument);
}

TEST(RaftWire, TheMostEntriesAFrameMayCarryRoundTrip) {
  RaftMessage m = base(RaftKind::append);
  for (std::size_t i = 0; i < kMaxRaftEntries; ++i) m.entries.push_back(Entry{7, 42 + i, EntryType::normal, "e"});
  const RaftDecodeResult r = decodeRaftMessage(encodeRaftMessage(m));
  ASSERT_TRUE(r.ok) << r.detail;
  EXPECT_EQ(r.message, m);
  m.entries.push_back(Entry{7, 42 + kMaxRaftEntries, EntryType::normal, ""});
  EXPECT_THROW(encodeRaftMessage(m), std::invalid_argument);
}

TEST(RaftWire, EncodingAMessageTheDecoderWouldRefuseThrows) {
  RaftMessage no_from = base(RaftKind::vote);
  no_from.from = raft::kNoNode;
  EXPECT_THROW(encodeRaftMessage(no_from), std::invalid_argument);
  RaftMessage no_to = base(RaftKind::vote);
  no_to.to = raft::kNoNode;
  EXPECT_THROW(encodeRaftMessage(no_to), std::invalid_argument);
  RaftMessage bad_kind = base(RaftKind::vote);
  bad_kind.type = static_cast<RaftKind>(12);
  EXPECT_THROW(encodeRaftMessage(bad_kind), std::invalid_argument);
  RaftMessage bad_entry = base(RaftKind::append);
  bad_entry.entries = {Entry{1, 1, static_cast<EntryType>(3), ""}};
  EXPECT_THROW(encodeRaftMessage(bad_entry), std::invalid_argument);
  RaftMessage long_context = base(RaftKind::read_index);
  long_context.context.assign(kMaxStringBytes + 1, 'c');
  EXPECT_THROW(encodeRaftMessage(long_context), std::invalid_argument);
}

TEST(RaftWire, RaftIsACapabilityBitOfItsOwnAnnouncedOnlyWithTheDriver) {
  EXPECT_EQ(kCapRaft & (kCapLimiter | kCapBucketSync | kCapLeases | kCapHandoffDone), 0u);
  // ClusterNode adds it when NodeOptions::raft is set (codec.h).
  EXPECT_EQ(kOwnCapabilities & kCapRaft, 0u);
}

// The seeds of fuzz_raft_message are payloads a link could carry.
TEST(RaftWire, EveryFuzzSeedDecodes) {
  const std::filesystem::path dir = std::filesystem::path(ZETIAN_SOURCE_DIR) / "tests/fuzz/corpus/raft_message";
  ASSERT_TRUE(std::filesystem::is_directory(dir)) << dir;
  std::size_t files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file() || entry.path().filename().string().starts_with("regress_")) continue;
    SCOPED_TRACE(entry.path().string());
    ++files;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    const RaftDecodeResult r = decodeRaftMessage(bytes);
    ASSERT_TRUE(r.ok) << r.detail;
    EXPECT_EQ(encodeRaftMessage(r.message), bytes);
  }
  EXPECT_GE(files, 4u);
}

}  // namespace
}  // namespace zetian::cluster::wire
