// Frame encoding and decoding; the format and the decoder's invariants are in codec.h.
//
// Reader trap: every read checks the remaining bytes first and, once one read fails,
// all later reads fail too, so a parse function can read all its fields and check
// ok() once at the end without ever touching memory past the frame.
#include "cluster/wire/codec.h"

#include <stdexcept>
#include <type_traits>
#include <utility>

namespace zetian::cluster::wire {
namespace {

// Smallest encoding of a Member: three empty strings, status, incarnation.
constexpr std::size_t kMinMemberBytes = 3 * 2 + 1 + 8;

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(std::uint16_t v) { bigEndian(v, 2); }
  void u32(std::uint32_t v) { bigEndian(v, 4); }
  void u64(std::uint64_t v) { bigEndian(v, 8); }

  void bytes(const std::uint8_t* data, std::size_t size) {
    out_.append(reinterpret_cast<const char*>(data), size);
  }

  void str(std::string_view s, const char* what) {
    if (s.size() > kMaxStringBytes) {
      throw std::invalid_argument(std::string("wire: ") + what + " longer than kMaxStringBytes");
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

  template <std::size_t N>
  std::array<std::uint8_t, N> fixed(const char* what) {
    std::array<std::uint8_t, N> out{};
    if (!take(N, what)) return out;
    for (std::size_t i = 0; i < N; ++i) out[i] = static_cast<std::uint8_t>(data_[pos_ - N + i]);
    return out;
  }

  std::string str(const char* what) {
    const std::size_t size = u16();
    if (!ok()) return {};
    if (size > kMaxStringBytes) {
      fail(DecodeError::BadValue, std::string(what) + " length " + std::to_string(size) +
                                      " above " + std::to_string(kMaxStringBytes));
      return {};
    }
    if (!take(size, what)) return {};
    return std::string(data_.substr(pos_ - size, size));
  }

  // Reads a u16 element count and checks it against the limit and against what the
  // remaining bytes can hold, so the caller may reserve() the result safely.
  std::size_t count(std::size_t max, std::size_t min_element_bytes, const char* what) {
    const std::size_t n = u16();
    if (!ok()) return 0;
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

Hello readHello(Reader& r) {
  Hello m;
  m.node_id = r.str("node_id");
  m.advertise_address = r.str("advertise_address");
  m.cluster_id = r.str("cluster_id");
  m.region = r.str("region");
  m.nonce = r.fixed<kNonceBytes>("nonce");
  m.incarnation = r.u64();
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
