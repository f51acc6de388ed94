#include "plugin/accounts.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "conf/text.h"

namespace zetian::plugin {

conf::AccountLookup lookupSystemAccount(conf::AccountKind kind, const std::string& name) {
  // The reentrant calls need a buffer for the entry's strings; ERANGE asks for a larger
  // one (a group with many members can need more than sysconf suggests).
  const long hint = sysconf(kind == conf::AccountKind::User ? _SC_GETPW_R_SIZE_MAX : _SC_GETGR_R_SIZE_MAX);
  std::vector<char> buffer(hint > 0 ? static_cast<std::size_t>(hint) : 4096);
  constexpr std::size_t kMaxBuffer = 1 << 20;
  for (;;) {
    int rc = 0;
    bool found = false;
    if (kind == conf::AccountKind::User) {
      passwd entry{};
      passwd* result = nullptr;
      rc = getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &result);
      found = result != nullptr;
    } else {
      group entry{};
      group* result = nullptr;
      rc = getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &result);
      found = result != nullptr;
    }
    if (found) return {true, {}};
    if (rc == ERANGE && buffer.size() < kMaxBuffer) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    // "Not found" is rc 0 with no result; some NSS modules say it with one of these.
    if (rc == 0 || rc == ENOENT || rc == ESRCH || rc == EBADF || rc == EPERM) return {false, {}};
    return {false, conf::errnoText(rc)};
  }
}

}  // namespace zetian::plugin
