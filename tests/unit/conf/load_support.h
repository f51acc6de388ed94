// What the loader tests share: loading a text as "t.toml", the only error of a text with
// its place, and a scratch folder.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "conf/load.h"

namespace zetian::conf {

inline LoadResult load(std::string_view text, const std::vector<Override>& overrides = {}) {
  return loadString(text, "t.toml", overrides);
}

inline std::string dump(const LoadResult& r) {
  std::string out;
  for (const auto& e : r.errors) out += e.format() + "\n";
  return out;
}

// The only error `text` has; fails the test if there are more or none.
inline ConfigError onlyError(std::string_view text, const std::vector<Override>& overrides = {}) {
  const auto r = load(text, overrides);
  EXPECT_EQ(r.errors.size(), 1u) << text << "\n--- errors:\n" << dump(r);
  EXPECT_FALSE(r.config.has_value());
  return r.errors.empty() ? ConfigError{} : r.errors.front();
}

#define EXPECT_ERROR_AT(err, l, c, fragment)                                          \
  do {                                                                                \
    const ConfigError e_ = (err);                                                     \
    EXPECT_EQ(e_.line, l) << e_.format();                                             \
    EXPECT_EQ(e_.column, c) << e_.format();                                           \
    EXPECT_NE(e_.message.find(fragment), std::string::npos) << e_.format();           \
  } while (0)

inline Config good(std::string_view text, const std::vector<Override>& overrides = {}) {
  auto r = load(text, overrides);
  EXPECT_TRUE(r.ok()) << dump(r);
  return r.config.value_or(Config{});
}

// A scratch folder for secret files, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "zetian-conf-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string write(const std::string& name, const std::string& content) const {
    const auto p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace zetian::conf
