#include "cluster/incarnation.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>

#include "cluster/log_sink.h"
#include "conf/text.h"

namespace zetian::cluster {

namespace {

// Anything longer is not a file this code wrote (20 digits and a newline at most).
constexpr std::size_t kMaxFileBytes = 64;

std::string failure(const std::string& dir, const std::string& what, int err) {
  return "node.state_dir " + dir + ": cannot " + what + " (" + conf::errnoText(err) +
         "); the cluster keeps the node's incarnation there, so that a restart is never refused by the "
         "peers: create the folder, writable by the user zetian-milter runs as (milter.user), or set "
         "node.state_dir to one that is";
}

// "digits\n", nothing else; nullopt for anything else (empty, torn, edited).
std::optional<std::uint64_t> parseFile(std::string_view text) {
  if (text.size() < 2 || text.back() != '\n') return std::nullopt;
  text.remove_suffix(1);
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0) return std::nullopt;
  return value;
}

bool writeAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace

IncarnationOutcome advanceIncarnation(const std::string& state_dir, std::uint64_t wall_clock_ms) {
  IncarnationOutcome out;
  const std::string path = state_dir + "/" + kIncarnationFileName;
  const std::string temp = path + ".tmp";

  std::uint64_t next = wall_clock_ms == 0 ? 1 : wall_clock_ms;
  const int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  // Saved at once: building the message allocates, which may change errno.
  const int open_error = in < 0 ? errno : 0;
  if (in < 0 && open_error != ENOENT) {
    out.error = failure(state_dir, "read " + path, open_error);
    return out;
  }
  if (in >= 0) {
    char buffer[kMaxFileBytes + 1];
    std::size_t length = 0;
    int read_error = 0;
    while (length < sizeof buffer) {
      const ssize_t n = ::read(in, buffer + length, sizeof buffer - length);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) read_error = errno;
      if (n <= 0) break;
      length += static_cast<std::size_t>(n);
    }
    struct stat st {};
    const bool have_mtime = ::fstat(in, &st) == 0;
    ::close(in);
    if (read_error != 0) {
      out.error = failure(state_dir, "read " + path, read_error);
      return out;
    }
    const auto last = length <= kMaxFileBytes ? parseFile(std::string_view(buffer, length)) : std::nullopt;
    if (last) {
      if (*last == UINT64_MAX) {
        out.error = "node.state_dir " + state_dir + ": the incarnation in " + path +
                    " is at its maximum and cannot grow; stop every node of the cluster, then remove the file";
        return out;
      }
      next = std::max(next, *last + 1);
    } else {
      std::uint64_t mtime_ms = 0;
      if (have_mtime && st.st_mtim.tv_sec > 0) {
        mtime_ms = static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1000 +
                   static_cast<std::uint64_t>(st.st_mtim.tv_nsec / 1'000'000);
      }
      next = std::max(next, mtime_ms + 1);
      out.warning = "cluster_incarnation_file_unreadable path=" + logValue(path) + " bytes=" + std::to_string(length) +
                    " fallback=" + std::to_string(next) +
                    " action=\"the file is not one number and a newline (edited, or damaged on disk); "
                    "the incarnation falls back to the later of the wall clock and the file's time, and the "
                    "file is rewritten. If peers refuse this node as an older process, stop it until they "
                    "have forgotten it (failure_detection_timeout) or give it a correct clock\"";
    }
  }

  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    const int err = errno;
    out.error = failure(state_dir, "create " + temp, err);
    return out;
  }
  const std::string text = std::to_string(next) + "\n";
  if (!writeAll(fd, text) || ::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(temp.c_str());
    out.error = failure(state_dir, "write " + temp, err);
    return out;
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    out.error = failure(state_dir, "write " + temp, err);
    return out;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    out.error = failure(state_dir, "rename " + temp + " to " + path, err);
    return out;
  }
  // The rename is durable only once the folder's entry is.
  const int dir = ::open(state_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0 || ::fsync(dir) != 0) {
    const int err = errno;
    if (dir >= 0) ::close(dir);
    out.error = failure(state_dir, "sync the folder", err);
    return out;
  }
  ::close(dir);
  out.value = next;
  return out;
}

std::optional<std::int64_t> testClockOffsetMs(const char* text, std::string* error) {
  if (text == nullptr) return std::nullopt;
  const std::string_view view(text);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(view.data(), view.data() + view.size(), value);
  if (view.empty() || ec != std::errc() || end != view.data() + view.size()) {
    *error = std::string(kTestClockOffsetVariable) + "=`" + std::string(view) +
             "` is not a whole number of milliseconds; it is a test hook only: unset it";
    return std::nullopt;
  }
  return value;
}

}  // namespace zetian::cluster
