// libmilter ↔ engine: the milter callbacks that turn each SMTP stage libmilter reports
// into a zetian_session_check() and its verdict back into a milter reply.
//
// Protocol economy: each connection negotiates away every stage no rule needs, and
// asks for no reply where no rule can answer (SMFIP_NR_*). Over TCP, Postfix then
// sends small packets without waiting for a reply, and its Nagle meets our delayed
// ACK: a 40 ms stall per message. quickack.cpp cures that (see there).
#pragma once

#include <libmilter/mfapi.h>

#include "plugin/zetian.h"

namespace zetian::milter::callbacks {

// The filter description to hand to smfi_register(). Every callback uses `engine`,
// which must stay open until smfi_main() has returned.
smfiDesc& filterFor(zetian_engine* engine);

}  // namespace zetian::milter::callbacks
