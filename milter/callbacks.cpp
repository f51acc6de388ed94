// libmilter ↔ engine (see callbacks.h). One Connection per milter connection, kept
// with smfi_setpriv from negotiation to close; libmilter runs one connection's
// callbacks on one thread at a time.
#include "milter/callbacks.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <string>

#include "milter/connections.h"
#include "milter/log.h"
#include "milter/quickack.h"

namespace zetian::milter::callbacks {

namespace {

zetian_engine* g_engine = nullptr;

// Per-connection state, kept with smfi_setpriv from negotiation to close.
struct Connection {
  unsigned long protocol = 0;  // the SMFIP_* bits agreed for this connection
  zetian_session* session = nullptr;
};

Connection* connectionOf(SMFICTX* ctx) { return static_cast<Connection*>(smfi_getpriv(ctx)); }

void logLine(int level, const std::string& line) { milter::logLine(g_engine, level, line.c_str()); }

// libmilter treats '%' in reply text as a format character: double it.
std::string escapePercent(const char* text) {
  std::string out;
  for (const char* p = text; *p; ++p) {
    out += *p;
    if (*p == '%') out += '%';
  }
  return out;
}

// Turn a verdict into libmilter's answer. `no_reply_bit` is the SMFIP_NR_* bit of
// this stage: when it was negotiated the MTA expects no answer, whatever we decided.
sfsistat answer(SMFICTX* ctx, const zetian_verdict& v, unsigned long no_reply_bit) {
  Connection* c = connectionOf(ctx);
  if (c && no_reply_bit && (c->protocol & no_reply_bit)) return SMFIS_NOREPLY;
  if (v.action == ZETIAN_CONTINUE) return SMFIS_CONTINUE;
  std::string text = escapePercent(v.text);
  if (smfi_setreply(ctx, const_cast<char*>(v.rcode), v.xcode[0] ? const_cast<char*>(v.xcode) : nullptr,
                    const_cast<char*>(text.c_str())) != MI_SUCCESS) {
    logLine(1, std::string("setreply_failed rule=") + v.rule + " rcode=" + v.rcode);
  }
  return v.action == ZETIAN_REJECT ? SMFIS_REJECT : SMFIS_TEMPFAIL;
}

sfsistat check(SMFICTX* ctx, zetian_stage stage, const char* arg, unsigned long no_reply_bit) {
  Connection* c = connectionOf(ctx);
  if (!c || !c->session) return (c && (c->protocol & no_reply_bit)) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
  zetian_verdict verdict = ZETIAN_VERDICT_INIT;
  zetian_session_check(c->session, stage, arg, &verdict);
  return answer(ctx, verdict, no_reply_bit);
}

sfsistat onNegotiate(SMFICTX* ctx, unsigned long f0, unsigned long f1, unsigned long, unsigned long,
                     unsigned long* pf0, unsigned long* pf1, unsigned long* pf2, unsigned long* pf3) {
  quickack::markMilterThread();
  connections::markSpoken();
  const unsigned needs = zetian_engine_needs(g_engine);
  unsigned long actions = SMFIF_SETSYMLIST;
  if (needs & ZETIAN_NEED_ADD_HEADER) actions |= SMFIF_ADDHDRS;
  if (needs & ZETIAN_NEED_QUARANTINE) actions |= SMFIF_QUARANTINE;

  unsigned long skip = SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOBODY | SMFIP_NOUNKNOWN;
  if (!(needs & (ZETIAN_NEED_HELO | ZETIAN_NEED_HELO_REPLY))) skip |= SMFIP_NOHELO;
  if (!(needs & (ZETIAN_NEED_RCPT | ZETIAN_NEED_RCPT_REPLY))) skip |= SMFIP_NORCPT;
  if (!(needs & ZETIAN_NEED_DATA)) skip |= SMFIP_NODATA;
  if (!(needs & ZETIAN_NEED_CONNECT_REPLY)) skip |= SMFIP_NR_CONN;
  if (!(needs & ZETIAN_NEED_HELO_REPLY)) skip |= SMFIP_NR_HELO;
  if (!(needs & ZETIAN_NEED_MAIL_REPLY)) skip |= SMFIP_NR_MAIL;
  if (!(needs & ZETIAN_NEED_RCPT_REPLY)) skip |= SMFIP_NR_RCPT;
  if (!(needs & ZETIAN_NEED_DATA)) skip |= SMFIP_NR_DATA;
  // An MTA that does not offer a step or a no-reply bit keeps sending it: take only
  // what was offered.
  *pf0 = actions & f0;
  *pf1 = skip & f1;
  *pf2 = 0;
  *pf3 = 0;

  auto* c = new Connection;
  c->protocol = *pf1;
  smfi_setpriv(ctx, c);
  if (*pf0 & SMFIF_SETSYMLIST) {
    // Postfix sends {auth_authen} with MAIL FROM by default; ask for it explicitly
    // so a trimmed milter_mail_macros does not silently disable SASL rules.
    smfi_setsymlist(ctx, SMFIM_ENVFROM, const_cast<char*>("{auth_authen}"));
  }
  return SMFIS_CONTINUE;
}

sfsistat onConnect(SMFICTX* ctx, char* hostname, _SOCK_ADDR* hostaddr) {
  quickack::markMilterThread();
  connections::markSpoken();
  Connection* c = connectionOf(ctx);
  if (!c) {  // an MTA that did not negotiate (milter protocol 2)
    c = new Connection;
    smfi_setpriv(ctx, c);
  }
  char addr[INET6_ADDRSTRLEN] = "";
  if (hostaddr && hostaddr->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(hostaddr)->sin_addr, addr, sizeof addr);
  } else if (hostaddr && hostaddr->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(hostaddr)->sin6_addr, addr, sizeof addr);
  }
  if (c->session) zetian_session_close(c->session);
  c->session = zetian_session_open(g_engine, addr, hostname);
  return check(ctx, ZETIAN_STAGE_CONNECT, nullptr, SMFIP_NR_CONN);
}

sfsistat onHelo(SMFICTX* ctx, char* helo) { return check(ctx, ZETIAN_STAGE_HELO, helo, SMFIP_NR_HELO); }

sfsistat onEnvFrom(SMFICTX* ctx, char** argv) {
  Connection* c = connectionOf(ctx);
  if (c && c->session)
    zetian_session_set_sasl_user(c->session, smfi_getsymval(ctx, const_cast<char*>("{auth_authen}")));
  return check(ctx, ZETIAN_STAGE_MAIL, argv && argv[0] ? argv[0] : "", SMFIP_NR_MAIL);
}

sfsistat onEnvRcpt(SMFICTX* ctx, char** argv) {
  return check(ctx, ZETIAN_STAGE_RCPT, argv && argv[0] ? argv[0] : "", SMFIP_NR_RCPT);
}

sfsistat onData(SMFICTX* ctx) { return check(ctx, ZETIAN_STAGE_DATA, nullptr, SMFIP_NR_DATA); }

void addHeader(void* ctx, const char* name, const char* value) {
  auto* milter_ctx = static_cast<SMFICTX*>(ctx);
  if (smfi_addheader(milter_ctx, const_cast<char*>(name), const_cast<char*>(value)) != MI_SUCCESS)
    logLine(1, std::string("addheader_failed header=") + name);
}

void quarantine(void* ctx, const char* reason) {
  auto* milter_ctx = static_cast<SMFICTX*>(ctx);
  std::string text = escapePercent(reason);
  if (smfi_quarantine(milter_ctx, const_cast<char*>(text.c_str())) != MI_SUCCESS)
    logLine(1, "quarantine_failed");
}

sfsistat onEom(SMFICTX* ctx) {
  Connection* c = connectionOf(ctx);
  if (c && c->session) {
    zetian_session_eom(c->session, &addHeader, &quarantine, ctx);
    zetian_session_reset(c->session);
  }
  return SMFIS_CONTINUE;
}

sfsistat onAbort(SMFICTX* ctx) {
  Connection* c = connectionOf(ctx);
  if (c && c->session) zetian_session_reset(c->session);
  return SMFIS_CONTINUE;
}

sfsistat onClose(SMFICTX* ctx) {
  Connection* c = connectionOf(ctx);
  if (c) {
    if (c->session) zetian_session_close(c->session);
    delete c;
    smfi_setpriv(ctx, nullptr);
  }
  return SMFIS_CONTINUE;
}

struct smfiDesc g_filter = {
    const_cast<char*>("zetian"),
    SMFI_VERSION,
    SMFIF_ADDHDRS | SMFIF_QUARANTINE | SMFIF_SETSYMLIST,
    onConnect,
    onHelo,
    onEnvFrom,
    onEnvRcpt,
    nullptr,  // header
    nullptr,  // eoh
    nullptr,  // body
    onEom,
    onAbort,
    onClose,
    nullptr,  // unknown
    onData,
    onNegotiate,
};

}  // namespace

smfiDesc& filterFor(zetian_engine* engine) {
  g_engine = engine;
  return g_filter;
}

}  // namespace zetian::milter::callbacks
