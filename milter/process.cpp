#include "milter/process.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace zetian::milter::process {

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
