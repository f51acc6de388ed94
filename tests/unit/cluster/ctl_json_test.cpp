// zetianctl's JSON reader, and its agreement with the server's JsonWriter.
#include "milter/ctl_json.h"

#include <gtest/gtest.h>

#include <random>

#include "cluster/json.h"

namespace zetian::milter {
namespace {

JsonValue parseOk(std::string_view text) {
  std::string error;
  auto v = parseJson(text, &error);
  EXPECT_TRUE(v) << text << ": " << error;
  return v ? *v : JsonValue{};
}

TEST(CtlJson, ParsesAHealthDocument) {
  const JsonValue v = parseOk(R"( {"node_id":"mx1","uptime_s":3723,"maintenance":false,
      "members":[{"id":"mx1","load":{"sessions":2,"messages_per_s":0.5}}],"leader":null} )");
  ASSERT_TRUE(v.isObject());
  EXPECT_EQ(v.find("node_id")->text, "mx1");
  EXPECT_EQ(v.find("uptime_s")->number, 3723);
  EXPECT_EQ(v.find("uptime_s")->text, "3723");
  EXPECT_FALSE(v.find("maintenance")->boolean);
  EXPECT_TRUE(v.find("leader")->isNull());
  EXPECT_EQ(v.find("missing"), nullptr);
  const JsonValue* members = v.find("members");
  ASSERT_TRUE(members->isArray());
  ASSERT_EQ(members->items.size(), 1u);
  EXPECT_EQ(members->items[0].find("load")->find("messages_per_s")->number, 0.5);
}

TEST(CtlJson, DecodesEscapesAndSurrogatePairs) {
  EXPECT_EQ(parseOk(R"("a\"b\\c\/d\b\f\n\r\t")").text, "a\"b\\c/d\b\f\n\r\t");
  EXPECT_EQ(parseOk(R"("\u00e9\u20ac")").text, "\xc3\xa9\xe2\x82\xac");
  EXPECT_EQ(parseOk(R"("\ud83d\ude00")").text, "\xf0\x9f\x98\x80");
  EXPECT_EQ(parseOk(R"("\ud83dx")").text, "\xef\xbf\xbdx");        // lone high half
  EXPECT_EQ(parseOk(R"("\ude00")").text, "\xef\xbf\xbd");          // lone low half
  EXPECT_EQ(parseOk(R"("\ud83d\u0041")").text, "\xef\xbf\xbd" "A");  // high + non-low
  EXPECT_EQ(parseOk(R"("\u0000")").text, std::string("\0", 1));
}

TEST(CtlJson, KeepsNumbersAsWritten) {
  const JsonValue v = parseOk("[0, -0, 12345678901234567890, 1.50, -2e-3, 1E+2]");
  ASSERT_EQ(v.items.size(), 6u);
  EXPECT_EQ(v.items[2].text, "12345678901234567890");
  EXPECT_EQ(v.items[3].text, "1.50");
  EXPECT_DOUBLE_EQ(v.items[4].number, -0.002);
  EXPECT_DOUBLE_EQ(v.items[5].number, 100);
}

TEST(CtlJson, RejectsGarbageWithAPosition) {
  for (const char* bad :
       {"", " ", "{", "}", "[", "[1,]", "[,1]", "{\"a\":1,}", "{\"a\" 1}", "{a:1}", "{'a':1}",
        "01", "+1", "1.", ".5", "-", "1e", "1e+", "NaN", "Infinity", "tru", "nul", "True",
        "\"abc", "\"a\nb\"", "\"\\x\"", "\"\\u12\"", "\"\\u12g4\"", "[1] x", "{} {}", "1e999",
        "<html>", "\xef\xbb\xbf{}", "[\"\\ud83d\\uZZZZ\"]"}) {
    std::string error;
    EXPECT_FALSE(parseJson(bad, &error)) << "accepted: " << bad;
    EXPECT_EQ(error.rfind("at byte ", 0), 0u) << bad << ": " << error;
  }
}

TEST(CtlJson, RejectsDeepNestingWithoutOverflowingTheStack) {
  std::string error;
  EXPECT_FALSE(parseJson(std::string(1'000'000, '['), &error));
  EXPECT_NE(error.find("nested too deeply"), std::string::npos) << error;
  std::string ok = std::string(60, '[') + std::string(60, ']');
  EXPECT_TRUE(parseJson(ok, &error)) << error;
}

TEST(CtlJson, RandomBytesNeverCrash) {
  std::mt19937 rng(7);
  const std::string alphabet = "{}[]\",:\\u0123456789abcdefnrtl.-+eE \n\x01\xff";
  for (int i = 0; i < 20'000; ++i) {
    std::string text(rng() % 64, ' ');
    for (char& c : text) c = alphabet[rng() % alphabet.size()];
    std::string error;
    (void)parseJson(text, &error);
  }
}

TEST(CtlJson, PrettyPrintsWithIndentation) {
  const JsonValue v = parseOk(R"({"a":[1,{"b":null}],"c":{},"d":[],"e":"x\u001by"})");
  EXPECT_EQ(toJson(v, 2),
            "{\n"
            "  \"a\": [\n"
            "    1,\n"
            "    {\n"
            "      \"b\": null\n"
            "    }\n"
            "  ],\n"
            "  \"c\": {},\n"
            "  \"d\": [],\n"
            "  \"e\": \"x\\u001by\"\n"
            "}");
  EXPECT_EQ(toJson(v, 0), R"({"a":[1,{"b":null}],"c":{},"d":[],"e":"x\u001by"})");
}

// What the server writes, the CLI reads back unchanged (for valid UTF-8 input).
TEST(CtlJson, ReadsBackWhatTheServersWriterWrites) {
  std::mt19937 rng(99);
  for (int i = 0; i < 2000; ++i) {
    std::string text(rng() % 40, ' ');
    for (char& c : text) c = static_cast<char>(rng() % 128);  // ASCII incl. controls
    if (i % 3 == 0) text += "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
    cluster::JsonWriter w;
    w.beginObject().field("key", text).field("n", static_cast<std::int64_t>(rng())).endObject();
    std::string error;
    const auto parsed = parseJson(w.str(), &error);
    ASSERT_TRUE(parsed) << w.str() << ": " << error;
    EXPECT_EQ(parsed->find("key")->text, text);
  }
}

TEST(CtlJson, InvalidUtf8FromTheServerArrivesAsReplacementCharacters) {
  cluster::JsonWriter w;
  w.value("a\xff" "b");
  EXPECT_EQ(parseOk(w.str()).text, "a\xef\xbf\xbd" "b");
}

}  // namespace
}  // namespace zetian::milter
