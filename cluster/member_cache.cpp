#include "cluster/member_cache.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "conf/syntax.h"

namespace zetian::cluster {

namespace {

bool plainToken(const std::string& s) {
  if (s.empty() || s.size() > 255) return false;
  for (unsigned char c : s) {
    if (c <= ' ' || c == 0x7f) return false;
  }
  return true;
}

}  // namespace

std::string formatMemberCache(const std::vector<CachedMember>& members) {
  std::string out;
  std::size_t n = 0;
  for (const auto& [id, address] : members) {
    if (n == kMaxCachedMembers) break;
    if (!plainToken(id) || !plainToken(address)) continue;
    out += id + " " + address + "\n";
    ++n;
  }
  return out;
}

std::vector<CachedMember> parseMemberCache(const std::string& text) {
  std::vector<CachedMember> out;
  std::istringstream in(text);
  std::string line;
  while (out.size() < kMaxCachedMembers && std::getline(in, line)) {
    const auto space = line.find(' ');
    if (space == std::string::npos) continue;
    std::string id = line.substr(0, space);
    std::string address = line.substr(space + 1);
    if (!plainToken(id) || !plainToken(address)) continue;
    std::string error;
    if (!conf::parseHostPort(address, &error)) continue;
    out.emplace_back(std::move(id), std::move(address));
  }
  return out;
}

std::vector<CachedMember> readMemberCache(const std::string& state_dir) {
  std::ifstream in(state_dir + "/" + kMemberCacheFileName);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return parseMemberCache(text.str());
}

bool writeMemberCache(const std::string& state_dir, const std::string& text, std::string* error) {
  const std::string path = state_dir + "/" + kMemberCacheFileName;
  const std::string temp = path + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    *error = "open " + temp + ": " + std::strerror(errno);
    return false;
  }
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = "write " + temp + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(temp.c_str());
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    *error = "rename " + temp + ": " + std::strerror(errno);
    ::unlink(temp.c_str());
    return false;
  }
  return true;
}

}  // namespace zetian::cluster
