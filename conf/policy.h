// The policy as a document of its own: the tables of zetian.toml that every node of a
// cluster should share ([ratelimit] with its rules and exemptions, [affinity]), read
// and written without the node-local tables around them. Issue 10 replicates this
// document by Raft; this file is only its text side (no Raft here).
//
// loadPolicy reads a policy document with the whole-file loader's own parser, schema
// and checks (parse.h, reader.h, rules.cpp), so a document gets the same errors at the
// same FILE:LINE:COL as the same tables in a node's file. Any other table is refused at
// its place: node-local settings never travel in the policy.
//
// Checks that need the node's own settings: the one there is today is that a rule with
// store "redis" needs a [redis] section. A policy document is valid or not by its text
// alone, so every node agrees on it whatever its own file holds (a Raft entry must be
// applied the same way everywhere); that check is made only when the caller says what
// the node has (PolicyLoadOptions::node_has_redis), and then exactly as the whole-file
// loader makes it. No policy check depends on `cluster.enabled`.
//
// policyText writes a Policy as canonical TOML: every key written, defaults included,
// in the schema's order, so the same policy always gives the same bytes whatever the
// key order, comments, spacing or defaults of the file it came from, and
// loadPolicy(policyText(p)) gives back p. Order that means something is kept: the
// rules (the first blocking denial in rule order decides) and, as written, the
// exempt blocks.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "conf/load.h"

namespace zetian::conf {

// The top-level tables that are policy: "ratelimit", "affinity".
std::span<const std::string_view> policyTables();
bool isPolicyTable(std::string_view top_level_key);

struct PolicyLoadOptions {
  // Unset: the document alone (what every node can agree on). Set: also the checks
  // that need this node's settings, as the whole-file loader makes them; true when the
  // node's file has a [redis] section (Config::redis.configured()).
  std::optional<bool> node_has_redis;
};

struct PolicyLoadResult {
  std::optional<Policy> policy;  // set only when errors is empty
  std::vector<ConfigError> errors;
  std::vector<ConfigError> warnings;  // as the whole-file loader's (a policy with no rule)
  bool ok() const { return errors.empty(); }
};

// `name` is what errors call the document ("policy.toml", "<policy version 7>").
PolicyLoadResult loadPolicy(std::string_view text, const std::string& name, const PolicyLoadOptions& options = {});

// The canonical text of `policy`, a policy the loader gave (for a node's file:
// policyText(config.policy)); values the loader would refuse are written as they are.
std::string policyText(const Policy& policy);

// One `key = value` line of the canonical text: the value as TOML writes it ("100",
// "\"1h\"", "[\"127.0.0.0/8\"]"). policyText and the policy diff both use these lists.
struct CanonicalField {
  std::string_view key;
  std::string value;
};
// [ratelimit]'s own keys (not its rules), in canonical order.
std::vector<CanonicalField> canonicalRatelimitFields(const Policy& policy);
// One [[ratelimit.rule]]: keys the loader would refuse for this rule are left out
// (prefixes unless key "client_net", scope and consistency with store "redis", senders
// before stage "mail", reply when there is none).
std::vector<CanonicalField> canonicalRuleFields(const Rule& rule);
std::vector<CanonicalField> canonicalAffinityFields(const Policy& policy);

}  // namespace zetian::conf
