// Frame encoding and decoding; the format and the decoder's invariants are in codec.h.
//
// Reader trap: every read checks the remaining bytes first and, once one read fails,
// all later reads fail too, so a parse function can read all its fields and check
// ok() once at the end without ever touching memory past the frame.
#include "cluster/wire/codec.h"

#include "cluster/wire/raft_codec.h"

#include <bit>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace zetian::cluster::wire {
namespace {

// Smallest encoding of a Member: three empty strings, status, incarnation.
constexpr std::size_t kMinMemberBytes = 3 * 2 + 1 + 8;

// Limit messages, field by field; the smallest encodings bound the counts a frame can
// hold before anything is reserved.
constexpr std::size_t kLimitItemFixedBytes = 1 + 2 + 2 + 1 + 8 + 8 + 8 + 8 + 1;  // key, placement empty
constexpr std::size_t kMaxLimitItemBytes = kLimitItemFixedBytes + kMaxStringBytes + kMaxPlacementBytes;
constexpr std::size_t kLimitCallHeaderBytes = 8 + 2;
constexpr std::size_t kMinLimitCallBytes = kLimitCallHeaderBytes + kLimitItemFixedBytes;
constexpr std::size_t kLimitOutcomeBytes = 1 + 8 + 8;
constexpr std::size_t kLimitAnswerHeaderBytes = 8 + 1 + 2;  // a Refused answer is just this
constexpr std::size_t kSyncedBucketFixedBytes = 2 + 2 + 1 + 8 + 8 + 8 + 8 + 8 + 8 + 1;
constexpr std::size_t kBucketSyncHeaderBytes = 1 + 8 + 1 + 2;
constexpr std::size_t kFrameHeaderBytes = 2;  // version, type
// RaftControl without its text: kind, raft_id, flags, request_id, leader, term, index,
// text length.
constexpr std::size_t kRaftControlFixedBytes = 1 + 8 + 1 + 8 + 8 + 8 + 8 + 4;

// Every message within the caps fits in one frame (see codec.h): the largest of each
// limit and sync message, with every key at kMaxStringBytes, every placement at
// kMaxPlacementBytes and every count at its cap.
static_assert(kFrameHeaderBytes + 2 + kMaxLimitCalls * kLimitCallHeaderBytes +
                      kMaxLimitItemsPerFrame * kMaxLimitItemBytes <=
                  kMaxFrameBytes,
              "a LimitRequest at its caps must fit in one frame");
static_assert(kFrameHeaderBytes + 2 + kMaxLimitCalls * kLimitAnswerHeaderBytes +
                      kMaxLimitItemsPerFrame * kLimitOutcomeBytes <=
                  kMaxFrameBytes,
              "a LimitReply at its caps must fit in one frame");
static_assert(kFrameHeaderBytes + kBucketSyncHeaderBytes +
                      kMaxSyncBuckets * (kSyncedBucketFixedBytes + kMaxStringBytes + kMaxPlacementBytes) <=
                  kMaxFrameBytes,
              "a BucketSync at its caps must fit in one frame");
static_assert(kFrameHeaderBytes + kRaftControlFixedBytes + kMaxRaftControlText <= kMaxFrameBytes,
              "a RaftControl with the longest text must fit in one frame");
static_assert(kMaxLimitItemsPerCall <= kMaxLimitItemsPerFrame && kMaxLimitCalls <= 0xffff &&
                  kMaxLimitItemsPerFrame <= 0xffff && kMaxSyncBuckets <= 0xffff,
              "counts travel as u16");
static_assert(std::numeric_limits<double>::is_iec559 && sizeof(double) == 8,
              "levels travel as IEEE-754 binary64 bits");

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) { bigEndian(v, 2); }
  void u32(std::uint32_t v) { bigEndian(v, 4); }
  void u64(std::uint64_t v) { bigEndian(v, 8); }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void boolean(bool v) { u8(v ? 1 : 0); }

  void bytes(const std::uint8_t* data, std::size_t size) {
    out_.append(reinterpret_cast<const char*>(data), size);
  }

  void str(std::string_view s, const char* what, std::size_t max = kMaxStringBytes) {
    if (s.size() > max) {
      throw std::invalid_argument(std::string("wire: ") + what + " longer than " + std::to_string(max) + " bytes");
    }
    u16(static_cast<std::uint16_t>(s.size()));
    out_.append(s);
  }

 private:
  void bigEndian(std::uint64_t v, int width) {
    for (int shift = (width - 1) * 8; shift >= 0; shift -= 8) {
      out_.push_back(static_cast<char>((v >> shift) & 0xff));
    }
  }

  std::string& out_;
};

class Reader {
 public:
  explicit Reader(std::string_view data) : data_(data) {}

  bool ok() const { return !failed_; }
  std::size_t remaining() const { return data_.size() - pos_; }
  DecodeError error() const { return error_; }
  const std::string& detail() const { return detail_; }

  void fail(DecodeError error, std::string detail) {
    if (failed_) return;
    failed_ = true;
    error_ = error;
    detail_ = std::move(detail);
  }

  std::uint8_t u8() { return static_cast<std::uint8_t>(bigEndian(1, "u8")); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(bigEndian(2, "u16")); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(bigEndian(4, "u32")); }
  std::uint64_t u64() { return bigEndian(8, "u64"); }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }

  bool boolean(const char* what) {
    const std::uint8_t v = u8();
    if (ok() && v > 1) fail(DecodeError::BadValue, std::string(what) + " " + std::to_string(v) + " is not 0 or 1");
    return v == 1;
  }

  // A u8 enum value, refused above max.
  std::uint8_t upTo(std::uint8_t max, const char* what) {
    const std::uint8_t v = u8();
    if (ok() && v > max) {
      fail(DecodeError::BadValue, std::string(what) + " " + std::to_string(v) + " out of range");
    }
    return v;
  }

  std::int64_t nonNegative(const char* what) {
    const std::int64_t v = i64();
    if (ok() && v < 0) fail(DecodeError::BadValue, std::string(what) + " " + std::to_string(v) + " is negative");
    return v;
  }

  // Everything left, consumed: for a payload another decoder reads whole.
  std::string_view rest() {
    if (failed_) return {};
    const std::string_view out = data_.substr(pos_);
    pos_ = data_.size();
    return out;
  }

  template <std::size_t N>
  std::array<std::uint8_t, N> fixed(const char* what) {
    std::array<std::uint8_t, N> out{};
    if (!take(N, what)) return out;
    for (std::size_t i = 0; i < N; ++i) out[i] = static_cast<std::uint8_t>(data_[pos_ - N + i]);
    return out;
  }

  std::string str(const char* what, std::size_t max = kMaxStringBytes) {
    const std::size_t size = u16();
    if (!ok()) return {};
    if (size > max) {
      fail(DecodeError::BadValue, std::string(what) + " length " + std::to_string(size) +
                                      " above " + std::to_string(max));
      return {};
    }
    if (!take(size, what)) return {};
    return std::string(data_.substr(pos_ - size, size));
  }

  // A u32 byte count then the bytes, for texts longer than kMaxStringBytes.
  std::string longStr(const char* what, std::size_t max) {
    const std::size_t size = u32();
    if (!ok()) return {};
    if (size > max) {
      fail(DecodeError::BadValue, std::string(what) + " length " + std::to_string(size) + " above " +
                                      std::to_string(max));
      return {};
    }
    if (!take(size, what)) return {};
    return std::string(data_.substr(pos_ - size, size));
  }

  // Reads a u16 element count and checks it against the limits and against what the
  // remaining bytes can hold, so the caller may reserve() the result safely.
  std::size_t count(std::size_t max, std::size_t min_element_bytes, const char* what) {
    return count(0, max, min_element_bytes, what);
  }
  std::size_t count(std::size_t min, std::size_t max, std::size_t min_element_bytes, const char* what) {
    const std::size_t n = u16();
    if (!ok()) return 0;
    if (n < min) {
      fail(DecodeError::BadValue,
           std::string(what) + " count " + std::to_string(n) + " below " + std::to_string(min));
      return 0;
    }
    if (n > max) {
      fail(DecodeError::BadValue,
           std::string(what) + " count " + std::to_string(n) + " above " + std::to_string(max));
      return 0;
    }
    if (n * min_element_bytes > remaining()) {
      fail(DecodeError::Truncated, std::string(what) + " count " + std::to_string(n) +
                                       " cannot fit in " + std::to_string(remaining()) + " bytes");
      return 0;
    }
    return n;
  }

 private:
  bool take(std::size_t n, const char* what) {
    if (failed_) return false;
    if (n > remaining()) {
      fail(DecodeError::Truncated, std::string("frame ends inside ") + what);
      return false;
    }
    pos_ += n;
    return true;
  }

  std::uint64_t bigEndian(std::size_t width, const char* what) {
    if (!take(width, what)) return 0;
    std::uint64_t v = 0;
    for (std::size_t i = pos_ - width; i < pos_; ++i) {
      v = (v << 8) | static_cast<std::uint8_t>(data_[i]);
    }
    return v;
  }

  std::string_view data_;
  std::size_t pos_ = 0;
  bool failed_ = false;
  DecodeError error_ = DecodeError::Truncated;
  std::string detail_;
};

void writePayload(Writer& w, const Hello& m) {
  w.str(m.node_id, "node_id");
  w.str(m.advertise_address, "advertise_address");
  w.str(m.cluster_id, "cluster_id");
  w.str(m.region, "region");
  w.bytes(m.nonce.data(), m.nonce.size());
  w.u64(m.incarnation);
  w.u16(m.protocol);
  w.u64(m.capabilities);
}

void writePayload(Writer& w, const Challenge& m) {
  w.bytes(m.nonce.data(), m.nonce.size());
  w.bytes(m.mac.data(), m.mac.size());
}

void writePayload(Writer& w, const Response& m) {
  w.bytes(m.nonce.data(), m.nonce.size());
  w.bytes(m.mac.data(), m.mac.size());
}

void writePayload(Writer& w, const Heartbeat& m) {
  w.u64(m.sequence);
  w.u64(m.sender_time_ms);
  w.u32(m.sessions);
  w.u32(m.messages_per_s_milli);
  if (m.flags & ~kHeartbeatFlagsKnown) throw std::invalid_argument("wire: unknown heartbeat flags");
  w.u8(m.flags);
  w.u32(m.keys_owned);
}

void writePayload(Writer& w, const Goodbye& m) { w.str(m.reason, "reason"); }

void writePayload(Writer& w, const MemberList& m) {
  if (m.members.size() > kMaxMembers) {
    throw std::invalid_argument("wire: member list longer than kMaxMembers");
  }
  w.u16(static_cast<std::uint16_t>(m.members.size()));
  for (const Member& member : m.members) {
    if (static_cast<std::uint8_t>(member.status) > kMaxNodeStatus) {
      throw std::invalid_argument("wire: member status out of range");
    }
    w.str(member.node_id, "member node_id");
    w.str(member.address, "member address");
    w.str(member.region, "member region");
    w.u8(static_cast<std::uint8_t>(member.status));
    w.u64(member.incarnation);
  }
}

void writePayload(Writer& w, const ProbeRequest& m) {
  w.u64(m.request_id);
  w.str(m.target, "target");
}

void writePayload(Writer& w, const ProbeAck& m) {
  w.u64(m.request_id);
  w.str(m.target, "target");
  w.u8(m.alive ? 1 : 0);
}

// The checks decode() makes, for the encoder: a message it would refuse is a caller bug.
void require(bool condition, const char* what) {
  if (!condition) throw std::invalid_argument(std::string("wire: ") + what);
}

void writeCount(Writer& w, std::size_t n, std::size_t min, std::size_t max, const char* what) {
  require(n >= min && n <= max, what);
  w.u16(static_cast<std::uint16_t>(n));
}

void writePayload(Writer& w, const LimitRequest& m) {
  std::size_t items = 0;
  for (const LimitCall& call : m.calls) items += call.items.size();
  require(items <= kMaxLimitItemsPerFrame, "limit request items above kMaxLimitItemsPerFrame");
  writeCount(w, m.calls.size(), 1, kMaxLimitCalls, "limit request calls outside 1..kMaxLimitCalls");
  for (const LimitCall& call : m.calls) {
    w.u64(call.request_id);
    writeCount(w, call.items.size(), 1, kMaxLimitItemsPerCall,
               "limit call items outside 1..kMaxLimitItemsPerCall");
    for (const LimitItem& item : call.items) {
      require(static_cast<std::uint8_t>(item.op) <= kMaxLimitOp, "limit item op out of range");
      require(item.algorithm <= kMaxAlgorithm, "limit item algorithm out of range");
      require(item.period_ns >= 0, "limit item period_ns negative");
      w.u8(static_cast<std::uint8_t>(item.op));
      w.str(item.key, "limit item key");
      w.str(item.placement, "limit item placement", kMaxPlacementBytes);
      w.u8(item.algorithm);
      w.u64(item.limit);
      w.i64(item.period_ns);
      w.u64(item.burst);
      w.u64(item.cost);
      w.boolean(item.blocking);
    }
  }
}

void writePayload(Writer& w, const LimitReply& m) {
  std::size_t outcomes = 0;
  for (const LimitAnswer& answer : m.answers) outcomes += answer.outcomes.size();
  require(outcomes <= kMaxLimitItemsPerFrame, "limit reply outcomes above kMaxLimitItemsPerFrame");
  writeCount(w, m.answers.size(), 1, kMaxLimitCalls, "limit reply answers outside 1..kMaxLimitCalls");
  for (const LimitAnswer& answer : m.answers) {
    require(static_cast<std::uint8_t>(answer.status) <= kMaxCallStatus, "limit answer status out of range");
    w.u64(answer.request_id);
    w.u8(static_cast<std::uint8_t>(answer.status));
    if (answer.status == CallStatus::Refused) {
      writeCount(w, answer.outcomes.size(), 0, 0, "refused limit answer with outcomes");
    } else {
      writeCount(w, answer.outcomes.size(), 1, kMaxLimitItemsPerCall,
                 "limit answer outcomes outside 1..kMaxLimitItemsPerCall");
    }
    for (const LimitOutcome& outcome : answer.outcomes) {
      require(static_cast<std::uint8_t>(outcome.result) <= kMaxItemResult, "limit outcome result out of range");
      require(outcome.retry_after_ns >= 0, "limit outcome retry_after_ns negative");
      w.u8(static_cast<std::uint8_t>(outcome.result));
      w.u64(outcome.remaining);
      w.i64(outcome.retry_after_ns);
    }
  }
}

void writePayload(Writer& w, const BucketSync& m) {
  require(static_cast<std::uint8_t>(m.reason) <= kMaxSyncReason, "bucket sync reason out of range");
  w.u8(static_cast<std::uint8_t>(m.reason));
  w.u64(m.sequence);
  w.boolean(m.last);
  writeCount(w, m.buckets.size(), 0, kMaxSyncBuckets, "bucket sync buckets above kMaxSyncBuckets");
  for (const SyncedBucket& bucket : m.buckets) {
    require(bucket.algorithm <= kMaxAlgorithm, "synced bucket algorithm out of range");
    require(bucket.period_ns >= 0, "synced bucket period_ns negative");
    require(std::isfinite(bucket.level) && bucket.level >= 0, "synced bucket level not finite and >= 0");
    w.str(bucket.key, "synced bucket key");
    w.str(bucket.placement, "synced bucket placement", kMaxPlacementBytes);
    w.u8(bucket.algorithm);
    w.u64(bucket.limit);
    w.i64(bucket.period_ns);
    w.u64(bucket.burst);
    // -0.0 compares equal to 0 and passes the check above; one encoding for zero.
    w.u64(bucket.level == 0 ? 0 : std::bit_cast<std::uint64_t>(bucket.level));
    w.u64(bucket.count);
    w.i64(bucket.stamp_age_ns);
    w.boolean(bucket.initialised);
  }
}

void writePayload(Writer& w, const RaftFrame& m) {
  const std::string payload = encodeRaftMessage(m.message);
  w.bytes(reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size());
}

void writePayload(Writer& w, const RaftControl& m) {
  require(static_cast<std::uint8_t>(m.kind) <= kMaxRaftControlKind, "raft control kind out of range");
  require(m.raft_id != 0, "raft control from raft id 0");
  require((m.flags & ~kRaftControlFlagsKnown) == 0, "unknown raft control flags");
  require(m.text.size() <= kMaxRaftControlText, "raft control text longer than kMaxRaftControlText");
  w.u8(static_cast<std::uint8_t>(m.kind));
  w.u64(m.raft_id);
  w.u8(m.flags);
  w.u64(m.request_id);
  w.u64(m.leader);
  w.u64(m.term);
  w.u64(m.index);
  w.u32(static_cast<std::uint32_t>(m.text.size()));
  w.bytes(reinterpret_cast<const std::uint8_t*>(m.text.data()), m.text.size());
}

Hello readHello(Reader& r) {
  Hello m;
  m.node_id = r.str("node_id");
  m.advertise_address = r.str("advertise_address");
  m.cluster_id = r.str("cluster_id");
  m.region = r.str("region");
  m.nonce = r.fixed<kNonceBytes>("nonce");
  m.incarnation = r.u64();
  m.protocol = r.u16();
  m.capabilities = r.u64();
  return m;
}

template <typename AuthMessage>
AuthMessage readAuth(Reader& r) {
  AuthMessage m;
  m.nonce = r.fixed<kNonceBytes>("nonce");
  m.mac = r.fixed<kMacBytes>("mac");
  return m;
}

Heartbeat readHeartbeat(Reader& r) {
  Heartbeat m;
  m.sequence = r.u64();
  m.sender_time_ms = r.u64();
  m.sessions = r.u32();
  m.messages_per_s_milli = r.u32();
  m.flags = r.u8();
  if (r.ok() && (m.flags & ~kHeartbeatFlagsKnown)) {
    r.fail(DecodeError::BadValue, "unknown heartbeat flags " + std::to_string(m.flags));
  }
  m.keys_owned = r.u32();
  return m;
}

Goodbye readGoodbye(Reader& r) { return Goodbye{r.str("reason")}; }

ProbeRequest readProbeRequest(Reader& r) {
  ProbeRequest m;
  m.request_id = r.u64();
  m.target = r.str("target");
  return m;
}

ProbeAck readProbeAck(Reader& r) {
  ProbeAck m;
  m.request_id = r.u64();
  m.target = r.str("target");
  const std::uint8_t alive = r.u8();
  if (r.ok() && alive > 1) r.fail(DecodeError::BadValue, "probe ack alive flag " + std::to_string(alive));
  m.alive = alive == 1;
  return m;
}

MemberList readMemberList(Reader& r) {
  MemberList m;
  const std::size_t n = r.count(kMaxMembers, kMinMemberBytes, "members");
  m.members.reserve(n);
  for (std::size_t i = 0; i < n && r.ok(); ++i) {
    Member member;
    member.node_id = r.str("member node_id");
    member.address = r.str("member address");
    member.region = r.str("member region");
    const std::uint8_t status = r.u8();
    if (r.ok() && status > kMaxNodeStatus) {
      r.fail(DecodeError::BadValue, "member status " + std::to_string(status) + " out of range");
    }
    member.status = static_cast<NodeStatus>(status);
    member.incarnation = r.u64();
    m.members.push_back(std::move(member));
  }
  return m;
}

LimitItem readLimitItem(Reader& r) {
  LimitItem item;
  item.op = static_cast<LimitOp>(r.upTo(kMaxLimitOp, "limit item op"));
  item.key = r.str("limit item key");
  item.placement = r.str("limit item placement", kMaxPlacementBytes);
  item.algorithm = r.upTo(kMaxAlgorithm, "limit item algorithm");
  item.limit = r.u64();
  item.period_ns = r.nonNegative("limit item period_ns");
  item.burst = r.u64();
  item.cost = r.u64();
  item.blocking = r.boolean("limit item blocking flag");
  return item;
}

LimitRequest readLimitRequest(Reader& r) {
  LimitRequest m;
  const std::size_t calls = r.count(1, kMaxLimitCalls, kMinLimitCallBytes, "limit request calls");
  m.calls.reserve(calls);
  std::size_t total_items = 0;
  for (std::size_t c = 0; c < calls && r.ok(); ++c) {
    LimitCall call;
    call.request_id = r.u64();
    const std::size_t items = r.count(1, kMaxLimitItemsPerCall, kLimitItemFixedBytes, "limit call items");
    total_items += items;
    if (r.ok() && total_items > kMaxLimitItemsPerFrame) {
      r.fail(DecodeError::BadValue, "limit request items " + std::to_string(total_items) + " above " +
                                        std::to_string(kMaxLimitItemsPerFrame));
      break;
    }
    call.items.reserve(items);
    for (std::size_t i = 0; i < items && r.ok(); ++i) call.items.push_back(readLimitItem(r));
    m.calls.push_back(std::move(call));
  }
  return m;
}

LimitReply readLimitReply(Reader& r) {
  LimitReply m;
  const std::size_t answers = r.count(1, kMaxLimitCalls, kLimitAnswerHeaderBytes, "limit reply answers");
  m.answers.reserve(answers);
  std::size_t total_outcomes = 0;
  for (std::size_t a = 0; a < answers && r.ok(); ++a) {
    LimitAnswer answer;
    answer.request_id = r.u64();
    answer.status = static_cast<CallStatus>(r.upTo(kMaxCallStatus, "limit answer status"));
    // A refused call was not evaluated, so it has no outcomes; an evaluated one has one
    // per item, and a call has at least one.
    const bool refused = answer.status == CallStatus::Refused;
    const std::size_t outcomes = refused ? r.count(0, 0, kLimitOutcomeBytes, "refused limit answer outcomes")
                                         : r.count(1, kMaxLimitItemsPerCall, kLimitOutcomeBytes,
                                                   "limit answer outcomes");
    total_outcomes += outcomes;
    if (r.ok() && total_outcomes > kMaxLimitItemsPerFrame) {
      r.fail(DecodeError::BadValue, "limit reply outcomes " + std::to_string(total_outcomes) +
                                        " above " + std::to_string(kMaxLimitItemsPerFrame));
      break;
    }
    answer.outcomes.reserve(outcomes);
    for (std::size_t i = 0; i < outcomes && r.ok(); ++i) {
      LimitOutcome outcome;
      outcome.result = static_cast<ItemResult>(r.upTo(kMaxItemResult, "limit outcome result"));
      outcome.remaining = r.u64();
      outcome.retry_after_ns = r.nonNegative("limit outcome retry_after_ns");
      answer.outcomes.push_back(outcome);
    }
    m.answers.push_back(std::move(answer));
  }
  return m;
}

SyncedBucket readSyncedBucket(Reader& r) {
  SyncedBucket bucket;
  bucket.key = r.str("synced bucket key");
  bucket.placement = r.str("synced bucket placement", kMaxPlacementBytes);
  bucket.algorithm = r.upTo(kMaxAlgorithm, "synced bucket algorithm");
  bucket.limit = r.u64();
  bucket.period_ns = r.nonNegative("synced bucket period_ns");
  bucket.burst = r.u64();
  const std::uint64_t level_bits = r.u64();
  bucket.level = std::bit_cast<double>(level_bits);
  // The sign bit test also refuses -0.0, which encode() never writes.
  if (r.ok() && (!std::isfinite(bucket.level) || std::signbit(bucket.level))) {
    r.fail(DecodeError::BadValue, "synced bucket level is negative, infinite or NaN");
  }
  bucket.count = r.u64();
  bucket.stamp_age_ns = r.i64();
  bucket.initialised = r.boolean("synced bucket initialised flag");
  return bucket;
}

BucketSync readBucketSync(Reader& r) {
  BucketSync m;
  m.reason = static_cast<SyncReason>(r.upTo(kMaxSyncReason, "bucket sync reason"));
  m.sequence = r.u64();
  m.last = r.boolean("bucket sync last flag");
  const std::size_t buckets = r.count(kMaxSyncBuckets, kSyncedBucketFixedBytes, "bucket sync buckets");
  m.buckets.reserve(buckets);
  for (std::size_t i = 0; i < buckets && r.ok(); ++i) m.buckets.push_back(readSyncedBucket(r));
  return m;
}

RaftFrame readRaftFrame(Reader& r) {
  RaftDecodeResult decoded = decodeRaftMessage(r.rest());
  if (!decoded.ok) r.fail(decoded.error, std::move(decoded.detail));
  return RaftFrame{std::move(decoded.message)};
}

RaftControl readRaftControl(Reader& r) {
  RaftControl m;
  m.kind = static_cast<RaftControlKind>(r.upTo(kMaxRaftControlKind, "raft control kind"));
  m.raft_id = r.u64();
  if (r.ok() && m.raft_id == 0) r.fail(DecodeError::BadValue, "raft control from raft id 0");
  m.flags = r.u8();
  if (r.ok() && (m.flags & ~kRaftControlFlagsKnown)) {
    r.fail(DecodeError::BadValue, "unknown raft control flags " + std::to_string(m.flags));
  }
  m.request_id = r.u64();
  m.leader = r.u64();
  m.term = r.u64();
  m.index = r.u64();
  m.text = r.longStr("raft control text", kMaxRaftControlText);
  return m;
}

DecodeResult failure(DecodeError error, std::string detail) {
  DecodeResult result;
  result.status = DecodeStatus::Error;
  result.error = error;
  result.detail = std::move(detail);
  return result;
}

DecodeResult needMore(std::size_t bytes) {
  DecodeResult result;
  result.status = DecodeStatus::NeedMore;
  result.bytes_needed = bytes;
  return result;
}

}  // namespace

MessageType typeOf(const Message& message) {
  return std::visit(
      [](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Hello>) return MessageType::Hello;
        if constexpr (std::is_same_v<T, Challenge>) return MessageType::Challenge;
        if constexpr (std::is_same_v<T, Response>) return MessageType::Response;
        if constexpr (std::is_same_v<T, Heartbeat>) return MessageType::Heartbeat;
        if constexpr (std::is_same_v<T, Goodbye>) return MessageType::Goodbye;
        if constexpr (std::is_same_v<T, MemberList>) return MessageType::MemberList;
        if constexpr (std::is_same_v<T, ProbeRequest>) return MessageType::ProbeRequest;
        if constexpr (std::is_same_v<T, ProbeAck>) return MessageType::ProbeAck;
        if constexpr (std::is_same_v<T, LimitRequest>) return MessageType::LimitRequest;
        if constexpr (std::is_same_v<T, LimitReply>) return MessageType::LimitReply;
        if constexpr (std::is_same_v<T, BucketSync>) return MessageType::BucketSync;
        if constexpr (std::is_same_v<T, RaftFrame>) return MessageType::RaftFrame;
        if constexpr (std::is_same_v<T, RaftControl>) return MessageType::RaftControl;
      },
      message);
}

std::string encode(const Message& message) {
  std::string out;
  Writer w(out);
  w.u32(0);  // patched below, once the payload size is known
  w.u8(kProtocolVersion);
  w.u8(static_cast<std::uint8_t>(typeOf(message)));
  std::visit([&w](const auto& m) { writePayload(w, m); }, message);
  const std::size_t length = out.size() - kLengthPrefixBytes;
  for (std::size_t i = 0; i < kLengthPrefixBytes; ++i) {
    out[i] = static_cast<char>((length >> (8 * (kLengthPrefixBytes - 1 - i))) & 0xff);
  }
  return out;
}

std::string_view nameOf(DecodeError error) {
  switch (error) {
    case DecodeError::BadVersion: return "bad version";
    case DecodeError::UnknownType: return "unknown type";
    case DecodeError::Oversized: return "oversized";
    case DecodeError::Truncated: return "truncated";
    case DecodeError::TrailingBytes: return "trailing bytes";
    case DecodeError::BadValue: return "bad value";
  }
  return "unknown error";
}

DecodeResult decode(std::string_view buffer) {
  if (buffer.size() < kLengthPrefixBytes) return needMore(kLengthPrefixBytes - buffer.size());
  std::size_t length = 0;
  for (std::size_t i = 0; i < kLengthPrefixBytes; ++i) {
    length = (length << 8) | static_cast<std::uint8_t>(buffer[i]);
  }
  if (length > kMaxFrameBytes) {
    return failure(DecodeError::Oversized, "frame length " + std::to_string(length) + " above " +
                                               std::to_string(kMaxFrameBytes));
  }
  if (length < 2) {
    return failure(DecodeError::Truncated,
                   "frame length " + std::to_string(length) + " cannot hold version and type");
  }
  const std::size_t frame_bytes = kLengthPrefixBytes + length;
  if (buffer.size() < frame_bytes) return needMore(frame_bytes - buffer.size());

  Reader r(buffer.substr(kLengthPrefixBytes, length));
  const std::uint8_t version = r.u8();
  if (version != kProtocolVersion) {
    return failure(DecodeError::BadVersion, "protocol version " + std::to_string(version));
  }
  const std::uint8_t type = r.u8();
  Message message;
  switch (static_cast<MessageType>(type)) {
    case MessageType::Hello: message = readHello(r); break;
    case MessageType::Challenge: message = readAuth<Challenge>(r); break;
    case MessageType::Response: message = readAuth<Response>(r); break;
    case MessageType::Heartbeat: message = readHeartbeat(r); break;
    case MessageType::Goodbye: message = readGoodbye(r); break;
    case MessageType::MemberList: message = readMemberList(r); break;
    case MessageType::ProbeRequest: message = readProbeRequest(r); break;
    case MessageType::ProbeAck: message = readProbeAck(r); break;
    case MessageType::LimitRequest: message = readLimitRequest(r); break;
    case MessageType::LimitReply: message = readLimitReply(r); break;
    case MessageType::BucketSync: message = readBucketSync(r); break;
    case MessageType::RaftFrame: message = readRaftFrame(r); break;
    case MessageType::RaftControl: message = readRaftControl(r); break;
    default: return failure(DecodeError::UnknownType, "message type " + std::to_string(type));
  }
  if (!r.ok()) return failure(r.error(), r.detail());
  if (r.remaining() != 0) {
    return failure(DecodeError::TrailingBytes,
                   std::to_string(r.remaining()) + " bytes after the last field");
  }
  DecodeResult result;
  result.status = DecodeStatus::Ok;
  result.bytes_consumed = frame_bytes;
  result.message = std::move(message);
  return result;
}

}  // namespace zetian::cluster::wire
