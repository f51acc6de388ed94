// One connection between two nodes: admission handshake, then framed, authenticated
// messages, over a libevent bufferevent that is plain TCP or TLS (the link does not
// care which; TlsContext made the bufferevent).
//
// Life of a link:
//   connecting (initiator) -> handshake -> established -> closed
// The initiator sends its Hello once the connection (and TLS, if any) is up; the
// acceptor waits for it. Handshake frames travel bare; from the frame after the one
// that completed the handshake, each frame is followed by a 32-byte tag
// (wire::FrameAuthenticator, sequence implicit: TCP keeps order) unless the link is TLS,
// which authenticates and encrypts by itself. Both ends switch at the same frame, so no
// marker is needed.
//
// Hostile input: before admission a frame may be at most kMaxHandshakeFrameBytes and
// the whole handshake must finish within handshake_timeout, so a stranger can hold
// neither much memory nor a connection for long. Any undecodable, unexpected or
// unauthenticated frame closes the link with a reason; nothing is resynchronised.
//
// Backpressure: Control messages (handshake, heartbeats, probes, goodbye) are always
// queued; Bulk messages are refused once the send queue is above high_watermark, until
// it drains below low_watermark (then Owner::onLinkWritable). Above hard_limit the peer
// is not reading at all and the link is closed.
//
// Ownership: the owner (the cluster node) creates and destroys links, on the loop
// thread only; every method and callback checks it runs on the thread that constructed
// the link, and aborts otherwise (cluster/owner_thread.h). Owner callbacks run from inside libevent callbacks of this link, so the
// owner must not destroy the link from within them; close() is always safe and the
// link then does nothing more.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "cluster/log_sink.h"
#include "cluster/owner_thread.h"
#include "cluster/wire/codec.h"
#include "cluster/wire/handshake.h"

struct bufferevent;

namespace zetian::cluster::transport {

inline constexpr std::size_t kMaxHandshakeFrameBytes = 4096;

struct LinkLimits {
  std::size_t low_watermark = std::size_t{256} << 10;
  std::size_t high_watermark = std::size_t{1} << 20;
  std::size_t hard_limit = std::size_t{8} << 20;
  std::chrono::milliseconds handshake_timeout{5000};
  // Nothing received (or a write stalled) this long: the link is dead even if TCP
  // has not noticed. Heartbeats keep a healthy link far below it.
  std::chrono::milliseconds idle_timeout{30000};
};

class PeerLink {
 public:
  enum class Role { Initiator, Acceptor };
  enum class Priority { Control, Bulk };

  class Owner {
   public:
    virtual void onLinkEstablished(PeerLink& link) = 0;
    virtual void onLinkMessage(PeerLink& link, const wire::Message& message) = 0;
    // Called once, when the link closes for any reason other than the owner's own
    // close() call. refused: the handshake failed (wrong secret, other cluster...).
    virtual void onLinkClosed(PeerLink& link, const std::string& reason, bool refused) = 0;
    virtual void onLinkWritable(PeerLink& link) = 0;

   protected:
    ~Owner() = default;
  };

  // `bev` is owned from now on. For an initiator it must be connecting
  // (bufferevent_socket_connect called); for an acceptor, connected. `remote` names the
  // other end in log lines ("127.0.0.2:7946").
  PeerLink(bufferevent* bev, Role role, bool tls, std::string remote, wire::NodeIdentity self,
           std::string_view secret, Owner& owner, LinkLimits limits);
  ~PeerLink();
  PeerLink(const PeerLink&) = delete;
  PeerLink& operator=(const PeerLink&) = delete;

  // Arms callbacks and timeouts. An initiator sends its Hello when connected.
  void start();

  // Queues a message on an established link. False when the link is not established,
  // is closed, or (Bulk) is congested.
  bool send(const wire::Message& message, Priority priority = Priority::Control);

  // Closes now; the owner is not called back. Idempotent.
  void close();
  // Sends what is queued (e.g. a Goodbye), then closes; closes anyway after `deadline`.
  // The owner is not called back.
  void closeAfterFlush(std::chrono::milliseconds deadline);

  bool established() const { return established_; }
  // The TCP (and TLS) connection is up: always for an acceptor, after the dial
  // succeeded for an initiator.
  bool connected() const { return connected_; }
  bool closed() const { return closed_; }
  bool congested() const { return congested_; }
  Role role() const { return role_; }
  bool tls() const { return tls_; }
  const std::string& remote() const { return remote_; }
  // The peer's verified introduction; empty until established.
  const wire::Hello& peer() const { return peer_; }
  // Why the link failed before it was established, in the owner's terms (its log
  // budgets and metric labels are keyed by it): garbage, handshake_timeout, gave_up
  // (the other end closed or reset), bad_mac, duplicate_id (the peer claims this
  // node's own id) or tls; never admission, which the owner decides before any link
  // exists. Empty while in progress, once established, or when the owner closed it.
  std::optional<RefusalKind> handshakeFailure() const { return handshake_failure_; }
  std::size_t queuedBytes() const;
  std::uint64_t bytesSent() const { return bytes_sent_; }
  std::uint64_t bytesReceived() const { return bytes_received_; }

 private:
  static void onReadCb(bufferevent* bev, void* arg);
  static void onWriteCb(bufferevent* bev, void* arg);
  static void onEventCb(bufferevent* bev, short what, void* arg);
  void onRead();
  void onWrite();
  void onEvent(short what);
  void handle(const wire::Message& message);
  void handleHandshake(const wire::Message& message);
  void writeFrame(const std::string& frame);
  void fail(std::string reason, bool refused = false);
  void failHandshake(RefusalKind kind, std::string reason, bool refused = false);
  void setTimeouts(std::chrono::milliseconds timeout);

  const OwnerThread owner_thread_;  // every member below: this thread only
  bufferevent* bev_;  // owned; nullptr once closed
  const Role role_;
  const bool tls_;
  const std::string remote_;
  Owner& owner_;
  const LinkLimits limits_;
  std::variant<std::monostate, std::unique_ptr<wire::Initiator>, std::unique_ptr<wire::Acceptor>>
      handshake_;
  std::unique_ptr<wire::FrameAuthenticator> authenticator_;  // established, TLS off
  wire::Hello peer_;
  bool connected_ = false;
  bool established_ = false;
  bool closed_ = false;
  bool congested_ = false;
  bool flushing_ = false;
  std::optional<RefusalKind> handshake_failure_;
  std::uint64_t bytes_sent_ = 0;
  std::uint64_t bytes_received_ = 0;
};

// Fresh random nonces from OpenSSL's CSPRNG.
wire::Nonce randomNonce();

}  // namespace zetian::cluster::transport
