// libFuzzer target: any bytes given to the configuration loader must come back as a
// result (a Config or errors), never as a crash, a hang or an escaped exception. With
// overrides taken from the input too, so the --set path is covered.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "conf/load.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto result = zetian::conf::loadString(text, "fuzz.toml");
  // A result is either a config or at least one error, never both nor neither.
  if (result.ok() != result.config.has_value()) std::abort();
  for (const auto& e : result.errors) {
    if (e.message.empty()) std::abort();
    (void)e.format();
  }

  // The first line, if it looks like KEY=VALUE, doubles as a --set override on the
  // embedded default.
  const auto newline = text.find('\n');
  const std::string_view first = text.substr(0, newline);
  if (const auto eq = first.find('='); eq != std::string_view::npos) {
    const zetian::conf::Override o{std::string(first.substr(0, eq)), std::string(first.substr(eq + 1))};
    auto with_override = zetian::conf::loadEmbeddedDefault({o});
    if (with_override.ok() != with_override.config.has_value()) std::abort();
  }
  return 0;
}
