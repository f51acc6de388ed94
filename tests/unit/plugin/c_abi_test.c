/*
 * The proof that a C host can use the engine: a C99 program (built with -pedantic)
 * that links libzetian.so and drives it only through zetian.h, as another MTA
 * integration would. It writes its own configuration (one rule, two messages per
 * client address an hour), runs a session through every stage and checks the
 * verdicts, then the NULL arguments, the versions and the close.
 *
 * Exit status 0 when every check held; otherwise each failure is printed.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "plugin/zetian.h"

static int failures = 0;

#define EXPECT(cond)                                                   \
  do {                                                                 \
    if (!(cond)) {                                                     \
      fprintf(stderr, "%s:%d: failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                      \
    }                                                                  \
  } while (0)

static int errors_seen = 0;

/* A host's reporter, as the policy host registers one: text through `append`. */
static void c_report(void* ctx, int what, zetian_append_fn append, void* sink) {
  (void)ctx;
  if (what == ZETIAN_REPORT_HEALTH) append(sink, "{}", 2);
}

static void on_error(void* ctx, const char* message) {
  (void)ctx;
  ++errors_seen;
  fprintf(stderr, "engine error: %s\n", message);
}

static int headers_added = 0;

static void on_header(void* ctx, const char* name, const char* value) {
  (void)ctx;
  (void)name;
  (void)value;
  ++headers_added;
}

/* The asynchronous check's callback: counts its calls and keeps the action. */
static int async_calls = 0;
static int async_action = -1;

static void on_checked(void* ctx, const zetian_verdict* verdict, int action) {
  (void)ctx;
  ++async_calls;
  async_action = action;
  EXPECT(verdict != NULL && verdict->action == action);
}

static int check(zetian_session* s, zetian_stage stage, const char* arg, zetian_verdict* v) {
  return zetian_session_check(s, stage, arg, v);
}

/* One message on an open session: MAIL, RCPT, DATA, end of message, reset. Returns
 * the MAIL verdict's action (the rule is at the mail stage). */
static int message(zetian_session* s, zetian_verdict* v) {
  int action = check(s, ZETIAN_STAGE_MAIL, "<sender@example.org>", v);
  if (action == ZETIAN_CONTINUE) {
    zetian_verdict later = ZETIAN_VERDICT_INIT;
    EXPECT(check(s, ZETIAN_STAGE_RCPT, "<rcpt@example.net>", &later) == ZETIAN_CONTINUE);
    EXPECT(check(s, ZETIAN_STAGE_DATA, NULL, &later) == ZETIAN_CONTINUE);
    zetian_session_eom(s, &on_header, NULL, NULL);
  }
  zetian_session_reset(s);
  return action;
}

int main(void) {
  char dir[] = "/tmp/zetian-c-abi-XXXXXX";
  char config[256];
  char socket[256];
  FILE* f;
  zetian_engine* engine;
  zetian_session* s;
  zetian_verdict v = ZETIAN_VERDICT_INIT;

  EXPECT(zetian_abi_version() == ZETIAN_ABI_VERSION);
  EXPECT(zetian_version() != NULL && zetian_version()[0] != '\0');

  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(config, sizeof config, "%s/zetian.toml", dir);
  snprintf(socket, sizeof socket, "%s/health.sock", dir);
  f = fopen(config, "w");
  if (f == NULL) {
    perror("fopen");
    return 1;
  }
  fprintf(f,
          "[log]\nlevel = \"error\"\ntarget = \"stderr\"\n"
          "[health]\nsocket = \"%s\"\n"
          "[ratelimit]\nexempt = []\n"
          "[[ratelimit.rule]]\nname = \"per-ip\"\nkey = \"client_ip\"\nstage = \"mail\"\n"
          "limit = 2\nperiod = \"1h\"\n",
          socket);
  fclose(f);

  EXPECT(zetian_config_check(config, NULL, 0, &on_error, NULL) == 0);
  engine = zetian_engine_open(config, NULL, 0, &on_error, NULL);
  EXPECT(engine != NULL);
  if (engine == NULL) return 1;
  EXPECT(zetian_engine_start(engine, &on_error, NULL) == 0);
  EXPECT((zetian_engine_needs(engine) & ZETIAN_NEED_MAIL_REPLY) != 0);
  EXPECT(strcmp(zetian_engine_option(engine, "health.socket"), socket) == 0);
  EXPECT(zetian_engine_option(engine, "no.such.option") == NULL);
  EXPECT(strcmp(zetian_engine_option(engine, "policy.socket"), "") == 0);
  EXPECT(strcmp(zetian_engine_option(engine, "policy.tempfail_action"), "reply") == 0);
  EXPECT(zetian_engine_set_reporter(engine, &c_report, NULL) == 0);
  EXPECT(zetian_engine_set_reporter(engine, NULL, NULL) == 0);
  zetian_log(engine, 3, "c_abi_test: a debug line the configured level drops");

  /* Every stage, twice under the limit, then past it. */
  s = zetian_session_open(engine, "192.0.2.1", "client.example");
  EXPECT(s != NULL);
  EXPECT(check(s, ZETIAN_STAGE_CONNECT, NULL, &v) == ZETIAN_CONTINUE);
  EXPECT(check(s, ZETIAN_STAGE_HELO, "client.example", &v) == ZETIAN_CONTINUE);
  zetian_session_set_sasl_user(s, NULL);
  EXPECT(message(s, &v) == ZETIAN_CONTINUE);
  EXPECT(v.action == ZETIAN_CONTINUE);
  EXPECT(message(s, &v) == ZETIAN_CONTINUE);
  EXPECT(message(s, &v) == ZETIAN_TEMPFAIL);
  EXPECT(v.action == ZETIAN_TEMPFAIL);
  EXPECT(strcmp(v.rcode, "451") == 0);
  EXPECT(strcmp(v.xcode, "4.7.1") == 0);
  EXPECT(strcmp(v.rule, "per-ip") == 0);
  EXPECT(v.text[0] != '\0');
  EXPECT(headers_added == 0);
  zetian_session_close(s);

  /* Another client has its own count. */
  s = zetian_session_open(engine, "192.0.2.2", NULL);
  EXPECT(message(s, &v) == ZETIAN_CONTINUE);
  zetian_session_close(s);

  /* The asynchronous form: without a cluster every decision is local, so the callback
   * runs once, inline, before it returns 1. 192.0.2.1 is past its limit. */
  s = zetian_session_open(engine, "192.0.2.1", NULL);
  EXPECT(zetian_session_check_async(s, ZETIAN_STAGE_MAIL, "<sender@example.org>", &on_checked, NULL) == 1);
  EXPECT(async_calls == 1);
  EXPECT(async_action == ZETIAN_TEMPFAIL);
  EXPECT(zetian_session_check_async(s, ZETIAN_STAGE_MAIL, "<sender@example.org>", NULL, NULL) == 1);
  EXPECT(async_calls == 1);
  zetian_session_close(s);

  EXPECT(zetian_engine_reload(engine, &on_error, NULL) == 0);

  /* NULL arguments: documented answers, no crash. */
  EXPECT(zetian_session_check(NULL, ZETIAN_STAGE_MAIL, "<a@example.org>", &v) == ZETIAN_CONTINUE);
  s = zetian_session_open(engine, "192.0.2.1", NULL);
  EXPECT(zetian_session_check(s, ZETIAN_STAGE_MAIL, "<a@example.org>", NULL) == ZETIAN_TEMPFAIL);
  zetian_session_close(s);
  s = zetian_session_open(NULL, "192.0.2.1", NULL);
  EXPECT(s != NULL);
  EXPECT(check(s, ZETIAN_STAGE_MAIL, "<a@example.org>", &v) == ZETIAN_CONTINUE);
  zetian_session_close(s);
  zetian_session_set_sasl_user(NULL, "user");
  zetian_session_eom(NULL, NULL, NULL, NULL);
  zetian_session_reset(NULL);
  zetian_session_close(NULL);
  EXPECT(zetian_engine_start(NULL, NULL, NULL) == -1);
  EXPECT(zetian_engine_reload(NULL, NULL, NULL) == -1);
  EXPECT(zetian_engine_option(NULL, "node.id") == NULL);
  EXPECT(zetian_engine_needs(NULL) == 0);
  EXPECT(zetian_engine_set_reporter(NULL, &c_report, NULL) == -1);
  zetian_log(NULL, 3, "c_abi_test: logged with no engine");
  EXPECT(zetian_engine_open(config, NULL, 1, NULL, NULL) == NULL);

  zetian_engine_close(engine);
  zetian_engine_close(NULL);
  EXPECT(access(socket, F_OK) != 0); /* the health socket left with the engine */
  EXPECT(errors_seen == 0);

  unlink(config);
  rmdir(dir);
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  return failures ? 1 : 0;
}
