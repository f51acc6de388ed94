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
 *   zetian_engine_close()    stop everything; no session may be open any more.
 *
 * Threads: every function may be called from any thread. A session is used by one
 * thread at a time (libmilter guarantees this per connection). Checks never block on
 * the network for longer than the configured deadline.
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

#define ZETIAN_ABI_VERSION 1

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

typedef struct zetian_verdict {
  int action;       /* a zetian_action */
  char rcode[4];    /* "451", "550", "421" when action != ZETIAN_CONTINUE */
  char xcode[16];   /* enhanced status code: "4.7.1" */
  char text[512];   /* reply text: no CR/LF; may contain '%' as a literal character */
  char rule[128];   /* the rule that decided, for the host's own logs */
} zetian_verdict;

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
 * `overrides` are "key=value" strings applied on top ("health.socket=/tmp/h.sock").
 * Returns NULL and reports every error through `on_error` when the configuration is
 * not valid. */
zetian_engine* zetian_engine_open(const char* config_path, const char* const* overrides,
                                  size_t override_count, zetian_error_fn on_error, void* ctx);

/* Validate a configuration without opening an engine. Returns 0 when valid. */
int zetian_config_check(const char* config_path, const char* const* overrides,
                        size_t override_count, zetian_error_fn on_error, void* ctx);

/* Start the cluster thread and the health socket. Call with the signals the host
 * wants handled elsewhere already blocked: the new threads inherit the mask. */
int zetian_engine_start(zetian_engine* engine, zetian_error_fn on_error, void* ctx);

/* Re-read the configuration file and swap in its policy. A file with errors is
 * refused (every error reported) and the running policy stays. */
int zetian_engine_reload(zetian_engine* engine, zetian_error_fn on_error, void* ctx);

/* Stop the cluster thread and free the engine. */
void zetian_engine_close(zetian_engine* engine);

/* A node option as text, for the host: "milter.socket", "milter.timeout_s",
 * "milter.default_action", "milter.user", "milter.group", "milter.umask" (octal, ""
 * when unset), "milter.pid_file", "node.id", "node.state_dir", "config.source".
 * NULL for an unknown key. The pointer stays valid until the engine is closed. */
const char* zetian_engine_option(zetian_engine* engine, const char* key);

/* ZETIAN_NEED_* bits for the current policy. */
unsigned zetian_engine_needs(zetian_engine* engine);

/* Log through the engine's logger (syslog facility mail, stderr or a file, as
 * configured). level: 0 error, 1 warning, 2 info, 3 debug. */
void zetian_log(zetian_engine* engine, int level, const char* message);

/* The engine's version, "0.1.0". */
const char* zetian_version(void);

/* A new session for a connection. `client_addr` is the textual IP address ("192.0.2.1",
 * "2001:db8::1"), or NULL/"" when unknown (a local submission, a Unix socket);
 * `client_name` is the host name the MTA resolved, or NULL. Never returns NULL. */
zetian_session* zetian_session_open(zetian_engine* engine, const char* client_addr,
                                    const char* client_name);

/* Tell the session who authenticated (the MTA's {auth_authen}); NULL or "" clears. */
void zetian_session_set_sasl_user(zetian_session* session, const char* login);

/* Check a stage. `arg` is the HELO name, the sender (as the MTA gives it, with or
 * without angle brackets; "<>" is the null sender), or one recipient; NULL for
 * connect and data. Fills `verdict`; returns verdict->action. */
int zetian_session_check(zetian_session* session, zetian_stage stage, const char* arg,
                         zetian_verdict* verdict);

/* End of message: call `add_header` for each header a tag rule asks for, and
 * `quarantine` once when a quarantine rule matched. Either callback may be NULL. */
typedef void (*zetian_header_fn)(void* ctx, const char* name, const char* value);
typedef void (*zetian_quarantine_fn)(void* ctx, const char* reason);
void zetian_session_eom(zetian_session* session, zetian_header_fn add_header,
                        zetian_quarantine_fn quarantine, void* ctx);

/* The message is over (delivered, rejected or aborted): forget its sender, recipients
 * and tags; the connection and its HELO stay. */
void zetian_session_reset(zetian_session* session);

void zetian_session_close(zetian_session* session);

#ifdef __cplusplus
}
#endif

#endif /* ZETIAN_H */
