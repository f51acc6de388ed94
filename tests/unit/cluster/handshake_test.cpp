#include "cluster/wire/handshake.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace zetian::cluster::wire {
namespace {

const std::string kSecret = "correct horse battery staple, 32+";
const NodeIdentity kNode1{"mx1", "10.0.0.1:7946", "prod", "eu-west", 1001};
const NodeIdentity kNode2{"mx2", "10.0.0.2:7946", "prod", "eu-north", 2002};

// Deterministic nonces: each draw differs from every other draw of every source.
NonceSource nonceSource(std::uint8_t seed) {
  return [seed, counter = std::uint8_t{0}]() mutable {
    Nonce nonce{};
    for (std::size_t i = 0; i < nonce.size(); ++i) {
      nonce[i] = static_cast<std::uint8_t>(seed * 31 + counter * 7 + i + 1);
    }
    nonce[0] = seed;
    nonce[1] = ++counter;
    return nonce;
  };
}

template <typename T>
const T& only(const std::vector<Message>& messages) {
  EXPECT_EQ(messages.size(), 1u);
  return std::get<T>(messages.at(0));
}

template <typename T>
T& as(Message& message) {
  return std::get<T>(message);
}

// Runs a whole handshake, delivering every message as is, and keeps the transcript.
struct Transcript {
  Message hello_i, challenge, response, hello_a, proof;
};

Transcript runHandshake(Initiator& initiator, Acceptor& acceptor) {
  Transcript t;
  t.hello_i = only<Hello>(initiator.start().send);
  t.challenge = only<Challenge>(acceptor.receive(t.hello_i).send);
  t.response = only<Response>(initiator.receive(t.challenge).send);
  const auto accepted = acceptor.receive(t.response);
  EXPECT_EQ(accepted.send.size(), 2u);
  t.hello_a = accepted.send.at(0);
  t.proof = accepted.send.at(1);
  EXPECT_TRUE(initiator.receive(t.hello_a).send.empty());
  EXPECT_TRUE(initiator.receive(t.proof).send.empty());
  return t;
}

Refused refusal(const HandshakeState& state) {
  EXPECT_TRUE(std::holds_alternative<Refused>(state));
  return std::holds_alternative<Refused>(state) ? std::get<Refused>(state) : Refused{};
}

std::string hex(const Mac& mac) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (auto byte : mac) {
    out.push_back(digits[byte >> 4]);
    out.push_back(digits[byte & 0xf]);
  }
  return out;
}

TEST(HmacSha256, PassesRfc4231TestCase2) {
  EXPECT_EQ(hex(hmacSha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Handshake, BothSidesEstablishWithTheSameSessionKey) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  runHandshake(initiator, acceptor);

  ASSERT_TRUE(std::holds_alternative<Established>(initiator.state()));
  ASSERT_TRUE(std::holds_alternative<Established>(acceptor.state()));
  const auto& i = std::get<Established>(initiator.state());
  const auto& a = std::get<Established>(acceptor.state());
  EXPECT_EQ(i.peer_id, "mx2");
  EXPECT_EQ(a.peer_id, "mx1");
  EXPECT_EQ(i.session_key, a.session_key);
  EXPECT_NE(i.session_key, Mac{});
}

TEST(Handshake, SessionKeyDiffersPerLink) {
  Initiator i1(kNode1, kSecret, nonceSource(1));
  Acceptor a1(kNode2, kSecret, nonceSource(2));
  runHandshake(i1, a1);
  Initiator i2(kNode1, kSecret, nonceSource(3));
  Acceptor a2(kNode2, kSecret, nonceSource(4));
  runHandshake(i2, a2);
  EXPECT_NE(std::get<Established>(i1.state()).session_key,
            std::get<Established>(i2.state()).session_key);
}

TEST(Handshake, InitiatorWithWrongSecretIsRefusedAndLearnsNothing) {
  Initiator initiator(kNode1, "wrong secret", nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));

  auto hello = initiator.start().send.at(0);
  auto challenge = acceptor.receive(hello);
  // A Challenge carries only a random nonce and a MAC: nothing about the acceptor.
  ASSERT_EQ(challenge.send.size(), 1u);
  ASSERT_TRUE(std::holds_alternative<Challenge>(challenge.send[0]));
  // The initiator sees a MAC made with another secret and stops without answering.
  auto answer = initiator.receive(challenge.send[0]);
  EXPECT_TRUE(answer.send.empty());
  EXPECT_EQ(refusal(answer.state).reason, RefuseReason::BadMac);

  // Even if it answered anyway (a hostile peer), the acceptor stops, revealing nothing.
  Response forged{as<Challenge>(challenge.send[0]).nonce, Mac{}};
  auto refused = acceptor.receive(forged);
  EXPECT_TRUE(refused.send.empty());
  EXPECT_EQ(refusal(refused.state).reason, RefuseReason::BadMac);
}

TEST(Handshake, InitiatorWithRightSecretRefusesAcceptorWithWrongSecret) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, "wrong secret", nonceSource(2));
  auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
  auto step = initiator.receive(challenge);
  EXPECT_TRUE(step.send.empty());
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::BadMac);
}

TEST(Handshake, OtherClusterIdFailsLikeAWrongSecret) {
  NodeIdentity other = kNode1;
  other.cluster_id = "staging";
  Initiator initiator(other, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
  EXPECT_EQ(refusal(initiator.receive(challenge).state).reason, RefuseReason::BadMac);
}

TEST(Handshake, RecordedResponseReplayedIntoNewHandshakeIsRefused) {
  Initiator i1(kNode1, kSecret, nonceSource(1));
  Acceptor a1(kNode2, kSecret, nonceSource(2));
  const Transcript recorded = runHandshake(i1, a1);

  // An attacker replays the recorded Hello; the acceptor answers with a fresh nonce.
  Acceptor a2(kNode2, kSecret, nonceSource(9));
  auto challenge = only<Challenge>(a2.receive(recorded.hello_i).send);
  EXPECT_NE(challenge.nonce, std::get<Challenge>(recorded.challenge).nonce);
  auto step = a2.receive(recorded.response);
  EXPECT_TRUE(step.send.empty());
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::WrongNonce);

  // Rewriting the nonce field to the fresh one does not help: the MAC covers it.
  Acceptor a3(kNode2, kSecret, nonceSource(10));
  auto challenge3 = only<Challenge>(a3.receive(recorded.hello_i).send);
  Response rewritten = std::get<Response>(recorded.response);
  rewritten.nonce = challenge3.nonce;
  step = a3.receive(rewritten);
  EXPECT_TRUE(step.send.empty());
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::BadMac);
}

TEST(Handshake, RecordedChallengeReplayedIntoNewHandshakeIsRefused) {
  Initiator i1(kNode1, kSecret, nonceSource(1));
  Acceptor a1(kNode2, kSecret, nonceSource(2));
  const Transcript recorded = runHandshake(i1, a1);

  Initiator i2(kNode1, kSecret, nonceSource(5));
  i2.start();
  auto step = i2.receive(recorded.challenge);
  EXPECT_TRUE(step.send.empty());
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::BadMac);
}

TEST(Handshake, RecordedIdentityProofReplayedIntoNewHandshakeIsRefused) {
  Initiator i1(kNode1, kSecret, nonceSource(1));
  Acceptor a1(kNode2, kSecret, nonceSource(2));
  const Transcript recorded = runHandshake(i1, a1);

  // A fresh, honest exchange up to the identity, then the old identity proof.
  Initiator i2(kNode1, kSecret, nonceSource(5));
  Acceptor a2(kNode2, kSecret, nonceSource(6));
  auto challenge = only<Challenge>(a2.receive(i2.start().send.at(0)).send);
  auto accepted = a2.receive(only<Response>(i2.receive(challenge).send));
  i2.receive(accepted.send.at(0));
  Response old = std::get<Response>(recorded.proof);
  old.nonce = std::get<Response>(accepted.send.at(1)).nonce;
  EXPECT_EQ(refusal(i2.receive(old).state).reason, RefuseReason::BadMac);
}

TEST(Handshake, AcceptorRefusesItsOwnChallengeMacReflectedAsResponse) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
  auto step = acceptor.receive(Response{challenge.nonce, challenge.mac});
  EXPECT_TRUE(step.send.empty());
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::BadMac);
}

TEST(Handshake, InitiatorRefusesItsOwnResponseMacReflectedAsIdentityProof) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  auto hello = only<Hello>(initiator.start().send);
  auto challenge = only<Challenge>(acceptor.receive(hello).send);
  auto response = only<Response>(initiator.receive(challenge).send);
  // The attacker poses as the acceptor with a Hello answering the initiator's nonce.
  initiator.receive(Hello{"mx9", "10.0.0.9:7946", "prod", "eu-west", hello.nonce, 9});
  auto step = initiator.receive(Response{hello.nonce, response.mac});
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::BadMac);
}

TEST(Handshake, ChallengeEchoingTheInitiatorNonceIsRefused) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  auto hello = only<Hello>(initiator.start().send);
  auto step = initiator.receive(Challenge{hello.nonce, Mac{}});
  EXPECT_TRUE(step.send.empty());
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::EchoedNonce);
}

TEST(Handshake, ZeroNoncesAreRefused) {
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  Hello hello{"mx1", "10.0.0.1:7946", "prod", "eu-west", Nonce{}, 1};
  auto step = acceptor.receive(hello);
  EXPECT_TRUE(step.send.empty());
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::ZeroNonce);

  Initiator initiator(kNode1, kSecret, nonceSource(1));
  initiator.start();
  EXPECT_EQ(refusal(initiator.receive(Challenge{}).state).reason, RefuseReason::ZeroNonce);
}

TEST(Handshake, PeerWithOurOwnNodeIdIsRefusedAfterProvingTheSecret) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode1, kSecret, nonceSource(2));
  auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
  auto step = acceptor.receive(only<Response>(initiator.receive(challenge).send));
  EXPECT_TRUE(step.send.empty());
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::SameNodeId);
}

// The MAC inputs as the header spells them: each field a u16 big-endian length, then it.
std::string macInput(std::initializer_list<std::string_view> fields) {
  std::string out;
  for (auto field : fields) {
    out.push_back(static_cast<char>(field.size() >> 8));
    out.push_back(static_cast<char>(field.size() & 0xff));
    out.append(field);
  }
  return out;
}

std::string_view bytesOf(const Nonce& nonce) {
  return {reinterpret_cast<const char*>(nonce.data()), nonce.size()};
}

TEST(Handshake, MacsAndSessionKeyCoverTheDocumentedInputs) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  const Transcript t = runHandshake(initiator, acceptor);
  const auto ni = bytesOf(std::get<Hello>(t.hello_i).nonce);
  const auto na = bytesOf(std::get<Challenge>(t.challenge).nonce);
  EXPECT_EQ(std::get<Challenge>(t.challenge).mac,
            hmacSha256(kSecret, macInput({"zetian-v1 accept", ni, na, "mx1", "prod"})));
  static_assert(kProtocolVersion == 1 && kOwnCapabilities == 15, "the decimal fields below");
  EXPECT_EQ(std::get<Response>(t.response).nonce, std::get<Challenge>(t.challenge).nonce);
  EXPECT_EQ(std::get<Response>(t.response).mac,
            hmacSha256(kSecret, macInput({"zetian-v1 initiate", ni, na, "mx1", "prod",
                                          "10.0.0.1:7946", "eu-west", "1001", "1", "15"})));
  EXPECT_EQ(std::get<Hello>(t.hello_a), (Hello{"mx2", "10.0.0.2:7946", "prod", "eu-north",
                                               std::get<Hello>(t.hello_i).nonce, 2002,
                                               kProtocolVersion, kOwnCapabilities}));
  EXPECT_EQ(std::get<Response>(t.proof).mac,
            hmacSha256(kSecret, macInput({"zetian-v1 identify", ni, na, "mx2", "10.0.0.2:7946",
                                          "prod", "eu-north", "2002", "1", "15"})));
  EXPECT_EQ(std::get<Established>(initiator.state()).session_key,
            hmacSha256(kSecret, macInput({"zetian-v1 link", ni, na})));
}

TEST(Handshake, InitiatorRefusesAMemberClaimingItsOwnId) {
  // A member that knows the secret but introduces itself with the initiator's id.
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  auto hello = only<Hello>(initiator.start().send);
  auto challenge = only<Challenge>(acceptor.receive(hello).send);
  initiator.receive(challenge);
  const Hello twin{"mx1", "10.0.0.9:7946", "prod", "eu-west", hello.nonce, 7};
  initiator.receive(twin);
  const Mac proof = hmacSha256(
      kSecret, macInput({"zetian-v1 identify", bytesOf(hello.nonce), bytesOf(challenge.nonce),
                         twin.node_id, twin.advertise_address, "prod", twin.region, "7", "1",
                         "0"}));
  auto step = initiator.receive(Response{hello.nonce, proof});
  EXPECT_TRUE(step.send.empty());
  EXPECT_EQ(refusal(step.state).reason, RefuseReason::SameNodeId);
}

TEST(Handshake, UnexpectedMessageOrdersAreRefused) {
  {
    Acceptor acceptor(kNode2, kSecret, nonceSource(2));
    auto step = acceptor.receive(Response{});
    EXPECT_TRUE(step.send.empty());
    EXPECT_EQ(refusal(step.state).reason, RefuseReason::UnexpectedMessage);
  }
  {
    Acceptor acceptor(kNode2, kSecret, nonceSource(2));
    Initiator initiator(kNode1, kSecret, nonceSource(1));
    acceptor.receive(initiator.start().send.at(0));
    auto step = acceptor.receive(Heartbeat{});
    EXPECT_EQ(refusal(step.state).reason, RefuseReason::UnexpectedMessage);
  }
  {
    Initiator initiator(kNode1, kSecret, nonceSource(1));
    initiator.start();
    EXPECT_EQ(refusal(initiator.receive(MemberList{}).state).reason,
              RefuseReason::UnexpectedMessage);
  }
  {
    Initiator initiator(kNode1, kSecret, nonceSource(1));
    EXPECT_EQ(refusal(initiator.receive(Challenge{}).state).reason,
              RefuseReason::UnexpectedMessage);
  }
  {
    // The identity proof before the identity.
    Initiator initiator(kNode1, kSecret, nonceSource(1));
    Acceptor acceptor(kNode2, kSecret, nonceSource(2));
    auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
    auto accepted = acceptor.receive(only<Response>(initiator.receive(challenge).send));
    EXPECT_EQ(refusal(initiator.receive(accepted.send.at(1)).state).reason,
              RefuseReason::UnexpectedMessage);
  }
  {
    // Anything after establishment, and anything after a refusal, is refused silently.
    Initiator initiator(kNode1, kSecret, nonceSource(1));
    Acceptor acceptor(kNode2, kSecret, nonceSource(2));
    const Transcript t = runHandshake(initiator, acceptor);
    auto step = acceptor.receive(t.response);
    EXPECT_TRUE(step.send.empty());
    EXPECT_EQ(refusal(step.state).reason, RefuseReason::UnexpectedMessage);
    step = acceptor.receive(t.hello_i);
    EXPECT_TRUE(step.send.empty());
    EXPECT_EQ(refusal(step.state).reason, RefuseReason::UnexpectedMessage);
  }
}

TEST(Handshake, TamperedMacByteIsRefused) {
  for (std::size_t byte : {std::size_t{0}, kMacBytes / 2, kMacBytes - 1}) {
    {
      Initiator initiator(kNode1, kSecret, nonceSource(1));
      Acceptor acceptor(kNode2, kSecret, nonceSource(2));
      auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
      challenge.mac[byte] ^= 0x01;
      EXPECT_EQ(refusal(initiator.receive(challenge).state).reason, RefuseReason::BadMac);
    }
    {
      Initiator initiator(kNode1, kSecret, nonceSource(1));
      Acceptor acceptor(kNode2, kSecret, nonceSource(2));
      auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
      auto response = only<Response>(initiator.receive(challenge).send);
      response.mac[byte] ^= 0x80;
      EXPECT_EQ(refusal(acceptor.receive(response).state).reason, RefuseReason::BadMac);
    }
    {
      Initiator initiator(kNode1, kSecret, nonceSource(1));
      Acceptor acceptor(kNode2, kSecret, nonceSource(2));
      auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
      auto accepted = acceptor.receive(only<Response>(initiator.receive(challenge).send));
      initiator.receive(accepted.send.at(0));
      as<Response>(accepted.send.at(1)).mac[byte] ^= 0x10;
      EXPECT_EQ(refusal(initiator.receive(accepted.send.at(1)).state).reason,
                RefuseReason::BadMac);
    }
  }
}

TEST(Handshake, TamperedAcceptorIdentityIsRefused) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
  auto accepted = acceptor.receive(only<Response>(initiator.receive(challenge).send));
  as<Hello>(accepted.send.at(0)).region = "us-east";
  initiator.receive(accepted.send.at(0));
  EXPECT_EQ(refusal(initiator.receive(accepted.send.at(1)).state).reason, RefuseReason::BadMac);
}

TEST(Handshake, TamperedInitiatorIdentityIsRefused) {
  // A man in the middle rewrites the initiator's address, incarnation, protocol or
  // capabilities in its Hello: the Response MAC covers them, so the acceptor refuses.
  for (int field = 0; field < 6; ++field) {
    Initiator initiator(kNode1, kSecret, nonceSource(1));
    Acceptor acceptor(kNode2, kSecret, nonceSource(2));
    auto hello = only<Hello>(initiator.start().send);
    Hello forged = hello;
    if (field == 0) forged.advertise_address = "10.6.6.6:7946";
    if (field == 1) forged.region = "elsewhere";
    if (field == 2) forged.incarnation += 1;
    if (field == 3) forged.protocol += 1;
    if (field == 4) forged.capabilities = 0;  // stripped: the peer would not use the limiter
    if (field == 5) forged.capabilities |= std::uint64_t{1} << 40;  // a bit no version has yet
    auto challenge = only<Challenge>(acceptor.receive(forged).send);
    auto response = only<Response>(initiator.receive(challenge).send);
    EXPECT_EQ(refusal(acceptor.receive(response).state).reason, RefuseReason::BadMac) << field;
  }
}

TEST(Handshake, StrippedAcceptorCapabilitiesAreRefused) {
  for (std::uint64_t forged_caps : {std::uint64_t{0}, kCapLimiter, kOwnCapabilities | (std::uint64_t{1} << 40)}) {
    Initiator initiator(kNode1, kSecret, nonceSource(1));
    Acceptor acceptor(kNode2, kSecret, nonceSource(2));
    auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
    auto accepted = acceptor.receive(only<Response>(initiator.receive(challenge).send));
    as<Hello>(accepted.send.at(0)).capabilities = forged_caps;
    initiator.receive(accepted.send.at(0));
    EXPECT_EQ(refusal(initiator.receive(accepted.send.at(1)).state).reason, RefuseReason::BadMac)
        << forged_caps;
  }
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  auto challenge = only<Challenge>(acceptor.receive(initiator.start().send.at(0)).send);
  auto accepted = acceptor.receive(only<Response>(initiator.receive(challenge).send));
  as<Hello>(accepted.send.at(0)).protocol = kProtocolVersion + 1;
  initiator.receive(accepted.send.at(0));
  EXPECT_EQ(refusal(initiator.receive(accepted.send.at(1)).state).reason, RefuseReason::BadMac);
}

TEST(Handshake, ANodeAnnouncingNoCapabilitiesIsAdmittedAndSeenAsSuch) {
  // An older node understands none of the limiter messages; the link still comes up and
  // each side learns exactly what the other announced.
  NodeIdentity old_node = kNode2;
  old_node.capabilities = 0;
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(old_node, kSecret, nonceSource(2));
  const Transcript t = runHandshake(initiator, acceptor);
  EXPECT_EQ(std::get<Hello>(t.hello_i).capabilities, kOwnCapabilities);
  ASSERT_TRUE(std::holds_alternative<Established>(initiator.state()));
  ASSERT_TRUE(std::holds_alternative<Established>(acceptor.state()));
  EXPECT_EQ(std::get<Established>(initiator.state()).peer.capabilities, 0u);
  EXPECT_EQ(std::get<Established>(acceptor.state()).peer.capabilities, kOwnCapabilities);
}

TEST(Handshake, EstablishedCarriesThePeersVerifiedIntroduction) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  runHandshake(initiator, acceptor);
  const auto& at_initiator = std::get<Established>(initiator.state()).peer;
  const auto& at_acceptor = std::get<Established>(acceptor.state()).peer;
  EXPECT_EQ(at_initiator.node_id, "mx2");
  EXPECT_EQ(at_initiator.advertise_address, "10.0.0.2:7946");
  EXPECT_EQ(at_initiator.incarnation, 2002u);
  EXPECT_EQ(at_initiator.protocol, kProtocolVersion);
  EXPECT_EQ(at_initiator.capabilities, kOwnCapabilities);
  EXPECT_EQ(at_acceptor.node_id, "mx1");
  EXPECT_EQ(at_acceptor.region, "eu-west");
  EXPECT_EQ(at_acceptor.incarnation, 1001u);
  EXPECT_EQ(at_acceptor.protocol, kProtocolVersion);
  EXPECT_EQ(at_acceptor.capabilities, kOwnCapabilities);
}

TEST(Handshake, NoMessageContainsTheSecret) {
  Initiator initiator(kNode1, kSecret, nonceSource(1));
  Acceptor acceptor(kNode2, kSecret, nonceSource(2));
  const Transcript t = runHandshake(initiator, acceptor);
  for (const Message* m : {&t.hello_i, &t.challenge, &t.response, &t.hello_a, &t.proof}) {
    EXPECT_EQ(encode(*m).find(kSecret), std::string::npos);
  }
}

// ---- Frame authentication ---------------------------------------------------------------

SessionKey testKey() {
  SessionKey key{};
  for (std::size_t i = 0; i < key.size(); ++i) key[i] = static_cast<std::uint8_t>(0xa0 + i);
  return key;
}

TEST(FrameAuthenticator, AcceptsInOrderFramesInBothDirections) {
  FrameAuthenticator initiator(testKey(), FrameAuthenticator::Role::Initiator);
  FrameAuthenticator acceptor(testKey(), FrameAuthenticator::Role::Acceptor);
  for (int i = 0; i < 5; ++i) {
    const std::string frame = "frame " + std::to_string(i);
    auto tagged = initiator.sign(frame);
    EXPECT_EQ(tagged.sequence, static_cast<std::uint64_t>(i));
    EXPECT_TRUE(acceptor.verify(tagged.sequence, frame, tagged.tag));
    auto back = acceptor.sign(frame);
    EXPECT_TRUE(initiator.verify(back.sequence, frame, back.tag));
  }
}

TEST(FrameAuthenticator, RejectsReplayedSequence) {
  FrameAuthenticator initiator(testKey(), FrameAuthenticator::Role::Initiator);
  FrameAuthenticator acceptor(testKey(), FrameAuthenticator::Role::Acceptor);
  auto first = initiator.sign("a");
  ASSERT_TRUE(acceptor.verify(first.sequence, "a", first.tag));
  EXPECT_FALSE(acceptor.verify(first.sequence, "a", first.tag));
  // The same frame and tag presented as the next sequence does not verify either.
  EXPECT_FALSE(acceptor.verify(first.sequence + 1, "a", first.tag));
}

TEST(FrameAuthenticator, RejectsReorderedFrames) {
  FrameAuthenticator initiator(testKey(), FrameAuthenticator::Role::Initiator);
  FrameAuthenticator acceptor(testKey(), FrameAuthenticator::Role::Acceptor);
  auto first = initiator.sign("a");
  auto second = initiator.sign("b");
  EXPECT_FALSE(acceptor.verify(second.sequence, "b", second.tag));
  EXPECT_TRUE(acceptor.verify(first.sequence, "a", first.tag));
  EXPECT_TRUE(acceptor.verify(second.sequence, "b", second.tag));
}

TEST(FrameAuthenticator, RejectsTamperedFrameAndTag) {
  FrameAuthenticator initiator(testKey(), FrameAuthenticator::Role::Initiator);
  FrameAuthenticator acceptor(testKey(), FrameAuthenticator::Role::Acceptor);
  auto tagged = initiator.sign("heartbeat");
  EXPECT_FALSE(acceptor.verify(tagged.sequence, "heartbeaT", tagged.tag));
  Mac bad = tagged.tag;
  bad[7] ^= 0x04;
  EXPECT_FALSE(acceptor.verify(tagged.sequence, "heartbeat", bad));
  EXPECT_TRUE(acceptor.verify(tagged.sequence, "heartbeat", tagged.tag));
}

TEST(FrameAuthenticator, RejectsTagFromTheOtherDirection) {
  FrameAuthenticator initiator(testKey(), FrameAuthenticator::Role::Initiator);
  // A frame the initiator sent, reflected back to it, does not verify.
  auto tagged = initiator.sign("x");
  EXPECT_FALSE(initiator.verify(tagged.sequence, "x", tagged.tag));
  EXPECT_NE(frameMac(testKey(), Direction::InitiatorToAcceptor, 0, "x"),
            frameMac(testKey(), Direction::AcceptorToInitiator, 0, "x"));
}

TEST(FrameAuthenticator, RejectsTagUnderAnotherLinkKey) {
  SessionKey other = testKey();
  other[0] ^= 1;
  FrameAuthenticator initiator(other, FrameAuthenticator::Role::Initiator);
  FrameAuthenticator acceptor(testKey(), FrameAuthenticator::Role::Acceptor);
  auto tagged = initiator.sign("x");
  EXPECT_FALSE(acceptor.verify(tagged.sequence, "x", tagged.tag));
}

}  // namespace
}  // namespace zetian::cluster::wire
