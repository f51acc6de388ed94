// The payload of a RaftFrame (codec.h): one raft::Message, as the Raft core defines it.
// Pure encoding and decoding, no sockets; codec.cpp frames it like every other message.
//
// Layout, in the conventions of codec.h (big-endian fixed-width integers; a string is a
// u16 byte count then the bytes; a vector a u16 element count then the elements):
//   u8  kind         raft::MessageType, 0..snapshot
//   u64 from, to     raft::NodeId as the core numbers nodes (never 0, kNoNode). Mapping
//                    the members' string ids to these numbers is the driver's job.
//   u64 term, log_term, index, commit
//   u8  flags        kRaftFlagReject | kRaftFlagTransfer; other bits are refused
//   u64 reject_hint
//   string context   at most kMaxStringBytes
//   u16 entry count  at most kMaxRaftEntries, then per entry:
//       u64 term, u64 index, u8 type (raft::EntryType), u32 data length, data
//   sections         zero or more [u8 tag][u32 length][length bytes], tags strictly
//                    increasing, each omitted when it has nothing to carry.
// Sections are how the message grows without disturbing the fields above. Tag 1
// (kRaftSectionSnapshot) is the snapshot of an InstallSnapshot message:
//       u64 index, u64 term, then voters, learners and removed ids (each a u16 count,
//       at most kMaxSnapshotMembers, then u64 ids), u32 data length, data.
// The whole message must fit in one frame: a snapshot is not sent in pieces (the
// policy it holds is a few kilobytes). Any other byte after the entries is refused.
//
// The decoder's invariants are codec.h's: it never reads outside the payload, never
// throws, never reserves for a count or a length before checking that the bytes left can
// hold it, and an ok result is canonical (encodeRaftMessage() of it gives back the
// payload exactly). It checks the structure only; whether a vote may carry entries, or
// entries' indexes follow `index`, is the core's business.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "cluster/raft/types.h"
#include "cluster/wire/codec.h"

namespace zetian::cluster::wire {

inline constexpr std::uint8_t kRaftFlagReject = 1;
inline constexpr std::uint8_t kRaftFlagTransfer = 2;
inline constexpr std::uint8_t kRaftFlagsKnown = kRaftFlagReject | kRaftFlagTransfer;

// Entries in one RaftFrame. An append is also bounded by the frame: the driver sizes its
// batches with the figures below so that encodeRaftMessage() never refuses them.
inline constexpr std::size_t kMaxRaftEntries = 4096;
// Everything of a frame after its version and type bytes.
inline constexpr std::size_t kMaxRaftPayloadBytes = kMaxFrameBytes - 2;
// The payload of a message with an empty context and no entries.
inline constexpr std::size_t kRaftMessageFixedBytes = 1 + 2 * 8 + 4 * 8 + 1 + 8 + 2 + 2;
// What one entry adds besides its data.
inline constexpr std::size_t kRaftEntryOverheadBytes = 8 + 8 + 1 + 4;
// The section holding an InstallSnapshot's snapshot, and its bounds.
inline constexpr std::uint8_t kRaftSectionSnapshot = 1;
inline constexpr std::size_t kMaxSnapshotMembers = 1024;
// The snapshot section's body for `snapshot` (after its tag and u32 length).
inline std::size_t snapshotSectionBytes(const raft::Snapshot& snapshot) {
  return 8 + 8 + 3 * 2 + 8 * (snapshot.voters.size() + snapshot.learners.size() + snapshot.removed.size()) + 4 +
         snapshot.data.size();
}

// The payload's size for `message`, whether or not it fits; encodeRaftMessage() refuses
// it above kMaxRaftPayloadBytes.
std::size_t raftPayloadBytes(const raft::Message& message);

// The payload bytes (no frame header). A message decode would refuse (kNoNode as sender
// or receiver, an out-of-range kind or entry type, too long a context, too many entries,
// a payload above kMaxRaftPayloadBytes) is a caller bug and throws std::invalid_argument.
std::string encodeRaftMessage(const raft::Message& message);

struct RaftDecodeResult {
  bool ok = false;
  raft::Message message;                       // when ok
  DecodeError error = DecodeError::Truncated;  // when not ok, with a short text
  std::string detail;
};

// Decodes a whole payload: bytes after the message are refused.
RaftDecodeResult decodeRaftMessage(std::string_view payload);

}  // namespace zetian::cluster::wire
