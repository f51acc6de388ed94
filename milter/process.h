// The process around the milter: pid file, privileges, umask. Called from main() in
// the order it documents; each function prints its own error to stderr and returns
// false, so main() only decides whether to go on.
#pragma once

#include <string>

namespace zetian::milter::process {

// Write our pid to `path` ("" writes none).
bool writePidFile(const std::string& path);

// Switch to `user` (and `group`, else the user's primary group) for good; "" keeps
// the current user. Refuses when the switch could be undone.
bool dropPrivileges(const std::string& user, const std::string& group_name);

}  // namespace zetian::milter::process
