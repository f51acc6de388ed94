// From a schema-checked TOML document to a Config: one builder per section, each
// validating what it reads. Internal to conf/.
#pragma once

#include <toml.hpp>

#include "conf/config.h"
#include "conf/reader.h"

namespace zetian::conf {

// Errors go to `diag`; the Config is meaningful only when there are none. With an
// `account_lookup`, milter.user and milter.group must exist.
Config buildConfig(const toml::value& root, Diagnostics& diag, const AccountLookupFn& account_lookup);

// [ratelimit] and its rules (rules.cpp). `redis_given`: the file has a [redis] section,
// which store "redis" needs (its own errors are reported by the [redis] builder).
Policy buildPolicy(TableReader& ratelimit, Diagnostics& diag, bool redis_given);
// [affinity], also policy (rules.cpp).
void buildAffinity(TableReader affinity, Policy& policy);

}  // namespace zetian::conf
