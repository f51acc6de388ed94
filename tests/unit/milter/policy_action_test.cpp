// Policy delegation answers (milter/policy_action.h): every verdict and action as the
// exact bytes Postfix reads, and the text that must never break the reply line.
#include "milter/policy_action.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace policy = zetian::milter::policy;

namespace {

zetian_verdict verdictOf(int action, const char* rcode, const char* xcode, const char* text) {
  zetian_verdict v = ZETIAN_VERDICT_INIT;
  v.action = action;
  std::strncpy(v.rcode, rcode, sizeof v.rcode - 1);
  std::strncpy(v.xcode, xcode, sizeof v.xcode - 1);
  std::strncpy(v.text, text, sizeof v.text - 1);
  std::strncpy(v.rule, "per_ip", sizeof v.rule - 1);
  return v;
}

}  // namespace

TEST(PolicyAction, ContinueIsDunno) {
  EXPECT_EQ(policy::dunnoAction(), "action=DUNNO\n\n");
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_CONTINUE, "", "", "")), "action=DUNNO\n\n");
}

TEST(PolicyAction, TempfailCarriesTheVerdictsCodeAndText) {
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_TEMPFAIL, "451", "4.7.1", "Rate limit exceeded, try later")),
            "action=451 4.7.1 Rate limit exceeded, try later\n\n");
}

TEST(PolicyAction, TempfailAsDeferIfPermitWhenConfigured) {
  const policy::ActionOptions options{.tempfail_as_defer_if_permit = true};
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_TEMPFAIL, "451", "4.7.1", "Slow down"), options),
            "action=DEFER_IF_PERMIT Slow down\n\n");
  // The maintenance answer keeps closing the session.
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_TEMPFAIL, "421", "4.3.2", "Node in maintenance"), options),
            "action=421 4.3.2 Node in maintenance\n\n");
  // A reject is never softened.
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_REJECT, "550", "5.7.1", "No"), options),
            "action=550 5.7.1 No\n\n");
}

TEST(PolicyAction, RejectCarriesTheVerdictsCodeAndText) {
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_REJECT, "550", "5.7.1", "Too many messages")),
            "action=550 5.7.1 Too many messages\n\n");
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_REJECT, "554", "5.7.0", "Go away")),
            "action=554 5.7.0 Go away\n\n");
}

TEST(PolicyAction, CodesOfTheWrongClassOrShapeFallBackToTheDefaults) {
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_TEMPFAIL, "550", "5.7.1", "x")), "action=451 4.7.1 x\n\n");
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_REJECT, "451", "4.7.1", "x")), "action=550 5.7.1 x\n\n");
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_TEMPFAIL, "", "", "x")), "action=451 4.7.1 x\n\n");
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_TEMPFAIL, "45", "4.7", "x")), "action=451 4.7.1 x\n\n");
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_TEMPFAIL, "4a1", "4.7.1234", "x")), "action=451 4.7.1 x\n\n");
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_REJECT, "550", "5.7.1 ", "x")), "action=550 5.7.1 x\n\n");
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_REJECT, "550", "5.123.456", "x")),
            "action=550 5.123.456 x\n\n");
}

TEST(PolicyAction, AnUnknownActionTempfailsAsTheMilterHostDoes) {
  EXPECT_EQ(policy::verdictAction(verdictOf(7, "451", "4.7.1", "x")), "action=451 4.7.1 x\n\n");
}

TEST(PolicyAction, EmptyTextLeavesNoTrailingSpace) {
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_REJECT, "550", "5.7.1", "")), "action=550 5.7.1\n\n");
  EXPECT_EQ(policy::verdictAction(verdictOf(ZETIAN_TEMPFAIL, "451", "4.7.1", " \r\n "),
                                  policy::ActionOptions{.tempfail_as_defer_if_permit = true}),
            "action=DEFER_IF_PERMIT\n\n");
}

TEST(PolicyAction, TextCannotBreakTheReplyLine) {
  const std::string out =
      policy::verdictAction(verdictOf(ZETIAN_TEMPFAIL, "451", "4.7.1", "a\r\n\nb\tc\x01" "d\x7F" "e \xC3\xA9 100%"));
  EXPECT_EQ(out, "action=451 4.7.1 a   b c d e ?? 100%\n\n");
  // The only LFs are the ones that end the answer.
  EXPECT_EQ(out.find('\n'), out.size() - 2);
}

TEST(PolicyAction, TextIsCappedForOneSmtpReplyLine) {
  const std::string long_text(600, 'x');
  const std::string out = policy::verdictAction(verdictOf(ZETIAN_REJECT, "550", "5.7.1", long_text.c_str()));
  EXPECT_EQ(out, "action=550 5.7.1 " + std::string(policy::kMaxReplyTextBytes, 'x') + "\n\n");
  EXPECT_EQ(policy::sanitizeReplyText(std::string(10, 'y'), 4), "yyyy");
}

TEST(PolicyAction, OnlyFieldsWithinTheVerdictsSizeAreRead) {
  zetian_verdict v = verdictOf(ZETIAN_REJECT, "554", "5.7.0", "engine text");
  // A verdict as an older engine wrote it: text and rule lie beyond its size.
  v.size = offsetof(zetian_verdict, text);
  EXPECT_EQ(policy::verdictAction(v), "action=554 5.7.0\n\n");
  v.size = 0;
  EXPECT_EQ(policy::verdictAction(v), "action=DUNNO\n\n");
}

TEST(PolicyAction, UnterminatedFieldsAreReadWithinTheirArrays) {
  zetian_verdict v = ZETIAN_VERDICT_INIT;
  v.action = ZETIAN_REJECT;
  std::memcpy(v.rcode, "5501", 4);
  std::memset(v.text, 'z', sizeof v.text);
  std::memset(v.rule, 'r', sizeof v.rule);
  const std::string out = policy::verdictAction(v);
  EXPECT_EQ(out, "action=550 5.7.1 " + std::string(policy::kMaxReplyTextBytes, 'z') + "\n\n");
}

TEST(PolicyAction, PrependWritesOneHeader) {
  EXPECT_EQ(policy::prependAction("X-Zetian-Limit", "per_ip; exceeded"),
            "action=PREPEND X-Zetian-Limit: per_ip; exceeded\n\n");
  EXPECT_EQ(policy::prependAction("X-Tag", "a\r\nInjected: yes\tb"), "action=PREPEND X-Tag: a  Injected: yes\tb\n\n");
  EXPECT_EQ(policy::prependAction("X-Tag", ""), "action=PREPEND X-Tag: \n\n");
}

TEST(PolicyAction, PrependRefusesNamesThatAreNotFieldNames) {
  EXPECT_FALSE(policy::prependAction("", "v"));
  EXPECT_FALSE(policy::prependAction("X Tag", "v"));
  EXPECT_FALSE(policy::prependAction("X:Tag", "v"));
  EXPECT_FALSE(policy::prependAction("X-T\xC3\xA9", "v"));
  EXPECT_FALSE(policy::prependAction("X-Tag\n", "v"));
  EXPECT_FALSE(policy::prependAction(std::string(77, 'X'), "v"));
  EXPECT_TRUE(policy::prependAction(std::string(76, 'X'), "v"));
}

TEST(PolicyAction, PrependCapsTheHeaderLineAtACharacterBoundary) {
  // "X-Tag: " is 7 bytes; the value gets 991. Two-byte characters: 495 fit whole.
  std::string value;
  for (int i = 0; i < 600; ++i) value += "\xC3\xA9";
  const auto out = policy::prependAction("X-Tag", value);
  ASSERT_TRUE(out);
  const std::string line = out->substr(std::strlen("action=PREPEND "), out->size() - 2 - std::strlen("action=PREPEND "));
  EXPECT_LE(line.size(), policy::kMaxHeaderLineBytes);
  EXPECT_EQ(line.size(), 7u + 990u);
  EXPECT_EQ(static_cast<unsigned char>(line.back()), 0xA9);
}

TEST(PolicyAction, HoldCarriesASanitisedReason) {
  EXPECT_EQ(policy::holdAction("quarantined by rule per_sender"), "action=HOLD quarantined by rule per_sender\n\n");
  EXPECT_EQ(policy::holdAction("a\nb"), "action=HOLD a b\n\n");
  EXPECT_EQ(policy::holdAction(""), "action=HOLD\n\n");
}
