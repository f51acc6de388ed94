// Query strings of the admin endpoints: `rule=per-client-ip&key=user%2Btag%40example.com`.
//
// Percent escapes are decoded; `+` is NOT turned into a space (that is an HTML form
// convention, not RFC 3986) because keys are often mail addresses, where `+` is
// common and a silent space would name a different key. Malformed escapes and
// escaped NUL bytes are errors rather than guesses.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace zetian::cluster {

// Decodes %XX escapes. nullopt for a truncated or non-hex escape or a decoded NUL.
std::optional<std::string> percentDecode(std::string_view text);

// Encodes every byte outside RFC 3986's unreserved set (ALPHA DIGIT - . _ ~).
std::string percentEncode(std::string_view text);

// Splits `a=1&b=2` into decoded name/value pairs. Empty segments are skipped and a
// name without `=` gets an empty value. A malformed escape or a name given twice is
// an error: nullopt, with *error saying which.
std::optional<std::map<std::string, std::string>> parseQuery(std::string_view query,
                                                             std::string* error);

}  // namespace zetian::cluster
