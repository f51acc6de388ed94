#include "cluster/wire/handshake.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <stdexcept>
#include <utility>

namespace zetian::cluster::wire {
namespace {

constexpr std::string_view kAcceptLabel = "zetian-v1 accept";
constexpr std::string_view kInitiateLabel = "zetian-v1 initiate";
constexpr std::string_view kIdentifyLabel = "zetian-v1 identify";
constexpr std::string_view kLinkLabel = "zetian-v1 link";
constexpr std::string_view kFrameLabel = "zetian-v1 frame";

std::string_view bytesOf(const Nonce& nonce) {
  return {reinterpret_cast<const char*>(nonce.data()), nonce.size()};
}

// Field-by-field, each a u16 big-endian length then the bytes (strings are at most
// kMaxStringBytes on the wire, labels and nonces are short).
class MacInput {
 public:
  MacInput& add(std::string_view field) {
    if (field.size() > 0xffff) throw std::invalid_argument("MAC input field too long");
    bytes_.push_back(static_cast<char>(field.size() >> 8));
    bytes_.push_back(static_cast<char>(field.size() & 0xff));
    bytes_.append(field);
    return *this;
  }
  MacInput& add(const Nonce& nonce) { return add(bytesOf(nonce)); }
  MacInput& add(std::uint64_t number) { return add(std::to_string(number)); }
  std::string_view bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

Mac macOver(std::string_view secret, const MacInput& input) {
  return hmacSha256(secret, input.bytes());
}

bool macEquals(const Mac& a, const Mac& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool isZero(const Nonce& nonce) {
  std::uint8_t any = 0;
  for (auto byte : nonce) any |= byte;
  return any == 0;
}

Mac acceptMac(std::string_view secret, const Nonce& nonce_i, const Nonce& nonce_a,
              std::string_view initiator_id, std::string_view cluster_id) {
  return macOver(secret, MacInput{}.add(kAcceptLabel).add(nonce_i).add(nonce_a)
                             .add(initiator_id).add(cluster_id));
}

Mac initiateMac(std::string_view secret, const Nonce& nonce_i, const Nonce& nonce_a,
                const Hello& initiator, std::string_view cluster_id) {
  return macOver(secret, MacInput{}.add(kInitiateLabel).add(nonce_i).add(nonce_a)
                             .add(initiator.node_id).add(cluster_id)
                             .add(initiator.advertise_address).add(initiator.region)
                             .add(initiator.incarnation)
                             .add(std::uint64_t{initiator.protocol}).add(initiator.capabilities));
}

Mac identifyMac(std::string_view secret, const Nonce& nonce_i, const Nonce& nonce_a,
                const Hello& acceptor, std::string_view cluster_id) {
  return macOver(secret, MacInput{}.add(kIdentifyLabel).add(nonce_i).add(nonce_a)
                             .add(acceptor.node_id).add(acceptor.advertise_address)
                             .add(cluster_id).add(acceptor.region).add(acceptor.incarnation)
                             .add(std::uint64_t{acceptor.protocol}).add(acceptor.capabilities));
}

SessionKey linkKey(std::string_view secret, const Nonce& nonce_i, const Nonce& nonce_a) {
  return macOver(secret, MacInput{}.add(kLinkLabel).add(nonce_i).add(nonce_a));
}

Hello helloOf(const NodeIdentity& self, const Nonce& nonce) {
  return Hello{self.node_id, self.advertise_address, self.cluster_id, self.region, nonce,
               self.incarnation, kProtocolVersion, self.capabilities};
}

void wipe(std::string& secret) {
  if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
}

}  // namespace

Mac hmacSha256(std::string_view key, std::string_view message) {
  Mac out{};
  unsigned int length = 0;
  // HMAC() with a null key pointer would mean "reuse the previous key"; pass a valid one.
  static const unsigned char kEmpty = 0;
  const void* key_bytes = key.empty() ? static_cast<const void*>(&kEmpty) : key.data();
  if (HMAC(EVP_sha256(), key_bytes, static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(message.data()), message.size(), out.data(),
           &length) == nullptr ||
      length != out.size()) {
    throw std::runtime_error("HMAC-SHA256 failed");
  }
  return out;
}

std::string_view nameOf(RefuseReason reason) {
  switch (reason) {
    case RefuseReason::UnexpectedMessage: return "unexpected message";
    case RefuseReason::ZeroNonce: return "zero nonce";
    case RefuseReason::EchoedNonce: return "echoed nonce";
    case RefuseReason::WrongNonce: return "wrong nonce";
    case RefuseReason::BadMac: return "bad MAC";
    case RefuseReason::SameNodeId: return "same node id";
  }
  return "unknown";
}

// ---- Initiator -------------------------------------------------------------------------

Initiator::Initiator(NodeIdentity self, std::string_view secret, NonceSource nonces)
    : self_(std::move(self)), secret_(secret), nonces_(std::move(nonces)) {}

Initiator::~Initiator() { wipe(secret_); }

HandshakeStep Initiator::refuse(RefuseReason reason) {
  phase_ = Phase::Done;
  state_ = Refused{reason};
  return {{}, state_};
}

HandshakeStep Initiator::start() {
  if (phase_ != Phase::NotStarted) return refuse(RefuseReason::UnexpectedMessage);
  nonce_i_ = nonces_();
  phase_ = Phase::AwaitChallenge;
  return {{helloOf(self_, nonce_i_)}, state_};
}

HandshakeStep Initiator::receive(const Message& message) {
  switch (phase_) {
    case Phase::AwaitChallenge: {
      const auto* challenge = std::get_if<Challenge>(&message);
      if (challenge == nullptr) return refuse(RefuseReason::UnexpectedMessage);
      if (isZero(challenge->nonce)) return refuse(RefuseReason::ZeroNonce);
      if (challenge->nonce == nonce_i_) return refuse(RefuseReason::EchoedNonce);
      const Mac expected =
          acceptMac(secret_, nonce_i_, challenge->nonce, self_.node_id, self_.cluster_id);
      if (!macEquals(expected, challenge->mac)) return refuse(RefuseReason::BadMac);
      nonce_a_ = challenge->nonce;
      phase_ = Phase::AwaitIdentity;
      Response response{nonce_a_, initiateMac(secret_, nonce_i_, nonce_a_, helloOf(self_, nonce_i_),
                                              self_.cluster_id)};
      return {{std::move(response)}, state_};
    }
    case Phase::AwaitIdentity: {
      const auto* hello = std::get_if<Hello>(&message);
      if (hello == nullptr) return refuse(RefuseReason::UnexpectedMessage);
      if (hello->nonce != nonce_i_) return refuse(RefuseReason::WrongNonce);
      peer_hello_ = *hello;
      phase_ = Phase::AwaitIdentityProof;
      return {{}, state_};
    }
    case Phase::AwaitIdentityProof: {
      const auto* proof = std::get_if<Response>(&message);
      if (proof == nullptr) return refuse(RefuseReason::UnexpectedMessage);
      if (proof->nonce != nonce_i_) return refuse(RefuseReason::WrongNonce);
      const Mac expected = identifyMac(secret_, nonce_i_, nonce_a_, peer_hello_, self_.cluster_id);
      if (!macEquals(expected, proof->mac)) return refuse(RefuseReason::BadMac);
      if (peer_hello_.node_id == self_.node_id) return refuse(RefuseReason::SameNodeId);
      phase_ = Phase::Done;
      state_ = Established{peer_hello_.node_id, linkKey(secret_, nonce_i_, nonce_a_), peer_hello_};
      return {{}, state_};
    }
    case Phase::NotStarted:
    case Phase::Done:
      break;
  }
  return refuse(RefuseReason::UnexpectedMessage);
}

// ---- Acceptor --------------------------------------------------------------------------

Acceptor::Acceptor(NodeIdentity self, std::string_view secret, NonceSource nonces)
    : self_(std::move(self)), secret_(secret), nonces_(std::move(nonces)) {}

Acceptor::~Acceptor() { wipe(secret_); }

HandshakeStep Acceptor::refuse(RefuseReason reason) {
  phase_ = Phase::Done;
  state_ = Refused{reason};
  return {{}, state_};
}

HandshakeStep Acceptor::receive(const Message& message) {
  switch (phase_) {
    case Phase::AwaitHello: {
      const auto* hello = std::get_if<Hello>(&message);
      if (hello == nullptr) return refuse(RefuseReason::UnexpectedMessage);
      if (isZero(hello->nonce)) return refuse(RefuseReason::ZeroNonce);
      nonce_i_ = hello->nonce;
      nonce_a_ = nonces_();
      if (nonce_a_ == nonce_i_) return refuse(RefuseReason::EchoedNonce);
      peer_hello_ = *hello;
      phase_ = Phase::AwaitResponse;
      Challenge challenge{nonce_a_, acceptMac(secret_, nonce_i_, nonce_a_, peer_hello_.node_id,
                                              self_.cluster_id)};
      return {{std::move(challenge)}, state_};
    }
    case Phase::AwaitResponse: {
      const auto* response = std::get_if<Response>(&message);
      if (response == nullptr) return refuse(RefuseReason::UnexpectedMessage);
      if (response->nonce != nonce_a_) return refuse(RefuseReason::WrongNonce);
      const Mac expected =
          initiateMac(secret_, nonce_i_, nonce_a_, peer_hello_, self_.cluster_id);
      if (!macEquals(expected, response->mac)) return refuse(RefuseReason::BadMac);
      // Only now, with the peer proven a member: telling it "that is my id" is no leak.
      if (peer_hello_.node_id == self_.node_id) return refuse(RefuseReason::SameNodeId);
      Hello identity = helloOf(self_, nonce_i_);
      Response proof{nonce_i_, identifyMac(secret_, nonce_i_, nonce_a_, identity, self_.cluster_id)};
      phase_ = Phase::Done;
      state_ = Established{peer_hello_.node_id, linkKey(secret_, nonce_i_, nonce_a_), peer_hello_};
      return {{std::move(identity), std::move(proof)}, state_};
    }
    case Phase::Done:
      break;
  }
  return refuse(RefuseReason::UnexpectedMessage);
}

// ---- Frames ----------------------------------------------------------------------------

Mac frameMac(const SessionKey& key, Direction direction, std::uint64_t sequence,
             std::string_view frame) {
  std::string input(kFrameLabel);
  input.push_back(static_cast<char>(direction));
  for (int shift = 56; shift >= 0; shift -= 8) {
    input.push_back(static_cast<char>((sequence >> shift) & 0xff));
  }
  input.append(frame);
  return hmacSha256({reinterpret_cast<const char*>(key.data()), key.size()}, input);
}

FrameAuthenticator::FrameAuthenticator(const SessionKey& key, Role role)
    : key_(key),
      outgoing_(role == Role::Initiator ? Direction::InitiatorToAcceptor
                                        : Direction::AcceptorToInitiator),
      incoming_(role == Role::Initiator ? Direction::AcceptorToInitiator
                                        : Direction::InitiatorToAcceptor) {}

FrameAuthenticator::~FrameAuthenticator() { OPENSSL_cleanse(key_.data(), key_.size()); }

FrameAuthenticator::Tagged FrameAuthenticator::sign(std::string_view frame) {
  Tagged tagged{next_send_, frameMac(key_, outgoing_, next_send_, frame)};
  ++next_send_;
  return tagged;
}

bool FrameAuthenticator::verify(std::uint64_t sequence, std::string_view frame, const Mac& tag) {
  if (sequence != next_receive_) return false;
  if (!macEquals(frameMac(key_, incoming_, sequence, frame), tag)) return false;
  ++next_receive_;
  return true;
}

}  // namespace zetian::cluster::wire
