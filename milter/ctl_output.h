// zetianctl's output: the server's JSON parsed and turned into terminal text.
//
// Everything a reply carries can come from SMTP clients (keys: HELO names,
// addresses) or from a socket that is not the daemon's at all, so nothing here
// prints a byte as it arrived: control characters (C0, DEL, C1 in UTF-8) are shown
// escaped. A document nested deeper than the server ever writes is refused when it
// is parsed, so printing, which recurses, cannot run off the stack.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace zetian::milter::ctl {

// Keeps object members in the order the server wrote them: `health` and
// `members --json` print documents back, and operators read them top-down.
using Json = nlohmann::ordered_json;

// `text` with control characters (C0, DEL, and C1 in UTF-8) shown as \xNN.
std::string displayText(std::string_view text);

// Multi-line text from the server (a policy's TOML) for a terminal: as displayText,
// but line ends and tabs stay what they are.
std::string displayLines(std::string_view text);

// `value` as JSON text for a terminal: pretty with `indent` > 0, compact with -1.
std::string jsonText(const Json& value, int indent);

// The member `key` of an object, or nullptr (also when `value` is not an object).
const Json* member(const Json& value, const char* key);

// The text of a JSON string; `value` must be one.
const std::string& textOf(const Json& value);

// A JSON number as an operator reads it: integers exact, others to two decimals
// without trailing zeros.
std::string formatNumber(const Json& v);

// A member for a table cell: strings (escaped), numbers, booleans; "-" if absent.
std::string cell(const Json* v);

// Seconds as "2d 3h 4m 5s", leaving out the leading units that are zero.
std::string uptimeText(const Json* v);

// A retry-after in seconds as "12s", "-" when there is nothing to wait for.
std::string retryAfterText(const Json* v);

// RFC 3339 UTC with milliseconds, as /health shows times.
std::string utcTime(const Json* unix_ms);

// Display width: UTF-8 continuation bytes take no column.
std::size_t width(std::string_view s);

// `header` and `rows` in columns two spaces apart, each as wide as its widest cell.
void printTable(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// A reply body as sent, ended by a line end if it has none.
void printRaw(const std::string& body);

// One JSON document, or nullopt with *error = "at byte N: what was wrong".
std::optional<Json> parseDocument(const std::string& text, std::string* error);

}  // namespace zetian::milter::ctl
