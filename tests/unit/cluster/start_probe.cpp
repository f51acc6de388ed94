// Starts a HealthServer on the socket path given as argv[1] and prints start()'s error.
// The permission tests run it as an unprivileged user (root ignores permissions).
// Exit status: 0 started, 1 refused (error on stderr).
#include <cstdio>
#include <future>
#include <string>

#include "cluster/health_server.h"
#include "cluster/loop.h"

namespace {

class NoEngine : public zetian::cluster::AdminApi {
 public:
  zetian::cluster::AdminReply health() override { return {}; }
  zetian::cluster::AdminReply live() override { return {}; }
  zetian::cluster::AdminReply ready() override { return {}; }
  zetian::cluster::AdminReply metrics() override { return {}; }
  zetian::cluster::AdminReply reload() override { return {}; }
  zetian::cluster::AdminReply limitsShow(const zetian::cluster::LimitsQuery&) override { return {}; }
  zetian::cluster::AdminReply limitsReset(const std::string&, const std::string&) override { return {}; }
  zetian::cluster::AdminReply maintenance(bool) override { return {}; }
  void policyGetAsync(std::function<void(zetian::cluster::AdminReply)> respond) override { respond({}); }
  void policyPutAsync(std::string, std::optional<std::uint64_t>,
                      std::function<void(zetian::cluster::AdminReply)> respond) override {
    respond({});
  }
  zetian::cluster::AdminReply policyHistory() override { return {}; }
  void clusterRemoveAsync(const std::string&, std::function<void(zetian::cluster::AdminReply)> respond) override {
    respond({});
  }
  void clusterTransferLeaderAsync(const std::string&,
                                  std::function<void(zetian::cluster::AdminReply)> respond) override {
    respond({});
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fputs("usage: start_probe SOCKET\n", stderr);
    return 2;
  }
  NoEngine engine;
  zetian::cluster::Loop loop;
  loop.start();
  std::promise<std::string> result;
  loop.post([&] {
    zetian::cluster::HealthServerOptions options;
    options.unix_path = argv[1];
    zetian::cluster::HealthServer server(loop.base(), engine, options);
    std::string error;
    result.set_value(server.start(&error) ? std::string() : error);
  });
  const std::string error = result.get_future().get();
  loop.stop();
  if (error.empty()) return 0;
  std::fprintf(stderr, "%s\n", error.c_str());
  return 1;
}
