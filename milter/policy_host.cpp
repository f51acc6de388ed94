#include "milter/policy_host.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace zetian::milter::policy {

const char* answerKindName(AnswerKind kind) {
  switch (kind) {
    case AnswerKind::Dunno: return "dunno";
    case AnswerKind::Tempfail: return "tempfail";
    case AnswerKind::DeferIfPermit: return "defer_if_permit";
    case AnswerKind::Reject: return "reject";
    case AnswerKind::Prepend: return "prepend";
    case AnswerKind::Hold: return "hold";
  }
  return "dunno";
}

namespace {

// Dialogue order; a state's rank says which stages come before it.
int rankOf(ProtocolState state) {
  switch (state) {
    case ProtocolState::Connect: return 0;
    case ProtocolState::Ehlo:
    case ProtocolState::Helo: return 1;
    case ProtocolState::Mail: return 2;
    case ProtocolState::Rcpt: return 3;
    case ProtocolState::Data: return 4;
    case ProtocolState::EndOfMessage: return 5;
    default: return -1;
  }
}

// Everything a repeated request must share with the one before it.
std::string fingerprintOf(const PolicyView& v) {
  std::string f;
  f.reserve(v.instance.size() + v.sender.size() + v.recipient.size() + v.helo_name.size() + 64);
  f += protocolStateName(v.state);
  for (const std::string* part : {&v.instance, &v.sender, &v.recipient, &v.helo_name, &v.sasl_username}) {
    f += '\0';
    f += *part;
  }
  f += '\0';
  f += v.recipient_count ? std::to_string(*v.recipient_count) : "-";
  f += '\0';
  f += v.size ? std::to_string(*v.size) : "-";
  return f;
}

std::string sessionKeyOf(std::uint64_t connection, const PolicyView& v) {
  if (!v.client_port) return "policy-connection " + std::to_string(connection);
  std::string key = v.client_address;
  key += ' ';
  key += std::to_string(*v.client_port);
  key += ' ';
  key += v.server_address;
  key += ' ';
  key += v.server_port ? std::to_string(*v.server_port) : "-";
  return key;
}

AnswerKind kindOfVerdict(const zetian_verdict& verdict, const ActionOptions& options) {
  if (verdict.action == ZETIAN_CONTINUE) return AnswerKind::Dunno;
  if (verdict.action == ZETIAN_REJECT) return AnswerKind::Reject;
  if (options.tempfail_as_defer_if_permit && std::strncmp(verdict.rcode, "421", 4) != 0)
    return AnswerKind::DeferIfPermit;
  return AnswerKind::Tempfail;
}

}  // namespace

struct Host::Session {
  std::string key;
  zetian_session* engine = nullptr;
  std::list<Session*>::iterator lru;
  Clock::time_point last_used;
  std::uint64_t last_connection = 0;
  bool busy = false;  // a request is being answered
  std::deque<std::unique_ptr<Job>> waiting;

  // The SMTP connection.
  bool connect_done = false;
  bool helo_done = false;
  std::string helo_checked;  // the HELO name the helo stage saw
  std::string sasl_user;
  std::optional<Answer> session_denial;  // a connect or helo stage denial

  // The transaction.
  std::string instance;
  bool mail_done = false;
  bool data_done = false;
  std::optional<Answer> transaction_denial;  // a mail or data stage denial
  std::vector<std::string> tagged;           // header values already prepended or waiting
  std::deque<std::string> headers;           // waiting to be prepended
  std::string hold_reason;                   // waiting to be held
  bool held = false;

  // The request before this one, and its answer.
  std::string last_fingerprint;
  Answer last_answer;
};

// What a pending check's callback may touch from the engine's thread: the way back
// to the loop, and whether the Host still exists (read and written on the loop only).
struct Host::Shared {
  Post post;
  bool alive = true;
};

struct Host::Job {
  std::uint64_t connection = 0;
  PolicyView view;
  Done done;
  Session* session = nullptr;
  std::vector<Step> steps;
  std::size_t next = 0;
  std::string fingerprint;

  // The check in flight (one at a time); the engine holds the Job until its callback.
  Host* host = nullptr;  // touched only on the loop thread, while shared->alive
  std::shared_ptr<Shared> shared;
  std::thread::id loop_thread;
  Step step = Step::Connect;
  zetian_verdict verdict = ZETIAN_VERDICT_INIT;
};

Host::Host(zetian_engine* engine, HostOptions options, Post post)
    : engine_(engine),
      options_(options),
      shared_(std::make_shared<Shared>(Shared{std::move(post), true})),
      loop_thread_(std::this_thread::get_id()) {}

Host::~Host() {
  shared_->alive = false;
  for (auto& [key, session] : sessions_) {
    // A session with a check in flight belongs to the engine until its callback ran.
    if (!session->busy) zetian_session_close(session->engine);
  }
}

void Host::connectionClosed(std::uint64_t connection) { connection_session_.erase(connection); }

std::size_t Host::expire(Clock::time_point now) {
  std::size_t closed = 0;
  for (auto it = lru_.begin(); it != lru_.end();) {
    Session* s = *it;
    ++it;
    if (now - s->last_used < options_.session_timeout) break;  // the rest were used later
    if (s->busy) continue;
    closeSession(s);
    ++counters_.sessions_expired;
    ++closed;
  }
  return closed;
}

void Host::closeSession(Session* session) {
  zetian_session_close(session->engine);
  lru_.erase(session->lru);
  // Requests still queued on it cannot be: a session is closed only when idle.
  sessions_.erase(session->key);
}

Host::Session* Host::sessionFor(std::uint64_t connection, const PolicyView& view, Clock::time_point now) {
  std::string key = sessionKeyOf(connection, view);

  // The policy connection asks about another SMTP connection: its smtpd moved on, so
  // the one it asked about before is over (unless another policy connection used it
  // since, or it is busy).
  auto previous = connection_session_.find(connection);
  if (previous != connection_session_.end() && previous->second != key) {
    auto old = sessions_.find(previous->second);
    if (old != sessions_.end() && old->second->last_connection == connection && !old->second->busy &&
        old->second->waiting.empty()) {
      closeSession(old->second.get());
      ++counters_.sessions_ended;
    }
  }
  connection_session_[connection] = key;

  auto found = sessions_.find(key);
  if (found != sessions_.end()) {
    Session* s = found->second.get();
    lru_.splice(lru_.end(), lru_, s->lru);
    s->last_used = now;
    s->last_connection = connection;
    return s;
  }

  if (sessions_.size() >= options_.max_sessions) {
    for (Session* s : lru_) {
      if (!s->busy && s->waiting.empty()) {
        closeSession(s);
        ++counters_.sessions_evicted;
        break;
      }
    }
  }
  auto session = std::make_unique<Session>();
  session->key = key;
  session->engine = zetian_session_open(engine_, view.client_address.c_str(),
                                        view.client_name.empty() || view.client_name == "unknown"
                                            ? nullptr
                                            : view.client_name.c_str());
  session->last_used = now;
  session->last_connection = connection;
  Session* s = session.get();
  s->lru = lru_.insert(lru_.end(), s);
  sessions_.emplace(std::move(key), std::move(session));
  ++counters_.sessions_opened;
  return s;
}

void Host::handle(std::uint64_t connection, PolicyView view, Clock::time_point now, Done done) {
  auto job = std::make_unique<Job>();
  job->connection = connection;
  job->view = std::move(view);
  job->done = std::move(done);
  job->host = this;
  job->shared = shared_;
  job->loop_thread = loop_thread_;
  if (rankOf(job->view.state) < 0) {  // VRFY, ETRN, unknown: outside any message
    Answer answer{dunnoAction(), AnswerKind::Dunno, false};
    job->done(answer);
    return;
  }
  Session* s = sessionFor(connection, job->view, now);
  job->session = s;
  if (s->busy) {
    s->waiting.push_back(std::move(job));
    return;
  }
  start(std::move(job));
}

void Host::endTransaction(Session& s) {
  zetian_session_reset(s.engine);
  s.instance.clear();
  s.mail_done = false;
  s.data_done = false;
  s.transaction_denial.reset();
  s.tagged.clear();
  s.headers.clear();
  s.hold_reason.clear();
  s.held = false;
}

void Host::start(std::unique_ptr<Job> job) {
  Session& s = *job->session;
  const PolicyView& v = job->view;
  s.busy = true;

  job->fingerprint = fingerprintOf(v);
  if (!v.instance.empty() && job->fingerprint == s.last_fingerprint) {
    ++counters_.repeats;
    Answer answer = s.last_answer;
    answer.repeated = true;
    finish(std::move(job), std::move(answer));
    return;
  }

  // A new transaction: another instance, or a MAIL after a mail check.
  const bool new_instance = !v.instance.empty() && !s.instance.empty() && v.instance != s.instance;
  if (new_instance || (v.state == ProtocolState::Mail && s.mail_done)) endTransaction(s);
  if (!v.instance.empty()) s.instance = v.instance;

  if (s.session_denial) {
    finish(std::move(job), *s.session_denial);
    return;
  }
  if (s.transaction_denial) {
    finish(std::move(job), *s.transaction_denial);
    return;
  }

  if (v.sasl_username != s.sasl_user) {
    zetian_session_set_sasl_user(s.engine, v.sasl_username.c_str());
    s.sasl_user = v.sasl_username;
  }

  // The stages no rule uses are skipped, as the milter host asks the MTA to skip them
  // (helo, rcpt, data); connect and mail always run (sessions, messages, maintenance).
  const unsigned needs = zetian_engine_needs(engine_);
  const int rank = rankOf(v.state);
  if (!s.connect_done) job->steps.push_back(Step::Connect);
  if (rank >= 1 && (needs & (ZETIAN_NEED_HELO | ZETIAN_NEED_HELO_REPLY)) &&
      (!s.helo_done || (!v.helo_name.empty() && v.helo_name != s.helo_checked)))
    job->steps.push_back(Step::Helo);
  if (rank >= 2 && !s.mail_done) job->steps.push_back(Step::Mail);
  if (rank == 3 && (needs & (ZETIAN_NEED_RCPT | ZETIAN_NEED_RCPT_REPLY))) job->steps.push_back(Step::Rcpt);
  if (rank >= 4 && !s.data_done && (needs & ZETIAN_NEED_DATA)) job->steps.push_back(Step::Data);
  if (rank == 5) job->steps.push_back(Step::Eom);
  run(std::move(job));
}

void Host::run(std::unique_ptr<Job> job) {
  Session& s = *job->session;
  const PolicyView& v = job->view;
  while (job->next < job->steps.size()) {
    const Step step = job->steps[job->next++];
    if (step == Step::Eom) continue;  // the marks are collected in answerFor()
    zetian_stage stage = ZETIAN_STAGE_CONNECT;
    std::string arg;
    const char* arg_ptr = nullptr;
    switch (step) {
      case Step::Connect: stage = ZETIAN_STAGE_CONNECT; break;
      case Step::Helo:
        stage = ZETIAN_STAGE_HELO;
        arg = v.helo_name;
        arg_ptr = arg.c_str();
        break;
      case Step::Mail:
        stage = ZETIAN_STAGE_MAIL;
        arg = v.sender.empty() ? "<>" : v.sender;
        arg_ptr = arg.c_str();
        break;
      case Step::Rcpt:
        stage = ZETIAN_STAGE_RCPT;
        arg = v.recipient;
        arg_ptr = arg.c_str();
        break;
      case Step::Data: stage = ZETIAN_STAGE_DATA; break;
      case Step::Eom: break;
    }
    Job* raw = job.release();
    raw->step = step;
    raw->verdict = ZETIAN_VERDICT_INIT;
    ++in_flight_;
    // 0: the engine holds the Job until onChecked() posts it back; not ours to touch.
    if (zetian_session_check_async(s.engine, stage, arg_ptr, &Host::onChecked, raw) == 0) return;
    --in_flight_;
    job.reset(raw);
    const zetian_verdict verdict = job->verdict;
    if (verdict.action != ZETIAN_CONTINUE) {
      checked(std::move(job), step, verdict);
      return;
    }
    passed(s, step, v);
  }
  finish(std::move(job), answerFor(s, v.state == ProtocolState::EndOfMessage));
}

void Host::onChecked(void* ctx, const zetian_verdict* verdict, int action) {
  auto* job = static_cast<Job*>(ctx);
  if (verdict) job->verdict = *verdict;
  job->verdict.action = action;
  if (std::this_thread::get_id() == job->loop_thread) return;  // inline: run() goes on
  // The engine's cluster thread: hand the Job back to the loop. A closure the loop never
  // runs (it ended) frees the Job with it.
  struct Holder {
    explicit Holder(Job* j) : job(j) {}
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;
    ~Holder() { delete job; }
    Job* job;
  };
  const std::shared_ptr<Shared> shared = job->shared;
  auto holder = std::make_shared<Holder>(job);
  shared->post([holder] {
    std::unique_ptr<Job> owned(std::exchange(holder->job, nullptr));
    if (!owned->shared->alive) return;
    Host* host = owned->host;
    --host->in_flight_;
    const Step step = owned->step;
    const zetian_verdict verdict = owned->verdict;
    host->checked(std::move(owned), step, verdict);
  });
}

void Host::passed(Session& s, Step step, const PolicyView& v) {
  switch (step) {
    case Step::Connect: s.connect_done = true; break;
    case Step::Helo:
      s.helo_done = true;
      s.helo_checked = v.helo_name;
      break;
    case Step::Mail: s.mail_done = true; break;
    case Step::Data: s.data_done = true; break;
    case Step::Rcpt:
    case Step::Eom: break;
  }
}

void Host::checked(std::unique_ptr<Job> job, Step step, const zetian_verdict& verdict) {
  Session& s = *job->session;
  const PolicyView& v = job->view;
  if (verdict.action == ZETIAN_CONTINUE) {
    passed(s, step, v);
    run(std::move(job));
    return;
  }
  Answer denial{verdictAction(verdict, options_.action), kindOfVerdict(verdict, options_.action), false};
  switch (step) {
    case Step::Connect:
      s.connect_done = true;
      s.session_denial = denial;
      break;
    case Step::Helo:
      s.helo_done = true;
      s.helo_checked = v.helo_name;
      s.session_denial = denial;
      break;
    case Step::Mail:
      s.mail_done = true;
      s.transaction_denial = denial;
      break;
    case Step::Data:
      s.data_done = true;
      s.transaction_denial = denial;
      break;
    default: break;
  }
  finish(std::move(job), std::move(denial));
}

Answer Host::answerFor(Session& s, bool end_of_message) {
  struct Marks {
    Session* s;
  } marks{&s};
  zetian_session_eom(
      s.engine,
      [](void* ctx, const char* name, const char* value) {
        Session* s = static_cast<Marks*>(ctx)->s;
        // One header per rule and message, however many requests hit it.
        std::string line = std::string(name) + '\0' + value;
        if (std::find(s->tagged.begin(), s->tagged.end(), line) != s->tagged.end()) return;
        s->tagged.push_back(line);
        s->headers.push_back(std::move(line));
      },
      [](void* ctx, const char* reason) {
        Session* s = static_cast<Marks*>(ctx)->s;
        if (!s->held && s->hold_reason.empty()) s->hold_reason = reason;
      },
      &marks);

  if (!s.held && !s.hold_reason.empty()) {
    s.held = true;
    return {holdAction(s.hold_reason), AnswerKind::Hold, false};
  }
  if (!end_of_message) {
    while (!s.headers.empty()) {
      std::string line = std::move(s.headers.front());
      s.headers.pop_front();
      const std::size_t nul = line.find('\0');
      if (auto text = prependAction(std::string_view(line).substr(0, nul), std::string_view(line).substr(nul + 1)))
        return {std::move(*text), AnswerKind::Prepend, false};
    }
  }
  return {dunnoAction(), AnswerKind::Dunno, false};
}

void Host::finish(std::unique_ptr<Job> job, Answer answer) {
  Session& s = *job->session;
  s.last_fingerprint = std::move(job->fingerprint);
  s.last_answer = answer;
  if (job->view.state == ProtocolState::EndOfMessage && !answer.repeated) {
    counters_.headers_dropped += s.headers.size();
    endTransaction(s);
  }
  // The answer goes out last: `done` may re-enter the Host (the server hands over the
  // connection's next pipelined request at once), so the session must be settled and
  // must not be touched after it: a re-entrant request may even close it.
  const Done done = std::move(job->done);
  job.reset();
  if (!s.waiting.empty()) {
    std::unique_ptr<Job> next = std::move(s.waiting.front());
    s.waiting.pop_front();
    start(std::move(next));  // still busy: the next request has the session now
  } else {
    s.busy = false;
  }
  done(answer);
}

}  // namespace zetian::milter::policy
