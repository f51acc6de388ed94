// The schema is the one list of keys: the loader reads exactly these, the reference in
// docs/configuration.md documents exactly these, and the example contrib/zetian.toml
// shows every one of them.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "conf/build.h"
#include "conf/reader.h"
#include "conf/schema.h"

namespace zetian::conf {
namespace {

std::string readSourceFile(const std::string& relative) {
  std::ifstream in(std::string(ZETIAN_SOURCE_DIR) + "/" + relative);
  EXPECT_TRUE(in.good()) << relative;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Leaf keys (not tables) with their type names.
std::map<std::string, std::string> schemaLeaves() {
  std::map<std::string, std::string> out;
  for (const auto& key : schemaKeys()) {
    if (key.type == ValueType::Table || key.type == ValueType::TableArray) continue;
    out.emplace(key.path, valueTypeName(key.type));
  }
  return out;
}

TEST(Schema, PathsAreUniqueAndTheirParentsAreTables) {
  std::set<std::string_view> seen;
  for (const auto& key : schemaKeys()) {
    EXPECT_TRUE(seen.insert(key.path).second) << key.path;
    const auto dot = key.path.rfind('.');
    if (dot == std::string_view::npos) {
      EXPECT_EQ(key.type, ValueType::Table) << key.path;
      continue;
    }
    const KeySchema* parent = findSchemaKey(key.path.substr(0, dot));
    ASSERT_NE(parent, nullptr) << key.path;
    EXPECT_TRUE(parent->type == ValueType::Table || parent->type == ValueType::TableArray) << key.path;
  }
}

// Every key of the schema is read by a section builder (a key listed but never read
// would be accepted and silently ignored), and no builder reads a key the schema does
// not list (TableReader throws then).
TEST(Schema, TheLoaderReadsEveryKey) {
  std::istringstream in("[[ratelimit.rule]]\n[cluster.tls]\n[metrics.statsd]\n");
  const toml::value root = toml::parse(in, "t.toml");
  Diagnostics diag("t.toml");
  checkSchema(root, diag);
  EXPECT_NO_THROW(buildConfig(root, diag, nullptr));
  std::set<std::string> expected;
  for (const auto& [path, type] : schemaLeaves()) expected.insert(path);
  for (const auto& key : schemaKeys()) {
    if (key.type == ValueType::Table || key.type == ValueType::TableArray) expected.insert(std::string(key.path));
  }
  EXPECT_EQ(diag.keysRead(), expected);
}

// docs/configuration.md documents each key in a table row whose first two cells are
// the dotted key (at least one dot) in backquotes and its type:
//   | `milter.timeout` | duration | ...
TEST(Schema, ReferenceDocumentsExactlyTheSchemaKeys) {
  const std::string doc = readSourceFile("docs/configuration.md");
  const std::regex row(R"(^\|\s*`([a-z0-9_]+(?:\.[a-z0-9_]+)+)`\s*\|\s*([^|]*?)\s*\|)");
  std::map<std::string, std::string> documented;
  std::istringstream lines(doc);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (!std::regex_search(line, m, row)) continue;
    EXPECT_TRUE(documented.emplace(m[1], m[2]).second) << "documented twice: " << m[1];
  }
  const auto schema = schemaLeaves();
  for (const auto& [path, type] : schema) {
    auto it = documented.find(path);
    if (it == documented.end()) {
      ADD_FAILURE() << "`" << path << "` is not documented in docs/configuration.md";
      continue;
    }
    EXPECT_EQ(it->second, type) << "type of `" << path << "` in docs/configuration.md";
  }
  for (const auto& [path, type] : documented) {
    EXPECT_TRUE(schema.count(path)) << "docs/configuration.md documents `" << path << "`, which the loader does not know";
  }
}

void collectKeys(const toml::value& table, const std::string& prefix, std::set<std::string>& out) {
  for (const auto& [key, value] : table.as_table()) {
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    if (value.is_table()) {
      collectKeys(value, path, out);
    } else if (value.is_array() && !value.as_array().empty() && value.as_array().front().is_table()) {
      for (const auto& element : value.as_array()) collectKeys(element, path, out);
    } else {
      out.insert(path);
    }
  }
}

// contrib/zetian.toml shows every key: set, or commented out as "# key = value" (or
// "# [table]") at the start of a line, for the ones without a default or that exclude
// each other, like a secret and its file.
TEST(Schema, ContribExampleShowsEveryKey) {
  const std::string text = readSourceFile("contrib/zetian.toml");
  const std::regex commented_key(R"(^# ?([a-z0-9_]+ = .*|\[[a-z0-9_.]+\])$)");
  std::string uncommented;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    uncommented += std::regex_match(line, m, commented_key) ? std::string(m[1]) : line;
    uncommented += "\n";
  }
  std::istringstream in(uncommented);
  toml::value root;
  ASSERT_NO_THROW(root = toml::parse(in, "contrib/zetian.toml (uncommented)"));
  std::set<std::string> shown;
  collectKeys(root, "", shown);
  std::set<std::string> expected;
  for (const auto& [path, type] : schemaLeaves()) expected.insert(path);
  EXPECT_EQ(shown, expected);
}

}  // namespace
}  // namespace zetian::conf
