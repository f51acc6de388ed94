// The policy delegation request parser and view (milter/policy_request.h): the
// request Postfix's documentation shows, every split of the input, pipelining, and
// every malformed input the policy host must refuse with bounded memory.
#include "milter/policy_request.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace policy = zetian::milter::policy;
using Status = policy::RequestParser::Status;
using policy::ParseError;

namespace {

// The full request of SMTPD_POLICY_README (Postfix 3.2 and later), as Postfix writes it.
const std::string kReadmeRequest =
    "request=smtpd_access_policy\n"
    "protocol_state=RCPT\n"
    "protocol_name=SMTP\n"
    "helo_name=some.domain.tld\n"
    "queue_id=8045F2AB23\n"
    "sender=foo@bar.tld\n"
    "recipient=bar@foo.tld\n"
    "recipient_count=0\n"
    "client_address=1.2.3.4\n"
    "client_name=another.domain.tld\n"
    "reverse_client_name=another.domain.tld\n"
    "instance=123.456.7\n"
    "sasl_method=plain\n"
    "sasl_username=you\n"
    "sasl_sender=\n"
    "size=12345\n"
    "ccert_subject=solaris9.porcupine.org\n"
    "ccert_issuer=Wietse+20Venema\n"
    "ccert_fingerprint=C2:9D:F4:87:71:73:73:D9:18:E7:C2:F3:C1:DA:6E:04\n"
    "encryption_protocol=TLSv1/SSLv3\n"
    "encryption_cipher=DHE-RSA-AES256-SHA\n"
    "encryption_keysize=256\n"
    "etrn_domain=\n"
    "stress=\n"
    "ccert_pubkey_fingerprint=68:B3:29:DA:98:93:E3:40:99:C7:D8:AD:5C:B9:C9:40\n"
    "client_port=1234\n"
    "policy_context=submission\n"
    "server_address=10.3.2.1\n"
    "server_port=54321\n"
    "\n";

// Captured from Postfix 3.7.11 (Debian 12) with check_policy_service in every
// restriction list and smtpd_delay_reject = no: one message, one recipient, the six
// requests of its session as Postfix wrote them (client_port, server_port, instance
// and queue_id are that run's).
const std::string kPostfix37Transaction =
    "request=smtpd_access_policy\n"
    "protocol_state=CONNECT\n"
    "protocol_name=SMTP\n"
    "client_address=127.0.0.2\n"
    "client_name=unknown\n"
    "client_port=43857\n"
    "reverse_client_name=unknown\n"
    "server_address=127.0.0.1\n"
    "server_port=25653\n"
    "helo_name=\n"
    "sender=\n"
    "recipient=\n"
    "recipient_count=0\n"
    "queue_id=\n"
    "instance=\n"
    "size=0\n"
    "etrn_domain=\n"
    "stress=\n"
    "sasl_method=\n"
    "sasl_username=\n"
    "sasl_sender=\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=\n"
    "encryption_cipher=\n"
    "encryption_keysize=0\n"
    "policy_context=\n"
    "\n"
    "request=smtpd_access_policy\n"
    "protocol_state=EHLO\n"
    "protocol_name=SMTP\n"
    "client_address=127.0.0.2\n"
    "client_name=unknown\n"
    "client_port=43857\n"
    "reverse_client_name=unknown\n"
    "server_address=127.0.0.1\n"
    "server_port=25653\n"
    "helo_name=client.zetian.test\n"
    "sender=\n"
    "recipient=\n"
    "recipient_count=0\n"
    "queue_id=\n"
    "instance=\n"
    "size=0\n"
    "etrn_domain=\n"
    "stress=\n"
    "sasl_method=\n"
    "sasl_username=\n"
    "sasl_sender=\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=\n"
    "encryption_cipher=\n"
    "encryption_keysize=0\n"
    "policy_context=\n"
    "\n"
    "request=smtpd_access_policy\n"
    "protocol_state=MAIL\n"
    "protocol_name=ESMTP\n"
    "client_address=127.0.0.2\n"
    "client_name=unknown\n"
    "client_port=43857\n"
    "reverse_client_name=unknown\n"
    "server_address=127.0.0.1\n"
    "server_port=25653\n"
    "helo_name=client.zetian.test\n"
    "sender=sender@example.org\n"
    "recipient=\n"
    "recipient_count=0\n"
    "queue_id=\n"
    "instance=\n"
    "size=0\n"
    "etrn_domain=\n"
    "stress=\n"
    "sasl_method=\n"
    "sasl_username=\n"
    "sasl_sender=\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=\n"
    "encryption_cipher=\n"
    "encryption_keysize=0\n"
    "policy_context=\n"
    "\n"
    "request=smtpd_access_policy\n"
    "protocol_state=RCPT\n"
    "protocol_name=ESMTP\n"
    "client_address=127.0.0.2\n"
    "client_name=unknown\n"
    "client_port=43857\n"
    "reverse_client_name=unknown\n"
    "server_address=127.0.0.1\n"
    "server_port=25653\n"
    "helo_name=client.zetian.test\n"
    "sender=sender@example.org\n"
    "recipient=bob@example.net\n"
    "recipient_count=0\n"
    "queue_id=\n"
    "instance=c8d.6b0df64c.400fe.0\n"
    "size=0\n"
    "etrn_domain=\n"
    "stress=\n"
    "sasl_method=\n"
    "sasl_username=\n"
    "sasl_sender=\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=\n"
    "encryption_cipher=\n"
    "encryption_keysize=0\n"
    "policy_context=\n"
    "\n"
    "request=smtpd_access_policy\n"
    "protocol_state=DATA\n"
    "protocol_name=ESMTP\n"
    "client_address=127.0.0.2\n"
    "client_name=unknown\n"
    "client_port=43857\n"
    "reverse_client_name=unknown\n"
    "server_address=127.0.0.1\n"
    "server_port=25653\n"
    "helo_name=client.zetian.test\n"
    "sender=sender@example.org\n"
    "recipient=bob@example.net\n"
    "recipient_count=1\n"
    "queue_id=46970A75512\n"
    "instance=c8d.6b0df64c.400fe.0\n"
    "size=0\n"
    "etrn_domain=\n"
    "stress=\n"
    "sasl_method=\n"
    "sasl_username=\n"
    "sasl_sender=\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=\n"
    "encryption_cipher=\n"
    "encryption_keysize=0\n"
    "policy_context=\n"
    "\n"
    "request=smtpd_access_policy\n"
    "protocol_state=END-OF-MESSAGE\n"
    "protocol_name=ESMTP\n"
    "client_address=127.0.0.2\n"
    "client_name=unknown\n"
    "client_port=43857\n"
    "reverse_client_name=unknown\n"
    "server_address=127.0.0.1\n"
    "server_port=25653\n"
    "helo_name=client.zetian.test\n"
    "sender=sender@example.org\n"
    "recipient=bob@example.net\n"
    "recipient_count=1\n"
    "queue_id=46970A75512\n"
    "instance=c8d.6b0df64c.400fe.0\n"
    "size=232\n"
    "etrn_domain=\n"
    "stress=\n"
    "sasl_method=\n"
    "sasl_username=\n"
    "sasl_sender=\n"
    "ccert_subject=\n"
    "ccert_issuer=\n"
    "ccert_fingerprint=\n"
    "ccert_pubkey_fingerprint=\n"
    "encryption_protocol=\n"
    "encryption_cipher=\n"
    "encryption_keysize=0\n"
    "policy_context=\n"
    "\n";

struct Outcome {
  std::vector<policy::Request> requests;
  ParseError error = ParseError::None;
};

// Feeds `input` in pieces of `chunk` bytes (0: all at once), taking every request,
// then tells the parser the input ended.
Outcome parseAll(const std::string& input, std::size_t chunk = 0, policy::Limits limits = {}) {
  policy::RequestParser parser(limits);
  Outcome out;
  std::size_t pos = 0;
  while (pos < input.size() && !parser.failed()) {
    const std::size_t n = chunk == 0 ? input.size() - pos : std::min(chunk, input.size() - pos);
    std::string_view piece(input.data() + pos, n);
    while (!piece.empty()) {
      const auto step = parser.feed(piece);
      EXPECT_LE(step.consumed, piece.size());
      piece.remove_prefix(step.consumed);
      if (step.status == Status::Complete) out.requests.push_back(parser.takeRequest());
      if (step.status == Status::Failed) break;
      if (step.status == Status::NeedMore) {
        EXPECT_TRUE(piece.empty());
      }
    }
    pos += n;
  }
  out.error = parser.finish();
  return out;
}

ParseError errorOf(const std::string& input) { return parseAll(input).error; }

}  // namespace

TEST(PolicyRequestParser, ParsesTheReadmeRequestWithEveryAttributeInOrder) {
  const Outcome out = parseAll(kReadmeRequest);
  ASSERT_EQ(out.error, ParseError::None);
  ASSERT_EQ(out.requests.size(), 1u);
  const auto& attrs = out.requests[0].attributes;
  ASSERT_EQ(attrs.size(), 29u);
  EXPECT_EQ(attrs.front(), (policy::Attribute{"request", "smtpd_access_policy"}));
  EXPECT_EQ(attrs[14], (policy::Attribute{"sasl_sender", ""}));
  EXPECT_EQ(attrs.back(), (policy::Attribute{"server_port", "54321"}));
  EXPECT_EQ(out.requests[0].last("ccert_issuer"), "Wietse+20Venema");
}

TEST(PolicyRequestParser, ViewOfTheReadmeRequestHasTheEngineAttributes) {
  const Outcome out = parseAll(kReadmeRequest);
  ASSERT_EQ(out.requests.size(), 1u);
  std::string error;
  const auto view = policy::viewOf(out.requests[0], &error);
  ASSERT_TRUE(view) << error;
  EXPECT_EQ(view->request, "smtpd_access_policy");
  EXPECT_EQ(view->state, policy::ProtocolState::Rcpt);
  EXPECT_EQ(view->protocol_name, "SMTP");
  EXPECT_EQ(view->client_address, "1.2.3.4");
  EXPECT_EQ(view->client_name, "another.domain.tld");
  EXPECT_EQ(view->reverse_client_name, "another.domain.tld");
  EXPECT_EQ(view->helo_name, "some.domain.tld");
  EXPECT_EQ(view->sender, "foo@bar.tld");
  EXPECT_EQ(view->recipient, "bar@foo.tld");
  EXPECT_EQ(view->recipient_count, 0u);
  EXPECT_EQ(view->sasl_method, "plain");
  EXPECT_EQ(view->sasl_username, "you");
  EXPECT_EQ(view->sasl_sender, "");
  EXPECT_EQ(view->instance, "123.456.7");
  EXPECT_EQ(view->queue_id, "8045F2AB23");
  EXPECT_EQ(view->size, 12345u);
  EXPECT_EQ(view->client_port, 1234u);
  EXPECT_EQ(view->server_address, "10.3.2.1");
  EXPECT_EQ(view->server_port, 54321u);
  EXPECT_EQ(view->policy_context, "submission");
  EXPECT_FALSE(view->stress);
}

TEST(PolicyRequestParser, EverySplitOfTheInputGivesTheSameRequests) {
  const std::string two = kReadmeRequest + "request=smtpd_access_policy\nprotocol_state=DATA\n\n";
  const Outcome whole = parseAll(two);
  ASSERT_EQ(whole.requests.size(), 2u);
  for (std::size_t chunk : {1u, 2u, 3u, 7u, 64u, 1000u}) {
    const Outcome split = parseAll(two, chunk);
    EXPECT_EQ(split.error, ParseError::None) << "chunk " << chunk;
    ASSERT_EQ(split.requests.size(), 2u) << "chunk " << chunk;
    EXPECT_EQ(split.requests[0].attributes, whole.requests[0].attributes) << "chunk " << chunk;
    EXPECT_EQ(split.requests[1].attributes, whole.requests[1].attributes) << "chunk " << chunk;
  }
}

TEST(PolicyRequestParser, ByteByByteFeedingCompletesOnlyOnTheEmptyLine) {
  policy::RequestParser parser;
  const std::string input = "request=smtpd_access_policy\nprotocol_state=CONNECT\n\n";
  for (std::size_t i = 0; i + 1 < input.size(); ++i) {
    const auto step = parser.feed(std::string_view(&input[i], 1));
    ASSERT_EQ(step.status, Status::NeedMore) << "byte " << i;
    EXPECT_EQ(step.consumed, 1u);
  }
  EXPECT_FALSE(parser.idle());
  const auto last = parser.feed("\n");
  EXPECT_EQ(last.status, Status::Complete);
  EXPECT_EQ(last.consumed, 1u);
  EXPECT_EQ(parser.takeRequest().last("protocol_state"), "CONNECT");
  EXPECT_TRUE(parser.idle());
  EXPECT_EQ(parser.bufferedBytes(), 0u);
}

TEST(PolicyRequestParser, PipelinedRequestsComeOneAtATimeAndTheRestIsNotConsumed) {
  const std::string first = "request=smtpd_access_policy\nprotocol_state=MAIL\ninstance=a.1\n\n";
  const std::string second = "request=smtpd_access_policy\nprotocol_state=RCPT\ninstance=a.1\n\n";
  const std::string input = first + second + "request=smtpd_acc";
  policy::RequestParser parser;
  auto step = parser.feed(input);
  ASSERT_EQ(step.status, Status::Complete);
  EXPECT_EQ(step.consumed, first.size());
  // Not taken yet: the parser holds it and reads nothing more.
  EXPECT_EQ(parser.feed(std::string_view(input).substr(step.consumed)).consumed, 0u);
  EXPECT_EQ(parser.takeRequest().last("protocol_state"), "MAIL");
  std::string_view rest = std::string_view(input).substr(first.size());
  step = parser.feed(rest);
  ASSERT_EQ(step.status, Status::Complete);
  EXPECT_EQ(step.consumed, second.size());
  EXPECT_EQ(parser.takeRequest().last("protocol_state"), "RCPT");
  rest.remove_prefix(step.consumed);
  step = parser.feed(rest);
  EXPECT_EQ(step.status, Status::NeedMore);
  EXPECT_EQ(step.consumed, rest.size());
  EXPECT_EQ(parser.finish(), ParseError::TruncatedRequest);
}

TEST(PolicyRequestParser, DuplicatesAreKeptInOrderAndTheViewReadsTheLast) {
  const Outcome out = parseAll("request=smtpd_access_policy\nsender=a@x\nsender=b@y\n\n");
  ASSERT_EQ(out.requests.size(), 1u);
  const auto& attrs = out.requests[0].attributes;
  ASSERT_EQ(attrs.size(), 3u);
  EXPECT_EQ(attrs[1].value, "a@x");
  EXPECT_EQ(attrs[2].value, "b@y");
  const auto view = policy::viewOf(out.requests[0]);
  ASSERT_TRUE(view);
  EXPECT_EQ(view->sender, "b@y");
}

TEST(PolicyRequestParser, ValuesMayHoldEqualsTabsAndUtf8) {
  const Outcome out = parseAll("request=smtpd_access_policy\nsender=j\xC3\xB6rg@b\xC3\xBC" "cher.example\n"
                               "policy_context=a=b\tc\n\n");
  ASSERT_EQ(out.error, ParseError::None);
  ASSERT_EQ(out.requests.size(), 1u);
  EXPECT_EQ(out.requests[0].last("sender"), "j\xC3\xB6rg@b\xC3\xBC" "cher.example");
  EXPECT_EQ(out.requests[0].last("policy_context"), "a=b\tc");
}

TEST(PolicyRequestParser, EndOfInputBetweenRequestsIsClean) {
  EXPECT_EQ(errorOf(""), ParseError::None);
  EXPECT_EQ(errorOf(kReadmeRequest), ParseError::None);
}

TEST(PolicyRequestParser, EndOfInputWithoutTheEmptyLineIsATruncatedRequest) {
  EXPECT_EQ(errorOf("request=smtpd_access_policy\nprotocol_state=RCPT\n"), ParseError::TruncatedRequest);
  EXPECT_EQ(errorOf("request=smtpd_access_policy\nprotocol_sta"), ParseError::TruncatedRequest);
  EXPECT_EQ(errorOf(kReadmeRequest + "request=smtpd_access_policy\n"), ParseError::TruncatedRequest);
}

TEST(PolicyRequestParser, ALineOver8KiBIsRefusedBeforeItsEnd) {
  const std::string at_limit = "sender=" + std::string(8192 - 7, 'a');
  EXPECT_EQ(errorOf("request=smtpd_access_policy\n" + at_limit + "\n\n"), ParseError::None);
  // One byte more, and no LF ever: refused at that byte, with nothing held.
  policy::RequestParser parser;
  const std::string over = "request=smtpd_access_policy\n" + at_limit + "a" + std::string(100000, 'a');
  const auto step = parser.feed(over);
  EXPECT_EQ(step.status, Status::Failed);
  EXPECT_EQ(parser.error(), ParseError::LineTooLong);
  EXPECT_EQ(step.consumed, 28u + 8192u + 1u);
  EXPECT_EQ(parser.bufferedBytes(), 0u);
  // A failed parser stays failed and reads nothing.
  EXPECT_EQ(parser.feed("request=x\n\n").status, Status::Failed);
  EXPECT_EQ(parser.feed("request=x\n\n").consumed, 0u);
  EXPECT_EQ(parser.finish(), ParseError::LineTooLong);
}

TEST(PolicyRequestParser, AThousandAttributesAreRefusedAtTheFirstOverTheCap) {
  std::string input = "request=smtpd_access_policy\n";
  for (int i = 0; i < 1000; ++i) input += "x" + std::to_string(i) + "=v\n";
  input += "\n";
  policy::RequestParser parser;
  const auto step = parser.feed(input);
  EXPECT_EQ(step.status, Status::Failed);
  EXPECT_EQ(parser.error(), ParseError::TooManyAttributes);
  EXPECT_LT(step.consumed, input.size() / 5);

  // 128 attributes are accepted, 129 are not.
  std::string at_cap = "request=smtpd_access_policy\n";
  for (int i = 1; i < 128; ++i) at_cap += "x" + std::to_string(i) + "=v\n";
  const Outcome ok = parseAll(at_cap + "\n");
  ASSERT_EQ(ok.requests.size(), 1u);
  EXPECT_EQ(ok.requests[0].attributes.size(), 128u);
  EXPECT_EQ(errorOf(at_cap + "one_more=v\n\n"), ParseError::TooManyAttributes);
}

TEST(PolicyRequestParser, ARequestOverItsByteCapIsRefusedWhateverItsLines) {
  policy::Limits limits;
  // Lines of 8000 bytes: nine of them pass the line and the attribute caps but not
  // the 64 KiB request cap.
  std::string input = "request=smtpd_access_policy\n";
  for (int i = 0; i < 9; ++i) input += "a" + std::to_string(i) + "=" + std::string(8000, 'v') + "\n";
  input += "\n";
  const Outcome out = parseAll(input, 512, limits);
  EXPECT_EQ(out.error, ParseError::RequestTooLarge);
  EXPECT_TRUE(out.requests.empty());
}

TEST(PolicyRequestParser, AClientThatNeverFinishesIsHeldWithinTheCaps) {
  // An endless stream of well-formed attributes: the parser never holds more than
  // the request cap, and refuses once the request cannot be one.
  policy::RequestParser parser;
  const std::string line = "client_name=" + std::string(500, 'c') + "\n";
  std::size_t max_buffered = 0;
  bool failed = false;
  for (int i = 0; i < 10000 && !failed; ++i) {
    const auto step = parser.feed(line);
    max_buffered = std::max(max_buffered, parser.bufferedBytes());
    failed = step.status == Status::Failed;
    ASSERT_NE(step.status, Status::Complete);
  }
  EXPECT_TRUE(failed);
  EXPECT_TRUE(parser.error() == ParseError::TooManyAttributes || parser.error() == ParseError::RequestTooLarge);
  EXPECT_LE(max_buffered, policy::Limits{}.max_request_bytes);
}

TEST(PolicyRequestParser, ALineWithoutEqualsIsRefused) {
  EXPECT_EQ(errorOf("request=smtpd_access_policy\nprotocol_state\n\n"), ParseError::MissingEquals);
}

TEST(PolicyRequestParser, NamesMustBeIdentifiers) {
  EXPECT_EQ(errorOf("=value\n\n"), ParseError::EmptyName);
  EXPECT_EQ(errorOf("request=smtpd_access_policy\nbad name=1\n\n"), ParseError::BadNameByte);
  EXPECT_EQ(errorOf("GET / HTTP/1.1\r\n\r\n"), ParseError::BadNameByte);
  EXPECT_EQ(errorOf("na\xC3\xA9me=1\n\n"), ParseError::BadNameByte);
}

TEST(PolicyRequestParser, BinaryBytesAreRefused) {
  EXPECT_EQ(errorOf(std::string("request=smtpd_access_policy\nsender=a\0b@x\n\n", 43)), ParseError::NulByte);
  EXPECT_EQ(errorOf(std::string("req\0uest=x\n\n", 12)), ParseError::NulByte);
  EXPECT_EQ(errorOf("request=smtpd_access_policy\nsender=a\x01" "b\n\n"), ParseError::ControlByte);
  EXPECT_EQ(errorOf("request=smtpd_access_policy\nsender=a\x7F\n\n"), ParseError::ControlByte);
  EXPECT_EQ(errorOf("request=smtpd_access_policy\nsender=a\x1B[0m\n\n"), ParseError::ControlByte);
  // A CRLF peer: refused at its first CR.
  EXPECT_EQ(errorOf("request=smtpd_access_policy\r\n\r\n"), ParseError::ControlByte);
  // Random binary: refused before it is buffered.
  std::string binary;
  for (int i = 0; i < 4096; ++i) binary += static_cast<char>((i * 37 + 11) & 0xFF);
  EXPECT_NE(errorOf(binary), ParseError::None);
}

TEST(PolicyRequestParser, AnEmptyRequestIsRefused) {
  EXPECT_EQ(errorOf("\n"), ParseError::EmptyRequest);
  EXPECT_EQ(errorOf(kReadmeRequest + "\n"), ParseError::EmptyRequest);
}

TEST(PolicyRequestParser, ErrorsHaveFixedNames) {
  EXPECT_STREQ(policy::errorName(ParseError::LineTooLong), "line_too_long");
  EXPECT_STREQ(policy::errorName(ParseError::TooManyAttributes), "too_many_attributes");
  EXPECT_STREQ(policy::errorName(ParseError::RequestTooLarge), "request_too_large");
  EXPECT_STREQ(policy::errorName(ParseError::MissingEquals), "missing_equals");
  EXPECT_STREQ(policy::errorName(ParseError::EmptyName), "empty_name");
  EXPECT_STREQ(policy::errorName(ParseError::BadNameByte), "bad_name_byte");
  EXPECT_STREQ(policy::errorName(ParseError::NulByte), "nul_byte");
  EXPECT_STREQ(policy::errorName(ParseError::ControlByte), "control_byte");
  EXPECT_STREQ(policy::errorName(ParseError::EmptyRequest), "empty_request");
  EXPECT_STREQ(policy::errorName(ParseError::TruncatedRequest), "truncated_request");
}

TEST(PolicyRequestView, EveryProtocolStateMapsToItsStage) {
  using Kind = policy::StageMapping::Kind;
  struct Case {
    const char* text;
    policy::ProtocolState state;
    Kind kind;
    zetian_stage stage;
  };
  const Case cases[] = {
      {"CONNECT", policy::ProtocolState::Connect, Kind::Check, ZETIAN_STAGE_CONNECT},
      {"EHLO", policy::ProtocolState::Ehlo, Kind::Check, ZETIAN_STAGE_HELO},
      {"HELO", policy::ProtocolState::Helo, Kind::Check, ZETIAN_STAGE_HELO},
      {"MAIL", policy::ProtocolState::Mail, Kind::Check, ZETIAN_STAGE_MAIL},
      {"RCPT", policy::ProtocolState::Rcpt, Kind::Check, ZETIAN_STAGE_RCPT},
      {"DATA", policy::ProtocolState::Data, Kind::Check, ZETIAN_STAGE_DATA},
      {"END-OF-MESSAGE", policy::ProtocolState::EndOfMessage, Kind::EndOfMessage, ZETIAN_STAGE_CONNECT},
      {"VRFY", policy::ProtocolState::Vrfy, Kind::NotChecked, ZETIAN_STAGE_CONNECT},
      {"ETRN", policy::ProtocolState::Etrn, Kind::NotChecked, ZETIAN_STAGE_CONNECT},
  };
  for (const Case& c : cases) {
    const auto state = policy::parseProtocolState(c.text);
    EXPECT_EQ(state, c.state) << c.text;
    EXPECT_STREQ(policy::protocolStateName(state), c.text);
    const auto mapping = policy::stageOf(state);
    EXPECT_EQ(mapping.kind, c.kind) << c.text;
    if (c.kind == Kind::Check) {
      EXPECT_EQ(mapping.stage, c.stage) << c.text;
    }
  }
  EXPECT_EQ(policy::parseProtocolState("rcpt"), policy::ProtocolState::Rcpt);
  EXPECT_EQ(policy::parseProtocolState("End-Of-Message"), policy::ProtocolState::EndOfMessage);
}

TEST(PolicyRequestView, UnknownStatesAreReportedAsSuch) {
  for (const char* text : {"", "BDAT", "RSET", "QUIT", "RCPT ", "END_OF_MESSAGE"}) {
    EXPECT_EQ(policy::parseProtocolState(text), policy::ProtocolState::Unknown) << text;
  }
  EXPECT_EQ(policy::stageOf(policy::ProtocolState::Unknown).kind, policy::StageMapping::Kind::Unknown);
  const Outcome out = parseAll("request=smtpd_access_policy\nprotocol_state=BDAT\n\n");
  ASSERT_EQ(out.requests.size(), 1u);
  const auto view = policy::viewOf(out.requests[0]);
  ASSERT_TRUE(view);
  EXPECT_EQ(view->state, policy::ProtocolState::Unknown);
  EXPECT_EQ(view->protocol_state, "BDAT");
}

TEST(PolicyRequestView, RefusesRequestsThatAreNotAccessPolicyOrHaveBadNumbers) {
  auto refusal = [](const std::string& input) {
    const Outcome out = parseAll(input);
    EXPECT_EQ(out.requests.size(), 1u) << input;
    if (out.requests.empty()) return std::string("no request");
    std::string error;
    EXPECT_FALSE(policy::viewOf(out.requests[0], &error)) << input;
    return error;
  };
  EXPECT_EQ(refusal("protocol_state=RCPT\n\n"), "no request attribute");
  EXPECT_EQ(refusal("request=junk\n\n"), "request is not smtpd_access_policy");
  EXPECT_EQ(refusal("request=smtpd_access_policy\nsize=12k\n\n"), "size is not a decimal number");
  EXPECT_EQ(refusal("request=smtpd_access_policy\nsize=-1\n\n"), "size is not a decimal number");
  EXPECT_EQ(refusal("request=smtpd_access_policy\nsize=99999999999999999999999\n\n"), "size is not a decimal number");
  EXPECT_EQ(refusal("request=smtpd_access_policy\nrecipient_count= 1\n\n"),
            "recipient_count is not a decimal number");
  EXPECT_EQ(refusal("request=smtpd_access_policy\nclient_port=65536\n\n"), "client_port is not a port number");
  EXPECT_EQ(refusal("request=smtpd_access_policy\nserver_port=x\n\n"), "server_port is not a port number");
}

TEST(PolicyRequestView, AbsentAttributesReadEmptyAndStressReadsYes) {
  const Outcome out = parseAll("request=smtpd_access_policy\nsize=\nstress=yes\n\n");
  ASSERT_EQ(out.requests.size(), 1u);
  const auto view = policy::viewOf(out.requests[0]);
  ASSERT_TRUE(view);
  EXPECT_EQ(view->state, policy::ProtocolState::Unknown);
  EXPECT_EQ(view->sender, "");
  EXPECT_FALSE(view->size);
  EXPECT_FALSE(view->recipient_count);
  EXPECT_FALSE(view->client_port);
  EXPECT_TRUE(view->stress);
}

TEST(PolicyRequestParser, ASessionCapturedFromPostfix37ParsesStageByStage) {
  for (std::size_t chunk : {0u, 1u, 100u}) {
    const Outcome out = parseAll(kPostfix37Transaction, chunk);
    ASSERT_EQ(out.error, ParseError::None);
    ASSERT_EQ(out.requests.size(), 6u);
    const policy::ProtocolState states[] = {policy::ProtocolState::Connect, policy::ProtocolState::Ehlo,
                                            policy::ProtocolState::Mail,    policy::ProtocolState::Rcpt,
                                            policy::ProtocolState::Data,    policy::ProtocolState::EndOfMessage};
    for (std::size_t i = 0; i < 6; ++i) {
      EXPECT_EQ(out.requests[i].attributes.size(), 29u) << i;
      std::string error;
      const auto view = policy::viewOf(out.requests[i], &error);
      ASSERT_TRUE(view) << error;
      EXPECT_EQ(view->state, states[i]) << i;
      EXPECT_EQ(view->client_address, "127.0.0.2");
      EXPECT_EQ(view->client_name, "unknown");
      EXPECT_EQ(view->helo_name, i == 0 ? "" : "client.zetian.test") << i;
      // Postfix 3.7 names the transaction only from RCPT on: before it, instance is empty.
      EXPECT_EQ(view->instance, i < 3 ? "" : "c8d.6b0df64c.400fe.0") << i;
      EXPECT_EQ(view->sender, i < 2 ? "" : "sender@example.org") << i;
      EXPECT_EQ(view->recipient, i < 3 ? "" : "bob@example.net") << i;
      EXPECT_EQ(view->recipient_count, i < 4 ? 0u : 1u) << i;
    }
    EXPECT_EQ(policy::viewOf(out.requests[5])->size, 232u);
  }
}
