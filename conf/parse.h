// From text to a TOML document, with every refusal reported at its place in the text
// as written. Internal to conf/: the whole-file loader (load.cpp) and the policy loader
// (policy.cpp) share it, so a policy document gets exactly the errors a file gets.
#pragma once

#include <toml.hpp>

#include <optional>
#include <string_view>

#include "conf/reader.h"
#include "conf/source.h"

namespace zetian::conf {

// The text a loader accepts: at most this many bytes.
inline constexpr std::size_t kMaxConfigBytes = 1 << 20;

// Checks the size and the UTF-8, prepares the text (source.h) into `prepared` and parses
// it; on success `diag` maps places back through `prepared`, which must therefore
// outlive every use of `diag`. Nothing when the text is refused (the reason is in
// `diag`). toml11's own exceptions other than a syntax error are not caught.
std::optional<toml::value> parseDocument(std::string_view text, const std::string& name, PreparedSource& prepared,
                                         Diagnostics& diag);

// A TOML basic string holding `s`, control characters escaped.
std::string tomlString(std::string_view s);

}  // namespace zetian::conf
