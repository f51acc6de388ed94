// Thread ownership checks that run in every build.
//
// Objects on the cluster thread (libevent events, bufferevents, their bookkeeping) have
// no locks: they are safe only because one thread ever touches them. A call from
// another thread is a bug that corrupts memory quietly, so it must stop the process at
// once, with a line that says which method was called from which thread. `assert()`
// cannot do this: every build we ship defines NDEBUG.
//
// The check is one compare of pthread_self() against a stored id, cheap enough for
// every public method and every libevent callback. The failure path is out of line.
//
// Two flavours:
// - OwnerThread: the object belongs to the thread that constructed it (HealthServer,
//   Resolver, PeerLink...: they take an event_base and are created on the thread that
//   runs it).
// - Loop::checkThisThread() (cluster/loop.h): the object belongs to a Loop's thread,
//   whoever constructed it (ClusterNode).
#pragma once

#include <thread>
#include <version>
#if __has_include(<source_location>)
#include <source_location>
#endif

namespace zetian::cluster {

#if defined(__cpp_lib_source_location)
using CallSite = std::source_location;
#else
// clang 14 with libstdc++ 12 (the libFuzzer build) has no CallSite: the
// header needs a builtin that compiler lacks. The same interface from the builtins both
// compilers have; as a default argument each names the caller, as current() does.
class CallSite {
 public:
  static constexpr CallSite current(const char* file = __builtin_FILE(), unsigned line = __builtin_LINE(),
                                    const char* function = __builtin_FUNCTION()) noexcept {
    CallSite site;
    site.file_ = file;
    site.line_ = line;
    site.function_ = function;
    return site;
  }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr unsigned line() const noexcept { return line_; }
  constexpr const char* function_name() const noexcept { return function_; }

 private:
  const char* file_ = "";
  unsigned line_ = 0;
  const char* function_ = "";
};
#endif

// Writes "zetian: <function> called on thread ... but <owner> ..." to stderr and
// aborts. `owner_description` says whose the object is ("thread 1234", "the cluster
// thread (not running)").
[[noreturn]] void abortWrongThread(const CallSite& where, std::thread::id owner,
                                   const char* owner_description) noexcept;

// An internal invariant is broken (a bookkeeping bug, never bad input): say which and
// where on stderr and abort, in every build.
[[noreturn]] void abortBrokenInvariant(const char* what,
                                       CallSite where = CallSite::current()) noexcept;

class OwnerThread {
 public:
  // Owned by the calling thread.
  OwnerThread() noexcept : id_(std::this_thread::get_id()) {}

  // Aborts (see abortWrongThread) unless called on the owner thread. The default
  // argument names the calling method in the message.
  void check(CallSite where = CallSite::current()) const noexcept {
    if (std::this_thread::get_id() != id_) [[unlikely]] abortWrongThread(where, id_, nullptr);
  }
  bool isThisThread() const noexcept { return std::this_thread::get_id() == id_; }

 private:
  const std::thread::id id_;
};

}  // namespace zetian::cluster
