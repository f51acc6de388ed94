// The system's answer to "does this user / group exist?", for the configuration check
// (conf stays pure and takes the lookup as an argument, see conf::LoadOptions).
#pragma once

#include <string>

#include "conf/load.h"

namespace zetian::plugin {

// getpwnam_r / getgrnam_r: found, absent, or the lookup's own error (an NSS source down).
conf::AccountLookup lookupSystemAccount(conf::AccountKind kind, const std::string& name);

}  // namespace zetian::plugin
