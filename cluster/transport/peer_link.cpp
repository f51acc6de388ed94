#include "cluster/transport/peer_link.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "cluster/clock.h"
#include "cluster/transport/tls.h"

namespace zetian::cluster::transport {
namespace {

std::size_t lengthPrefix(const unsigned char* p) {
  return (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) | (std::size_t{p[2]} << 8) |
         std::size_t{p[3]};
}

std::string seconds(std::chrono::milliseconds d) {
  const auto ms = d.count();
  return ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms";
}

}  // namespace

wire::Nonce randomNonce() {
  wire::Nonce nonce{};
  if (RAND_bytes(nonce.data(), static_cast<int>(nonce.size())) != 1) {
    throw std::runtime_error("OpenSSL RAND_bytes failed: no randomness for a handshake nonce");
  }
  return nonce;
}

PeerLink::PeerLink(bufferevent* bev, Role role, bool tls, std::string remote,
                   wire::NodeIdentity self, std::string_view secret, Owner& owner,
                   LinkLimits limits)
    : bev_(bev), role_(role), tls_(tls), remote_(std::move(remote)), owner_(owner),
      limits_(limits), connected_(role == Role::Acceptor) {
  if (role == Role::Initiator) {
    handshake_ = std::make_unique<wire::Initiator>(std::move(self), secret, randomNonce);
  } else {
    handshake_ = std::make_unique<wire::Acceptor>(std::move(self), secret, randomNonce);
  }
}

PeerLink::~PeerLink() {
  owner_thread_.check();
  close();
}

void PeerLink::start() {
  owner_thread_.check();
  bufferevent_setcb(bev_, &PeerLink::onReadCb, &PeerLink::onWriteCb, &PeerLink::onEventCb, this);
  // Write callback when the queue drains below the low watermark (or empties).
  bufferevent_setwatermark(bev_, EV_WRITE, limits_.low_watermark, 0);
  setTimeouts(limits_.handshake_timeout);
  bufferevent_enable(bev_, EV_READ | EV_WRITE);
}

void PeerLink::setTimeouts(std::chrono::milliseconds timeout) {
  const timeval tv = toTimeval(timeout);
  bufferevent_set_timeouts(bev_, &tv, &tv);
}

std::size_t PeerLink::queuedBytes() const {
  owner_thread_.check();
  return bev_ ? evbuffer_get_length(bufferevent_get_output(bev_)) : 0;
}

void PeerLink::close() {
  owner_thread_.check();
  if (closed_) return;
  closed_ = true;
  established_ = false;
  authenticator_.reset();
  handshake_ = std::monostate{};
  if (bev_) {
    // Safe inside this bufferevent's own callbacks: libevent defers the free until
    // the callback returns. Nothing here touches bev_ again.
    bufferevent_free(bev_);
    bev_ = nullptr;
  }
}

void PeerLink::closeAfterFlush(std::chrono::milliseconds deadline) {
  owner_thread_.check();
  if (closed_) return;
  if (queuedBytes() == 0) {
    close();
    return;
  }
  flushing_ = true;
  bufferevent_disable(bev_, EV_READ);
  bufferevent_setwatermark(bev_, EV_WRITE, 0, 0);  // write callback only once empty
  setTimeouts(deadline);
}

void PeerLink::fail(std::string reason, bool refused) {
  if (closed_) return;
  close();
  owner_.onLinkClosed(*this, reason, refused);
}

// A failure before establishment, with its kind recorded for the owner; after
// establishment, an ordinary failure.
void PeerLink::failHandshake(RefusalKind kind, std::string reason, bool refused) {
  if (!established_ && !closed_) handshake_failure_ = kind;
  fail(std::move(reason), refused);
}

void PeerLink::writeFrame(const std::string& frame) {
  bytes_sent_ += frame.size();
  std::size_t done = 0;
  // An established plain link with nothing queued writes the frame at once. Through
  // the bufferevent it would wait for the next turn of the loop and cost two
  // epoll_ctl calls (watch for writable, stop watching) plus that turn: on a remote
  // limit check, which is a frame each way, that was a third of the system calls.
  // What the socket does not take (or an error, which the bufferevent's own write
  // then reports through onEvent) goes the usual way, after what was written.
  if (established_ && !tls_ && evbuffer_get_length(bufferevent_get_output(bev_)) == 0) {
    const ssize_t n = ::send(bufferevent_getfd(bev_), frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) done = static_cast<std::size_t>(n);
  }
  if (done < frame.size()) bufferevent_write(bev_, frame.data() + done, frame.size() - done);
}

bool PeerLink::send(const wire::Message& message, Priority priority) {
  owner_thread_.check();
  if (closed_ || !established_ || flushing_) return false;
  const std::size_t queued = queuedBytes();
  if (priority == Priority::Bulk) {
    if (congested_ || queued > limits_.high_watermark) {
      congested_ = true;
      return false;
    }
  }
  std::string frame = wire::encode(message);
  if (authenticator_) {
    const auto tagged = authenticator_->sign(frame);
    frame.append(reinterpret_cast<const char*>(tagged.tag.data()), tagged.tag.size());
  }
  if (queued + frame.size() > limits_.hard_limit) {
    fail("send queue above " + std::to_string(limits_.hard_limit) +
         " bytes: the peer is not reading");
    return false;
  }
  writeFrame(frame);
  return true;
}

void PeerLink::onReadCb(bufferevent*, void* arg) { static_cast<PeerLink*>(arg)->onRead(); }
void PeerLink::onWriteCb(bufferevent*, void* arg) { static_cast<PeerLink*>(arg)->onWrite(); }
void PeerLink::onEventCb(bufferevent*, short what, void* arg) {
  static_cast<PeerLink*>(arg)->onEvent(what);
}

void PeerLink::onRead() {
  owner_thread_.check();
  while (!closed_ && !flushing_) {
    evbuffer* input = bufferevent_get_input(bev_);
    const std::size_t available = evbuffer_get_length(input);
    if (available < wire::kLengthPrefixBytes) return;
    unsigned char prefix[wire::kLengthPrefixBytes];
    evbuffer_copyout(input, prefix, sizeof prefix);
    const std::size_t length = lengthPrefix(prefix);
    const std::size_t limit = established_ ? wire::kMaxFrameBytes : kMaxHandshakeFrameBytes;
    if (length > limit) {
      failHandshake(RefusalKind::garbage, "frame of " + std::to_string(length) + " bytes is above the limit of " +
                                              std::to_string(limit) + (established_ ? "" : " before admission"));
      return;
    }
    const std::size_t tag_bytes = authenticator_ ? wire::kMacBytes : 0;
    const std::size_t total = wire::kLengthPrefixBytes + length + tag_bytes;
    if (available < total) return;
    const auto* bytes = evbuffer_pullup(input, static_cast<ev_ssize_t>(total));
    const std::string_view frame(reinterpret_cast<const char*>(bytes),
                                 wire::kLengthPrefixBytes + length);
    wire::DecodeResult decoded = wire::decode(frame);
    if (decoded.status != wire::DecodeStatus::Ok) {
      failHandshake(RefusalKind::garbage, "undecodable frame (" + std::string(wire::nameOf(decoded.error)) + ": " +
                                              decoded.detail + ")");
      return;
    }
    if (authenticator_) {
      wire::Mac tag{};
      std::memcpy(tag.data(), bytes + frame.size(), tag.size());
      if (!authenticator_->verify(authenticator_->nextReceive(), frame, tag)) {
        fail("frame authentication failed (tampered, replayed or out of order)");
        return;
      }
    }
    evbuffer_drain(input, total);
    bytes_received_ += total;
    handle(decoded.message);
  }
}

void PeerLink::handle(const wire::Message& message) {
  if (!established_) {
    handleHandshake(message);
    return;
  }
  if (std::holds_alternative<wire::Hello>(message) ||
      std::holds_alternative<wire::Challenge>(message) ||
      std::holds_alternative<wire::Response>(message)) {
    fail("handshake message on an established link");
    return;
  }
  owner_.onLinkMessage(*this, message);
}

void PeerLink::handleHandshake(const wire::Message& message) {
  wire::HandshakeStep step;
  if (auto* initiator = std::get_if<std::unique_ptr<wire::Initiator>>(&handshake_)) {
    step = (*initiator)->receive(message);
  } else if (auto* acceptor = std::get_if<std::unique_ptr<wire::Acceptor>>(&handshake_)) {
    step = (*acceptor)->receive(message);
  } else {
    return;
  }
  for (const auto& reply : step.send) writeFrame(wire::encode(reply));
  if (const auto* refused = std::get_if<wire::Refused>(&step.state)) {
    const RefusalKind kind = refused->reason == wire::RefuseReason::BadMac       ? RefusalKind::bad_mac
                             : refused->reason == wire::RefuseReason::SameNodeId ? RefusalKind::duplicate_id
                                                                                 : RefusalKind::garbage;
    failHandshake(kind, std::string(wire::nameOf(refused->reason)), true);
    return;
  }
  if (const auto* done = std::get_if<wire::Established>(&step.state)) {
    peer_ = done->peer;
    if (!tls_) {
      authenticator_ = std::make_unique<wire::FrameAuthenticator>(
          done->session_key, role_ == Role::Initiator ? wire::FrameAuthenticator::Role::Initiator
                                                      : wire::FrameAuthenticator::Role::Acceptor);
    }
    handshake_ = std::monostate{};
    established_ = true;
    setTimeouts(limits_.idle_timeout);
    owner_.onLinkEstablished(*this);
  }
}

void PeerLink::onWrite() {
  owner_thread_.check();
  if (closed_) return;
  if (flushing_) {
    if (queuedBytes() == 0) close();
    return;
  }
  if (congested_ && queuedBytes() <= limits_.low_watermark) {
    congested_ = false;
    owner_.onLinkWritable(*this);
  }
}

void PeerLink::onEvent(short what) {
  owner_thread_.check();
  if (closed_) return;
  if (what & BEV_EVENT_CONNECTED) {
    connected_ = true;
    if (auto* initiator = std::get_if<std::unique_ptr<wire::Initiator>>(&handshake_)) {
      for (const auto& hello : (*initiator)->start().send) writeFrame(wire::encode(hello));
    }
    return;
  }
  if (flushing_) {  // the goodbye could not be delivered in time: that is all right
    close();
    return;
  }
  std::string reason;
  RefusalKind kind = RefusalKind::gave_up;
  if (what & BEV_EVENT_TIMEOUT) {
    kind = RefusalKind::handshake_timeout;
    reason = established_ ? "nothing received for " + seconds(limits_.idle_timeout)
                          : "no handshake within " + seconds(limits_.handshake_timeout);
  } else if (what & BEV_EVENT_EOF) {
    reason = "connection closed by the peer";
  } else {
    const int err = EVUTIL_SOCKET_ERROR();
    std::string tls_error = tls_ ? TlsContext::lastError(bev_) : std::string();
    if (!tls_error.empty()) {
      kind = RefusalKind::tls;
      reason = "TLS: " + tls_error;
    } else if (err != 0) {
      reason = evutil_socket_error_to_string(err);
    } else {
      reason = "connection error";
    }
  }
  // OpenSSL's error queue is per thread and shared by every TLS link on the loop: an
  // entry left behind would make libevent take the next link's healthy read for an
  // error. lastError() drained it for an error; clear it for EOF and timeouts too.
  if (tls_) ERR_clear_error();
  // A TLS failure during the handshake is a refusal too (untrusted certificate).
  failHandshake(kind, reason, tls_ && !established_ && (what & BEV_EVENT_ERROR));
}

}  // namespace zetian::cluster::transport
