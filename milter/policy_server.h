// The Postfix policy delegation server (check_policy_service): one thread running its
// own libevent loop for every policy connection, in front of policy::Host.
//
// A connection is read in bounded pieces into the request parser; one request is
// answered at a time (a pipelined next request waits in the connection's buffer, and
// the connection is not read while an answer is pending), so a connection holds at most
// one request and one read piece. A malformed request, a request that does not finish
// within request_timeout and a connection silent for idle_timeout are closed and
// counted; the first two are logged (at most one line per kind every 10 s). Past
// max_connections a new connection is closed at once. accept() out of descriptors
// pauses the listener for 100 ms instead of spinning.
//
// Checks are asynchronous: a cluster-scope check waiting for its owner leaves every
// other connection served. Their verdicts come back from the engine's thread through a
// mailbox that wakes the loop (an eventfd).
//
// Figures for /health ("policy_host") and /metrics come through the engine's reporter
// hook (zetian_engine_set_reporter), read from atomics so the engine's health thread
// never waits for this loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "milter/policy_host.h"
#include "plugin/zetian.h"

namespace zetian::milter::policy {

struct ServerOptions {
  std::string socket;  // libmilter's syntax: inet:PORT@HOST, inet6:PORT@HOST, unix:/path
  std::size_t max_connections = 1000;
  std::chrono::milliseconds idle_timeout{std::chrono::minutes(10)};
  std::chrono::milliseconds request_timeout{std::chrono::seconds(10)};
  HostOptions host;
};

// The options from the engine's [policy] settings (zetian_engine_option). nullopt and
// *error when they are missing or not numbers (an engine without the policy host).
std::optional<ServerOptions> serverOptionsOf(zetian_engine* engine, std::string* error);

class Server {
 public:
  // Open the listening socket (after dropping privileges, under the configured umask,
  // so a Unix socket gets the milter user's owner and mode). nullptr and *error when
  // it cannot be opened.
  static std::unique_ptr<Server> open(zetian_engine* engine, ServerOptions options, std::string* error);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Start the loop thread. Block the signals the process waits for elsewhere first.
  void start();
  // Stop listening, close every connection, wait (at most 10 s) for the checks in
  // flight, close the sessions and join the thread. Idempotent; not from the loop.
  void stop();

  // The port an inet socket is bound to (useful with port 0), or 0.
  int boundPort() const;
  // Whether this server created a Unix socket file (the caller removes it at exit).
  bool createdUnixSocket() const;

  // A zetian_report_fn: ctx is the Server.
  static void report(void* ctx, int what, zetian_append_fn append, void* sink);

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace zetian::milter::policy
