// The wire format of node links: pure encoding and decoding, no sockets.
//
// A frame is [u32 big-endian length of what follows][u8 version][u8 type][payload].
// The length covers version, type and payload, so it is at least 2 and at most
// kMaxFrameBytes; a larger length is refused from the 4-byte prefix alone, before any
// payload is buffered. Integers are big-endian and fixed-width; strings are a u16 byte
// count then the bytes (at most kMaxStringBytes); vectors are a u16 element count then
// the elements (at most the cap named beside each vector); signed integers travel as
// their two's-complement bits, doubles as their IEEE-754 bits, both u64; booleans are
// one byte, 0 or 1. The limits are chosen so that every message within them fits in
// one frame (static_asserts in codec.cpp), so encode() never produces a frame decode()
// refuses.
//
// Invariants the decoder keeps, whatever the input (tests/fuzz/fuzz_wire.cpp checks
// them): it never reads outside the buffer, never throws, never reserves memory for a
// count before checking that the remaining bytes can hold that many elements, and an Ok
// frame is canonical: encode() of the decoded message gives back exactly the consumed
// bytes. Any Error means the link is closed; there is no resynchronisation.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cluster/raft/types.h"

namespace zetian::cluster::wire {

inline constexpr std::uint8_t kProtocolVersion = 1;
inline constexpr std::size_t kLengthPrefixBytes = 4;
inline constexpr std::size_t kMaxFrameBytes = std::size_t{1} << 20;  // after the prefix
inline constexpr std::size_t kMaxStringBytes = 1024;
inline constexpr std::size_t kMaxMembers = 256;
inline constexpr std::size_t kNonceBytes = 32;
inline constexpr std::size_t kMacBytes = 32;

using Nonce = std::array<std::uint8_t, kNonceBytes>;
using Mac = std::array<std::uint8_t, kMacBytes>;

enum class MessageType : std::uint8_t {
  Hello = 1,
  Challenge = 2,
  Response = 3,
  Heartbeat = 4,
  Goodbye = 5,
  MemberList = 6,
  ProbeRequest = 7,
  ProbeAck = 8,
  LimitRequest = 9,
  LimitReply = 10,
  BucketSync = 11,
  RaftFrame = 12,
  RaftControl = 13,
};

// Capabilities a node announces in its Hello. A node never sends a message type its peer
// did not announce; unknown bits are kept and ignored, so newer nodes can add bits.
inline constexpr std::uint64_t kCapLimiter = 1;     // LimitRequest / LimitReply
inline constexpr std::uint64_t kCapBucketSync = 2;  // BucketSync (replication, hand-off)
inline constexpr std::uint64_t kCapLeases = 4;      // LimitOp::Lease / ItemResult::Leased (fast mode)
// A Handoff BucketSync with last = true ends the sender's hand-off walk towards the
// receiver's place in the view (docs/limiter.md, "Moving bucket state"): until it comes
// (or a short wait runs out) a new owner holds the checks of keys that peer may still
// hand it. Walk frames before it carry last = false.
inline constexpr std::uint64_t kCapHandoffDone = 8;
// RaftFrame and RaftControl. Not in kOwnCapabilities: a node announces it when it runs
// the Raft driver (NodeOptions::raft adds it), since a node that announced it and
// dropped the frames would look to a Raft peer like a voter that never answers.
inline constexpr std::uint64_t kCapRaft = 16;
inline constexpr std::uint64_t kOwnCapabilities = kCapLimiter | kCapBucketSync | kCapLeases | kCapHandoffDone;

// Spelled as in /health; the wire carries the numeric value.
enum class NodeStatus : std::uint8_t {
  Joining = 0,
  Active = 1,
  Suspect = 2,
  Failed = 3,
  Left = 4,
  Maintenance = 5,
};
inline constexpr std::uint8_t kMaxNodeStatus = static_cast<std::uint8_t>(NodeStatus::Maintenance);

// First frame on a link, from each side; the nonce is the one the peer must MAC.
// incarnation grows with every start of a node (its start time in ms), so a restarted
// node is told apart from its previous life and from a second live node with its id.
struct Hello {
  std::string node_id;
  std::string advertise_address;
  std::string cluster_id;
  std::string region;
  Nonce nonce{};
  std::uint64_t incarnation = 0;
  std::uint16_t protocol = kProtocolVersion;  // the sender's link protocol version
  std::uint64_t capabilities = 0;             // kCap* bits the sender understands
  bool operator==(const Hello&) const = default;
};

// Handshake material: a fresh nonce for the peer to answer and the MAC over the
// peer's nonce. The codec treats both as opaque bytes; the handshake computes them.
struct Challenge {
  Nonce nonce{};
  Mac mac{};
  bool operator==(const Challenge&) const = default;
};

struct Response {
  Nonce nonce{};
  Mac mac{};
  bool operator==(const Response&) const = default;
};

inline constexpr std::uint8_t kHeartbeatMaintenance = 1;  // the sender is draining
inline constexpr std::uint8_t kHeartbeatFlagsKnown = kHeartbeatMaintenance;

struct Heartbeat {
  std::uint64_t sequence = 0;
  std::uint64_t sender_time_ms = 0;
  std::uint32_t sessions = 0;
  std::uint32_t messages_per_s_milli = 0;  // messages per second times 1000
  std::uint8_t flags = 0;                  // kHeartbeat* bits; unknown bits are refused
  // Cluster-scope keys the sender owns, as of its last count (limits/service.h).
  std::uint32_t keys_owned = 0;
  bool operator==(const Heartbeat&) const = default;
};

struct Goodbye {
  std::string reason;
  bool operator==(const Goodbye&) const = default;
};

struct Member {
  std::string node_id;
  std::string address;
  std::string region;
  NodeStatus status = NodeStatus::Joining;
  std::uint64_t incarnation = 0;
  bool operator==(const Member&) const = default;
};

struct MemberList {
  std::vector<Member> members;
  bool operator==(const MemberList&) const = default;
};

// Indirect probe: "do you hear `target`?" asked of the other members when we suspect it;
// each answers with a ProbeAck carrying the same request id.
struct ProbeRequest {
  std::uint64_t request_id = 0;
  std::string target;
  bool operator==(const ProbeRequest&) const = default;
};

struct ProbeAck {
  std::uint64_t request_id = 0;
  std::string target;
  bool alive = false;  // the answering member heard `target` within its suspicion window
  bool operator==(const ProbeAck&) const = default;
};

inline constexpr std::uint8_t kMaxAlgorithm = 3;        // state::Algorithm values 0..3 (wire does not include state/)
inline constexpr std::size_t kMaxLimitCalls = 256;      // calls in one LimitRequest / answers in one LimitReply
inline constexpr std::size_t kMaxLimitItemsPerCall = 128;
inline constexpr std::size_t kMaxLimitItemsPerFrame = 512;  // summed over the calls of one frame
inline constexpr std::size_t kMaxSyncBuckets = 512;
inline constexpr std::size_t kMaxPlacementBytes = 64;

// Lease (only to a peer that announced kCapLeases): charge up to `cost` tokens, as many
// as the bucket holds, for the asker's fast-mode lease (cluster/limits/lease.h).
enum class LimitOp : std::uint8_t { Charge = 0, Refund = 1, Lease = 2 };
inline constexpr std::uint8_t kMaxLimitOp = static_cast<std::uint8_t>(LimitOp::Lease);

// One bucket operation. `key` is the store key: rule name, '\0', key value (bytes, <= kMaxStringBytes).
struct LimitItem {
  LimitOp op = LimitOp::Charge;
  std::string key;
  std::uint8_t algorithm = 0;   // <= kMaxAlgorithm
  std::uint64_t limit = 0;
  std::int64_t period_ns = 0;   // >= 0
  std::uint64_t burst = 0;
  std::uint64_t cost = 0;
  bool blocking = false;  // a denial of this item stops the call: the owner gives back what the call charged
  // Travels right after `key`. The string placement hashed to find the owner, when it is not `key` itself
  // ([affinity] method = "source_ip": "ip:" and the client address); at most
  // kMaxPlacementBytes. Replicas and hand-offs follow it.
  std::string placement;
  bool operator==(const LimitItem&) const = default;
};

inline constexpr std::uint64_t kRefundCallBit = std::uint64_t{1} << 63;
inline constexpr std::uint64_t kForwardedCallBit = std::uint64_t{1} << 62;

// One stage's items for one owner; the owner evaluates them in order, atomically per item.
struct LimitCall {
  // Chosen by the sender, echoed in the answer. Two bits carry meaning: kRefundCallBit,
  // a refund (no one waits for its answer), and kForwardedCallBit, a call that a node
  // which no longer owns the keys passed on to their owner: its receiver answers it
  // itself and never forwards it again.
  std::uint64_t request_id = 0;
  std::vector<LimitItem> items;  // 1..kMaxLimitItemsPerCall
  bool operator==(const LimitCall&) const = default;
};

// All the calls a node makes to one owner in one loop turn travel in one frame.
struct LimitRequest {
  std::vector<LimitCall> calls;  // 1..kMaxLimitCalls, total items <= kMaxLimitItemsPerFrame
  bool operator==(const LimitRequest&) const = default;
};

enum class ItemResult : std::uint8_t {
  NotEvaluated = 0,  // the call stopped at an earlier blocking denial
  Charged = 1,       // allowed, and the charge stands
  Denied = 2,        // not allowed; nothing charged
  Returned = 3,      // allowed, then given back because a later blocking item of the call was denied
  Refunded = 4,      // a Refund item was applied
  Leased = 5,        // a Lease item: `remaining` is the tokens granted (0: none)
};
inline constexpr std::uint8_t kMaxItemResult = 5;

struct LimitOutcome {
  ItemResult result = ItemResult::NotEvaluated;
  std::uint64_t remaining = 0;      // whole units still chargeable after this item
  std::int64_t retry_after_ns = 0;  // when denied; >= 0
  bool operator==(const LimitOutcome&) const = default;
};

enum class CallStatus : std::uint8_t { Ok = 0, Refused = 1 };  // Refused: the owner would not evaluate the call (e.g. leaving)
inline constexpr std::uint8_t kMaxCallStatus = 1;

struct LimitAnswer {
  std::uint64_t request_id = 0;
  CallStatus status = CallStatus::Ok;
  // One per item of the call when Ok (so 1..kMaxLimitItemsPerCall); empty when Refused.
  std::vector<LimitOutcome> outcomes;
  bool operator==(const LimitAnswer&) const = default;
};

struct LimitReply {
  std::vector<LimitAnswer> answers;  // 1..kMaxLimitCalls, total outcomes <= kMaxLimitItemsPerFrame
  bool operator==(const LimitReply&) const = default;
};

// Bucket state between nodes, never as an absolute monotonic time: `stamp_age_ns` is the
// sender's now minus the bucket's stamp (negative when the stamp lies ahead, as a gcra
// TAT can). The receiver rebuilds stamp = its own now - stamp_age_ns.
struct SyncedBucket {
  std::string key;             // store key, as in LimitItem
  std::uint8_t algorithm = 0;  // <= kMaxAlgorithm
  std::uint64_t limit = 0;
  std::int64_t period_ns = 0;  // >= 0
  std::uint64_t burst = 0;
  // Finite and >= 0, encoded as the IEEE-754 bits, u64 big-endian. encode() writes -0.0
  // as +0.0 and decode() refuses a set sign bit, so every level has one encoding.
  double level = 0;
  std::uint64_t count = 0;
  std::int64_t stamp_age_ns = 0;
  bool initialised = false;
  std::string placement;  // as in LimitItem (travels right after `key`)
  bool operator==(const SyncedBucket&) const = default;
};

enum class SyncReason : std::uint8_t { Replication = 0, Handoff = 1 };
inline constexpr std::uint8_t kMaxSyncReason = 1;

struct BucketSync {
  SyncReason reason = SyncReason::Replication;
  std::uint64_t sequence = 0;        // per sender, grows by one per BucketSync frame
  bool last = true;                  // Handoff: this frame ends the hand-off batch
  std::vector<SyncedBucket> buckets; // 0..kMaxSyncBuckets
  bool operator==(const BucketSync&) const = default;
};

// One Raft message between the cores of two nodes (only to a peer that announced
// kCapRaft). Its payload's layout and limits are in raft_codec.h.
struct RaftFrame {
  raft::Message message;
  bool operator==(const RaftFrame&) const = default;
};

// Raft driver to Raft driver, beside the cores' RaftFrames (only to a peer that announced
// kCapRaft): what a node's Raft state is, joining, and requests a follower forwards to
// the leader with their answers. Which fields a kind uses is written beside each; the
// others are ignored (senders leave them 0 or empty).
enum class RaftControlKind : std::uint8_t {
  Status = 0,    // the sender's Raft state (sent on link up and when it changes)
  Join = 1,      // the sender, in no Raft cluster, asks to be added (as a learner); text: its node.id
  Propose = 2,   // request_id; text: a policy document (its version is the leader's to set);
                 // index: the version the change is for (base + 1), 0: the next one
  Change = 3,    // request_id; text: raft::encodeConfChange() text (e.g. "remove 7")
  Transfer = 4,  // request_id; index: the target's Raft id (0: the leader chooses)
  Reply = 5,     // request_id; flags kRaftAccepted; index/term of the entry (a transfer: index the
                 // target, term 0); refused: index the HTTP status for the caller, text why
  Read = 6,      // reserved: the core forwards reads itself; nothing sends it
};
inline constexpr std::uint8_t kMaxRaftControlKind = 6;
inline constexpr std::uint8_t kRaftInCluster = 1;   // Status: the sender belongs to a Raft cluster
inline constexpr std::uint8_t kRaftBootstrap = 2;   // Status: the sender has bootstrap_expect > 0
inline constexpr std::uint8_t kRaftAccepted = 4;    // Reply: done / accepted
inline constexpr std::uint8_t kRaftControlFlagsKnown = kRaftInCluster | kRaftBootstrap | kRaftAccepted;
// What one frame holds beside the fixed fields (static_assert in codec.cpp). A forwarded
// Propose carries a whole policy document, so a policy whose envelope is larger cannot
// be forwarded: the driver refuses it (a RaftFrame append bounds entries alike).
inline constexpr std::size_t kMaxRaftControlText = 1024 * 1024 - 64;

// Payload, in codec.h's conventions: u8 kind, u64 raft_id, u8 flags, u64 request_id,
// u64 leader, u64 term, u64 index, u32 text length, text. Refused: kind above
// kMaxRaftControlKind, raft_id 0, flag bits outside kRaftControlFlagsKnown, a text
// longer than kMaxRaftControlText.
struct RaftControl {
  RaftControlKind kind = RaftControlKind::Status;
  std::uint64_t raft_id = 0;     // the sender's Raft id, never 0
  std::uint8_t flags = 0;        // kRaft* bits
  std::uint64_t request_id = 0;  // Propose/Change/Transfer/Reply: matches a Reply to its request
  std::uint64_t leader = 0;      // Status/Reply: the leader's Raft id as the sender knows it (0: none)
  std::uint64_t term = 0;        // Status: the sender's term; Reply: the entry's term
  std::uint64_t index = 0;       // Reply: the entry's index; Transfer: the target; Status: bootstrap_expect
  std::string text;              // at most kMaxRaftControlText bytes
  bool operator==(const RaftControl&) const = default;
};

using Message = std::variant<Hello, Challenge, Response, Heartbeat, Goodbye, MemberList,
                             ProbeRequest, ProbeAck, LimitRequest, LimitReply, BucketSync, RaftFrame,
                             RaftControl>;

MessageType typeOf(const Message& message);

// Encodes one whole frame, prefix included. A message outside the limits above is a
// caller bug and throws std::invalid_argument.
std::string encode(const Message& message);

enum class DecodeStatus { NeedMore, Ok, Error };

enum class DecodeError {
  BadVersion,
  UnknownType,
  Oversized,      // length prefix above kMaxFrameBytes
  Truncated,      // the frame is shorter than its fields (or than version + type)
  TrailingBytes,  // the fields end before the frame does
  BadValue,       // a value out of range: enum, flag, boolean, string length, element count
};

std::string_view nameOf(DecodeError error);

struct DecodeResult {
  DecodeStatus status = DecodeStatus::NeedMore;
  // NeedMore: the smallest number of further bytes that can change the answer.
  std::size_t bytes_needed = 0;
  // Ok: the frame's size, prefix included; the caller drops that many bytes.
  std::size_t bytes_consumed = 0;
  Message message;
  // Error: why, and a short text for the log line that closes the link.
  DecodeError error = DecodeError::Truncated;
  std::string detail;
};

// Decodes the first frame in buffer; bytes after it are left for the next call.
DecodeResult decode(std::string_view buffer);

}  // namespace zetian::cluster::wire
