// One line to the engine's logger (syslog, stderr or a file, as configured), from any
// thread of the host. Levels as zetian_log(): 0 error, 1 warning, 2 info, 3 debug.
#pragma once

#include <string>

#include "plugin/zetian.h"

namespace zetian::milter {

inline void logLine(zetian_engine* engine, int level, const std::string& line) {
  zetian_log(engine, level, line.c_str());
}

}  // namespace zetian::milter
