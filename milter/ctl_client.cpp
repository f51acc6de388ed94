#include "milter/ctl_client.h"

#include <curl/curl.h>
#include <grp.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <utility>

namespace zetian::milter {
namespace {

// "5s" or "0.5s", as the operator wrote the timeout.
std::string secondsText(std::chrono::milliseconds ms) {
  char buf[32];
  if (ms.count() % 1000 == 0) {
    std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(ms.count() / 1000));
  } else {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms.count()) / 1000);
  }
  return buf;
}

// What a failed connect() means for the operator, and what to do about it.
std::string connectError(const std::string& path, int err,
                         std::chrono::milliseconds connect_timeout) {
  struct stat st {};
  const bool exists = stat(path.c_str(), &st) == 0;
  // Linux refuses a connect() to a file that is not a socket with ECONNREFUSED, as if
  // a daemon had died; say what it really is.
  if (err == ENOTSOCK || (err == ECONNREFUSED && exists && !S_ISSOCK(st.st_mode))) {
    return "cannot connect to " + path + ": it is not a socket (use -s to choose the health socket)";
  }
  if (err == EAGAIN || err == ETIMEDOUT || err == EINPROGRESS) {
    return "cannot connect to " + path + " within " + secondsText(connect_timeout) +
           " — zetian-milter is not accepting connections (overloaded or stuck?)";
  }
  std::string message = "cannot connect to " + path + ": " + std::strerror(err);
  if (err == ENOENT || err == ECONNREFUSED) {
    message += " — is zetian-milter running? (use -s to choose another socket)";
  } else if (err == EACCES || err == EPERM) {
    std::string group_name;
    if (exists) {
      if (const struct group* gr = getgrgid(st.st_gid); gr != nullptr && gr->gr_name != nullptr) {
        group_name = gr->gr_name;
      } else {
        group_name = std::to_string(st.st_gid);
      }
    }
    message += " — run as root or as a member of the socket's group";
    if (!group_name.empty()) message += " (" + group_name + ")";
  } else if (err == ENOTDIR) {
    message += " — that path is not a socket (use -s to choose the health socket)";
  }
  return message;
}

// The state one request's curl callbacks fill in.
struct Transfer {
  std::chrono::milliseconds connect_timeout{};
  HttpReply reply;
  bool too_large = false;
};

std::size_t onBody(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  if (t->reply.body.size() + n > kMaxReplyBytes) {
    t->too_large = true;
    return 0;  // makes curl stop with CURLE_WRITE_ERROR
  }
  t->reply.body.append(data, n);
  return n;
}

// Keeps the reason phrase, which curl does not report; the last status line wins
// (an interim 1xx comes before the real one).
std::size_t onHeader(char* data, std::size_t size, std::size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  std::string_view line(data, n);
  if (line.substr(0, 5) == "HTTP/") {
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
    const std::size_t code = line.find(' ');
    const std::size_t reason = code == std::string_view::npos ? code : line.find(' ', code + 1);
    t->reply.reason = reason == std::string_view::npos ? "" : std::string(line.substr(reason + 1));
  }
  return n;
}

// Turns a failed transfer into a sentence that says what went wrong and what to try.
std::string describeFailure(CURLcode code, const Transfer& t, int os_errno, const char* detail,
                            const std::string& path, std::chrono::milliseconds timeout) {
  const std::string curl_says = detail[0] != '\0' ? detail : curl_easy_strerror(code);
  switch (code) {
    case CURLE_COULDNT_CONNECT:
      // No errno: the accept backlog stayed full (see healthRequest).
      return connectError(path, os_errno != 0 ? os_errno : EAGAIN, t.connect_timeout);
    case CURLE_OPERATION_TIMEDOUT:
      if (t.reply.status == 0) {
        return "no answer from " + path + " within " + secondsText(timeout) +
               " — zetian-milter may be overloaded or stuck";
      }
      return "the reply from " + path + " did not complete within " + secondsText(timeout) +
             " — zetian-milter may be overloaded or stuck";
    case CURLE_GOT_NOTHING:
      return "bad reply from " + path + ": the server closed the connection without answering";
    case CURLE_PARTIAL_FILE:
      return "bad reply from " + path + ": the reply was cut short";
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
      if (t.too_large || code == CURLE_FILESIZE_EXCEEDED) {
        return "bad reply from " + path + ": larger than " + std::to_string(kMaxReplyBytes >> 20) +
               " MiB";
      }
      return "cannot write the reply: " + curl_says;
    case CURLE_UNSUPPORTED_PROTOCOL:  // HTTP/0.9, i.e. no status line at all
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
      return "bad reply from " + path + ": not an HTTP reply (" + curl_says +
             ") — is this zetian-milter's health socket? (use -s to choose it)";
    case CURLE_SEND_ERROR:
      return "cannot send to " + path + ": " +
             (os_errno != 0 ? std::string(std::strerror(os_errno)) : curl_says);
    case CURLE_RECV_ERROR:
      if (os_errno != 0) return "cannot read from " + path + ": " + std::strerror(os_errno);
      return "bad reply from " + path + ": " + curl_says;  // e.g. broken chunks
    case CURLE_OUT_OF_MEMORY:
      return "out of memory";
    default:
      return "the request to " + path + " failed: " + curl_says;
  }
}

}  // namespace

bool healthRequest(const std::string& path, std::string_view method, const std::string& target,
                   std::chrono::milliseconds timeout, HttpReply* reply, std::string* error, std::string_view body) {
  // curl treats an empty path as "no Unix socket" and would dial TCP port 80 instead.
  if (path.empty() || path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    *error = "cannot connect to " + path + ": the path is " +
             (path.empty() ? "empty" : "too long for a Unix socket");
    return false;
  }
  // "Name:" with no value removes a header curl would add on its own. Declared first:
  // the handle refers to the list until it is cleaned up.
  const std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> no_form_type(
      curl_slist_append(nullptr, "Content-Type:"), &curl_slist_free_all);
  // A PUT's TOML text, sent at once: the server answers no `Expect: 100-continue`, and
  // curl would wait a second for it before sending a body over 1 KiB.
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> put_headers(
      curl_slist_append(nullptr, "Content-Type: application/toml"), &curl_slist_free_all);
  if (put_headers && !curl_slist_append(put_headers.get(), "Expect:")) put_headers.reset();
  const std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(),
                                                                 &curl_easy_cleanup);
  if (!curl || !no_form_type || !put_headers) {
    *error = "cannot start libcurl (out of memory?)";
    return false;
  }
  CURL* h = curl.get();
  Transfer transfer;
  transfer.connect_timeout = std::min(kConnectTimeout, timeout);
  char detail[CURL_ERROR_SIZE] = "";
  const std::string url = "http://localhost" + target;

  bool set = true;
  const auto opt = [&](CURLoption option, auto value) {
    set = set && curl_easy_setopt(h, option, value) == CURLE_OK;
  };
  opt(CURLOPT_UNIX_SOCKET_PATH, path.c_str());
  opt(CURLOPT_URL, url.c_str());
  opt(CURLOPT_PROTOCOLS_STR, "http");
  opt(CURLOPT_PROXY, "");  // http_proxy in the environment must not reroute us
  opt(CURLOPT_HTTP_VERSION, static_cast<long>(CURL_HTTP_VERSION_1_1));
  opt(CURLOPT_USERAGENT, "zetianctl");
  opt(CURLOPT_NOSIGNAL, 1L);
  opt(CURLOPT_MAXFILESIZE_LARGE, static_cast<curl_off_t>(kMaxReplyBytes));
  opt(CURLOPT_ERRORBUFFER, detail);
  opt(CURLOPT_WRITEFUNCTION, &onBody);
  opt(CURLOPT_WRITEDATA, &transfer);
  opt(CURLOPT_HEADERFUNCTION, &onHeader);
  opt(CURLOPT_HEADERDATA, &transfer);
  if (method == "POST") {
    opt(CURLOPT_POST, 1L);
    opt(CURLOPT_POSTFIELDS, "");
    opt(CURLOPT_POSTFIELDSIZE, 0L);
    opt(CURLOPT_HTTPHEADER, no_form_type.get());  // an empty body is no form
  } else if (method == "PUT") {
    opt(CURLOPT_CUSTOMREQUEST, "PUT");
    opt(CURLOPT_POSTFIELDS, body.data());
    opt(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    opt(CURLOPT_HTTPHEADER, put_headers.get());
  } else {
    opt(CURLOPT_HTTPGET, 1L);
  }
  if (!set) {
    *error = "this libcurl lacks a feature zetianctl needs (Unix sockets, HTTP); version " +
             std::string(curl_version_info(CURLVERSION_NOW)->version);
    return false;
  }

  // curl connects without blocking; on a Unix socket whose accept backlog is full,
  // connect() then fails at once with EAGAIN, which curl 7.88 reports with no errno
  // (curl issue #18748). A blocking client would wait for room: so does this loop,
  // up to the connect timeout, as the server may just be busy for a moment.
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  const Clock::time_point connect_deadline = start + transfer.connect_timeout;
  const Clock::time_point deadline = start + timeout;
  const auto msUntil = [](Clock::time_point when) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(when - Clock::now()).count();
    return static_cast<long>(std::max<decltype(left)>(left, 1));
  };
  constexpr int kConnectRetryPauseMs = 20;
  while (true) {
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, msUntil(connect_deadline));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, msUntil(deadline));
    const CURLcode code = curl_easy_perform(h);
    long os_errno = 0;
    curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &transfer.reply.status);
    if (code == CURLE_COULDNT_CONNECT && (os_errno == 0 || os_errno == EAGAIN) &&
        Clock::now() + std::chrono::milliseconds(kConnectRetryPauseMs) < connect_deadline) {
      poll(nullptr, 0, kConnectRetryPauseMs);
      continue;
    }
    if (code != CURLE_OK) {
      *error = describeFailure(code, transfer, static_cast<int>(os_errno), detail, path, timeout);
      return false;
    }
    *reply = std::move(transfer.reply);
    return true;
  }
}

std::string percentEncode(const std::string& text) {
  const std::unique_ptr<char, decltype(&curl_free)> encoded(
      curl_easy_escape(nullptr, text.data(), static_cast<int>(text.size())), &curl_free);
  if (!encoded) throw std::bad_alloc();
  return encoded.get();
}

CurlLibrary::CurlLibrary() : ready_(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK) {}

CurlLibrary::~CurlLibrary() {
  if (ready_) curl_global_cleanup();
}

}  // namespace zetian::milter
