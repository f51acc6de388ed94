// libFuzzer target for the replicated policy's text side (conf/policy_document.h,
// conf/policy.h): any bytes, read as a policy document envelope and as a policy text,
// must give a result, never a crash, an out-of-bounds read or an escaped exception. An
// accepted envelope re-encodes to the same bytes; a refusal says why. Every policy the
// loader accepts has a canonical text that loads back to the same policy and is its own
// canonical text, and differs from itself by nothing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "conf/policy.h"
#include "conf/policy_diff.h"
#include "conf/policy_document.h"

namespace zc = zetian::conf;

namespace {

void checkPolicyText(std::string_view text) {
  const zc::PolicyLoadResult r = zc::loadPolicy(text, "fuzz.toml");
  if (r.ok() != r.policy.has_value()) std::abort();
  for (const auto& e : r.errors) {
    if (e.message.empty()) std::abort();
  }
  if (!r.policy) return;
  const std::string canonical = zc::policyText(*r.policy);
  const zc::PolicyLoadResult back = zc::loadPolicy(canonical, "canonical.toml");
  if (!back.policy || !(*back.policy == *r.policy)) std::abort();
  if (zc::policyText(*back.policy) != canonical) std::abort();
  if (!zc::diffPolicies(*r.policy, *back.policy).empty()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const zc::PolicyDocumentDecode d = zc::decodePolicyDocument(input);
  if (d.document) {
    if (!d.error.empty()) std::abort();
    if (zc::encodePolicyDocument(*d.document) != input) std::abort();
    checkPolicyText(d.document->text);
  } else if (d.error.empty()) {
    std::abort();
  }
  checkPolicyText(input);
  return 0;
}
