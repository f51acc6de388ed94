// zetianctl's requests to the health socket and the reports of answers a command
// cannot use.

#include "milter/ctl_command.h"

#include <cstdio>

namespace zetian::milter::ctl {

std::optional<Exchange> request(const Options& options, std::string_view method,
                                const std::string& target, std::string_view body) {
  Exchange ex;
  ex.what = std::string(method) + " " + target;
  std::string error;
  if (!healthRequest(options.socket, method, target, options.timeout, &ex.reply, &error, body)) {
    std::fprintf(stderr, "zetianctl: %s\n", displayText(error).c_str());
    return std::nullopt;
  }
  ex.doc = parseDocument(ex.reply.body, &ex.parse_error);
  return ex;
}

void printServerErrors(const Exchange& ex) {
  bool printed = false;
  if (ex.doc) {
    if (const Json* e = member(*ex.doc, "error"); e != nullptr && e->is_string()) {
      std::fprintf(stderr, "zetianctl: %s\n", displayText(textOf(*e)).c_str());
      printed = true;
    }
    if (const Json* list = member(*ex.doc, "errors"); list != nullptr && list->is_array()) {
      for (const Json& line : *list) {
        std::fprintf(stderr, "%s\n", line.is_string() ? displayText(textOf(line)).c_str()
                                                      : displayText(jsonText(line, -1)).c_str());
        printed = true;
      }
    }
  }
  if (!printed) {
    std::string first_line = ex.reply.body.substr(0, ex.reply.body.find('\n'));
    if (first_line.size() > 200) first_line.resize(200);
    std::fprintf(stderr, "zetianctl: %s: the server answered %ld %s%s%s\n", ex.what.c_str(),
                 ex.reply.status, displayText(ex.reply.reason).c_str(),
                 first_line.empty() ? "" : ": ", displayText(first_line).c_str());
  }
}

void printNextStep(const Exchange& ex) {
  const Json* e = ex.doc ? member(*ex.doc, "error") : nullptr;
  const std::string message = e != nullptr && e->is_string() ? textOf(*e) : std::string();
  const char* next = nullptr;
  if (ex.reply.status == 503 && message.rfind("no quorum", 0) == 0) {
    next = "changes need a majority of voters; every node keeps enforcing the policy in force meanwhile";
  } else if (ex.reply.status == 503 && message.rfind("no leader", 0) == 0) {
    next = "the cluster is electing a leader: try again in a few seconds";
  } else if (ex.reply.status == 409) {
    next = "another change landed first: see `zetianctl policy diff FILE`, then apply again";
  } else if (ex.reply.status == 504) {
    next = "it may still commit: check `zetianctl policy history` before trying again";
  }
  if (next != nullptr) std::fprintf(stderr, "zetianctl: %s\n", next);
}

const Json* requireObject(const Exchange& ex) {
  if (!ex.doc) {
    if (!ex.success()) {
      printServerErrors(ex);
    } else {
      std::fprintf(stderr, "zetianctl: the reply to %s is not valid JSON (%s)\n", ex.what.c_str(),
                   ex.parse_error.c_str());
    }
    return nullptr;
  }
  if (!ex.doc->is_object()) {
    std::fprintf(stderr, "zetianctl: the reply to %s is not a JSON object\n", ex.what.c_str());
    return nullptr;
  }
  return &*ex.doc;
}

int mutation(const Options& options, const std::string& target,
             const std::function<std::string(const Json&)>& done, const std::string& refused,
             std::string_view method, std::string_view body) {
  const auto ex = request(options, method, target, body);
  if (!ex) return kExitFailed;
  const Json* ok = ex->doc ? member(*ex->doc, "ok") : nullptr;
  const bool accepted = ex->success() && (ok == nullptr || !ok->is_boolean() || ok->get<bool>());
  if (options.json) {
    printRaw(ex->reply.body);
    return accepted ? kExitOk : kExitFailed;
  }
  if (accepted) {
    if (!ex->doc) {
      std::fprintf(stderr, "zetianctl: the reply to %s is not valid JSON (%s)\n", ex->what.c_str(),
                   ex->parse_error.c_str());
      return kExitFailed;
    }
    std::printf("%s\n", done(*ex->doc).c_str());
    return kExitOk;
  }
  std::fprintf(stderr, "zetianctl: %s\n", refused.c_str());
  printServerErrors(*ex);
  printNextStep(*ex);
  return kExitFailed;
}

}  // namespace zetian::milter::ctl
