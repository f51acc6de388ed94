// What the C ABI's wrappers share with the tests: the bounded wait of
// zetian_engine_close(), with the bound as an argument.
#pragma once

#include <chrono>

#include "plugin/zetian.h"

namespace zetian::plugin {

// How long zetian_engine_close() waits for open sessions. libmilter gives its session
// threads no way to be joined, and a stop must not hang on a stuck SMTP client.
constexpr std::chrono::milliseconds kCloseDrainTimeout{5000};

// zetian_engine_close() with another bound.
void closeEngine(zetian_engine* engine, std::chrono::milliseconds drain_timeout);

}  // namespace zetian::plugin
