// The spelling of every enumerated value in zetian.toml, in one place: the loader
// parses with these tables, error messages list them, and the *Name() functions in
// config.h print them. Internal to conf/.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "conf/config.h"

namespace zetian::conf {

template <class E>
struct NamedValue {
  std::string_view name;
  E value;
};

std::span<const NamedValue<KeyKind>> keyKindNames();
std::span<const NamedValue<Stage>> stageNames();
std::span<const NamedValue<Scope>> scopeNames();
std::span<const NamedValue<Action>> actionNames();
std::span<const NamedValue<SenderFilter>> senderFilterNames();
std::span<const NamedValue<DefaultAction>> defaultActionNames();
std::span<const NamedValue<LogLevel>> logLevelNames();
std::span<const NamedValue<LogTarget>> logTargetNames();
std::span<const NamedValue<Discovery>> discoveryNames();
std::span<const NamedValue<Consistency>> consistencyNames();
std::span<const NamedValue<FailMode>> failModeNames();
std::span<const NamedValue<AffinityMethod>> affinityMethodNames();
std::span<const NamedValue<state::Algorithm>> algorithmNames();
std::span<const NamedValue<Store>> storeNames();
std::span<const NamedValue<PolicyTempfailAction>> policyTempfailActionNames();

template <class E>
std::optional<E> lookupName(std::span<const NamedValue<E>> table, std::string_view name) {
  for (const auto& entry : table) {
    if (entry.name == name) return entry.value;
  }
  return std::nullopt;
}

}  // namespace zetian::conf
