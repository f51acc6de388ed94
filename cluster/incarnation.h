// The node's incarnation: the number that tells a restarted node from the process it
// replaces. Peers keep the highest incarnation they have seen for a node id and refuse
// a lower one (an older process, or a second one with the same id), so a node must
// never come back with a smaller number.
//
// Wall-clock milliseconds alone do not promise that: a node restarted with its clock
// behind its previous start (a wrong RTC, an NTP step) would be refused by every peer
// for as long as they remember it. So the last value is kept in node.state_dir and the
// next one is max(last + 1, wall clock): it only ever grows, and it still starts near
// the wall clock on a fresh state_dir (peers that remember an old process of the same
// id from before the state_dir was wiped accept it, as before).
//
// The file holds one decimal number and a newline. It is replaced atomically: written
// to a temporary file, fsynced, renamed over the old one, and the folder fsynced, so a
// crash leaves the old value or the new one, never a mix. A file that is nonetheless
// unreadable as such (edited, truncated by a disk fault) is not fatal: the node warns
// and falls back to the wall clock or the file's modification time plus one, whichever
// is later (never less than what it would have used without the file).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace zetian::cluster {

inline constexpr const char* kIncarnationFileName = "incarnation";

struct IncarnationOutcome {
  std::uint64_t value = 0;  // 0 when error is set
  std::string warning;      // for the log: the file was unusable, `value` is the fallback
  std::string error;        // nothing was stored; the node must not start
};

// Reads the last incarnation from `state_dir`, chooses the next one (wall_clock_ms is
// the current wall-clock time in Unix milliseconds) and stores it durably before
// returning it. Blocks on fsync: call it once, at start-up.
IncarnationOutcome advanceIncarnation(const std::string& state_dir, std::uint64_t wall_clock_ms);

// The test hook ZETIAN_TEST_CLOCK_OFFSET_MS: a signed number of milliseconds added to
// the wall clock the incarnation is taken from, so that a test can restart a node
// "with its clock set back" without changing the machine's clock. Read once at start;
// nullopt when unset; *error set when the text is not a whole number.
inline constexpr const char* kTestClockOffsetVariable = "ZETIAN_TEST_CLOCK_OFFSET_MS";
std::optional<std::int64_t> testClockOffsetMs(const char* text, std::string* error);

}  // namespace zetian::cluster
