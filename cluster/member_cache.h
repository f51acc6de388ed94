// The members a node last knew, kept in node.state_dir so that a restarted node dials
// them at once, like seeds, instead of waiting for them to dial it again (their backoff
// reaches 5 s): until it has a link it has no quorum, and its cluster-scope rules follow
// fail_mode (docs/limiter.md, "Hand-off and restarts").
//
// The file `members` holds one "ID ADDRESS" line per member. It is a hint, not a record:
// written with a temporary file and a rename (no fsync: a lost update only means the
// previous list), read leniently (a line that does not parse is skipped), at most
// kMaxCachedMembers entries. Nothing in it is trusted: a dial still has to pass the
// handshake.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace zetian::cluster {

inline constexpr const char* kMemberCacheFileName = "members";
inline constexpr std::size_t kMaxCachedMembers = 256;

using CachedMember = std::pair<std::string, std::string>;  // id, host:port

// The text of the file for `members` (sorted as given; ids and addresses without
// spaces or line breaks, others skipped).
std::string formatMemberCache(const std::vector<CachedMember>& members);
// The members in `text`, skipping what does not parse; at most kMaxCachedMembers.
std::vector<CachedMember> parseMemberCache(const std::string& text);

// Reads `state_dir/members`; empty when absent or unreadable.
std::vector<CachedMember> readMemberCache(const std::string& state_dir);
// Replaces `state_dir/members` with `text`; false (and nothing changed) on error.
bool writeMemberCache(const std::string& state_dir, const std::string& text, std::string* error);

}  // namespace zetian::cluster
