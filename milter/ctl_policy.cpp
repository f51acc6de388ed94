// zetianctl's commands on what the cluster replicates through Raft: the policy (get,
// apply, diff, history) and the voters (cluster remove, transfer-leader).
//
// A policy file is read with the daemon's own loader (conf/), so `policy apply`
// refuses a file with the same FILE:LINE:COL errors the cluster would, before
// anything is sent, and `policy diff` compares field by field rather than as text.

#include "milter/ctl_policy.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <utility>
#include <vector>

#include "conf/load.h"
#include "conf/policy.h"
#include "conf/policy_diff.h"
#include "milter/ctl_client.h"

namespace zetian::milter::ctl {
namespace {

// A Raft change (policy apply, cluster remove, transfer-leader) is answered once it is
// committed, or after the server's 10 s deadline: wait a little longer than that
// unless --timeout says otherwise.
constexpr std::chrono::milliseconds kRaftChangeTimeout{15000};
// A policy file is at most what the loader reads (1 MiB).
constexpr std::size_t kMaxPolicyFileBytes = 1 << 20;

// A Raft change waits for its commit: longer than a read, unless --timeout says.
Options forRaftChange(const Options& options) {
  Options o = options;
  if (!o.timeout_given) o.timeout = kRaftChangeTimeout;
  return o;
}

// The file's text, or nullopt after saying why not.
std::optional<std::string> readPolicyFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "zetianctl: cannot read %s: %s\n", displayText(path).c_str(), std::strerror(errno));
    return std::nullopt;
  }
  std::string text;
  char buf[65536];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxPolicyFileBytes) {
      std::fprintf(stderr, "zetianctl: %s is larger than %zu bytes, more than a policy may be\n",
                   displayText(path).c_str(), kMaxPolicyFileBytes);
      return std::nullopt;
    }
  }
  if (in.bad()) {
    std::fprintf(stderr, "zetianctl: cannot read %s\n", displayText(path).c_str());
    return std::nullopt;
  }
  return text;
}

void printConfigErrors(const std::vector<conf::ConfigError>& errors) {
  for (const auto& e : errors) std::fprintf(stderr, "%s\n", displayText(e.format()).c_str());
}

// GET /policy's document, or nullptr after saying why there is none.
const Json* policyDocument(const std::optional<Exchange>& ex) {
  if (!ex) return nullptr;
  if (!ex->success()) {
    printServerErrors(*ex);
    printNextStep(*ex);
    return nullptr;
  }
  const Json* doc = requireObject(*ex);
  if (doc == nullptr) return nullptr;
  const Json* text = member(*doc, "text");
  if (text == nullptr || !text->is_string()) {
    std::fprintf(stderr, "zetianctl: the reply to %s has no policy text\n", ex->what.c_str());
    return nullptr;
  }
  return doc;
}

}  // namespace

int cmdPolicyGet(const Options& options) {
  const auto ex = request(options, "GET", "/policy");
  if (!ex) return kExitFailed;
  if (options.json) {
    printRaw(ex->reply.body);
    return ex->success() ? kExitOk : kExitFailed;
  }
  const Json* doc = policyDocument(ex);
  if (doc == nullptr) return kExitFailed;
  const std::string text = displayLines(textOf(*member(*doc, "text")));
  std::fwrite(text.data(), 1, text.size(), stdout);
  if (!text.empty() && text.back() != '\n') std::fputc('\n', stdout);
  return kExitOk;
}

int cmdPolicyApply(const Options& options, const std::string& path) {
  const auto text = readPolicyFile(path);
  if (!text) return kExitFailed;
  // The daemon's own loader, so a file is refused here exactly as the cluster would
  // refuse it, before anything is sent.
  const conf::PolicyLoadResult loaded = conf::loadPolicy(*text, path);
  if (!loaded.ok()) {
    printConfigErrors(loaded.errors);
    std::fprintf(stderr, "zetianctl: %s has errors; nothing was sent\n", displayText(path).c_str());
    // A node's whole zetian.toml: the loader refuses its node-local tables one by one.
    const bool node_file = std::any_of(loaded.errors.begin(), loaded.errors.end(), [](const conf::ConfigError& e) {
      return e.message.find("is a node-local table") != std::string::npos;
    });
    if (node_file) {
      std::fprintf(stderr,
                   "zetianctl: a policy file holds only [ratelimit] and [affinity]; `zetianctl policy get > "
                   "policy.toml` gives one to edit\n");
    }
    return kExitFailed;
  }
  for (const auto& w : loaded.warnings) std::fprintf(stderr, "warning: %s\n", displayText(w.format()).c_str());
  std::string target = "/policy";
  if (options.base_version) target += "?base_version=" + std::to_string(*options.base_version);
  const auto done = [](const Json& reply) {
    return "policy version " + cell(member(reply, "version")) + " committed (index " + cell(member(reply, "index")) +
           ")";
  };
  return mutation(forRaftChange(options), target, done, "the policy was not applied:", "PUT", *text);
}

int cmdPolicyDiff(const Options& options, const std::string& path) {
  const auto text = readPolicyFile(path);
  if (!text) return kExitUsage;
  // A policy file, or a node's zetian.toml: its policy tables are compared (what the
  // start-up warning policy_file_differs is about).
  std::optional<conf::Policy> file_policy;
  conf::PolicyLoadResult as_policy = conf::loadPolicy(*text, path);
  if (as_policy.ok()) {
    file_policy = std::move(as_policy.policy);
  } else {
    conf::LoadResult as_node_file = conf::loadString(*text, path);
    if (as_node_file.ok()) {
      file_policy = std::move(as_node_file.config->policy);
    } else {
      printConfigErrors(as_policy.errors);
      std::fprintf(stderr, "zetianctl: %s has errors; nothing to compare\n", displayText(path).c_str());
      return kExitUsage;
    }
  }
  const auto ex = request(options, "GET", "/policy");
  const Json* doc = policyDocument(ex);
  if (doc == nullptr) return kExitUsage;
  const Json* version = member(*doc, "version");
  const std::string cluster_name = "<policy version " + cell(version) + ">";
  const conf::PolicyLoadResult cluster = conf::loadPolicy(textOf(*member(*doc, "text")), cluster_name);
  if (!cluster.ok()) {
    printConfigErrors(cluster.errors);
    std::fprintf(stderr, "zetianctl: the cluster's policy does not load here (is zetianctl older than the daemon?)\n");
    return kExitUsage;
  }
  const conf::PolicyDiff diff = conf::diffPolicies(*cluster.policy, *file_policy);
  std::printf("--- the cluster's policy, version %s\n+++ %s\n", cell(version).c_str(), displayText(path).c_str());
  const std::string rendered = displayLines(conf::renderPolicyDiff(diff));
  std::fwrite(rendered.data(), 1, rendered.size(), stdout);
  if (!rendered.empty() && rendered.back() != '\n') std::fputc('\n', stdout);
  return diff.empty() ? kExitOk : kExitFailed;
}

int cmdPolicyHistory(const Options& options) {
  const auto ex = request(options, "GET", "/policy/history");
  if (!ex) return kExitFailed;
  if (options.json) {
    printRaw(ex->reply.body);
    return ex->success() ? kExitOk : kExitFailed;
  }
  if (!ex->success() || !ex->doc) {
    if (ex->success()) {
      std::fprintf(stderr, "zetianctl: the reply to %s is not valid JSON (%s)\n", ex->what.c_str(),
                   ex->parse_error.c_str());
    } else {
      printServerErrors(*ex);
    }
    return kExitFailed;
  }
  if (!ex->doc->is_array()) {
    std::fprintf(stderr, "zetianctl: the reply to %s is not a JSON array\n", ex->what.c_str());
    return kExitFailed;
  }
  if (ex->doc->empty()) {
    std::puts("no policy version applied yet");
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const Json& item : *ex->doc) {
    rows.push_back({cell(member(item, "version")), cell(member(item, "proposer")), utcTime(member(item, "time_unix_ms")),
                    cell(member(item, "index")), cell(member(item, "text_bytes"))});
  }
  printTable({"VERSION", "PROPOSER", "TIME (UTC)", "INDEX", "BYTES"}, rows);
  return kExitOk;
}

int cmdClusterRemove(const Options& options, const std::string& node) {
  const auto done = [&](const Json& reply) {
    return displayText(node) + " removed from the Raft cluster (index " + cell(member(reply, "index")) + ")";
  };
  return mutation(forRaftChange(options), "/cluster/remove?node=" + percentEncode(node), done,
                  "the removal was refused:");
}

int cmdClusterTransferLeader(const Options& options, const std::optional<std::string>& node) {
  const auto done = [](const Json& reply) {
    const Json* leader = member(reply, "leader");
    if (leader == nullptr || !leader->is_string()) return std::string("leadership transferred");
    return "leadership transferred: " + displayText(textOf(*leader)) + " leads now";
  };
  const std::string target = node ? "/cluster/transfer-leader?node=" + percentEncode(*node) : "/cluster/transfer-leader";
  return mutation(forRaftChange(options), target, done, "the leadership transfer failed:");
}

}  // namespace zetian::milter::ctl
