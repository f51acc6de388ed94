// libFuzzer target for the policy delegation host's protocol layer (milter/
// policy_request.h, milter/policy_action.h): the bytes any peer of the policy socket
// may send. What must never happen, whatever the bytes:
// - a crash, an escaped exception, or a result that depends on how the input was split
//   (it is fed whole, in pieces whose sizes come from the input, and byte by byte, with
//   the default limits and with small ones that the fuzzer can reach);
// - a request outside the limits (attributes, line and request bytes) or holding a byte
//   the parser refuses (NUL, control bytes but TAB, a name byte outside [A-Za-z0-9_.-]);
// - more held than the request cap at any moment;
// - accepted requests that do not write back to exactly the bytes they were read from;
// - an answer (for a verdict, PREPEND or HOLD built from the request's own values)
//   that is not one `action=` line of printable text ended by an empty line.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "milter/policy_action.h"
#include "milter/policy_request.h"

namespace policy = zetian::milter::policy;
using Status = policy::RequestParser::Status;

namespace {

struct Outcome {
  std::vector<policy::Request> requests;
  std::size_t consumed = 0;  // bytes read up to the last complete request
  policy::ParseError error = policy::ParseError::None;
};

bool isNameByte(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-';
}

void checkRequest(const policy::Request& request, const policy::Limits& limits) {
  if (request.attributes.empty() || request.attributes.size() > limits.max_attributes) std::abort();
  std::size_t bytes = 0;
  for (const auto& attr : request.attributes) {
    if (attr.name.empty()) std::abort();
    for (const char c : attr.name) {
      if (!isNameByte(c)) std::abort();
    }
    for (const char c : attr.value) {
      const auto byte = static_cast<unsigned char>(c);
      if ((byte < 0x20 && c != '\t') || byte == 0x7f) std::abort();
    }
    const std::size_t line = attr.name.size() + 1 + attr.value.size();
    if (line > limits.max_line_bytes) std::abort();
    bytes += line + 1;
  }
  if (bytes > limits.max_request_bytes) std::abort();
}

std::string writeBack(const policy::Request& request) {
  std::string out;
  for (const auto& attr : request.attributes) out += attr.name + "=" + attr.value + "\n";
  return out + "\n";
}

// Feeds `input` in pieces: sizes cycle through `pieces` (0 there: one byte).
Outcome parse(std::string_view input, const policy::Limits& limits, const std::vector<std::size_t>& pieces) {
  policy::RequestParser parser(limits);
  Outcome out;
  std::size_t pos = 0;
  std::size_t turn = 0;
  while (pos < input.size() && !parser.failed()) {
    std::size_t n = pieces.empty() ? input.size() : pieces[turn++ % pieces.size()];
    if (n == 0) n = 1;
    if (n > input.size() - pos) n = input.size() - pos;
    std::string_view piece = input.substr(pos, n);
    while (!piece.empty()) {
      const auto step = parser.feed(piece);
      if (step.consumed > piece.size()) std::abort();
      if (parser.bufferedBytes() > limits.max_request_bytes) std::abort();
      pos += step.consumed;
      piece.remove_prefix(step.consumed);
      if (step.status == Status::Complete) {
        out.requests.push_back(parser.takeRequest());
        out.consumed = pos;
        if (!parser.idle() || parser.bufferedBytes() != 0) std::abort();
      } else if (step.status == Status::Failed) {
        if (parser.error() == policy::ParseError::None) std::abort();
        if (parser.bufferedBytes() != 0) std::abort();
        break;
      } else if (!piece.empty()) {
        std::abort();  // NeedMore consumes everything
      }
    }
  }
  out.error = parser.finish();
  if (out.error == policy::ParseError::None && !parser.idle()) std::abort();
  return out;
}

void checkAction(const std::string& action) {
  if (action.rfind("action=", 0) != 0 || action.size() < 9) std::abort();
  if (action.compare(action.size() - 2, 2, "\n\n") != 0) std::abort();
  for (std::size_t i = 0; i + 2 < action.size(); ++i) {
    const auto byte = static_cast<unsigned char>(action[i]);
    if ((byte < 0x20 && action[i] != '\t') || byte == 0x7f) std::abort();
  }
}

void checkAnswers(const policy::Request& request) {
  std::string error;
  const auto view = policy::viewOf(request, &error);
  if (view) {
    if (view->request != "smtpd_access_policy") std::abort();
    if (view->client_port && *view->client_port > 65535) std::abort();
    const auto mapping = policy::stageOf(view->state);
    if ((mapping.kind == policy::StageMapping::Kind::Unknown) != (view->state == policy::ProtocolState::Unknown))
      std::abort();
  } else if (error.empty()) {
    std::abort();
  }
  // Answers built from the request's own values: text from the last value, the
  // header's name from the first attribute's name.
  const std::string& text = request.attributes.back().value;
  for (const int action : {ZETIAN_CONTINUE, ZETIAN_TEMPFAIL, ZETIAN_REJECT}) {
    zetian_verdict v = ZETIAN_VERDICT_INIT;
    v.action = action;
    std::strncpy(v.rcode, request.attributes.front().value.c_str(), sizeof v.rcode - 1);
    std::strncpy(v.xcode, request.attributes.front().name.c_str(), sizeof v.xcode - 1);
    std::memcpy(v.text, text.data(), text.size() < sizeof v.text ? text.size() : sizeof v.text);
    const std::string out = policy::verdictAction(v);
    checkAction(out);
    for (const char c : out.substr(0, out.size() - 2)) {
      if (static_cast<unsigned char>(c) >= 0x80 || c == '\t') std::abort();  // reply text is ASCII
    }
    if (out.size() > std::strlen("action=DEFER_IF_PERMIT ") + 10 + policy::kMaxReplyTextBytes + 2) std::abort();
    checkAction(policy::verdictAction(v, policy::ActionOptions{.tempfail_as_defer_if_permit = true}));
  }
  checkAction(policy::holdAction(text));
  if (const auto prepend = policy::prependAction(request.attributes.front().name, text)) {
    checkAction(*prepend);
    if (prepend->size() > std::strlen("action=PREPEND ") + policy::kMaxHeaderLineBytes + 2) std::abort();
  }
}

void run(std::string_view input, const policy::Limits& limits, const std::vector<std::size_t>& pieces) {
  const Outcome whole = parse(input, limits, {});
  std::string written;
  for (const auto& request : whole.requests) {
    checkRequest(request, limits);
    written += writeBack(request);
  }
  if (input.substr(0, whole.consumed) != written) std::abort();
  if (whole.error == policy::ParseError::None && whole.consumed != input.size()) std::abort();

  for (const auto& split_pieces : {pieces, std::vector<std::size_t>{0}}) {
    const Outcome split = parse(input, limits, split_pieces);
    if (split.error != whole.error || split.consumed != whole.consumed) std::abort();
    if (split.requests.size() != whole.requests.size()) std::abort();
    for (std::size_t i = 0; i < split.requests.size(); ++i) {
      if (split.requests[i].attributes != whole.requests[i].attributes) std::abort();
    }
  }
  for (const auto& request : whole.requests) checkAnswers(request);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // Piece sizes from the first bytes, so the fuzzer chooses the splits too.
  std::vector<std::size_t> pieces;
  for (std::size_t i = 0; i < size && i < 4; ++i) pieces.push_back(data[i] % 17);
  run(input, policy::Limits{}, pieces);
  // Small limits, so inputs of a few hundred bytes reach every cap.
  run(input, policy::Limits{.max_line_bytes = 40, .max_attributes = 4, .max_request_bytes = 120}, pieces);
  return 0;
}
