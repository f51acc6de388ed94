// TlsContext over real sockets (loopback TCP and socket pairs) on a test-owned
// event_base, with certificates made by tests/support/make_test_certs.sh. Nothing waits
// by sleeping: runUntil() turns the loop until a condition holds or 10 s have passed.
#include "cluster/transport/tls.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

#include "tests/unit/cluster/test_support.h"

namespace zetian::cluster::transport {
namespace {

using SslCtxPtr = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;

// What one end of a connection saw.
class Endpoint {
 public:
  Endpoint() = default;
  ~Endpoint() { release(); }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;

  void attach(bufferevent* bev) {
    ASSERT_NE(bev, nullptr);
    bev_ = bev;
    bufferevent_setcb(bev_, &Endpoint::onRead, nullptr, &Endpoint::onEvent, this);
    bufferevent_enable(bev_, EV_READ | EV_WRITE);
  }
  void release() {
    if (bev_ != nullptr) bufferevent_free(bev_);
    bev_ = nullptr;
  }
  void send(const std::string& bytes) { bufferevent_write(bev_, bytes.data(), bytes.size()); }

  bufferevent* bev() const { return bev_; }
  SSL* ssl() const { return bufferevent_openssl_get_ssl(bev_); }
  bool finished() const { return eof || error; }

  std::string received;
  bool connected = false;
  bool eof = false;
  bool error = false;
  std::string tls_error;  // TlsContext::lastError() at the error event
  std::string peer_cn;    // TlsContext::peerCommonName() at the connected event

 private:
  static void onRead(bufferevent* bev, void* arg) {
    auto* self = static_cast<Endpoint*>(arg);
    evbuffer* input = bufferevent_get_input(bev);
    const std::size_t length = evbuffer_get_length(input);
    std::string chunk(length, '\0');
    evbuffer_remove(input, chunk.data(), length);
    self->received += chunk;
  }
  static void onEvent(bufferevent* bev, short what, void* arg) {
    auto* self = static_cast<Endpoint*>(arg);
    if (what & BEV_EVENT_CONNECTED) {
      self->connected = true;
      self->peer_cn = TlsContext::peerCommonName(bev);
    }
    if (what & BEV_EVENT_EOF) self->eof = true;
    if (what & BEV_EVENT_ERROR) {
      self->error = true;
      self->tls_error = TlsContext::lastError(bev);
    }
  }

  bufferevent* bev_ = nullptr;
};

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // OpenSSL writes with write(2): a peer that hung up would kill the test binary.
    // The cluster's loop thread blocks SIGPIPE for the same reason.
    signal(SIGPIPE, SIG_IGN);
    pki_ = new cluster::testing::TempDir();
    const std::string command =
        std::string("/bin/sh '") + MAKE_TEST_CERTS_PATH + "' '" + pki_->path() + "'";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  static std::string pki(const std::string& name) { return pki_->file(name); }
  static conf::ClusterTls files(const std::string& node, const std::string& ca = "ca") {
    return conf::ClusterTls{pki(node + ".crt"), pki(node + ".key"), pki(ca + ".crt")};
  }
  static std::unique_ptr<TlsContext> context(const std::string& node,
                                             const std::string& ca = "ca") {
    std::string error;
    auto created = TlsContext::create(files(node, ca), &error);
    EXPECT_NE(created, nullptr) << error;
    return created;
  }
  static std::string createError(const conf::ClusterTls& tls) {
    std::string error;
    EXPECT_EQ(TlsContext::create(tls, &error), nullptr);
    EXPECT_EQ(ERR_peek_error(), 0u) << "create() left errors on the thread's queue";
    return error;
  }

  // A client SSL_CTX made by hand, for peers TlsContext would never be: no
  // certificate, or an older protocol. Trusts the cluster CA.
  static SslCtxPtr handMadeClient(bool with_certificate, int max_version) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
    EXPECT_EQ(SSL_CTX_load_verify_locations(ctx.get(), pki("ca.crt").c_str(), nullptr), 1);
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_max_proto_version(ctx.get(), max_version);
    if (with_certificate) {
      EXPECT_EQ(SSL_CTX_use_certificate_chain_file(ctx.get(), pki("node2.crt").c_str()), 1);
      EXPECT_EQ(SSL_CTX_use_PrivateKey_file(ctx.get(), pki("node2.key").c_str(),
                                            SSL_FILETYPE_PEM), 1);
    }
    return ctx;
  }

  // Turns the loop until done() holds; false if it still does not after 10 s.
  bool runUntil(const std::function<bool()>& done) {
    bool expired = false;
    event* deadline = evtimer_new(
        base_.get(), [](evutil_socket_t, short, void* flag) { *static_cast<bool*>(flag) = true; },
        &expired);
    const timeval ten_seconds{10, 0};
    evtimer_add(deadline, &ten_seconds);
    while (!done() && !expired) event_base_loop(base_.get(), EVLOOP_ONCE);
    event_free(deadline);
    return done();
  }

  // server_ and client_ over a fresh socket pair (wrapConnecting with a given fd).
  void connectPair(TlsContext& server_side, TlsContext& client_side) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    server_.attach(server_side.wrapAccepted(base_.get(), fds[0]));
    client_.attach(client_side.wrapConnecting(base_.get(), fds[1]));
  }
  void connectPair(TlsContext& server_side, SSL_CTX* client_side) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    server_.attach(server_side.wrapAccepted(base_.get(), fds[0]));
    // libevent does not do this for us (wrap() does): a blocking socket would hang
    // the loop inside SSL_read.
    ASSERT_EQ(evutil_make_socket_nonblocking(fds[1]), 0);
    client_.attach(bufferevent_openssl_socket_new(base_.get(), fds[1], SSL_new(client_side),
                                                  BUFFEREVENT_SSL_CONNECTING,
                                                  BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS));
  }

  bool handshakeFailedOnBothEnds() {
    return runUntil([&] { return server_.finished() && client_.finished(); });
  }

  static cluster::testing::TempDir* pki_;
  // Declared first, so it is freed after the endpoints' bufferevents.
  std::unique_ptr<event_base, decltype(&event_base_free)> base_{event_base_new(),
                                                               &event_base_free};
  Endpoint server_;
  Endpoint client_;
};

cluster::testing::TempDir* TlsTest::pki_ = nullptr;

// --- create() ---------------------------------------------------------------------

TEST_F(TlsTest, CreateNamesAMissingFileAndTheSettingToFix) {
  const std::string missing = pki("absent.pem");
  for (const char* setting : {"cert", "key", "ca"}) {
    conf::ClusterTls tls = files("node1");
    std::string& path = setting == std::string("cert")  ? tls.cert
                        : setting == std::string("key") ? tls.key
                                                        : tls.ca;
    path = missing;
    const std::string error = createError(tls);
    EXPECT_NE(error.find("cannot read " + missing + ": No such file or directory"),
              std::string::npos)
        << error;
    EXPECT_NE(error.find(std::string("check [cluster.tls] ") + setting), std::string::npos)
        << error;
  }
}

TEST_F(TlsTest, CreateRefusesAKeyThatDoesNotBelongToTheCertificate) {
  conf::ClusterTls tls = files("node1");
  tls.key = pki("node2.key");
  const std::string error = createError(tls);
  EXPECT_NE(error.find(pki("node2.key") + " does not belong to the certificate in " +
                       pki("node1.crt")),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("check [cluster.tls] key"), std::string::npos) << error;
}

TEST_F(TlsTest, CreateRefusesGarbageAndNamesTheFile) {
  const std::string garbage = pki("garbage.pem");
  std::ofstream(garbage) << "-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                            "-----END CERTIFICATE-----\nplain text\n";
  for (const char* setting : {"cert", "key", "ca"}) {
    conf::ClusterTls tls = files("node1");
    std::string& path = setting == std::string("cert")  ? tls.cert
                        : setting == std::string("key") ? tls.key
                                                        : tls.ca;
    path = garbage;
    const std::string error = createError(tls);
    EXPECT_EQ(error.rfind(garbage + " holds no ", 0), 0u) << error;
    EXPECT_NE(error.find(std::string("check [cluster.tls] ") + setting), std::string::npos)
        << error;
  }
}

TEST_F(TlsTest, CreateRefusesAnEncryptedKeyWithoutAskingForAPassphrase) {
  BIO* in = BIO_new_file(pki("node1.key").c_str(), "r");
  EVP_PKEY* key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  BIO_free(in);
  ASSERT_NE(key, nullptr);
  const std::string encrypted = pki("encrypted.key");
  BIO* out = BIO_new_file(encrypted.c_str(), "w");
  char passphrase[] = "correct horse";
  ASSERT_EQ(PEM_write_bio_PKCS8PrivateKey(out, key, EVP_aes_256_cbc(), passphrase,
                                          sizeof passphrase - 1, nullptr, nullptr),
            1);
  BIO_free(out);
  EVP_PKEY_free(key);

  conf::ClusterTls tls = files("node1");
  tls.key = encrypted;
  const std::string error = createError(tls);
  EXPECT_NE(error.find(encrypted + " is encrypted"), std::string::npos) << error;
}

TEST_F(TlsTest, CreateAcceptsAnExpiredCertificate) {
  // Expiry is the peers' business: the node must start and be refused by them, which
  // says more in their logs than a node that will not start.
  EXPECT_NE(context("expired"), nullptr);
}

// --- connections between cluster members -----------------------------------------

TEST_F(TlsTest, MembersOfOneCaHandshakeOverTcpAndExchangeBytesBothWays) {
  auto node1 = context("node1");
  auto node2 = context("node2");
  ASSERT_TRUE(node1 && node2);

  struct Accepting {
    TlsContext* tls;
    event_base* base;
    Endpoint* server;
  } accepting{node1.get(), base_.get(), &server_};
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::unique_ptr<evconnlistener, decltype(&evconnlistener_free)> listener(
      evconnlistener_new_bind(
          base_.get(),
          [](evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg) {
            auto* a = static_cast<Accepting*>(arg);
            a->server->attach(a->tls->wrapAccepted(a->base, fd));
          },
          &accepting, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 8,
          reinterpret_cast<sockaddr*>(&address), sizeof address),
      &evconnlistener_free);
  ASSERT_NE(listener, nullptr);
  socklen_t length = sizeof address;
  ASSERT_EQ(getsockname(evconnlistener_get_fd(listener.get()),
                        reinterpret_cast<sockaddr*>(&address), &length),
            0);

  client_.attach(node2->wrapConnecting(base_.get(), -1));
  ASSERT_EQ(bufferevent_socket_connect(client_.bev(), reinterpret_cast<sockaddr*>(&address),
                                       sizeof address),
            0);
  ASSERT_TRUE(runUntil([&] { return server_.connected && client_.connected; }))
      << "server: " << server_.tls_error << " client: " << client_.tls_error;

  client_.send("ping from node2");
  server_.send("pong from node1");
  ASSERT_TRUE(runUntil([&] {
    return server_.received == "ping from node2" && client_.received == "pong from node1";
  }));
  EXPECT_EQ(server_.peer_cn, "node2");
  EXPECT_EQ(client_.peer_cn, "node1");
  EXPECT_EQ(TlsContext::peerCommonName(server_.bev()), "node2");
  EXPECT_FALSE(server_.finished());
  EXPECT_FALSE(client_.finished());
}

TEST_F(TlsTest, TheNegotiatedProtocolIsTls13) {
  auto node1 = context("node1");
  auto node2 = context("node2");
  ASSERT_TRUE(node1 && node2);
  connectPair(*node1, *node2);
  ASSERT_TRUE(runUntil([&] { return server_.connected && client_.connected; }));
  EXPECT_EQ(SSL_version(server_.ssl()), TLS1_3_VERSION);
  EXPECT_EQ(SSL_version(client_.ssl()), TLS1_3_VERSION);
}

TEST_F(TlsTest, LargeTransfersArriveIntact) {
  auto node1 = context("node1");
  auto node3 = context("node3");
  ASSERT_TRUE(node1 && node3);
  connectPair(*node1, *node3);
  std::string payload(1 << 20, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 7 % 251);
  client_.send(payload);  // queued before the handshake: sent once it is done
  server_.send(payload);
  ASSERT_TRUE(runUntil([&] {
    return server_.received.size() >= payload.size() && client_.received.size() >= payload.size();
  }));
  EXPECT_TRUE(server_.received == payload);
  EXPECT_TRUE(client_.received == payload);
}

TEST_F(TlsTest, APeerThatJustClosesTheConnectionGivesEofNotAnError) {
  auto node1 = context("node1");
  auto node2 = context("node2");
  ASSERT_TRUE(node1 && node2);
  connectPair(*node1, *node2);
  ASSERT_TRUE(runUntil([&] { return server_.connected && client_.connected; }));
  client_.send("last words");
  ASSERT_TRUE(runUntil([&] { return server_.received == "last words"; }));

  client_.release();  // no close_notify: this is how every node drops a link
  ASSERT_TRUE(runUntil([&] { return server_.finished(); }));
  EXPECT_TRUE(server_.eof);
  EXPECT_FALSE(server_.error) << server_.tls_error;
}

TEST_F(TlsTest, ConnectionsOutliveTheContextThatMadeThem) {
  auto node1 = context("node1");
  auto node2 = context("node2");
  ASSERT_TRUE(node1 && node2);
  connectPair(*node1, *node2);
  node1.reset();  // each SSL holds its own reference on the SSL_CTX
  node2.reset();
  ASSERT_TRUE(runUntil([&] { return server_.connected && client_.connected; }));
  client_.send("still here");
  ASSERT_TRUE(runUntil([&] { return server_.received == "still here"; }));
}

// --- refusals --------------------------------------------------------------------

TEST_F(TlsTest, TheServerRefusesAClientCertificateFromAnotherCa) {
  auto node1 = context("node1");
  auto rogue = context("rogue", "ca");  // trusts our CA, but its own cert is not ours
  ASSERT_TRUE(node1 && rogue);
  connectPair(*node1, *rogue);
  client_.send("application data from a stranger");
  ASSERT_TRUE(handshakeFailedOnBothEnds());

  EXPECT_TRUE(server_.error);
  EXPECT_FALSE(server_.connected);
  EXPECT_EQ(server_.tls_error, "certificate verify failed: unable to get local issuer certificate");
  EXPECT_EQ(server_.received, "");
  // TLS 1.3: the client is done before the server has judged its certificate, so it
  // sees CONNECTED and then the server's alert.
  EXPECT_TRUE(client_.connected);
  EXPECT_TRUE(client_.error);
  EXPECT_NE(client_.tls_error, "");
  EXPECT_EQ(client_.received, "");
}

TEST_F(TlsTest, TheClientRefusesAServerCertificateFromAnotherCa) {
  auto rogue = context("rogue", "ca");
  auto node2 = context("node2");
  ASSERT_TRUE(rogue && node2);
  connectPair(*rogue, *node2);
  server_.send("application data from a stranger");
  ASSERT_TRUE(handshakeFailedOnBothEnds());

  EXPECT_TRUE(client_.error);
  EXPECT_FALSE(client_.connected);
  EXPECT_EQ(client_.tls_error, "certificate verify failed: unable to get local issuer certificate");
  EXPECT_EQ(client_.received, "");
  EXPECT_EQ(client_.peer_cn, "");
  EXPECT_TRUE(server_.error);
  EXPECT_FALSE(server_.connected);
  EXPECT_NE(server_.tls_error, "");
}

TEST_F(TlsTest, AnExpiredClientCertificateIsRefused) {
  auto node1 = context("node1");
  auto expired = context("expired");
  ASSERT_TRUE(node1 && expired);
  connectPair(*node1, *expired);
  client_.send("too late");
  ASSERT_TRUE(handshakeFailedOnBothEnds());
  EXPECT_TRUE(server_.error);
  EXPECT_EQ(server_.tls_error, "certificate verify failed: certificate has expired");
  EXPECT_EQ(server_.received, "");
  EXPECT_TRUE(client_.error);
}

TEST_F(TlsTest, AnExpiredServerCertificateIsRefused) {
  auto expired = context("expired");
  auto node2 = context("node2");
  ASSERT_TRUE(expired && node2);
  connectPair(*expired, *node2);
  ASSERT_TRUE(handshakeFailedOnBothEnds());
  EXPECT_TRUE(client_.error);
  EXPECT_FALSE(client_.connected);
  EXPECT_EQ(client_.tls_error, "certificate verify failed: certificate has expired");
}

TEST_F(TlsTest, AClientWithoutACertificateIsRefused) {
  auto node1 = context("node1");
  ASSERT_NE(node1, nullptr);
  const SslCtxPtr anonymous = handMadeClient(false, TLS1_3_VERSION);
  connectPair(*node1, anonymous.get());
  client_.send("anonymous data");
  ASSERT_TRUE(handshakeFailedOnBothEnds());
  EXPECT_TRUE(server_.error);
  EXPECT_FALSE(server_.connected);
  EXPECT_EQ(server_.tls_error, "peer did not return a certificate");
  EXPECT_EQ(server_.received, "");
}

TEST_F(TlsTest, AClientLimitedToTls12IsRefused) {
  auto node1 = context("node1");
  ASSERT_NE(node1, nullptr);
  const SslCtxPtr old = handMadeClient(true, TLS1_2_VERSION);
  connectPair(*node1, old.get());
  ASSERT_TRUE(handshakeFailedOnBothEnds());
  EXPECT_TRUE(server_.error);
  EXPECT_FALSE(server_.connected);
  EXPECT_NE(server_.tls_error, "");
  EXPECT_TRUE(client_.error);
}

TEST_F(TlsTest, PlainTcpGarbageGivesTheServerAnErrorNotACrash) {
  auto node1 = context("node1");
  ASSERT_NE(node1, nullptr);
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  server_.attach(node1->wrapAccepted(base_.get(), fds[0]));
  const std::string garbage = "GET / HTTP/1.0\r\n\r\n\x16\x03\x01\xff\xff garbage";
  ASSERT_EQ(write(fds[1], garbage.data(), garbage.size()),
            static_cast<ssize_t>(garbage.size()));
  ASSERT_TRUE(runUntil([&] { return server_.finished(); }));
  close(fds[1]);
  EXPECT_TRUE(server_.error);
  EXPECT_FALSE(server_.connected);
  EXPECT_NE(server_.tls_error, "");
  EXPECT_EQ(server_.received, "");
}

// --- diagnostics -----------------------------------------------------------------

TEST_F(TlsTest, DiagnosticsAreEmptyForAPlainBuffereventAndBeforeTheHandshake) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  bufferevent* plain = bufferevent_socket_new(base_.get(), fds[0], BEV_OPT_CLOSE_ON_FREE);
  EXPECT_EQ(TlsContext::lastError(plain), "");
  EXPECT_EQ(TlsContext::peerCommonName(plain), "");
  bufferevent_free(plain);

  auto node1 = context("node1");
  ASSERT_NE(node1, nullptr);
  client_.attach(node1->wrapConnecting(base_.get(), fds[1]));
  EXPECT_EQ(TlsContext::lastError(client_.bev()), "");
  EXPECT_EQ(TlsContext::peerCommonName(client_.bev()), "");
}

}  // namespace
}  // namespace zetian::cluster::transport
