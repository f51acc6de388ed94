// Node admission: a mutual HMAC-SHA256 challenge-response over the cluster's shared
// secret, as a pure state machine (no sockets, no clocks; nonces come from the caller).
//
//   1. I -> A  Hello{id_i, addr_i, cluster_id, region_i, nonce_i, inc_i, proto_i, caps_i}
//   2. A -> I  Challenge{nonce_a, HMAC(s, "zetian-v1 accept"   | nonce_i | nonce_a | id_i | cluster)}
//   3. I -> A  Response {nonce_a, HMAC(s, "zetian-v1 initiate" | nonce_i | nonce_a | id_i | cluster
//                                                                | addr_i | region_i | inc_i
//                                                                | proto_i | caps_i)}
//   4. A -> I  Hello{id_a, addr_a, cluster_id, region_a, nonce_i, inc_a, proto_a, caps_a}
//              Response {nonce_i, HMAC(s, "zetian-v1 identify" | nonce_i | nonce_a | id_a | addr_a
//                                                                | cluster | region_a | inc_a
//                                                                | proto_a | caps_a)}
//   link key = HMAC(s, "zetian-v1 link" | nonce_i | nonce_a)
//
// Why this shape:
// - Each side MACs the OTHER side's fresh nonce, so a recorded Challenge or Response does
//   not verify in a new handshake. Every MAC has its own label, so no MAC can be sent back
//   (reflected) as another; MACs are compared in constant time.
// - The acceptor reveals nothing about itself until the initiator has proven the secret:
//   a stranger gets one random nonce and one MAC, then silence. Its own identity (step 4)
//   is bound to both nonces by the "identify" MAC.
// - "cluster" is always the VERIFIER's own configured cluster id, never the peer's claim,
//   so a node of another cluster fails exactly like one with a wrong secret. Likewise the
//   acceptor checks for a peer using its own node id only after step 3, so that check is
//   no membership oracle for strangers.
// - Protocol version and capabilities are under the MACs too: a man in the middle who
//   cleared capability bits could otherwise steer both ends off the limiter messages.
// - A refused side sends nothing more; the caller closes the link and logs nameOf(reason).
//   MAC inputs are length-prefixed (u16 big-endian) field by field, so no two different
//   field lists give the same bytes.
//
// After establishment, when TLS is off, every frame carries frameMac() under the link key
// with a per-direction sequence number (FrameAuthenticator). The secret and the keys never
// appear in any message text, reason or log.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cluster/wire/codec.h"

namespace zetian::cluster::wire {

using SessionKey = Mac;  // 32 bytes, derived per link
using NonceSource = std::function<Nonce()>;

// HMAC-SHA256 of message under key.
Mac hmacSha256(std::string_view key, std::string_view message);

enum class RefuseReason {
  UnexpectedMessage,  // a message out of order, or any message after the handshake ended
  ZeroNonce,
  EchoedNonce,        // the peer's nonce equals ours
  WrongNonce,         // a Response/Hello answering a nonce that is not ours (replay)
  BadMac,             // wrong secret, other cluster, tampering or replay
  SameNodeId,         // the peer claims our own node id
};
std::string_view nameOf(RefuseReason reason);

struct InProgress {
  bool operator==(const InProgress&) const = default;
};
struct Established {
  std::string peer_id;
  SessionKey session_key{};
  Hello peer;  // the peer's whole introduction, every field covered by a verified MAC
  bool operator==(const Established&) const = default;
};
struct Refused {
  RefuseReason reason = RefuseReason::UnexpectedMessage;
  bool operator==(const Refused&) const = default;
};
using HandshakeState = std::variant<InProgress, Established, Refused>;

// What one input produced: the messages to send, in order, and the state after it.
struct HandshakeStep {
  std::vector<Message> send;
  HandshakeState state;
};

// This node as it introduces itself; cluster_id must match across the cluster.
struct NodeIdentity {
  std::string node_id;
  std::string advertise_address;
  std::string cluster_id;
  std::string region;
  std::uint64_t incarnation = 0;
  std::uint64_t capabilities = kOwnCapabilities;  // announced in Hello; tests vary it
};

// The secret is copied and wiped from memory on destruction.
class Initiator {
 public:
  Initiator(NodeIdentity self, std::string_view secret, NonceSource nonces);
  ~Initiator();
  Initiator(const Initiator&) = delete;
  Initiator& operator=(const Initiator&) = delete;

  // The opening Hello; call once, before any receive().
  HandshakeStep start();
  HandshakeStep receive(const Message& message);
  const HandshakeState& state() const { return state_; }

 private:
  enum class Phase { NotStarted, AwaitChallenge, AwaitIdentity, AwaitIdentityProof, Done };
  HandshakeStep refuse(RefuseReason reason);

  NodeIdentity self_;
  std::string secret_;
  NonceSource nonces_;
  Phase phase_ = Phase::NotStarted;
  Nonce nonce_i_{};
  Nonce nonce_a_{};
  Hello peer_hello_;
  HandshakeState state_ = InProgress{};
};

class Acceptor {
 public:
  Acceptor(NodeIdentity self, std::string_view secret, NonceSource nonces);
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  HandshakeStep receive(const Message& message);
  const HandshakeState& state() const { return state_; }

 private:
  enum class Phase { AwaitHello, AwaitResponse, Done };
  HandshakeStep refuse(RefuseReason reason);

  NodeIdentity self_;
  std::string secret_;
  NonceSource nonces_;
  Phase phase_ = Phase::AwaitHello;
  Nonce nonce_i_{};
  Nonce nonce_a_{};
  Hello peer_hello_;
  HandshakeState state_ = InProgress{};
};

enum class Direction : std::uint8_t { InitiatorToAcceptor = 0, AcceptorToInitiator = 1 };

// HMAC(key, "zetian-v1 frame" | direction | u64 sequence | frame): binds each frame to its
// link, direction and position, so it cannot be replayed, reordered or reflected.
Mac frameMac(const SessionKey& key, Direction direction, std::uint64_t sequence,
             std::string_view frame);

// Signs outgoing frames and checks incoming ones for one end of a link. Sequences start
// at 0 in each direction; an incoming frame is accepted only with exactly the next
// expected sequence and a valid tag, and a rejected frame does not advance it (the caller
// closes the link anyway).
class FrameAuthenticator {
 public:
  // role: which end of the handshake this side was.
  enum class Role { Initiator, Acceptor };
  FrameAuthenticator(const SessionKey& key, Role role);
  ~FrameAuthenticator();

  struct Tagged {
    std::uint64_t sequence = 0;
    Mac tag{};
  };
  Tagged sign(std::string_view frame);
  bool verify(std::uint64_t sequence, std::string_view frame, const Mac& tag);
  // The sequence the next incoming frame must carry (links over TCP need not send it).
  std::uint64_t nextReceive() const { return next_receive_; }

 private:
  SessionKey key_;
  Direction outgoing_;
  Direction incoming_;
  std::uint64_t next_send_ = 0;
  std::uint64_t next_receive_ = 0;
};

}  // namespace zetian::cluster::wire
