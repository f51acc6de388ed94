// The replicated policy's envelope: one version of the policy document (policy.h) with
// who proposed it and when, as the bytes of one Raft log entry.
//
//   ["ZPOL"][format u8 = 1][version u64][time_unix_ms u64]
//   [proposer length u8][proposer][text length u32][text]
//
// Integers are little-endian. The Raft record around it has its own length and CRC
// (state/raft_records.h), so this layer has none: it only refuses bytes that cannot be
// a document (cut short, a wrong magic or format, trailing bytes, values out of range).
// The text is stored as proposed; whether it is a valid policy is loadPolicy's answer,
// not the envelope's. Decoding reads only inside the view it is given, whatever its
// bytes, and never throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace zetian::conf {

inline constexpr std::size_t kPolicyDocumentHeaderBytes = 4 + 1 + 8 + 8 + 1 + 4;
// Node ids are 1 to 64 characters ([node] id): a longer proposer is refused.
inline constexpr std::size_t kMaxProposerBytes = 64;

// 1 to 64 characters from A-Z a-z 0-9 _ . -: how [node] id is spelled, and so every
// proposer and member name the replicated policy records.
bool isNodeIdText(std::string_view text);

struct PolicyDocument {
  std::uint64_t version = 0;       // 1 for the first policy, one more for each change
  std::string proposer;            // the `node.id` of the node that proposed it
  std::uint64_t time_unix_ms = 0;  // when it was proposed, by the proposer's clock
  std::string text;                // the policy's TOML text (policyText's, or as applied)
  bool operator==(const PolicyDocument&) const = default;
};

// Throws std::invalid_argument for a document decoding would refuse: version 0, a
// proposer that is not 1 to 64 characters from A-Z a-z 0-9 _ . -, a text larger than
// the loader's 1 MiB or not UTF-8.
std::string encodePolicyDocument(const PolicyDocument& document);

struct PolicyDocumentDecode {
  std::optional<PolicyDocument> document;
  std::string error;  // when there is no document: what is wrong, for the operator
};
PolicyDocumentDecode decodePolicyDocument(std::string_view bytes);

}  // namespace zetian::conf
