#include "conf/policy_diff.h"

#include <algorithm>
#include <map>
#include <set>

#include "conf/parse.h"
#include "conf/policy.h"

namespace zetian::conf {
namespace {

// Both field lists compared key by key, in the order of `after`'s keys with keys only
// `before` has after them; `prefix` is put before each key ("ratelimit.").
void compareFields(const std::vector<CanonicalField>& before, const std::vector<CanonicalField>& after,
                   std::string_view prefix, std::vector<FieldChange>& out) {
  auto valueOf = [](const std::vector<CanonicalField>& fields, std::string_view key) -> std::optional<std::string> {
    for (const auto& f : fields) {
      if (f.key == key) return f.value;
    }
    return std::nullopt;
  };
  std::vector<std::string_view> keys;
  for (const auto& f : after) keys.push_back(f.key);
  for (const auto& f : before) {
    if (std::find(keys.begin(), keys.end(), f.key) == keys.end()) keys.push_back(f.key);
  }
  for (std::string_view key : keys) {
    auto old_value = valueOf(before, key);
    auto new_value = valueOf(after, key);
    if (old_value != new_value) out.push_back({std::string(prefix) + std::string(key), std::move(old_value), std::move(new_value)});
  }
}

std::string shown(const std::optional<std::string>& value) { return value ? *value : "(not set)"; }

std::string namesList(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + tomlString(n);
  return out;
}

}  // namespace

bool PolicyDiff::empty() const {
  return settings.empty() && exempt_added.empty() && exempt_removed.empty() && !exempt_reordered &&
         rules_added.empty() && rules_removed.empty() && rules_changed.empty() && order_before.empty();
}

PolicyDiff diffPolicies(const Policy& before, const Policy& after) {
  PolicyDiff diff;
  {
    auto old_fields = canonicalRatelimitFields(before);
    auto new_fields = canonicalRatelimitFields(after);
    std::erase_if(old_fields, [](const CanonicalField& f) { return f.key == "exempt"; });
    std::erase_if(new_fields, [](const CanonicalField& f) { return f.key == "exempt"; });
    compareFields(old_fields, new_fields, "ratelimit.", diff.settings);
    compareFields(canonicalAffinityFields(before), canonicalAffinityFields(after), "affinity.", diff.settings);
  }

  std::vector<std::string> old_blocks, new_blocks;
  for (const auto& c : before.exempt) old_blocks.push_back(c.toString());
  for (const auto& c : after.exempt) new_blocks.push_back(c.toString());
  const std::set<std::string> old_set(old_blocks.begin(), old_blocks.end());
  const std::set<std::string> new_set(new_blocks.begin(), new_blocks.end());
  // Sets, not searches of the lists: an exempt list can hold ten thousand blocks.
  std::set<std::string> shown_added, shown_removed;
  for (const auto& b : new_blocks) {
    if (!old_set.count(b) && shown_added.insert(b).second) diff.exempt_added.push_back(b);
  }
  for (const auto& b : old_blocks) {
    if (!new_set.count(b) && shown_removed.insert(b).second) diff.exempt_removed.push_back(b);
  }
  diff.exempt_reordered = diff.exempt_added.empty() && diff.exempt_removed.empty() && old_blocks != new_blocks;

  std::map<std::string, const Rule*> old_rules, new_rules;
  for (const auto& r : before.rules) old_rules.emplace(r.name, &r);
  for (const auto& r : after.rules) new_rules.emplace(r.name, &r);
  std::vector<std::string> kept_before, kept_after;
  for (const auto& r : before.rules) {
    if (new_rules.count(r.name)) {
      kept_before.push_back(r.name);
    } else {
      diff.rules_removed.push_back(r);
    }
  }
  for (const auto& r : after.rules) {
    const auto old = old_rules.find(r.name);
    if (old == old_rules.end()) {
      diff.rules_added.push_back(r);
      continue;
    }
    kept_after.push_back(r.name);
    RuleChange change{r.name, {}};
    compareFields(canonicalRuleFields(*old->second), canonicalRuleFields(r), "", change.fields);
    if (!change.fields.empty()) diff.rules_changed.push_back(std::move(change));
  }
  if (kept_before != kept_after) {
    diff.order_before = std::move(kept_before);
    diff.order_after = std::move(kept_after);
  }
  return diff;
}

std::string renderPolicyDiff(const PolicyDiff& diff) {
  if (diff.empty()) return "no change\n";
  std::string out;
  for (const auto& c : diff.settings) out += c.field + ": " + shown(c.before) + " -> " + shown(c.after) + "\n";
  for (const auto& b : diff.exempt_added) out += "ratelimit.exempt: added " + tomlString(b) + "\n";
  for (const auto& b : diff.exempt_removed) out += "ratelimit.exempt: removed " + tomlString(b) + "\n";
  if (diff.exempt_reordered) out += "ratelimit.exempt: the same blocks in another order\n";
  for (const auto& r : diff.rules_removed) out += "rule " + tomlString(r.name) + ": removed\n";
  for (const auto& r : diff.rules_added) {
    out += "rule " + tomlString(r.name) + ": added\n";
    for (const auto& f : canonicalRuleFields(r)) {
      if (f.key != "name") out += "    " + std::string(f.key) + " = " + f.value + "\n";
    }
  }
  for (const auto& r : diff.rules_changed) {
    out += "rule " + tomlString(r.name) + ": changed\n";
    for (const auto& c : r.fields) out += "    " + c.field + ": " + shown(c.before) + " -> " + shown(c.after) + "\n";
  }
  if (!diff.order_before.empty()) {
    out += "rule order: " + namesList(diff.order_before) + " -> " + namesList(diff.order_after) + "\n";
  }
  return out;
}

}  // namespace zetian::conf
