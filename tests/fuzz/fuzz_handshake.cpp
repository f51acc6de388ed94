// libFuzzer target for node admission: the input is a stream of frames as a stranger
// would send them to a node's cluster port. Each decoded frame is fed to an Acceptor
// (a node being dialed) and to an Initiator (a node that dialed a hostile server).
// Beyond "no crash, no escaped exception", it checks the promises of handshake.h:
//   - without the secret nobody is admitted (the fuzzer cannot forge HMAC-SHA256);
//   - the acceptor reveals nothing about itself (no Hello, no identity proof) to a
//     peer that has not proven the secret, and sends at most one Challenge;
//   - once refused, a side stays refused and sends nothing more.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "cluster/wire/codec.h"
#include "cluster/wire/handshake.h"

namespace wire = zetian::cluster::wire;

namespace {

wire::NonceSource counterNonces(std::uint8_t seed) {
  return [seed, n = std::uint8_t{0}]() mutable {
    wire::Nonce nonce{};
    nonce.fill(seed);
    nonce[0] = ++n;
    return nonce;
  };
}

const wire::NodeIdentity kSelf{"mx1", "10.0.0.1:7946", "zetian", "eu", 1};
constexpr std::string_view kSecret = "the cluster secret, 32 bytes....";

template <typename Side>
void feed(Side& side, const wire::Message& message, int& challenges) {
  const bool was_refused = std::holds_alternative<wire::Refused>(side.state());
  const wire::HandshakeStep step = side.receive(message);
  if (was_refused && !std::holds_alternative<wire::Refused>(step.state)) std::abort();
  if (was_refused && !step.send.empty()) std::abort();
  if (std::holds_alternative<wire::Established>(step.state)) std::abort();  // no secret, no entry
  for (const auto& sent : step.send) {
    if (std::holds_alternative<wire::Challenge>(sent)) ++challenges;
    // Identity material only goes to a proven member, which the fuzzer never is.
    if constexpr (std::is_same_v<Side, wire::Acceptor>) {
      if (!std::holds_alternative<wire::Challenge>(sent)) std::abort();
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  wire::Acceptor acceptor(kSelf, kSecret, counterNonces(0xa5));
  wire::Initiator initiator(kSelf, kSecret, counterNonces(0x5a));
  (void)initiator.start();
  int acceptor_challenges = 0;
  int initiator_challenges = 0;
  for (int frames = 0; frames < 64; ++frames) {
    const wire::DecodeResult r = wire::decode(rest);
    if (r.status != wire::DecodeStatus::Ok) break;
    feed(acceptor, r.message, acceptor_challenges);
    feed(initiator, r.message, initiator_challenges);
    rest.remove_prefix(r.bytes_consumed);
  }
  if (acceptor_challenges > 1 || initiator_challenges != 0) std::abort();
  return 0;
}
