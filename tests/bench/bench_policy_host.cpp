// The policy host's own cost per request, without sockets: what the policy thread
// spends between a parsed request and its answer (policy::Host over a real engine, one
// node rule that never denies, as in postfix_throughput.py's policy mode). Parsing is
// measured apart, on the 29 attributes Postfix 3.7 sends.
//
//   BM_PolicyHostNewSession   one RCPT request per SMTP connection (smtp-source's
//                             pattern): a session opened, connect, helo, mail and rcpt
//                             checked, the connection's previous session closed
//   BM_PolicyHostNextRecipient another recipient of the same message: rcpt only
//   BM_PolicyHostRepeat       the same request again (another restriction list)
//   BM_PolicyParseAndView     the request's bytes to a PolicyView
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "milter/policy_host.h"
#include "milter/policy_request.h"

namespace {

using namespace zetian::milter::policy;

struct Fixture {
  Fixture() {
    char pattern[] = "/tmp/bench_policy_host.XXXXXX";
    dir = mkdtemp(pattern);
    const std::string path = dir + "/zetian.toml";
    std::ofstream(path) << "[log]\nlevel = \"info\"\ntarget = \"stderr\"\n"
                        << "[health]\nsocket = \"" << dir << "/health.sock\"\n"
                        << "[ratelimit]\nexempt = []\n[[ratelimit.rule]]\nname = \"per-client-ip\"\n"
                        << "key = \"client_ip\"\nstage = \"mail\"\nlimit = 100000000\nperiod = \"1h\"\n";
    engine = zetian_engine_open(path.c_str(), nullptr, 0, nullptr, nullptr);
    if (!engine) std::abort();
    host = std::make_unique<Host>(engine, HostOptions{}, [](std::function<void()>) { std::abort(); });
  }
  ~Fixture() {
    host.reset();
    zetian_engine_close(engine);
    std::error_code ignored;  // a benchmark's scratch folder: nothing to do if it cannot go
    std::filesystem::remove_all(dir, ignored);
  }
  std::string dir;
  zetian_engine* engine = nullptr;
  std::unique_ptr<Host> host;
};

const char kRequest[] =
    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=192.0.2.7\n"
    "client_name=unknown\nclient_port=40000\nreverse_client_name=unknown\nserver_address=127.0.0.1\n"
    "server_port=25\nhelo_name=client.example\nsender=sender@example.org\nrecipient=rcpt@example.net\n"
    "recipient_count=0\nqueue_id=\ninstance=1f2e.674b8a3c.5d1e2.0\nsize=0\netrn_domain=\nstress=\n"
    "sasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\nccert_issuer=\nccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\nencryption_protocol=\nencryption_cipher=\nencryption_keysize=0\n"
    "policy_context=\n\n";

PolicyView baseView() {
  RequestParser parser;
  parser.feed(kRequest);
  return *viewOf(parser.takeRequest());
}

void BM_PolicyHostNewSession(benchmark::State& state) {
  Fixture f;
  PolicyView v = baseView();
  std::uint32_t port = 1;
  for (auto _ : state) {
    v.client_port = port;
    v.instance = std::to_string(port);
    ++port;
    f.host->handle(1, v, Host::Clock::now(), [](const Answer& a) { benchmark::DoNotOptimize(a.kind); });
  }
}
BENCHMARK(BM_PolicyHostNewSession);

void BM_PolicyHostNextRecipient(benchmark::State& state) {
  Fixture f;
  PolicyView v = baseView();
  std::uint64_t count = 0;
  for (auto _ : state) {
    v.recipient_count = count++;
    f.host->handle(1, v, Host::Clock::now(), [](const Answer& a) { benchmark::DoNotOptimize(a.kind); });
  }
}
BENCHMARK(BM_PolicyHostNextRecipient);

void BM_PolicyHostRepeat(benchmark::State& state) {
  Fixture f;
  const PolicyView v = baseView();
  for (auto _ : state)
    f.host->handle(1, v, Host::Clock::now(), [](const Answer& a) { benchmark::DoNotOptimize(a.kind); });
}
BENCHMARK(BM_PolicyHostRepeat);

void BM_PolicyParseAndView(benchmark::State& state) {
  RequestParser parser;
  for (auto _ : state) {
    parser.feed(kRequest);
    auto view = viewOf(parser.takeRequest());
    benchmark::DoNotOptimize(view);
  }
}
BENCHMARK(BM_PolicyParseAndView);

}  // namespace

BENCHMARK_MAIN();
