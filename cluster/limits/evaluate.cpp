#include "cluster/limits/evaluate.h"

#include <cmath>

#include "cluster/limits/lease.h"

namespace zetian::cluster::limits {

wire::LimitOutcome toWire(const state::Outcome& outcome, wire::ItemResult result) {
  wire::LimitOutcome out;
  out.result = result;
  const double r = std::floor(outcome.remaining);
  // remaining is at most 2^53 (kMaxCount) by construction; the clamp guards the cast.
  out.remaining = r <= 0 ? 0 : r >= double(state::kMaxCount) ? state::kMaxCount : static_cast<std::uint64_t>(r);
  out.retry_after_ns = outcome.retry_after_ns < 0 ? 0 : outcome.retry_after_ns;
  return out;
}

ItemSpec fromWire(const wire::LimitItem& item) {
  ItemSpec spec;
  spec.op = item.op;
  spec.key = item.key;
  spec.placement = item.placement;
  spec.algorithm = static_cast<state::Algorithm>(item.algorithm);
  spec.limit = state::Limit{item.limit, item.period_ns, item.burst};
  spec.cost = item.cost;
  spec.blocking = item.blocking;
  return spec;
}

wire::LimitItem toWire(const ItemSpec& spec) {
  wire::LimitItem item;
  item.op = spec.op;
  item.key = std::string(spec.key);
  item.placement = std::string(spec.placement);
  item.algorithm = static_cast<std::uint8_t>(spec.algorithm);
  item.limit = spec.limit.limit;
  item.period_ns = spec.limit.period_ns;
  item.burst = spec.limit.burst;
  item.cost = spec.cost;
  item.blocking = spec.blocking;
  return item;
}

std::size_t evaluateCall(state::BucketStore& store, std::span<const ItemSpec> items, state::Nanos now,
                         std::span<wire::LimitOutcome> out) {
  for (std::size_t i = 0; i < items.size(); ++i) out[i] = wire::LimitOutcome{};
  for (std::size_t i = 0; i < items.size(); ++i) {
    const ItemSpec& item = items[i];
    if (item.op == wire::LimitOp::Lease) {
      out[i].result = wire::ItemResult::Leased;
      out[i].remaining = grantFrom(store, item.key, item.algorithm, item.limit, item.cost, now);
      continue;
    }
    if (item.op == wire::LimitOp::Refund) {
      store.refund(item.key, item.algorithm, item.limit, now, item.cost);
      out[i].result = wire::ItemResult::Refunded;
      continue;
    }
    const state::Outcome outcome = store.charge(item.key, item.algorithm, item.limit, now, item.cost);
    if (outcome.allowed) {
      out[i] = toWire(outcome, wire::ItemResult::Charged);
      continue;
    }
    out[i] = toWire(outcome, wire::ItemResult::Denied);
    if (!item.blocking) continue;
    for (std::size_t j = 0; j < i; ++j) {
      if (out[j].result != wire::ItemResult::Charged) continue;
      store.refund(items[j].key, items[j].algorithm, items[j].limit, now, items[j].cost);
      out[j].result = wire::ItemResult::Returned;
    }
    return i;
  }
  return items.size();
}

}  // namespace zetian::cluster::limits
