// Moving bucket state between nodes: clock translation and merging, as pure functions.
//
// Why ages: every node measures time on its own monotonic clock, whose zero is its
// boot (or anything else); two nodes' clocks differ by arbitrary amounts, minutes or
// days. A BucketState's stamp is a point on the writer's clock and means nothing on
// another node. So a bucket travels with its stamp as an *age*, sender_now - stamp,
// and the receiver puts it back at receiver_now - age. The time the message spends on
// the wire is not added: the bucket arrives as it was when it was sent, which is the
// state the owner had, never an older (fuller) one.
//
// What is preserved. Write d = receiver_now - sender_now; receiver moment r corresponds
// to sender moment r - d.
//   token_bucket, gcra: exactly. These are continuous in time, so the translated state
//     decides at every receiver moment r exactly as the sender's state at r - d, for
//     every cost, including retry_after, and stays so under the same later charges.
//   fixed_window, sliding_window: conservatively. Their windows start at multiples of
//     `period` on the local clock, and the sender's window start plus d is generally
//     not such a multiple. The receiver's window start is rounded *up* to the next
//     multiple (the counts are kept unchanged), so the counts are held as long as on the
//     sender or longer: a fixed window's count is kept up to one period longer than on
//     the sender (strictly less than one period), never shorter; a sliding window's
//     weighted count decays as on the sender but starts decaying up to one period later.
//     At every receiver moment the translated state admits at most what the sender's
//     state admits at the corresponding moment, and the same as a fresh bucket from one
//     period after the sender's state would have been fresh. The rounding applies per
//     transfer: a state that moves on again (owner -> replica -> new owner) may be held
//     up to one period longer per move, never shorter.
//
// Range. Ages saturate at the ends of Nanos (about ±292 years) and translated stamps at
// the ends of the receiver's clock; nothing overflows. A stamp further in the past than
// that arrives later than it was (fewer tokens: conservative). A stamp further ahead
// arrives as 292 years ahead, and one that would lie beyond the receiver's clock range
// sits at its end: for token_bucket and the windows that is the same state for every
// moment the clock can reach; for gcra it differs only for a bucket whose burst takes
// longer than 292 years to refill, or on a receiver whose clock is within one refill
// time of its end (292 years of uptime).
//
// Merging. Two views of one key (a replica's copy and a hand-off, a restarted owner's
// and a replica's) merge to the more consumed one: the one that can charge less right
// now, and on a tie the one that is full again later. One is picked whole; the views
// are not combined field by field, because a window count or a token deficit from one
// view and a stamp from the other would describe a bucket neither node had.
#pragma once

#include <cstdint>

#include "state/limit.h"

namespace zetian::state {

// A bucket as it travels: the stamp as an age relative to the sender's clock.
struct PortableBucket {
  Algorithm algorithm = Algorithm::TokenBucket;
  double level = 0;
  std::uint64_t count = 0;
  Nanos stamp_age_ns = 0;  // sender's now - stamp (negative: the stamp lies ahead, e.g. a gcra TAT)
  bool initialised = false;
};

// The state as of `sender_now`, for another node. A fresh state travels as a fresh one
// (all fields zero but the algorithm). level and count travel verbatim.
PortableBucket toPortable(Algorithm algo, const BucketState& state, Nanos sender_now);

// Rebuilds the state on the receiver's clock. For the window algorithms (whose windows
// are aligned to multiples of the period on the local clock), the translated stamp is
// re-aligned so that the result never admits more than the sender's state would have at
// the same moment (conservative: the receiver's window keeps the counts longer, by less
// than one period). `limit` is the receiver's rule (its period aligns the windows); with
// a limit that admits nothing (limit 0, period <= 0) the stamp is translated unaligned.
// level and count are taken verbatim: the algorithms clamp out-of-range values.
BucketState fromPortable(const PortableBucket& bucket, const Limit& limit, Nanos receiver_now);

// Merging two views of one key (e.g. a replica's copy and a hand-off, or a restarted
// owner's and the replica's): the result is the more-consumed of the two at `now`, i.e.
// the one with fewer units remaining (peek(cost=1).remaining, ties: the one whose
// remaining recovers later (idleAt later); full ties: `held`). Both states are of `algo`;
// a caller holding a state of another algorithm passes `incoming` alone (a policy change:
// the incoming one wins), as BucketStore::merge() does.
BucketState mergeBuckets(Algorithm algo, const Limit& limit, const BucketState& held, const BucketState& incoming,
                         Nanos now);

}  // namespace zetian::state
