// What every zetianctl command is built from: the options of the command line, the
// exit status, one request to the health socket, and the ways a command reports an
// answer it cannot use.
//
// A command prints its result on stdout and every complaint on stderr, each line
// starting "zetianctl: ", and returns the exit status; nothing here exits or throws.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "milter/ctl_client.h"
#include "milter/ctl_output.h"

namespace zetian::milter::ctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;
inline constexpr std::chrono::milliseconds kDefaultTimeout{5000};

struct Options {
  std::string socket;
  bool json = false;
  std::chrono::milliseconds timeout = kDefaultTimeout;
  bool timeout_given = false;  // --timeout: also for Raft changes
  std::optional<std::uint64_t> base_version;  // policy apply --base-version
  std::optional<std::string> rule;
  std::optional<std::string> key;
  std::optional<std::size_t> limit;  // limits show: most counters listed
  std::vector<std::string> words;  // the command and its arguments
};

struct Exchange {
  std::string what;  // "GET /health", for messages
  HttpReply reply;
  std::optional<Json> doc;  // the body, if it is JSON
  std::string parse_error;
  bool success() const { return reply.status >= 200 && reply.status < 300; }
};

// `method target` to the health socket, or nullopt after saying why no reply came.
std::optional<Exchange> request(const Options& options, std::string_view method,
                                const std::string& target, std::string_view body = {});

// Prints what the server said about a failure: its "error" and "errors" lines if the
// body is JSON, otherwise the status and the first line of the body.
void printServerErrors(const Exchange& ex);

// What to do next after a refusal of the replicated policy's endpoints (the server's
// own message names what happened).
void printNextStep(const Exchange& ex);

// The JSON object a command needs, or nullptr after saying why there is none.
const Json* requireObject(const Exchange& ex);

// A change asked of the server ({"ok":true,...} or {"ok":false,"errors":[...]}): `done`
// turns the accepted reply into the line to print; a refusal prints `refused`, the
// server's errors and what to do next.
int mutation(const Options& options, const std::string& target,
             const std::function<std::string(const Json&)>& done, const std::string& refused,
             std::string_view method = "POST", std::string_view body = {});

}  // namespace zetian::milter::ctl
