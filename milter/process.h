// The process around the milter: instance lock, file limit, pid file, privileges,
// the stale Unix socket. Called from main() in the order it documents; each function
// prints its own error to stderr and returns false, so main() only decides whether to
// go on.
//
// One instance per node: the lock is an flock() on `<node.state_dir>/zetian-milter.lock`,
// taken before any socket or file is touched. Why there and not on the pid file: the
// pid file is optional (the embedded default has none), while node.state_dir is
// required in every configuration, and it is what two instances must never share (the
// node's durable state). The lock file holds the owner's pid for the refusal message;
// it is never removed (removing a lock file races with the next instance taking it),
// and the kernel drops the lock with the process, even after kill -9.
#pragma once

#include <string>

namespace zetian::milter::process {

// Take the instance lock in `state_dir`, creating the folder (mode 0750, owned by
// `user` when one is set and we are root) if it does not exist. On refusal, prints
// which pid holds the lock. The lock is kept until the process exits.
bool lockInstance(const std::string& state_dir, const std::string& user);

// Raise RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit now in force.
unsigned long raiseFileLimit();

// For a Unix milter socket (unix:PATH, local:PATH): a file left at PATH by a process
// that died is removed, but only once a connect() to it is refused (ECONNREFUSED: no
// one listens). A socket someone answers on, or a file that is not a socket, is left
// alone and refused. Other socket kinds: nothing to do.
bool clearStaleUnixSocket(const std::string& spec, std::string* removed);

// Write our pid to `path` ("" writes none).
bool writePidFile(const std::string& path);

// Switch to `user` (and `group`, else the user's primary group) for good; "" keeps
// the current user. Refuses when the switch could be undone.
bool dropPrivileges(const std::string& user, const std::string& group_name);

}  // namespace zetian::milter::process
