// How an owner evaluates one call: the items of one SMTP stage that it owns, in rule
// order, on its bucket store. The same function serves requests from other nodes and
// this node's own local items, so a rule behaves the same wherever its key lives.
//
// Semantics (as the engine has always had for a stage):
//   - Each item is checked and charged in one atomic step (BucketStore::charge).
//   - A denied item charges nothing. If the item is `blocking` (its action refuses the
//     message: tempfail or reject), the call stops there and every item this call
//     charged before it is given back (Returned); the items after it are NotEvaluated.
//   - A non-blocking denial (tag, quarantine, dry_run) does not stop the call.
//   - Refund items give back a cost charged earlier (Refunded); they never stop a call.
//   - Lease items charge up to `cost` tokens for the asker's fast-mode lease (Leased,
//     with the tokens granted in `remaining`); they never stop a call either.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "cluster/wire/codec.h"
#include "state/bucket_store.h"
#include "state/limit.h"

namespace zetian::cluster::limits {

struct ItemSpec {
  wire::LimitOp op = wire::LimitOp::Charge;
  std::string_view key;  // the store key: rule name, '\0', key value
  std::string_view placement;  // placement descriptor (placement/view.h)
  state::Algorithm algorithm = state::Algorithm::TokenBucket;
  state::Limit limit;
  std::uint64_t cost = 1;
  bool blocking = false;
};

// `out` must have one element per item. Returns the index of the blocking denial that
// stopped the call, or items.size() when none did.
std::size_t evaluateCall(state::BucketStore& store, std::span<const ItemSpec> items, state::Nanos now,
                         std::span<wire::LimitOutcome> out);

// An Outcome of the algorithms as it travels: remaining as a whole number.
wire::LimitOutcome toWire(const state::Outcome& outcome, wire::ItemResult result);

// ItemSpec from a decoded wire item, and back. fromWire() is only valid while `item` lives.
ItemSpec fromWire(const wire::LimitItem& item);
wire::LimitItem toWire(const ItemSpec& spec);

}  // namespace zetian::cluster::limits
