// TLS for node-to-node links: "just another connection type". TlsContext turns a
// socket into a libevent bufferevent that speaks TLS; the link code (peer_link.h) reads
// and writes it like a plain one and never sees OpenSSL.
//
// What is enforced, on both ends of every link:
// - TLS 1.3 only (minimum and maximum). Nothing older is negotiated, so no
//   renegotiation, no weak suites, and one handshake shape to reason about.
// - Mutual authentication: each side presents `cert` and REQUIRES the other's
//   certificate (a client without one is refused), verified against `ca` alone. The
//   system trust store is never loaded: a certificate from a public CA is a stranger.
// - No hostname or IP check. `ca` is the cluster's private CA: holding a certificate
//   it signed is what makes a node a member, and which member it is comes from the
//   cluster handshake (wire/handshake.h) that runs inside the TLS channel. Nodes dial
//   seeds by address, DNS names or NAT'd addresses, so a name check would only add
//   ways to fail. A node's certificate therefore needs extendedKeyUsage serverAuth AND
//   clientAuth (OpenSSL checks the purpose on each side), but no subjectAltName.
// - No session resumption: no tickets and no session cache, so every link does a
//   full handshake with a fresh certificate check and no resumption state lingers.
//
// Traps, for whoever uses the bufferevents:
// - TLS 1.3 lets the client finish first: it reports BEV_EVENT_CONNECTED as soon as it
//   sent its certificate, before the server has checked it. A refused client therefore
//   sees CONNECTED, then BEV_EVENT_ERROR when the server's alert arrives; whatever it
//   wrote in between is discarded by the server. CONNECTED means "TLS is up", never
//   "the peer accepted us": admission is the cluster handshake's job.
// - Writing to a peer that has gone away raises SIGPIPE (OpenSSL writes with write(2),
//   not send(MSG_NOSIGNAL)). Use these bufferevents only on a thread that blocks
//   SIGPIPE; Loop's thread does.
// - OpenSSL keeps one error queue per thread and SSL_get_error() reads it: a stale
//   entry left there by other OpenSSL code on the loop thread makes a healthy TLS read
//   look failed and kills a link. Every OpenSSL caller on the loop thread must leave
//   the queue empty (create() does, on every path).
// - Nothing here bounds the handshake in time: a peer that connects and stays silent
//   holds the socket until the owner's timeout (bufferevent_set_timeouts) fires.
#pragma once

#include <event2/util.h>

#include <memory>
#include <string>

#include "conf/config.h"

struct bufferevent;
struct event_base;
struct ssl_ctx_st;

namespace zetian::cluster::transport {

// Immutable once created; may be created on any thread and shared by every link of
// the node. The bufferevents it makes belong to their event_base's thread.
class TlsContext {
 public:
  // Loads `tls.cert` (a PEM certificate, optionally followed by its intermediate
  // CAs), `tls.key` (an unencrypted PEM private key matching the certificate) and
  // `tls.ca` (the PEM CA certificate(s) peers must chain to). On failure returns
  // nullptr and sets *error to one line that names the file and the [cluster.tls]
  // setting to fix ("cannot read /etc/zetian/node.key: No such file or directory;
  // check [cluster.tls] key"). Never quotes key material.
  static std::unique_ptr<TlsContext> create(const conf::ClusterTls& tls, std::string* error);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // A bufferevent (BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS) doing the server
  // side of TLS over the accepted socket `fd`, made non-blocking. Takes ownership of
  // fd in every case: freeing the bufferevent closes it, and after a failure it must
  // not be closed again (it is closed, or leaked if libevent's state is unknown).
  // Reading and writing are enabled; the event callback gets BEV_EVENT_CONNECTED once
  // the handshake is done. nullptr only if OpenSSL or libevent cannot allocate.
  bufferevent* wrapAccepted(event_base* base, evutil_socket_t fd);
  // The same as the client side. With fd == -1 the caller then dials with
  // bufferevent_socket_connect() on the result (a failed dial is BEV_EVENT_ERROR).
  bufferevent* wrapConnecting(event_base* base, evutil_socket_t fd);

  // After BEV_EVENT_ERROR on a TLS bufferevent: a one-line reason for the log, such
  // as "certificate verify failed: unable to get local issuer certificate" or "tlsv1
  // alert unknown ca" (the peer refused us). "" when TLS has nothing to say (a reset
  // or a refused dial: see EVUTIL_SOCKET_ERROR()) or bev is not a TLS bufferevent.
  // Consumes the errors libevent kept, so call it once per error event.
  static std::string lastError(bufferevent* bev);
  // The subject CN of the peer's certificate once it has been verified, for logging
  // only (identity comes from the cluster handshake); "" before that or without one.
  // Bytes outside printable ASCII are replaced by '?', so the CN cannot forge a log
  // line.
  static std::string peerCommonName(bufferevent* bev);

 private:
  explicit TlsContext(ssl_ctx_st* ctx);
  bufferevent* wrap(event_base* base, evutil_socket_t fd, bool accepting);

  // Reference-counted by OpenSSL: every SSL made from it holds a reference, so a
  // bufferevent (and its SSL) may outlive this object safely; the context is freed
  // when the last of them goes.
  ssl_ctx_st* const ctx_;
};

}  // namespace zetian::cluster::transport
