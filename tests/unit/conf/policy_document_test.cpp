// The policy document's envelope (conf/policy_document.h): what goes in comes out,
// and any other bytes are refused with a reason, never read past their end.
#include "conf/policy_document.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "conf/policy.h"

namespace zetian::conf {
namespace {

PolicyDocument sample() {
  return PolicyDocument{7, "mx1.example", 1'764'528'000'123ull,
                        "[[ratelimit.rule]]\nname = \"a\"\nkey = \"global\"\nlimit = 1\nperiod = \"1h\"\n"};
}

std::string refusal(std::string_view bytes) {
  const PolicyDocumentDecode d = decodePolicyDocument(bytes);
  EXPECT_FALSE(d.document.has_value());
  EXPECT_FALSE(d.error.empty());
  return d.error;
}

TEST(PolicyDocument, RoundTrips) {
  for (const PolicyDocument& doc : {sample(), PolicyDocument{1, "a", 0, ""},
                                    PolicyDocument{~0ull, std::string(64, 'n'), ~0ull, "# \xc3\xa9t\xc3\xa9\n"}}) {
    const std::string bytes = encodePolicyDocument(doc);
    const PolicyDocumentDecode d = decodePolicyDocument(bytes);
    ASSERT_TRUE(d.document.has_value()) << d.error;
    EXPECT_EQ(*d.document, doc);
    EXPECT_TRUE(d.error.empty());
  }
}

TEST(PolicyDocument, LayoutIsLittleEndianAndLengthPrefixed) {
  const std::string bytes = encodePolicyDocument(PolicyDocument{0x0102, "n1", 0x0a0b, "x"});
  const std::string expected = std::string("ZPOL\x01", 5) + std::string("\x02\x01\0\0\0\0\0\0", 8) +
                               std::string("\x0b\x0a\0\0\0\0\0\0", 8) + std::string("\x02n1", 3) +
                               std::string("\x01\0\0\0x", 5);
  EXPECT_EQ(bytes, expected);
  EXPECT_EQ(bytes.size(), kPolicyDocumentHeaderBytes + 2 + 1);
}

TEST(PolicyDocument, TheTextIsAPolicyTheLoaderReads) {
  const PolicyDocumentDecode d = decodePolicyDocument(encodePolicyDocument(sample()));
  ASSERT_TRUE(d.document.has_value());
  const PolicyLoadResult r = loadPolicy(d.document->text, "<policy version 7>");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.policy->rules.at(0).name, "a");
}

TEST(PolicyDocument, EveryCutIsRefused) {
  const std::string bytes = encodePolicyDocument(sample());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    // A copy of exactly n bytes, so a read past the end is a sanitizer error.
    const std::string cut = bytes.substr(0, n);
    const std::string why = refusal(cut);
    EXPECT_NE(why.find("not a policy document"), std::string::npos) << n << ": " << why;
  }
}

TEST(PolicyDocument, BadBytesAreRefusedWithAReason) {
  const std::string good = encodePolicyDocument(sample());
  EXPECT_NE(refusal(good + "!").find("1 bytes after the policy text"), std::string::npos);
  std::string bytes = good;
  bytes[0] = 'X';
  EXPECT_NE(refusal(bytes).find("does not start with \"ZPOL\""), std::string::npos);
  bytes = good;
  bytes[4] = 2;
  EXPECT_NE(refusal(bytes).find("format 2"), std::string::npos);

  const std::string zero_version = std::string("ZPOL\x01", 5) + std::string(16, '\0') + "\x01n" + std::string("\0\0\0\0", 4);
  EXPECT_NE(refusal(zero_version).find("version 0"), std::string::npos);
  const std::string header = std::string("ZPOL\x01", 5) + std::string("\x01\0\0\0\0\0\0\0", 8) + std::string(8, '\0');
  EXPECT_NE(refusal(header + std::string("\0\0\0\0\0", 5)).find("not a node id"), std::string::npos);
  EXPECT_NE(refusal(header + "\x03" "a b" + std::string(4, '\0')).find("not a node id"), std::string::npos);
  EXPECT_NE(refusal(header + "\x41" + std::string(65, 'a') + std::string(4, '\0')).find("not a node id"), std::string::npos);
  // A length beyond the loader's 1 MiB is refused before anything is read or allocated.
  EXPECT_NE(refusal(header + "\x01n" + "\xff\xff\xff\xff").find("larger than 1048576"), std::string::npos);
  EXPECT_NE(refusal(header + "\x01n" + std::string("\x05\0\0\0", 4) + "ab").find("cut short (2 of 5 bytes)"),
            std::string::npos);
  EXPECT_NE(refusal(header + "\x01n" + std::string("\x02\0\0\0", 4) + "\xc3(").find("not UTF-8 (at byte 0)"),
            std::string::npos);
}

TEST(PolicyDocument, EncodingRefusesWhatDecodingWouldRefuse) {
  EXPECT_THROW(encodePolicyDocument(PolicyDocument{0, "a", 0, ""}), std::invalid_argument);
  EXPECT_THROW(encodePolicyDocument(PolicyDocument{1, "", 0, ""}), std::invalid_argument);
  EXPECT_THROW(encodePolicyDocument(PolicyDocument{1, "a/b", 0, ""}), std::invalid_argument);
  EXPECT_THROW(encodePolicyDocument(PolicyDocument{1, std::string(65, 'a'), 0, ""}), std::invalid_argument);
  EXPECT_THROW(encodePolicyDocument(PolicyDocument{1, "a", 0, std::string((1 << 20) + 1, 'x')}), std::invalid_argument);
  EXPECT_THROW(encodePolicyDocument(PolicyDocument{1, "a", 0, "\xff"}), std::invalid_argument);
}

}  // namespace
}  // namespace zetian::conf
