// What a reload can change in a running engine, key by key.
//
// The node part of the configuration (sockets, users, the cluster, Redis, logging...)
// is mostly fixed once the engine runs: a reload that changes such a key must say so,
// or the operator believes a setting is in force that is not. This file is the one
// table of every configuration key with how a reload treats it: applied live, or
// needing a restart (compared field by field). A unit test checks that the table covers
// every key of conf/schema.cpp, so a new key cannot be added without deciding here.
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "conf/config.h"

namespace zetian::plugin {

enum class ReloadEffect {
  Live,     // the reload applies it
  Restart,  // the running engine keeps its value until the next start
};

struct ReloadSetting {
  std::string_view key;      // the schema path reported to the operator
  std::string_view also;     // another schema path folded into the same value ("" if none)
  ReloadEffect effect;
  // True when both configurations agree on this setting; nullptr for the policy keys,
  // which are always applied as a whole (compiled into a new snapshot).
  bool (*same)(const conf::Config& a, const conf::Config& b);
};

// Every configuration key (tables aside; [[ratelimit.rule]] as one entry), in
// documentation order.
std::span<const ReloadSetting> reloadSettings();

// The keys that differ between `running` and `next` and need a restart, in table order.
std::vector<std::string_view> settingsNeedingRestart(const conf::Config& running, const conf::Config& next);

}  // namespace zetian::plugin
