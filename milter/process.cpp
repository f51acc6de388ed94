#include "milter/process.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace zetian::milter::process {

namespace {

// The folder exists afterwards, or an error was printed.
bool ensureStateDir(const std::string& dir, const std::string& user) {
  struct stat st {};
  if (stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return true;
    std::fprintf(stderr, "zetian-milter: node.state_dir %s is not a folder\n", dir.c_str());
    return false;
  }
  if (errno != ENOENT || mkdir(dir.c_str(), 0750) != 0) {
    std::fprintf(stderr, "zetian-milter: cannot create node.state_dir %s: %s\n", dir.c_str(), std::strerror(errno));
    return false;
  }
  // The daemon writes there after dropping privileges.
  if (!user.empty() && geteuid() == 0) {
    if (passwd* pw = getpwnam(user.c_str()); pw && chown(dir.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      std::fprintf(stderr, "zetian-milter: cannot give node.state_dir %s to %s: %s\n", dir.c_str(), user.c_str(),
                   std::strerror(errno));
      return false;
    }
  }
  return true;
}

}  // namespace

bool lockInstance(const std::string& state_dir, const std::string& user) {
  if (!ensureStateDir(state_dir, user)) return false;
  const std::string path = state_dir + "/zetian-milter.lock";
  // No O_TRUNC: the file may belong to a running instance. The descriptor is left open
  // for the life of the process (CLOEXEC: a hook the engine runs must not inherit it).
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  bool writable = true;
  if (fd < 0 && errno == EACCES) {
    // Made by another user (root before a switch to milter.user): flock() needs no
    // write access, only our pid cannot be recorded then.
    fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    writable = false;
  }
  if (fd < 0) {
    std::fprintf(stderr, "zetian-milter: cannot open the instance lock %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      char text[32] = "";
      ssize_t n = pread(fd, text, sizeof text - 1, 0);
      long pid = n > 0 ? std::strtol(text, nullptr, 10) : 0;
      std::string who = pid > 0 ? "pid " + std::to_string(pid) : "another process";
      std::fprintf(stderr,
                   "zetian-milter: another zetian-milter (%s) is running on node.state_dir %s (it holds %s); "
                   "not starting, its pid file and sockets are left alone\n",
                   who.c_str(), state_dir.c_str(), path.c_str());
    } else {
      std::fprintf(stderr, "zetian-milter: cannot lock %s: %s\n", path.c_str(), std::strerror(err));
    }
    close(fd);
    return false;
  }
  if (!writable) return true;
  // A later start as milter.user itself (without root) must be able to write it too.
  if (!user.empty() && geteuid() == 0) {
    if (passwd* pw = getpwnam(user.c_str()); pw && fchown(fd, pw->pw_uid, pw->pw_gid) != 0) {
      std::fprintf(stderr, "zetian-milter: cannot give the instance lock %s to %s: %s\n", path.c_str(), user.c_str(),
                   std::strerror(errno));
    }
  }
  const std::string pid = std::to_string(getpid()) + "\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    std::fprintf(stderr, "zetian-milter: cannot write the instance lock %s: %s\n", path.c_str(), std::strerror(errno));
    close(fd);
    return false;
  }
  return true;
}

unsigned long raiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return static_cast<unsigned long>(limit.rlim_cur);
}

bool clearStaleUnixSocket(const std::string& spec, std::string* removed) {
  if (spec.rfind("unix:", 0) != 0 && spec.rfind("local:", 0) != 0) return true;
  const std::string path = spec.substr(spec.find(':') + 1);
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) return true;  // nothing there (or libmilter reports it)
  if (!S_ISSOCK(st.st_mode)) {
    std::fprintf(stderr, "zetian-milter: milter.socket %s exists and is not a socket; not removing it\n", path.c_str());
    return false;
  }
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  if (path.size() >= sizeof sun.sun_path) return true;  // libmilter refuses the path itself
  std::memcpy(sun.sun_path, path.c_str(), path.size() + 1);
  // Non-blocking: a live listener with a full backlog answers EAGAIN instead of making
  // us wait, and EAGAIN is "cannot tell", never "stale".
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    std::fprintf(stderr, "zetian-milter: socket(): %s\n", std::strerror(errno));
    return false;
  }
  const int rc = connect(fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun);
  const int err = errno;
  close(fd);
  if (rc == 0) {
    std::fprintf(stderr, "zetian-milter: another process answers on milter.socket %s; not starting\n", path.c_str());
    return false;
  }
  if (err != ECONNREFUSED) {
    std::fprintf(stderr, "zetian-milter: cannot tell whether milter.socket %s is in use (connect: %s); not removing it\n",
                 path.c_str(), std::strerror(err));
    return false;
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    std::fprintf(stderr, "zetian-milter: cannot remove the stale milter.socket %s: %s\n", path.c_str(),
                 std::strerror(errno));
    return false;
  }
  *removed = path;
  return true;
}

bool writePidFile(const std::string& path) {
  if (path.empty()) return true;
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "zetian-milter: cannot write pid file %s: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  std::fprintf(f, "%d\n", int(getpid()));
  std::fclose(f);
  return true;
}

bool dropPrivileges(const std::string& user, const std::string& group_name) {
  if (user.empty()) return true;
  errno = 0;
  passwd* pw = getpwnam(user.c_str());
  if (!pw) {
    std::fprintf(stderr, "zetian-milter: milter.user '%s' does not exist; create it (adduser --system %s) or unset it\n",
                 user.c_str(), user.c_str());
    return false;
  }
  gid_t gid = pw->pw_gid;
  if (!group_name.empty()) {
    struct group* gr = getgrnam(group_name.c_str());
    if (!gr) {
      std::fprintf(stderr, "zetian-milter: milter.group '%s' does not exist\n", group_name.c_str());
      return false;
    }
    gid = gr->gr_gid;
  }
  if (getuid() == pw->pw_uid && geteuid() == pw->pw_uid && getgid() == gid) return true;
  if (geteuid() != 0) {
    std::fprintf(stderr, "zetian-milter: milter.user is '%s' but we are not root and cannot switch; "
                         "start as root or unset milter.user\n", user.c_str());
    return false;
  }
  if (initgroups(pw->pw_name, gid) != 0 || setgid(gid) != 0 || setuid(pw->pw_uid) != 0) {
    std::fprintf(stderr, "zetian-milter: cannot switch to user %s: %s\n", user.c_str(), std::strerror(errno));
    return false;
  }
  if (setuid(0) == 0) {
    std::fprintf(stderr, "zetian-milter: privileges could be regained after switching to %s; refusing to run\n",
                 user.c_str());
    return false;
  }
  return true;
}

}  // namespace zetian::milter::process
