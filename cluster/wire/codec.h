// The wire format of node links: pure encoding and decoding, no sockets.
//
// A frame is [u32 big-endian length of what follows][u8 version][u8 type][payload].
// The length covers version, type and payload, so it is at least 2 and at most
// kMaxFrameBytes; a larger length is refused from the 4-byte prefix alone, before any
// payload is buffered. Integers are big-endian and fixed-width; strings are a u16 byte
// count then the bytes (at most kMaxStringBytes); vectors are a u16 element count then
// the elements (at most kMaxMembers). The limits are chosen so that every message
// within them fits in one frame, so encode() never produces a frame decode() refuses.
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
};

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

using Message = std::variant<Hello, Challenge, Response, Heartbeat, Goodbye, MemberList,
                             ProbeRequest, ProbeAck>;

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
  BadValue,       // a value out of range: status, string length, element count
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
