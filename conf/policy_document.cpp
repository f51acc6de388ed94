#include "conf/policy_document.h"

#include <algorithm>
#include <stdexcept>

#include "conf/parse.h"
#include "conf/text.h"

namespace zetian::conf {
namespace {

constexpr std::string_view kMagic = "ZPOL";
constexpr std::uint8_t kFormat = 1;

void putU32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}
void putU64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}

// Reads forward through a view; every read checks the bytes are there first.
class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  std::size_t left() const { return bytes_.size() - at_; }
  std::optional<std::uint64_t> u(int width) {
    if (left() < static_cast<std::size_t>(width)) return std::nullopt;
    std::uint64_t v = 0;
    for (int i = 0; i < width; ++i) v |= std::uint64_t{static_cast<unsigned char>(bytes_[at_ + i])} << (8 * i);
    at_ += static_cast<std::size_t>(width);
    return v;
  }
  std::optional<std::string_view> take(std::size_t n) {
    if (left() < n) return std::nullopt;
    const std::string_view out = bytes_.substr(at_, n);
    at_ += n;
    return out;
  }

 private:
  std::string_view bytes_;
  std::size_t at_ = 0;
};

bool isNameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

// What is wrong with the document's values, or "".
std::string valueProblem(std::uint64_t version, std::string_view proposer, std::string_view text) {
  if (version == 0) return "policy version 0 (versions start at 1)";
  if (proposer.empty() || proposer.size() > kMaxProposerBytes || !std::all_of(proposer.begin(), proposer.end(), isNameChar)) {
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
