// PeerLink over real sockets (socketpair) on one event_base: admission, authenticated
// frames, and what closes a link: tampering, oversized frames before admission, a
// silent peer, a peer that never reads (backpressure).
#include "cluster/transport/peer_link.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace zetian::cluster::transport {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kSecret = "peer-link-test-secret-0123456789";

wire::NodeIdentity identity(const std::string& id) { return {id, id + ":7946", "zetian", "", 1}; }

struct Recorder : PeerLink::Owner {
  bool established = false;
  std::vector<wire::Message> messages;
  std::string closed_reason;
  bool closed = false;
  bool refused = false;
  int writable = 0;
  void onLinkEstablished(PeerLink&) override { established = true; }
  void onLinkMessage(PeerLink&, const wire::Message& m) override { messages.push_back(m); }
  void onLinkClosed(PeerLink&, const std::string& reason, bool was_refused) override {
    closed = true;
    closed_reason = reason;
    refused = was_refused;
  }
  void onLinkWritable(PeerLink&) override { ++writable; }
};

class PeerLinkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = event_base_new();
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds_), 0);
  }
  void TearDown() override { event_base_free(base_); }

  // A link on fds_[i]; fds_[i] belongs to it from now on.
  std::unique_ptr<PeerLink> makeLink(int i, PeerLink::Role role, Recorder& owner, LinkLimits limits = {},
                                     std::string_view secret = kSecret) {
    evutil_make_socket_nonblocking(fds_[i]);
    bufferevent* bev = bufferevent_socket_new(base_, fds_[i], BEV_OPT_CLOSE_ON_FREE);
    auto link = std::make_unique<PeerLink>(bev, role, false, "test", identity(i == 0 ? "a" : "b"), secret, owner,
                                           limits);
    link->start();
    if (role == PeerLink::Role::Initiator) {
      // bufferevent_socket_connect was not used: say "connected" as it would.
      bufferevent_trigger_event(bev, BEV_EVENT_CONNECTED, 0);
    }
    return link;
  }

  bool runUntil(const std::function<bool()>& done, std::chrono::milliseconds deadline = 5s) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (!done()) {
      if (std::chrono::steady_clock::now() > until) return false;
      timeval tick{0, 10'000};
      event_base_loopexit(base_, &tick);
      event_base_loop(base_, EVLOOP_ONCE);
    }
    return true;
  }

  event_base* base_ = nullptr;
  int fds_[2] = {-1, -1};
};

TEST_F(PeerLinkTest, BothEndsAreAdmittedAndExchangeAuthenticatedFrames) {
  Recorder ra, rb;
  auto a = makeLink(0, PeerLink::Role::Initiator, ra);
  auto b = makeLink(1, PeerLink::Role::Acceptor, rb);
  ASSERT_TRUE(runUntil([&] { return ra.established && rb.established; }));
  EXPECT_EQ(a->peer().node_id, "b");
  EXPECT_EQ(b->peer().node_id, "a");
  EXPECT_EQ(a->handshakeFailure(), std::nullopt);
  EXPECT_EQ(b->handshakeFailure(), std::nullopt);
  EXPECT_TRUE(a->send(wire::Heartbeat{7, 1, 2, 3}));
  EXPECT_TRUE(b->send(wire::ProbeRequest{9, "c"}));
  ASSERT_TRUE(runUntil([&] { return ra.messages.size() == 1 && rb.messages.size() == 1; }));
  EXPECT_EQ(std::get<wire::Heartbeat>(rb.messages[0]).sequence, 7u);
  EXPECT_EQ(std::get<wire::ProbeRequest>(ra.messages[0]).target, "c");
  EXPECT_FALSE(ra.closed || rb.closed);
}

TEST_F(PeerLinkTest, AWrongSecretIsRefusedOnBothSidesAndNobodyIsAdmitted) {
  Recorder ra, rb;
  auto a = makeLink(0, PeerLink::Role::Initiator, ra, {}, "another-secret-0123456789abcdef");
  auto b = makeLink(1, PeerLink::Role::Acceptor, rb);
  ASSERT_TRUE(runUntil([&] { return ra.closed && rb.closed; }));
  EXPECT_TRUE(ra.refused);
  EXPECT_EQ(ra.closed_reason, "bad MAC");
  EXPECT_EQ(a->handshakeFailure(), RefusalKind::bad_mac);
  EXPECT_FALSE(ra.established || rb.established);
  EXPECT_TRUE(b->peer().node_id.empty());
}

TEST_F(PeerLinkTest, AFrameWithABadTagClosesTheLink) {
  Recorder ra, rb;
  int raw = dup(fds_[0]);  // the initiator's socket, to inject bytes as if from it
  auto a = makeLink(0, PeerLink::Role::Initiator, ra);
  auto b = makeLink(1, PeerLink::Role::Acceptor, rb);
  ASSERT_TRUE(runUntil([&] { return ra.established && rb.established; }));
  std::string forged = wire::encode(wire::Heartbeat{1, 2, 3, 4}) + std::string(wire::kMacBytes, '\0');
  ASSERT_EQ(write(raw, forged.data(), forged.size()), static_cast<ssize_t>(forged.size()));
  ASSERT_TRUE(runUntil([&] { return rb.closed; }));
  EXPECT_NE(rb.closed_reason.find("frame authentication failed"), std::string::npos) << rb.closed_reason;
  EXPECT_TRUE(rb.messages.empty());
  close(raw);
}

TEST_F(PeerLinkTest, AnOversizedFrameBeforeAdmissionIsRefusedFromItsPrefix) {
  Recorder rb;
  auto b = makeLink(1, PeerLink::Role::Acceptor, rb);
  const unsigned char prefix[] = {0x00, 0x10, 0x00, 0x00, 0x01, 0x01};  // 1 MiB announced
  ASSERT_EQ(write(fds_[0], prefix, sizeof prefix), static_cast<ssize_t>(sizeof prefix));
  ASSERT_TRUE(runUntil([&] { return rb.closed; }));
  EXPECT_NE(rb.closed_reason.find("before admission"), std::string::npos) << rb.closed_reason;
  EXPECT_EQ(b->handshakeFailure(), RefusalKind::garbage);
  close(fds_[0]);
}

TEST_F(PeerLinkTest, GarbageBeforeAdmissionClosesTheLinkWithAReason) {
  Recorder rb;
  auto b = makeLink(1, PeerLink::Role::Acceptor, rb);
  const char garbage[] = "\x00\x00\x00\x05\x07\x63garbage";
  ASSERT_EQ(write(fds_[0], garbage, sizeof garbage - 1), static_cast<ssize_t>(sizeof garbage - 1));
  ASSERT_TRUE(runUntil([&] { return rb.closed; }));
  EXPECT_NE(rb.closed_reason.find("undecodable frame"), std::string::npos) << rb.closed_reason;
  EXPECT_EQ(b->handshakeFailure(), RefusalKind::garbage);
  close(fds_[0]);
}

TEST_F(PeerLinkTest, ASilentPeerIsDroppedAtTheHandshakeTimeout) {
  Recorder rb;
  LinkLimits limits;
  limits.handshake_timeout = 100ms;
  auto b = makeLink(1, PeerLink::Role::Acceptor, rb, limits);
  ASSERT_TRUE(runUntil([&] { return rb.closed; }, 5s));
  EXPECT_NE(rb.closed_reason.find("no handshake within 100 ms"), std::string::npos) << rb.closed_reason;
  EXPECT_EQ(b->handshakeFailure(), RefusalKind::handshake_timeout);
  close(fds_[0]);
}

TEST_F(PeerLinkTest, APeerThatHangsUpInTheHandshakeGaveUp) {
  Recorder rb;
  auto b = makeLink(1, PeerLink::Role::Acceptor, rb);
  close(fds_[0]);
  ASSERT_TRUE(runUntil([&] { return rb.closed; }));
  EXPECT_FALSE(rb.refused);
  EXPECT_EQ(b->handshakeFailure(), RefusalKind::gave_up);
}

TEST_F(PeerLinkTest, APeerThatNeverReadsGetsBulkRefusedThenTheLinkClosed) {
  // The other end: a plain blocking socket that completes the handshake by hand, then
  // never reads again.
  std::thread peer([fd = fds_[1]] {
    wire::Acceptor acceptor(identity("b"), kSecret, randomNonce);
    std::string buffer;
    char chunk[4096];
    while (!std::holds_alternative<wire::Established>(acceptor.state()) &&
           !std::holds_alternative<wire::Refused>(acceptor.state())) {
      const ssize_t n = read(fd, chunk, sizeof chunk);
      if (n <= 0) return;
      buffer.append(chunk, static_cast<std::size_t>(n));
      while (true) {
        const wire::DecodeResult r = wire::decode(buffer);
        if (r.status != wire::DecodeStatus::Ok) break;
        buffer.erase(0, r.bytes_consumed);
        for (const auto& reply : acceptor.receive(r.message).send) {
          const std::string bytes = wire::encode(reply);
          if (write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) return;
        }
      }
    }
  });
  Recorder ra;
  LinkLimits limits;
  limits.low_watermark = 4 << 10;
  limits.high_watermark = 16 << 10;
  limits.hard_limit = 256 << 10;
  auto a = makeLink(0, PeerLink::Role::Initiator, ra, limits);
  const bool admitted = runUntil([&] { return ra.established; });
  peer.join();
  ASSERT_TRUE(admitted);

  wire::MemberList bulk;
  for (int i = 0; i < 20; ++i) bulk.members.push_back({std::string(500, 'm'), "addr", "", wire::NodeStatus::Active, 1});
  int bulk_sent = 0;
  while (a->send(bulk, PeerLink::Priority::Bulk)) {
    ++bulk_sent;
    event_base_loop(base_, EVLOOP_NONBLOCK);  // let the kernel take what it will
    ASSERT_LT(bulk_sent, 100'000);
  }
  EXPECT_TRUE(a->congested());
  EXPECT_GT(a->queuedBytes(), limits.high_watermark);
  // Control messages still go, until the queue passes the hard limit.
  int control_sent = 0;
  while (a->send(wire::Goodbye{std::string(1000, 'g')})) {
    ++control_sent;
    ASSERT_LT(control_sent, 100'000);
  }
  EXPECT_TRUE(ra.closed);
  EXPECT_NE(ra.closed_reason.find("the peer is not reading"), std::string::npos) << ra.closed_reason;
  close(fds_[1]);
}

}  // namespace
}  // namespace zetian::cluster::transport
