// What changes between two policies, for `zetianctl policy diff` and the policy
// history: as data (which rule, which field, old and new value) and as text for people.
// Rules are matched by name (names are unique within a policy). Values are shown as
// the canonical text writes them (policy.h), so a diff never shows a change that is
// only spelling ("60m" against "1h", a default written out or left implicit).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "conf/config.h"

namespace zetian::conf {

struct FieldChange {
  std::string field;                  // "limit"; outside a rule "ratelimit.fail_mode", "affinity.method"
  std::optional<std::string> before;  // nothing: the key is not set (or does not apply) on that side
  std::optional<std::string> after;
  bool operator==(const FieldChange&) const = default;
};

struct RuleChange {
  std::string name;
  std::vector<FieldChange> fields;  // in canonical key order
  bool operator==(const RuleChange&) const = default;
};

struct PolicyDiff {
  // [ratelimit]'s own keys other than `exempt`, then `affinity.method`.
  std::vector<FieldChange> settings;
  std::vector<std::string> exempt_added;    // CIDR blocks, in the new list's order
  std::vector<std::string> exempt_removed;  // in the old list's order
  // The same blocks in another order, which changes nothing but the text.
  bool exempt_reordered = false;
  std::vector<Rule> rules_added;    // in the new policy's order
  std::vector<Rule> rules_removed;  // in the old policy's order
  std::vector<RuleChange> rules_changed;  // in the new policy's order
  // The rules both policies have, by name, when their order differs: it matters, as the
  // first blocking denial in rule order decides.
  std::vector<std::string> order_before, order_after;

  bool empty() const;
};

PolicyDiff diffPolicies(const Policy& before, const Policy& after);

// One line per change, "no change" when there is none; an added rule is shown with all
// its keys as the canonical text has them.
std::string renderPolicyDiff(const PolicyDiff& diff);

}  // namespace zetian::conf
