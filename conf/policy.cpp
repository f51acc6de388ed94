// loadPolicy and policyText (policy.h).
#include "conf/policy.h"

#include <algorithm>
#include <array>

#include "conf/build.h"
#include "conf/names.h"
#include "conf/parse.h"
#include "conf/reader.h"

namespace zetian::conf {
namespace {

constexpr std::array<std::string_view, 2> kPolicyTables = {"ratelimit", "affinity"};

PolicyLoadResult finish(Diagnostics& diag, std::optional<Policy> policy) {
  PolicyLoadResult result;
  result.errors = diag.take();
  result.warnings = diag.takeWarnings();
  if (result.errors.empty()) result.policy = std::move(policy);
  return result;
}

void appendFields(std::string& out, const std::vector<CanonicalField>& fields) {
  for (const auto& f : fields) out += std::string(f.key) + " = " + f.value + "\n";
}

}  // namespace

std::span<const std::string_view> policyTables() { return kPolicyTables; }

bool isPolicyTable(std::string_view top_level_key) {
  return std::find(kPolicyTables.begin(), kPolicyTables.end(), top_level_key) != kPolicyTables.end();
}

PolicyLoadResult loadPolicy(std::string_view text, const std::string& name, const PolicyLoadOptions& options) {
  Diagnostics diag(name);
  try {
    PreparedSource prepared;
    std::optional<toml::value> parsed = parseDocument(text, name, prepared, diag);
    if (!parsed) return finish(diag, std::nullopt);
    // The policy tables, and keys the schema does not know at all (checkSchema reports
    // those as it does in a whole file, with its "did you mean"); a known node-local
    // table is refused here, at its key.
    toml::value root = toml::table{};
    for (const auto& [key, value] : parsed->as_table()) {
      const KeySchema* entry = findSchemaKey(key);
      if (entry && !isPolicyTable(key)) {
        diag.atKey(value, key, "`[" + key + "]` is a node-local table: it stays in the node's own file, not in the policy");
        continue;
      }
      root.as_table().emplace(key, value);
    }
    checkSchema(root, diag);
    TableReader top(diag, &root, "");
    TableReader ratelimit(diag, top.subtable("ratelimit"), "ratelimit");
    // Without the node's settings, the [redis] requirement is not the document's to
    // check (policy.h).
    Policy policy = buildPolicy(ratelimit, diag, options.node_has_redis.value_or(true));
    buildAffinity(TableReader(diag, top.subtable("affinity"), "affinity"), policy);
    return finish(diag, std::move(policy));
  } catch (const std::exception& e) {
    diag.atFile(std::string("internal error while reading the policy: ") + e.what());
  } catch (...) {
    diag.atFile("internal error while reading the policy");
  }
  return finish(diag, std::nullopt);
}

std::vector<CanonicalField> canonicalRatelimitFields(const Policy& policy) {
  std::string exempt = "[";
  for (std::size_t i = 0; i < policy.exempt.size(); ++i) exempt += (i ? ", " : "") + tomlString(policy.exempt[i].toString());
  exempt += "]";
  return {
      {"exempt", std::move(exempt)},
      {"exempt_authenticated", policy.exempt_authenticated ? "true" : "false"},
      {"max_keys", std::to_string(policy.max_keys)},
      {"fail_mode", tomlString(failModeName(policy.fail_mode))},
      {"store", tomlString(storeName(policy.store))},
  };
}

std::vector<CanonicalField> canonicalRuleFields(const Rule& rule) {
  std::vector<CanonicalField> f;
  f.push_back({"name", tomlString(rule.name)});
  f.push_back({"key", tomlString(keyKindName(rule.key))});
  // The loader refuses a prefix on any other key.
  if (rule.key == KeyKind::ClientNet) {
    f.push_back({"prefix_v4", std::to_string(rule.prefix_v4)});
    f.push_back({"prefix_v6", std::to_string(rule.prefix_v6)});
  }
  f.push_back({"stage", tomlString(stageName(rule.stage))});
  f.push_back({"limit", std::to_string(rule.limit)});
  f.push_back({"period", tomlString(formatDuration(rule.period))});
  f.push_back({"burst", std::to_string(rule.burst)});
  f.push_back({"algorithm", tomlString(state::algorithmName(rule.algorithm))});
  // A Redis rule may not name a scope or a consistency (the loader refuses them).
  if (rule.store != Store::Redis) {
    f.push_back({"scope", tomlString(scopeName(rule.scope))});
    f.push_back({"consistency", tomlString(consistencyName(rule.consistency))});
  }
  f.push_back({"store", tomlString(storeName(rule.store))});
  f.push_back({"action", tomlString(actionName(rule.action))});
  // Before stage "mail" the sender is unknown and the loader refuses the key.
  if (rule.stage >= Stage::Mail) f.push_back({"senders", tomlString(senderFilterName(rule.senders))});
  if (rule.reply) f.push_back({"reply", tomlString(*rule.reply)});
  return f;
}

std::vector<CanonicalField> canonicalAffinityFields(const Policy& policy) {
  return {{"method", tomlString(affinityMethodName(policy.affinity))}};
}

std::string policyText(const Policy& policy) {
  std::string out = "[ratelimit]\n";
  appendFields(out, canonicalRatelimitFields(policy));
  for (const Rule& rule : policy.rules) {
    out += "\n[[ratelimit.rule]]\n";
    appendFields(out, canonicalRuleFields(rule));
  }
  out += "\n[affinity]\n";
  appendFields(out, canonicalAffinityFields(policy));
  return out;
}

}  // namespace zetian::conf
