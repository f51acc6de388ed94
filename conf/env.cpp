#include "conf/env.h"

#include <algorithm>
#include <array>
#include <vector>

#include "conf/text.h"

namespace zetian::conf {
namespace {

constexpr auto kNonConfigNames = std::to_array<std::string_view>({
    // Test hooks the engine reads (docs/operations.md, "Testing hooks").
    "ZETIAN_TEST_CLOCK_OFFSET_MS", "ZETIAN_TEST_CAPABILITIES",
    // The integration test harness (tests/integration/CMakeLists.txt, harness.py):
    // the milters it starts inherit them.
    "ZETIAN_MILTER", "ZETIAN_CTL", "ZETIAN_KEEP_TMP", "ZETIAN_BUILD_DIR", "ZETIAN_TEST_CACHE",
    // The unit-test simulators.
    "ZETIAN_SIM_SEED", "ZETIAN_SIM_SLOW", "ZETIAN_SIM_SANITIZED", "ZETIAN_SIM_PROPOSED_FIXES", "ZETIAN_SIM_EVENTS",
    "ZETIAN_RAFT_SIM_SEED", "ZETIAN_TEST_MULTICAST_NETNS",
    // What [events] exec hands its hook (cluster/events.h) but ZETIAN_NODE_ID, which
    // is node.id.
    "ZETIAN_EVENT", "ZETIAN_SELF_ID", "ZETIAN_CLUSTER_STATE", "ZETIAN_CLUSTER_SIZE", "ZETIAN_TIME",
    "ZETIAN_KEYS_MOVED", "ZETIAN_NODE_ADDRESS", "ZETIAN_NODE_REGION", "ZETIAN_NODE_STATUS", "ZETIAN_RAFT_LEADER",
    "ZETIAN_RAFT_TERM", "ZETIAN_RAFT_CHANGE", "ZETIAN_RAFT_NODE",
});

bool underTableArray(std::string_view path, std::span<const KeySchema> schema) {
  for (const auto& key : schema) {
    if (key.type == ValueType::TableArray && path.size() > key.path.size() && path.starts_with(key.path) &&
        path[key.path.size()] == '.') {
      return true;
    }
  }
  return false;
}

}  // namespace

bool isEnvName(std::string_view name) {
  if (!name.starts_with(kEnvPrefix) || name.size() == kEnvPrefix.size()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'; });
}

std::string envNameOf(std::string_view path) {
  std::string out(kEnvPrefix);
  for (char c : path) {
    if (c == '.' || c == '-') {
      out += '_';
    } else if (c >= 'a' && c <= 'z') {
      out += static_cast<char>(c - 'a' + 'A');
    } else {
      out += c;
    }
  }
  return out;
}

bool isNonConfigEnvName(std::string_view name) {
  return std::find(kNonConfigNames.begin(), kNonConfigNames.end(), name) != kNonConfigNames.end();
}

EnvKey resolveEnvName(std::string_view name, std::span<const KeySchema> schema) {
  std::vector<const KeySchema*> matches;
  std::vector<std::string> settable_names;
  for (const auto& key : schema) {
    const std::string env = envNameOf(key.path);
    const bool settable = key.type != ValueType::Table && key.type != ValueType::TableArray && !underTableArray(key.path, schema);
    if (settable) settable_names.push_back(env);
    if (env == name) matches.push_back(&key);
  }
  if (matches.size() > 1) {
    std::string paths;
    for (const auto* m : matches) paths += (paths.empty() ? "" : " and ") + backticked(m->path);
    return {"", "ambiguous: it is the name of both " + paths + "; set them in the file or with --set"};
  }
  if (matches.empty()) {
    std::vector<std::string_view> candidates(settable_names.begin(), settable_names.end());
    std::string message = "no such key";
    if (auto near = closestMatch(name, candidates); !near.empty()) {
      message += "; did you mean " + std::string(near) + "?";
    } else {
      message += " (a variable is ZETIAN_ and the key's path in upper case with `_` for `.`, e.g. ZETIAN_NODE_ID for "
                 "node.id; see docs/configuration.md)";
    }
    return {"", std::move(message)};
  }
  const KeySchema& key = *matches.front();
  if (key.type == ValueType::Table) {
    std::string example;
    for (const auto& k : schema) {
      if (k.path.starts_with(key.path) && k.path.size() > key.path.size() && k.path[key.path.size()] == '.') {
        example = envNameOf(k.path);
        break;
      }
    }
    return {"", "names the section [" + std::string(key.path) + "], not a key; set its keys one by one" +
                    (example.empty() ? std::string() : ", e.g. " + example)};
  }
  if (key.type == ValueType::TableArray || underTableArray(key.path, schema)) {
    return {"", backticked(key.path) + " belongs to the [[...]] entries of the file, which the environment cannot "
                "choose between; edit the file"};
  }
  return {std::string(key.path), ""};
}

}  // namespace zetian::conf
