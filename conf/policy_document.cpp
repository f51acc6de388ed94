#include "conf/policy_document.h"

#include <algorithm>
#include <stdexcept>

#include "conf/parse.h"
#include "conf/text.h"
#include "state/little_endian.h"

namespace zetian::conf {

bool isNodeIdText(std::string_view text) {
  return !text.empty() && text.size() <= kMaxProposerBytes &&
         std::all_of(text.begin(), text.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                  c == '-';
         });
}

namespace {

using state::le::putU32;
using state::le::putU64;
using state::le::Reader;

constexpr std::string_view kMagic = "ZPOL";
constexpr std::uint8_t kFormat = 1;

// What is wrong with the document's values, or "".
std::string valueProblem(std::uint64_t version, std::string_view proposer, std::string_view text) {
  if (version == 0) return "policy version 0 (versions start at 1)";
  if (!isNodeIdText(proposer)) {
    return "a proposer that is not a node id (1 to 64 characters from A-Z a-z 0-9 _ . -)";
  }
  if (text.size() > kMaxConfigBytes) {
    return "a policy text of " + std::to_string(text.size()) + " bytes, larger than " + std::to_string(kMaxConfigBytes);
  }
  if (auto bad = firstInvalidUtf8(text)) return "a policy text that is not UTF-8 (at byte " + std::to_string(*bad) + ")";
  return {};
}

PolicyDocumentDecode refuse(std::string why) {
  PolicyDocumentDecode d;
  d.error = "not a policy document: " + std::move(why);
  return d;
}

}  // namespace

std::string encodePolicyDocument(const PolicyDocument& document) {
  if (auto problem = valueProblem(document.version, document.proposer, document.text); !problem.empty()) {
    throw std::invalid_argument("encodePolicyDocument: " + problem);
  }
  std::string out(kMagic);
  out.push_back(static_cast<char>(kFormat));
  putU64(out, document.version);
  putU64(out, document.time_unix_ms);
  out.push_back(static_cast<char>(document.proposer.size()));
  out += document.proposer;
  putU32(out, static_cast<std::uint32_t>(document.text.size()));
  out += document.text;
  return out;
}

PolicyDocumentDecode decodePolicyDocument(std::string_view bytes) {
  Reader in(bytes);
  const auto magic = in.take(kMagic.size());
  if (!magic) return refuse(std::to_string(bytes.size()) + " bytes, too short for a header");
  if (*magic != kMagic) return refuse("it does not start with \"ZPOL\"");
  const auto format = in.u(1);
  if (!format) return refuse("cut short in its header");
  if (*format != kFormat) return refuse("format " + std::to_string(*format) + ", this build reads format 1");
  const auto version = in.u(8);
  const auto time = in.u(8);
  const auto proposer_size = in.u(1);
  if (!version || !time || !proposer_size) return refuse("cut short in its header");
  const auto proposer = in.take(static_cast<std::size_t>(*proposer_size));
  const auto text_size = in.u(4);
  if (!proposer || !text_size) return refuse("cut short in its header");
  if (*text_size > kMaxConfigBytes) {
    return refuse("a policy text of " + std::to_string(*text_size) + " bytes, larger than " + std::to_string(kMaxConfigBytes));
  }
  const auto text = in.take(static_cast<std::size_t>(*text_size));
  if (!text) {
    return refuse("the policy text is cut short (" + std::to_string(in.left()) + " of " + std::to_string(*text_size) + " bytes)");
  }
  if (in.left() != 0) return refuse(std::to_string(in.left()) + " bytes after the policy text");
  if (auto problem = valueProblem(*version, *proposer, *text); !problem.empty()) return refuse(problem);
  PolicyDocumentDecode d;
  d.document = PolicyDocument{*version, std::string(*proposer), *time, std::string(*text)};
  return d;
}

}  // namespace zetian::conf
