#include "cluster/json.h"

#include <gtest/gtest.h>

#include <clocale>
#include <cstdint>
#include <limits>
#include <stdexcept>

namespace zetian::cluster {
namespace {

std::string escaped(std::string_view text) {
  std::string out;
  appendJsonString(out, text);
  return out;
}

TEST(JsonWriter, BuildsNestedObjectsAndArraysCompactly) {
  JsonWriter w;
  w.beginObject()
      .field("node_id", "mx1")
      .field("uptime_s", 42)
      .field("maintenance", false)
      .key("members")
      .beginArray()
      .beginObject()
      .field("id", "mx1")
      .key("load")
      .beginObject()
      .field("sessions", 3u)
      .field("messages_per_s", 1.5)
      .endObject()
      .endObject()
      .beginArray()
      .endArray()
      .null()
      .endArray()
      .key("empty")
      .beginObject()
      .endObject()
      .endObject();
  EXPECT_EQ(w.str(),
            R"({"node_id":"mx1","uptime_s":42,"maintenance":false,"members":[{"id":"mx1",)"
            R"("load":{"sessions":3,"messages_per_s":1.5}},[],null],"empty":{}})");
}

TEST(JsonWriter, TopLevelScalarsAreDocumentsToo) {
  EXPECT_EQ(JsonWriter().value("x").take(), R"("x")");
  EXPECT_EQ(JsonWriter().value(true).take(), "true");
  EXPECT_EQ(JsonWriter().null().take(), "null");
}

TEST(JsonWriter, EscapesQuoteBackslashAndNamedControls) {
  EXPECT_EQ(escaped("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(escaped("\b\f\n\r\t"), R"("\b\f\n\r\t")");
  EXPECT_EQ(escaped("/"), R"("/")");  // solidus needs no escape
}

TEST(JsonWriter, EscapesEveryOtherControlCharacterAsUnicode) {
  EXPECT_EQ(escaped(std::string("\0", 1)), R"("\u0000")");
  EXPECT_EQ(escaped("\x01\x1f"), R"("\u0001\u001f")");
  EXPECT_EQ(escaped("\x1b[31m"), R"("\u001b[31m")");
  EXPECT_EQ(escaped("\x7f"), R"("\u007f")");
}

TEST(JsonWriter, PassesValidUtf8Through) {
  EXPECT_EQ(escaped("caf\xc3\xa9"), "\"caf\xc3\xa9\"");              // é, 2 bytes
  EXPECT_EQ(escaped("\xe2\x82\xac"), "\"\xe2\x82\xac\"");            // €, 3 bytes
  EXPECT_EQ(escaped("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\"");    // 😀, 4 bytes
  EXPECT_EQ(escaped("\xf4\x8f\xbf\xbf"), "\"\xf4\x8f\xbf\xbf\"");    // U+10FFFF
  EXPECT_EQ(escaped("\xed\x9f\xbf"), "\"\xed\x9f\xbf\"");            // U+D7FF
}

TEST(JsonWriter, ReplacesEachByteOfInvalidUtf8) {
  EXPECT_EQ(escaped("a\x80z"), R"("a\ufffdz")");                       // lone continuation
  EXPECT_EQ(escaped("\xc0\xaf"), R"("\ufffd\ufffd")");                 // overlong '/'
  EXPECT_EQ(escaped("\xe0\x80\xaf"), R"("\ufffd\ufffd\ufffd")");       // overlong, 3 bytes
  EXPECT_EQ(escaped("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");       // surrogate D800
  EXPECT_EQ(escaped("\xf4\x90\x80\x80"), R"("\ufffd\ufffd\ufffd\ufffd")");  // > U+10FFFF
  EXPECT_EQ(escaped("\xff\xfe"), R"("\ufffd\ufffd")");
  EXPECT_EQ(escaped("\xe2\x82"), R"("\ufffd\ufffd")");                 // truncated at the end
  EXPECT_EQ(escaped("\xe2\x82z"), R"("\ufffd\ufffdz")");               // truncated mid-string
  EXPECT_EQ(escaped("\xc3"), R"("\ufffd")");
}

TEST(JsonWriter, KeysAreEscapedLikeValues) {
  JsonWriter w;
  w.beginObject().field("we\"ird\n", 1).endObject();
  EXPECT_EQ(w.str(), R"({"we\"ird\n":1})");
}

TEST(JsonWriter, WritesIntegersAcrossTheirRange) {
  JsonWriter w;
  w.beginArray()
      .value(std::numeric_limits<std::int64_t>::min())
      .value(std::numeric_limits<std::int64_t>::max())
      .value(std::numeric_limits<std::uint64_t>::max())
      .value(static_cast<short>(-7))
      .value(static_cast<unsigned char>(200))
      .value(std::size_t{0})
      .endArray();
  EXPECT_EQ(w.str(), "[-9223372036854775808,9223372036854775807,18446744073709551615,-7,200,0]");
}

TEST(JsonWriter, WritesDoublesShortestAndNonFiniteAsNull) {
  JsonWriter w;
  w.beginArray()
      .value(0.1)
      .value(2.0)
      .value(-1.25)
      .value(1e300)
      .value(5e-324)
      .value(std::numeric_limits<double>::quiet_NaN())
      .value(std::numeric_limits<double>::infinity())
      .value(-std::numeric_limits<double>::infinity())
      .endArray();
  EXPECT_EQ(w.str(), "[0.1,2,-1.25,1e+300,5e-324,null,null,null]");
}

TEST(JsonWriter, NumbersIgnoreTheLocale) {
  const char* old = std::setlocale(LC_NUMERIC, nullptr);
  const std::string saved = old != nullptr ? old : "C";
  if (std::setlocale(LC_NUMERIC, "de_DE.UTF-8") == nullptr &&
      std::setlocale(LC_NUMERIC, "fr_FR.UTF-8") == nullptr) {
    GTEST_SKIP() << "no locale with a decimal comma installed";
  }
  JsonWriter w;
  w.value(1.5);
  std::setlocale(LC_NUMERIC, saved.c_str());
  EXPECT_EQ(w.str(), "1.5");
}

TEST(JsonWriter, RefusesMisuse) {
  {
    JsonWriter w;
    w.beginObject();
    EXPECT_THROW(w.value(1), std::logic_error);  // value without key
  }
  {
    JsonWriter w;
    w.beginArray();
    EXPECT_THROW(w.key("k"), std::logic_error);  // key in an array
    EXPECT_THROW(w.endObject(), std::logic_error);
  }
  {
    JsonWriter w;
    w.beginObject().key("a");
    EXPECT_THROW(w.key("b"), std::logic_error);  // two keys in a row
    EXPECT_THROW(w.endObject(), std::logic_error);  // key without value
  }
  {
    JsonWriter w;
    w.beginObject();
    EXPECT_THROW(w.str(), std::logic_error);  // still open
  }
  {
    JsonWriter w;
    w.value(1);
    EXPECT_THROW(w.value(2), std::logic_error);  // second root
  }
  EXPECT_THROW(JsonWriter().endArray(), std::logic_error);
}

TEST(JsonWriter, RawSplicesAPreparedValue) {
  JsonWriter w;
  w.beginObject().key("inner").raw(R"({"a":[1,2]})").field("b", 3).endObject();
  EXPECT_EQ(w.str(), R"({"inner":{"a":[1,2]},"b":3})");
}

TEST(JsonWriter, TakeLeavesAWriterReadyForANewDocument) {
  JsonWriter w;
  EXPECT_EQ(w.beginArray().endArray().take(), "[]");
  EXPECT_EQ(w.value("again").take(), R"("again")");
}

TEST(JsonError, IsAnObjectWithAnEscapedMessage) {
  EXPECT_EQ(jsonError("no such endpoint: /x\"y"), R"({"error":"no such endpoint: /x\"y"})");
}

}  // namespace
}  // namespace zetian::cluster
