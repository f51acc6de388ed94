// Postfix policy delegation, the answer side: a verdict of the engine written as the
// one `action=...` attribute a policy server sends back, ended by an empty line
// (SMTPD_POLICY_README; the actions are those of an access(5) table). Pure, like the
// request parser beside it.
//
// The mapping mirrors the milter host (milter/callbacks.cpp):
//   ZETIAN_CONTINUE        action=DUNNO              (no opinion: the next restriction decides)
//   ZETIAN_TEMPFAIL        action=451 4.7.1 text     (the verdict's own code and text), or
//                          action=DEFER_IF_PERMIT text when so configured: Postfix then
//                          tempfails only if no later restriction rejects for good.
//                          A 421 stays 421 either way: it is the maintenance answer and
//                          makes Postfix close the SMTP session.
//   ZETIAN_REJECT          action=550 5.7.1 text
//   any other value        as TEMPFAIL, as the milter host does (smfi's SMFIS_TEMPFAIL)
//   a tag rule's header    action=PREPEND Name: value
//   a quarantine rule      action=HOLD reason
//
// Traps:
// - One request gets one action. A message both tagged and quarantined cannot have
//   both in one answer; the server picks (or spreads them over two stages).
// - Postfix refuses PREPEND at END-OF-MESSAGE (access(5): it "cannot execute in the
//   context of smtpd_end_of_data_restrictions"); the server must prepend at RCPT or
//   DATA.
// - The code must agree with the action: Postfix reads a 5xx code as permanent even in
//   a verdict that meant to tempfail. A code of the wrong class (or not three digits)
//   is replaced by the default (451 / 550), and an enhanced code that is malformed or
//   of another class by 4.7.1 / 5.7.1, as libmilter refuses such a reply and the
//   milter host then answers with the defaults.
// - Text goes into an SMTP reply line after Postfix's own prefix ("<addr>: Recipient
//   address rejected: "), and RFC 5321 keeps a reply line under 512 bytes: reply and
//   hold texts are cut at kMaxReplyTextBytes, control bytes (CR, LF, TAB included)
//   become spaces and bytes over 0x7F become '?' (SMTP reply text is ASCII).
#ifndef ZETIAN_MILTER_POLICY_ACTION_H
#define ZETIAN_MILTER_POLICY_ACTION_H

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "plugin/zetian.h"

namespace zetian::milter::policy {

inline constexpr std::size_t kMaxReplyTextBytes = 256;
// RFC 5322's line limit for the whole prepended header line "Name: value".
inline constexpr std::size_t kMaxHeaderLineBytes = 998;

struct ActionOptions {
  // Tempfail as DEFER_IF_PERMIT instead of a 4xx code (a 421 stays a 421).
  bool tempfail_as_defer_if_permit = false;
};

// Reply or hold text made safe for one SMTP reply line (see the traps above).
std::string sanitizeReplyText(std::string_view text, std::size_t max_bytes = kMaxReplyTextBytes);

// "action=DUNNO\n\n": no opinion. Also the answer for an internal error when the
// configured default is to accept (mail is never lost because of us).
std::string dunnoAction();

// The answer for a check's verdict. Reads only the fields within verdict.size, as the
// engine writes only those.
std::string verdictAction(const zetian_verdict& verdict, const ActionOptions& options = {});

// "action=PREPEND Name: value\n\n". nullopt when `name` is not a header field name
// (1 to 76 bytes of printable ASCII but ':'). The value's control bytes but TAB become
// spaces; the value is cut (at a UTF-8 character boundary) so the header line stays
// within kMaxHeaderLineBytes.
std::optional<std::string> prependAction(std::string_view name, std::string_view value);

// "action=HOLD reason\n\n" (the reason sanitised as reply text; "action=HOLD\n\n" when
// it is empty).
std::string holdAction(std::string_view reason);

}  // namespace zetian::milter::policy

#endif  // ZETIAN_MILTER_POLICY_ACTION_H
