#include "cluster/redis/backend.h"

namespace zetian::cluster::redis {

Settled settleCall(const std::vector<wire::LimitItem>& items,
                   const std::vector<std::optional<wire::LimitOutcome>>& outcomes,
                   std::optional<limits::FallbackReason> failed) {
  Settled s;
  // An item without an answer in a call that did not fail would be a caller's slip;
  // the call cannot be reported item by item then, so it fails as a refusal would.
  for (std::size_t i = 0; !failed && i < items.size(); ++i) {
    if (i >= outcomes.size() || !outcomes[i]) failed = limits::FallbackReason::Refused;
  }
  if (failed) {
    for (std::size_t i = 0; i < items.size() && i < outcomes.size(); ++i) {
      if (outcomes[i] && outcomes[i]->result == wire::ItemResult::Charged) s.give_back.push_back(i);
    }
    s.result = limits::CallResult{failed, {}};
    return s;
  }
  std::vector<wire::LimitOutcome> out(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) out[i] = *outcomes[i];
  // The first blocking denial stops the call: charges before it are returned, and
  // those after it (Redis ran them anyway) did not happen as far as the caller knows.
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i].result != wire::ItemResult::Denied || !items[i].blocking) continue;
    for (std::size_t j = 0; j < out.size(); ++j) {
      if (j == i || out[j].result != wire::ItemResult::Charged) continue;
      s.give_back.push_back(j);
      out[j].result = j < i ? wire::ItemResult::Returned : wire::ItemResult::NotEvaluated;
      if (j > i) out[j] = wire::LimitOutcome{};
    }
    for (std::size_t j = i + 1; j < out.size(); ++j) {
      if (out[j].result == wire::ItemResult::Denied) out[j] = wire::LimitOutcome{};
    }
    break;
  }
  s.result = limits::CallResult{std::nullopt, std::move(out)};
  return s;
}

}  // namespace zetian::cluster::redis
