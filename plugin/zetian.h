/*
 * zetian.h — the engine's C ABI (libzetian.so).
 *
 * The engine holds the policy, the rate-limit state and the cluster thread; a *host*
 * (the libmilter program zetian-milter, or any other MTA integration) feeds it the
 * SMTP dialogue and applies its verdicts. The host owns the protocol with the MTA;
 * the engine never talks to the MTA itself.
 *
 * Life cycle:
 *
 *   zetian_engine_open()     parse and validate the configuration; no threads yet.
 *                            The host may now read options (socket, user...) and drop
 *                            privileges.
 *   zetian_engine_start()    start the cluster thread and the health socket.
 *   per SMTP connection:
 *     zetian_session_open()  at connect, with the client's address
 *     zetian_session_check() at each stage (connect, helo, mail, rcpt, data)
 *     zetian_session_eom()   at end of message: headers to add, quarantine
 *     zetian_session_reset() when a message ends or is aborted (RSET)
 *     zetian_session_close() when the connection ends
 *   zetian_engine_reload()   re-read the policy (any thread)
 *   zetian_engine_close()    refuse new sessions, wait (at most 5 s) for the open ones
 *                            to close, stop everything and free the engine.
 *
 * Threads: every function may be called from any thread. A session is used by one
 * thread at a time (libmilter guarantees this per connection). Checks never block on
 * the network for longer than the configured deadline.
 *
 * Arguments: no function crashes on a NULL engine, session or verdict; each says what
 * it does then. No function lets an exception out (the library is C++ inside).
 *
 * Versions: ZETIAN_ABI_VERSION is the ABI this header describes; zetian_abi_version()
 * the one the loaded library implements. A host checks that they are equal before
 * it opens an engine. Structures the engine fills start with their size, set by the
 * caller, so they can grow without breaking hosts built against an older header.
 *
 * Errors: functions that can fail return 0 on success and -1 on failure; failures are
 * described through the error callback given to zetian_engine_open(), one call per
 * problem (a configuration can have many), in the form "FILE:LINE:COL: message".
 *
 * Mail is never lost because of the engine: when it fails internally, a check answers
 * with the configured milter.default_action (accept unless told otherwise).
 */
#ifndef ZETIAN_H
#define ZETIAN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 2: zetian_verdict starts with its size; zetian_abi_version().
 * 3: zetian_session_check_async().
 * 4: zetian_engine_set_reporter() (a host's figures in /health and /metrics). */
#define ZETIAN_ABI_VERSION 4

typedef struct zetian_engine zetian_engine;
typedef struct zetian_session zetian_session;

/* Called once per error message. `message` is valid only during the call. */
typedef void (*zetian_error_fn)(void* ctx, const char* message);

/* SMTP stages, in dialogue order. */
typedef enum zetian_stage {
  ZETIAN_STAGE_CONNECT = 0,
  ZETIAN_STAGE_HELO = 1,
  ZETIAN_STAGE_MAIL = 2,
  ZETIAN_STAGE_RCPT = 3,
  ZETIAN_STAGE_DATA = 4
} zetian_stage;

/* What the host must do after a check. */
typedef enum zetian_action {
  ZETIAN_CONTINUE = 0, /* go on with the dialogue */
  ZETIAN_TEMPFAIL = 1, /* answer with the 4xx reply in the verdict */
  ZETIAN_REJECT = 2    /* answer with the 5xx reply in the verdict */
} zetian_action;

/* Set `size` to sizeof(zetian_verdict) before a check (ZETIAN_VERDICT_INIT does it);
 * the engine writes only the fields that lie entirely within `size`, so a host built
 * against an older, shorter zetian_verdict stays correct when fields are added at the
 * end. Fields are never moved or removed within one ABI version. */
typedef struct zetian_verdict {
  size_t size;      /* set by the caller: sizeof(zetian_verdict) */
  int action;       /* a zetian_action */
  char rcode[4];    /* "451", "550", "421" when action != ZETIAN_CONTINUE */
  char xcode[16];   /* enhanced status code: "4.7.1" */
  char text[512];   /* reply text: no CR/LF; may contain '%' as a literal character */
  char rule[128];   /* the rule that decided, for the host's own logs */
} zetian_verdict;

#define ZETIAN_VERDICT_INIT { sizeof(zetian_verdict), ZETIAN_CONTINUE, "", "", "", "" }

/* Bits of zetian_engine_needs(): what the current policy needs from the host, so it
 * can ask the MTA to skip the rest. The answer can change after a reload; hosts ask
 * per connection. */
enum {
  ZETIAN_NEED_CONNECT_REPLY = 1 << 0, /* a connect-stage rule may answer */
  ZETIAN_NEED_HELO = 1 << 1,          /* the HELO name is used */
  ZETIAN_NEED_HELO_REPLY = 1 << 2,    /* a helo-stage rule may answer */
  ZETIAN_NEED_MAIL_REPLY = 1 << 3,    /* a mail-stage rule may answer */
  ZETIAN_NEED_RCPT = 1 << 4,          /* recipients are used */
  ZETIAN_NEED_RCPT_REPLY = 1 << 5,    /* a rcpt-stage rule may answer */
  ZETIAN_NEED_DATA = 1 << 6,          /* a data-stage rule exists */
  ZETIAN_NEED_ADD_HEADER = 1 << 7,    /* a tag rule may add a header at end of message */
  ZETIAN_NEED_QUARANTINE = 1 << 8,    /* a quarantine rule may quarantine */
  ZETIAN_NEED_SASL = 1 << 9           /* the SASL login ({auth_authen}) is used */
};

/* Open an engine from a configuration file (NULL: the embedded default).
 * `overrides` are "key=value" strings applied on top ("health.socket=/tmp/h.sock");
 * a key spelled as an environment variable ("ZETIAN_NODE_ID=mx1") is resolved against
 * the configuration's keys (docs/configuration.md, "Configuration from the
 * environment"); later entries win. A NULL entry is an error. Returns NULL and reports every error through `on_error`
 * (may be NULL) when the configuration is not valid. */
zetian_engine* zetian_engine_open(const char* config_path, const char* const* overrides,
                                  size_t override_count, zetian_error_fn on_error, void* ctx);

/* Validate a configuration without opening an engine. Returns 0 when valid. Errors,
 * then warnings (valid but probably not meant, e.g. no rule at all), go to `on_error`
 * one line each; a warning's line has "warning: " after its FILE:LINE:COL: place and
 * does not make the result non-zero. */
int zetian_config_check(const char* config_path, const char* const* overrides,
                        size_t override_count, zetian_error_fn on_error, void* ctx);

/* Start the cluster thread and the health socket. Call with the signals the host
 * wants handled elsewhere already blocked: the new threads inherit the mask.
 * NULL engine: -1 (reported through on_error). */
int zetian_engine_start(zetian_engine* engine, zetian_error_fn on_error, void* ctx);

/* Re-read the configuration file and swap in its policy. A file with errors is
 * refused (every error reported) and the running policy stays. Settings that cannot
 * change while running are logged as needing a restart. NULL engine: -1. */
int zetian_engine_reload(zetian_engine* engine, zetian_error_fn on_error, void* ctx);

/* Close the engine. New sessions are refused from now on, and checks on sessions
 * still open answer with milter.default_action. It waits at most 5 seconds for the
 * open sessions to be closed, then stops the cluster thread and the health socket.
 * The engine is freed at once if every session was closed; otherwise it logs how many
 * were still open and the last zetian_session_close() frees it, so a session thread
 * still inside a call never runs on freed memory. The handle's own few bytes are kept:
 * a call racing with the close (or after it) gets the closed-engine result (start,
 * reload and set_reporter -1, option NULL, needs 0, log to stderr, a refused session).
 * Once it returns, no reporter is called any more. NULL: nothing. */
void zetian_engine_close(zetian_engine* engine);

/* A node option as text, for the host: "milter.socket" ("" when the milter listener
 * is off), "milter.timeout_s", "milter.default_action", "milter.user", "milter.group",
 * "milter.umask" (octal, "" when unset), "milter.pid_file", "node.id",
 * "node.state_dir", "config.source", "health.socket"; the policy host's
 * "policy.socket" ("" when off), "policy.max_connections", "policy.idle_timeout_ms",
 * "policy.request_timeout_ms", "policy.session_timeout_ms", "policy.max_sessions"
 * (numbers in decimal) and "policy.tempfail_action" ("reply" or "defer_if_permit").
 * NULL for an unknown key. The pointer stays valid until the engine is closed. */
const char* zetian_engine_option(zetian_engine* engine, const char* key);

/* A host's own figures (the policy delegation host's connections, requests...), shown
 * by the health socket. `append` adds `length` bytes of text to the answer being built. */
typedef void (*zetian_append_fn)(void* sink, const char* text, size_t length);
enum {
  ZETIAN_REPORT_METRICS = 0, /* Prometheus text lines (# HELP and # TYPE included), appended to GET /metrics */
  ZETIAN_REPORT_HEALTH = 1   /* one JSON object: the value of GET /health's "policy_host" member */
};
typedef void (*zetian_report_fn)(void* ctx, int what, zetian_append_fn append, void* sink);
/* Register (or, with a NULL report, remove) the host's reporter. It is called on the
 * engine's health thread, once per what per request, and must be quick and thread-safe.
 * After this function returns no call to the previous reporter is running or will start,
 * so the host may free its ctx. NULL engine: -1. Returns 0. */
int zetian_engine_set_reporter(zetian_engine* engine, zetian_report_fn report, void* ctx);

/* ZETIAN_NEED_* bits for the current policy; 0 for a NULL engine. */
unsigned zetian_engine_needs(zetian_engine* engine);

/* Log through the engine's logger (syslog facility mail, stderr or a file, as
 * configured). level: 0 error, 1 warning, 2 info, 3 debug. NULL engine: to stderr. */
void zetian_log(zetian_engine* engine, int level, const char* message);

/* The engine's version, e.g. "0.1.0": the project's version, the same string as
 * zetian-milter --version, zetianctl --version and zetian_build_info. */
const char* zetian_version(void);

/* The ABI the loaded library implements: compare with ZETIAN_ABI_VERSION. */
int zetian_abi_version(void);

/* A new session for a connection. `client_addr` is the textual IP address ("192.0.2.1",
 * "2001:db8::1"), or NULL/"" when unknown (a local submission, a Unix socket);
 * `client_name` is the host name the MTA resolved, or NULL. Never returns NULL: with
 * a NULL engine, one that is closing, or no memory, the session is a refused one
 * whose checks answer with the default action (accept for a NULL engine) and which
 * must still be closed. */
zetian_session* zetian_session_open(zetian_engine* engine, const char* client_addr,
                                    const char* client_name);

/* Tell the session who authenticated (the MTA's {auth_authen}); NULL or "" clears.
 * NULL session: nothing. */
void zetian_session_set_sasl_user(zetian_session* session, const char* login);

/* Check a stage. `arg` is the HELO name, the sender (as the MTA gives it, with or
 * without angle brackets; "<>" is the null sender), or one recipient; NULL for
 * connect and data. Fills `verdict` (within verdict->size); returns the action.
 * NULL session: ZETIAN_CONTINUE. NULL verdict: the check runs, only the action is
 * returned. After zetian_engine_close() began: milter.default_action. */
int zetian_session_check(zetian_session* session, zetian_stage stage, const char* arg,
                         zetian_verdict* verdict);

/* The asynchronous form, for hosts that run one event loop for many sessions: the same
 * decision as zetian_session_check(), without waiting for other nodes. `callback` runs
 * exactly once with the verdict (valid during the call only) and the action: inline,
 * before this function returns, when every rule was decided on this node (returns 1);
 * otherwise later on the engine's cluster thread, also when an owner does not answer
 * within cluster.check_timeout and when the engine closes (returns 0). Until then the
 * session must not be used or closed. The callback must be quick and must not call
 * back into the engine for this session; hand the verdict to your own loop. NULL
 * callback: nothing is checked and 1 is returned. */
typedef void (*zetian_check_fn)(void* ctx, const zetian_verdict* verdict, int action);
int zetian_session_check_async(zetian_session* session, zetian_stage stage, const char* arg,
                               zetian_check_fn callback, void* ctx);

/* End of message: call `add_header` for each header a tag rule asks for, and
 * `quarantine` once when a quarantine rule matched. Either callback may be NULL, and
 * so may the session (nothing happens). */
typedef void (*zetian_header_fn)(void* ctx, const char* name, const char* value);
typedef void (*zetian_quarantine_fn)(void* ctx, const char* reason);
void zetian_session_eom(zetian_session* session, zetian_header_fn add_header,
                        zetian_quarantine_fn quarantine, void* ctx);

/* The message is over (delivered, rejected or aborted): forget its sender, recipients
 * and tags; the connection and its HELO stay. NULL: nothing. */
void zetian_session_reset(zetian_session* session);

/* Free the session (every session zetian_session_open() returned). NULL: nothing. */
void zetian_session_close(zetian_session* session);

#ifdef __cplusplus
}
#endif

#endif /* ZETIAN_H */
