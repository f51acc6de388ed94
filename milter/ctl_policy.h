// zetianctl's commands on the Raft-replicated state: the cluster's policy and its
// voters. A change (apply, remove, transfer-leader) is answered once it is committed,
// so these wait longer than a read unless --timeout says otherwise.
#pragma once

#include <optional>
#include <string>

#include "milter/ctl_command.h"

namespace zetian::milter::ctl {

// policy get: the replicated policy as TOML (--json: the document as sent).
int cmdPolicyGet(const Options& options);
// policy apply FILE: checked here first (nothing sent if it has errors), then PUT.
int cmdPolicyApply(const Options& options, const std::string& path);
// policy diff FILE: exit status as diff(1): 0 no difference, 1 differences, 2 trouble.
int cmdPolicyDiff(const Options& options, const std::string& path);
// policy history: the applied versions, one row each.
int cmdPolicyHistory(const Options& options);
// cluster remove NODE: NODE stops being one of the Raft cluster's voters.
int cmdClusterRemove(const Options& options, const std::string& node);
// cluster transfer-leader [NODE]: without NODE the server picks the most up-to-date voter.
int cmdClusterTransferLeader(const Options& options, const std::optional<std::string>& node);

}  // namespace zetian::milter::ctl
