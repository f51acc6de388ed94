// Postfix policy delegation, the middle layer: from the requests of many policy
// connections to engine sessions and back to one answer per request. No sockets: the
// server (policy_server.h) owns the connections and the event loop, hands each parsed
// request here and writes the answer it gets back.
//
// The engine's session is an SMTP connection (connect and HELO once, then messages,
// each ended by a reset), as the milter host feeds it. Postfix's policy requests do not
// say when an SMTP connection starts or ends, and name a message transaction
// (`instance`) only from RCPT on (docs/policy-host.md, "What Postfix 3.7 sends"). So:
//
// - A session is keyed by the SMTP connection's four-tuple (client_address, client_port,
//   server_address, server_port), unique among the connections open at one time.
//   Without client_port (a Postfix that does not send it) the key is the policy
//   connection, which serves one SMTP session at a time.
// - A transaction ends, and the session is reset, when `instance` changes, when a new
//   MAIL request comes after a mail check, and after END-OF-MESSAGE.
// - A session ends when the policy connection that last used it asks about another SMTP
//   connection (one smtpd process serves one client at a time, so it moved on), when
//   it has not been used for session_timeout, or when the table is full (the least
//   recently used one goes).
// - Catch-up: a request runs the stages that came before it and were not checked yet,
//   in order (connect, helo, mail; data before END-OF-MESSAGE). A site that hooks only
//   smtpd_recipient_restrictions thus gets connect and helo rules once per SMTP
//   connection and mail rules once per message, as behind the milter.
// - A denial at connect or helo answers every later request of the SMTP connection (as
//   Postfix refuses every command after a milter's connect-stage tempfail); a denial at
//   mail or data answers every later request of the transaction.
// - A request identical to the one before it on the same session, inside a transaction
//   named by `instance` (Postfix asks once per restriction list that names us, and with
//   smtpd_delay_reject = yes they all come at RCPT with the same attributes), gets the
//   same answer without a second charge. recipient_count is part of the comparison, so
//   a client that repeats an accepted recipient is counted again, as behind the milter.
//   Before RCPT there is no instance, and identical MAIL requests are two messages.
//   A stage already checked in the SMTP connection (a second CONNECT, the same HELO) is
//   not charged again.
// - Tag and quarantine rules leave marks (zetian_session_eom): the first request that
//   may carry them answers HOLD (once per message), then PREPEND, one header per
//   request, as one request gets one action. Postfix refuses PREPEND at END-OF-MESSAGE,
//   so a header still waiting then is dropped and counted.
//
// Threads: every method runs on the server's loop thread. Checks are asynchronous
// (zetian_session_check_async): one decided on this node completes inline; one waiting
// for another node completes later through `post`, which must queue the closure for
// the loop thread. A session runs one request at a time; requests for a busy session
// wait in its queue.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "milter/policy_action.h"
#include "milter/policy_request.h"
#include "plugin/zetian.h"

namespace zetian::milter::policy {

// What an answer was, for the metrics' action label.
enum class AnswerKind { Dunno, Tempfail, DeferIfPermit, Reject, Prepend, Hold };
inline constexpr std::size_t kAnswerKinds = 6;
const char* answerKindName(AnswerKind kind);

struct Answer {
  std::string text;  // "action=...\n\n"
  AnswerKind kind = AnswerKind::Dunno;
  bool repeated = false;  // the same answer as the identical request before it
};

struct HostOptions {
  std::size_t max_sessions = 100000;
  std::chrono::milliseconds session_timeout{std::chrono::minutes(10)};
  ActionOptions action;
};

struct HostCounters {
  std::uint64_t sessions_opened = 0;
  std::uint64_t sessions_expired = 0;    // unused for session_timeout
  std::uint64_t sessions_evicted = 0;    // the table was full
  std::uint64_t sessions_ended = 0;      // their policy connection moved to another client
  std::uint64_t headers_dropped = 0;     // a tag header still waiting at END-OF-MESSAGE
  std::uint64_t repeats = 0;             // requests answered as the identical one before
};

class Host {
 public:
  using Clock = std::chrono::steady_clock;
  using Done = std::function<void(const Answer&)>;
  using Post = std::function<void(std::function<void()>)>;

  // `engine` outlives the Host. Must be built on the loop thread.
  Host(zetian_engine* engine, HostOptions options, Post post);
  // Closes every session with no check in flight. Sessions still waiting for a check
  // are left to the engine (it may not close them before their callback has run).
  ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  // Answer one request from policy connection `connection`: `done` runs exactly once,
  // inline or later on the loop thread, unless the Host is destroyed first.
  void handle(std::uint64_t connection, PolicyView view, Clock::time_point now, Done done);

  // The policy connection closed: forget which session it last used.
  void connectionClosed(std::uint64_t connection);

  // Close the sessions unused for session_timeout. Returns how many.
  std::size_t expire(Clock::time_point now);

  std::size_t sessions() const { return sessions_.size(); }
  // Checks sent to the engine whose verdict has not come back yet.
  std::size_t inFlight() const { return in_flight_; }
  const HostCounters& counters() const { return counters_; }

 private:
  enum class Step { Connect, Helo, Mail, Rcpt, Data, Eom };
  struct Session;
  struct Job;
  struct Shared;

  Session* sessionFor(std::uint64_t connection, const PolicyView& view, Clock::time_point now);
  void closeSession(Session* session);
  void start(std::unique_ptr<Job> job);
  void run(std::unique_ptr<Job> job);
  void checked(std::unique_ptr<Job> job, Step step, const zetian_verdict& verdict);
  static void passed(Session& session, Step step, const PolicyView& view);
  void finish(std::unique_ptr<Job> job, Answer answer);
  Answer answerFor(Session& session, bool end_of_message);
  void endTransaction(Session& session);
  static void onChecked(void* ctx, const zetian_verdict* verdict, int action);

  zetian_engine* engine_;
  HostOptions options_;
  std::shared_ptr<Shared> shared_;  // with every Job: its check's callback posts through it
  std::thread::id loop_thread_;
  std::unordered_map<std::string, std::unique_ptr<Session>> sessions_;
  std::list<Session*> lru_;  // least recently used first
  std::unordered_map<std::uint64_t, std::string> connection_session_;  // its last session's key
  std::size_t in_flight_ = 0;
  HostCounters counters_;
};

}  // namespace zetian::milter::policy
