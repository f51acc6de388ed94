#include "cluster/owner_thread.h"

#include <pthread.h>
#include <unistd.h>

#include <cstdlib>
#include <sstream>
#include <string>

namespace zetian::cluster {
namespace {

// One write(2), so the line is not interleaved with another thread's output.
[[noreturn]] void abortWith(const std::string& line) noexcept {
  std::size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + written, line.size() - written);
    if (n <= 0) break;
    written += static_cast<std::size_t>(n);
  }
  std::abort();
}

std::string currentThreadText() {
  std::ostringstream out;
  out << "thread " << std::this_thread::get_id() << " (tid " << ::gettid();
  char name[16] = {};
  if (pthread_getname_np(pthread_self(), name, sizeof name) == 0 && name[0] != '\0') out << ", \"" << name << '"';
  out << ')';
  return out.str();
}

}  // namespace

void abortWrongThread(const CallSite& where, std::thread::id owner,
                      const char* owner_description) noexcept {
  std::ostringstream out;
  out << "zetian: thread ownership violated: " << where.function_name() << " called on "
      << currentThreadText() << ", but the object belongs to ";
  if (owner_description != nullptr) {
    out << owner_description;
  } else {
    out << "thread " << owner;
  }
  out << " (" << where.file_name() << ':' << where.line() << "); aborting\n";
  abortWith(out.str());
}

void abortBrokenInvariant(const char* what, CallSite where) noexcept {
  std::ostringstream out;
  out << "zetian: internal error: " << what << " in " << where.function_name() << " (" << where.file_name()
      << ':' << where.line() << "); aborting\n";
  abortWith(out.str());
}

}  // namespace zetian::cluster
