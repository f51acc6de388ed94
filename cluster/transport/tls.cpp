// How the policy in tls.h maps onto OpenSSL 3 and libevent 2.1, and the traps on the way:
//
// - Files are checked for readability first, so a wrong path or permission says so
//   with errno instead of OpenSSL's "system lib". The key is parsed by us, with a
//   passphrase callback that refuses: OpenSSL's default callback would prompt on the
//   controlling terminal and hang a daemon started from a shell.
// - OpenSSL 3 reports a peer that closes TCP without close_notify as an error
//   ("unexpected eof while reading"), which libevent 2.1 passes on as BEV_EVENT_ERROR
//   even with allow_dirty_shutdown (that flag only knows the OpenSSL 1.1 signal). Our
//   own nodes never send close_notify: freeing a TLS bufferevent just closes the
//   socket. SSL_OP_IGNORE_UNEXPECTED_EOF turns it back into a clean EOF. Truncation is
//   harmless here: TLS 1.3 authenticates every record and the link's frames are
//   length-prefixed, so a cut-off frame is never delivered.
// - SSL_OP_NO_TICKET alone does not stop resumption in TLS 1.3: OpenSSL then issues
//   stateful tickets backed by the server's session cache. Sending zero tickets and
//   switching the cache off is what leaves no resumption state.
// - Failures of bufferevent_openssl_socket_new() are not uniform across libevent
//   versions: depending on where it failed, the SSL and the socket are freed or not.
//   We never free them after a failed call; a leak on out-of-memory is better than a
//   double free, or a close() that hits a descriptor another thread just opened.
#include "cluster/transport/tls.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

#include "conf/text.h"

namespace zetian::cluster::transport {
namespace {

// Leaves the thread's OpenSSL error queue empty on every way out of a scope (see the
// error-queue trap in tls.h).
class ErrorQueueScope {
 public:
  ErrorQueueScope() { ERR_clear_error(); }
  ~ErrorQueueScope() { ERR_clear_error(); }
  ErrorQueueScope(const ErrorQueueScope&) = delete;
  ErrorQueueScope& operator=(const ErrorQueueScope&) = delete;
};

std::string describe(unsigned long code) {
  if (const char* reason = ERR_reason_error_string(code)) return reason;
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

// The first (root-cause) error on the thread's queue, or `fallback` if it is empty.
std::string firstQueuedError(const char* fallback) {
  const unsigned long code = ERR_peek_error();
  return code == 0 ? fallback : describe(code);
}

std::string hint(const char* setting) {
  return std::string("; check [cluster.tls] ") + setting;
}

// "" if `path` can be opened for reading, else the message for create().
std::string unreadable(const std::string& path, const char* setting) {
  if (path.empty()) return std::string("no file given") + hint(setting);
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "cannot read " + path + ": " + conf::errnoText(errno) + hint(setting);
  close(fd);
  return "";
}

// A passphrase callback that refuses, and notes that it was asked.
int refusePassphrase(char* /*buffer*/, int /*size*/, int /*rwflag*/, void* asked) {
  *static_cast<bool*>(asked) = true;
  return -1;
}

// Loads the private key, checks it against the certificate already in `ctx` and
// installs it. "" on success, else the message for create().
std::string loadKey(SSL_CTX* ctx, const conf::ClusterTls& tls) {
  if (auto problem = unreadable(tls.key, "key"); !problem.empty()) return problem;
  BIO* file = BIO_new_file(tls.key.c_str(), "r");
  if (file == nullptr) {
    return "cannot read " + tls.key + ": " + firstQueuedError("open failed") + hint("key");
  }
  bool asked_for_passphrase = false;
  EVP_PKEY* key = PEM_read_bio_PrivateKey(file, nullptr, refusePassphrase, &asked_for_passphrase);
  BIO_free(file);
  if (key == nullptr) {
    if (asked_for_passphrase) {
      return tls.key + " is encrypted and zetian cannot ask for a passphrase; store it "
             "unencrypted, readable only by zetian's user" + hint("key");
    }
    return tls.key + " holds no PEM private key (" + firstQueuedError("unreadable") + ")" +
           hint("key");
  }
  std::string problem;
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (X509_check_private_key(cert, key) != 1) {
    problem = tls.key + " does not belong to the certificate in " + tls.cert +
              hint("key and cert");
  } else if (SSL_CTX_use_PrivateKey(ctx, key) != 1) {
    problem = "cannot use the key in " + tls.key + " (" +
              firstQueuedError("unsupported key") + ")" + hint("key");
  }
  EVP_PKEY_free(key);  // the context holds its own reference
  return problem;
}

std::string loadFiles(SSL_CTX* ctx, const conf::ClusterTls& tls) {
  if (auto problem = unreadable(tls.cert, "cert"); !problem.empty()) return problem;
  // The chain variant: intermediates after the node's certificate are sent along.
  if (SSL_CTX_use_certificate_chain_file(ctx, tls.cert.c_str()) != 1) {
    return tls.cert + " holds no usable PEM certificate (" + firstQueuedError("unreadable") +
           ")" + hint("cert");
  }
  ERR_clear_error();
  if (auto problem = loadKey(ctx, tls); !problem.empty()) return problem;
  ERR_clear_error();
  if (auto problem = unreadable(tls.ca, "ca"); !problem.empty()) return problem;
  if (SSL_CTX_load_verify_locations(ctx, tls.ca.c_str(), nullptr) != 1) {
    return tls.ca + " holds no usable PEM CA certificate (" + firstQueuedError("unreadable") +
           ")" + hint("ca");
  }
  return "";
}

}  // namespace

TlsContext::TlsContext(SSL_CTX* ctx) : ctx_(ctx) {}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

std::unique_ptr<TlsContext> TlsContext::create(const conf::ClusterTls& tls, std::string* error) {
  const ErrorQueueScope scope;
  auto fail = [error](std::string message) -> std::unique_ptr<TlsContext> {
    if (error != nullptr) *error = std::move(message);
    return nullptr;
  };
  SSL_CTX* raw = SSL_CTX_new(TLS_method());
  if (raw == nullptr) return fail("cannot create a TLS context: " + firstQueuedError("no memory"));
  std::unique_ptr<TlsContext> context(new TlsContext(raw));
  SSL_CTX* ctx = context->ctx_;

  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) {
    return fail("this OpenSSL cannot do TLS 1.3, which [cluster.tls] requires");
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  // No verify callback: OpenSSL's own chain check (against the `ca` store only, with
  // the purpose checked per side) is the whole policy; see tls.h for why no hostname.
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);

  if (auto problem = loadFiles(ctx, tls); !problem.empty()) return fail(std::move(problem));
  return context;
}

bufferevent* TlsContext::wrapAccepted(event_base* base, evutil_socket_t fd) {
  return wrap(base, fd, true);
}

bufferevent* TlsContext::wrapConnecting(event_base* base, evutil_socket_t fd) {
  return wrap(base, fd, false);
}

bufferevent* TlsContext::wrap(event_base* base, evutil_socket_t fd, bool accepting) {
  const ErrorQueueScope scope;
  // On a blocking socket SSL_read would wait inside the loop for a whole record.
  if (fd >= 0 && evutil_make_socket_nonblocking(fd) != 0) {
    evutil_closesocket(fd);
    return nullptr;
  }
  SSL* ssl = SSL_new(ctx_);  // takes a reference on ctx_
  if (ssl == nullptr) {
    if (fd >= 0) evutil_closesocket(fd);
    return nullptr;
  }
  // With CLOSE_ON_FREE, freeing the bufferevent frees the SSL and closes the socket.
  bufferevent* bev = bufferevent_openssl_socket_new(
      base, fd, ssl, accepting ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
      BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
  if (bev == nullptr) return nullptr;  // see the design note: nothing to free safely
  // A peer that just closes TCP (all of ours do) is an EOF, not an error.
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
  return bev;
}

std::string TlsContext::lastError(bufferevent* bev) {
  SSL* ssl = bev == nullptr ? nullptr : bufferevent_openssl_get_ssl(bev);
  if (ssl == nullptr) return "";
  // libevent hands its saved errors back newest first; the oldest is the root cause.
  // Some libevent versions also save the bare SSL_ERROR_* code, which has no library:
  // skip those.
  std::string reason;
  for (unsigned long code; (code = bufferevent_get_openssl_error(bev)) != 0;) {
    if (ERR_GET_LIB(code) != 0) reason = describe(code);
  }
  // "certificate verify failed" alone does not say what was wrong with it.
  const long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) {
    const std::string detail = X509_verify_cert_error_string(verify);
    reason = reason.empty() ? detail : reason + ": " + detail;
  }
  return reason;
}

std::string TlsContext::peerCommonName(bufferevent* bev) {
  SSL* ssl = bev == nullptr ? nullptr : bufferevent_openssl_get_ssl(bev);
  if (ssl == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return "";
  const ErrorQueueScope scope;
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr) return "";
  X509_NAME* subject = X509_get_subject_name(cert);
  const int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (index < 0) return "";
  unsigned char* utf8 = nullptr;
  const int length =
      ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index)));
  if (length < 0) return "";
  std::string name(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length));
  OPENSSL_free(utf8);
  for (char& c : name) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return name;
}

}  // namespace zetian::cluster::transport
