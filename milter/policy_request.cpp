// Postfix policy delegation requests (see policy_request.h for the protocol, the
// limits and what is refused).
#include "milter/policy_request.h"

#include <charconv>
#include <utility>

namespace zetian::milter::policy {

namespace {

bool isNameByte(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == '-';
}

// Control bytes but TAB; LF never reaches here (it ends the line).
bool isControlByte(unsigned char byte) { return (byte < 0x20 && byte != '\t') || byte == 0x7f; }

bool equalsIgnoringCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 'a' + 'A');
    if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 'a' + 'A');
    if (x != y) return false;
  }
  return true;
}

// Decimal digits only (no sign, no space), within Max. "" is "absent": nullopt, true.
template <typename Unsigned>
bool parseNumber(std::string_view text, std::optional<Unsigned>* out) {
  out->reset();
  if (text.empty()) return true;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
  }
  Unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return false;
  *out = value;
  return true;
}

}  // namespace

std::optional<std::string_view> Request::last(std::string_view name) const {
  for (auto it = attributes.rbegin(); it != attributes.rend(); ++it) {
    if (it->name == name) return std::string_view(it->value);
  }
  return std::nullopt;
}

const char* errorName(ParseError error) {
  switch (error) {
    case ParseError::None: return "none";
    case ParseError::LineTooLong: return "line_too_long";
    case ParseError::TooManyAttributes: return "too_many_attributes";
    case ParseError::RequestTooLarge: return "request_too_large";
    case ParseError::MissingEquals: return "missing_equals";
    case ParseError::EmptyName: return "empty_name";
    case ParseError::BadNameByte: return "bad_name_byte";
    case ParseError::NulByte: return "nul_byte";
    case ParseError::ControlByte: return "control_byte";
    case ParseError::EmptyRequest: return "empty_request";
    case ParseError::TruncatedRequest: return "truncated_request";
  }
  return "unknown";
}

RequestParser::Step RequestParser::fail(ParseError error, std::size_t consumed) {
  error_ = error;
  // Nothing of a refused request is kept: the connection is about to close, and a
  // caller that keeps the parser around should not hold its bytes.
  line_.clear();
  line_.shrink_to_fit();
  current_ = Request{};
  request_bytes_ = 0;
  return Step{Status::Failed, consumed};
}

// The line in line_ is complete (its LF was seen): check it and add it to current_.
ParseError RequestParser::acceptLine() {
  const std::size_t equals = line_.find('=');
  if (equals == std::string::npos) return ParseError::MissingEquals;
  if (equals == 0) return ParseError::EmptyName;
  for (std::size_t i = 0; i < equals; ++i) {
    if (!isNameByte(line_[i])) return ParseError::BadNameByte;
  }
  if (current_.attributes.size() >= limits_.max_attributes) return ParseError::TooManyAttributes;
  if (request_bytes_ + line_.size() + 1 > limits_.max_request_bytes) return ParseError::RequestTooLarge;
  request_bytes_ += line_.size() + 1;
  current_.attributes.push_back(Attribute{line_.substr(0, equals), line_.substr(equals + 1)});
  line_.clear();
  line_has_equals_ = false;
  return ParseError::None;
}

RequestParser::Step RequestParser::feed(std::string_view bytes) {
  if (failed()) return Step{Status::Failed, 0};
  if (complete_) return Step{Status::Complete, 0};
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    const char c = bytes[i];
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\n') {
      if (line_.empty()) {
        if (current_.attributes.empty()) return fail(ParseError::EmptyRequest, i + 1);
        complete_ = true;
        return Step{Status::Complete, i + 1};
      }
      if (const ParseError e = acceptLine(); e != ParseError::None) return fail(e, i + 1);
      continue;
    }
    if (byte == 0) return fail(ParseError::NulByte, i + 1);
    if (isControlByte(byte)) return fail(ParseError::ControlByte, i + 1);
    // Refuse a bad name byte as soon as it arrives, not only when the line ends, so a
    // peer that streams garbage without LF is cut off at once.
    if (!line_has_equals_) {
      if (c == '=') {
        line_has_equals_ = true;
      } else if (!isNameByte(c)) {
        return fail(ParseError::BadNameByte, i + 1);
      }
    }
    if (line_.size() >= limits_.max_line_bytes) return fail(ParseError::LineTooLong, i + 1);
    // The request's cap counts the partial line and its LF to come, so a request is
    // refused as soon as it cannot fit, whatever its line lengths.
    if (request_bytes_ + line_.size() + 2 > limits_.max_request_bytes) {
      return fail(ParseError::RequestTooLarge, i + 1);
    }
    line_.push_back(c);
  }
  return Step{Status::NeedMore, bytes.size()};
}

Request RequestParser::takeRequest() {
  if (!complete_) return Request{};
  Request out = std::move(current_);
  current_ = Request{};
  request_bytes_ = 0;
  complete_ = false;
  return out;
}

ParseError RequestParser::finish() {
  if (failed()) return error_;
  if (complete_ || idle()) return ParseError::None;
  fail(ParseError::TruncatedRequest, 0);
  return error_;
}

bool RequestParser::idle() const { return !complete_ && line_.empty() && current_.attributes.empty(); }

ProtocolState parseProtocolState(std::string_view text) {
  static constexpr std::pair<std::string_view, ProtocolState> kStates[] = {
      {"CONNECT", ProtocolState::Connect}, {"EHLO", ProtocolState::Ehlo},
      {"HELO", ProtocolState::Helo},       {"MAIL", ProtocolState::Mail},
      {"RCPT", ProtocolState::Rcpt},       {"DATA", ProtocolState::Data},
      {"END-OF-MESSAGE", ProtocolState::EndOfMessage}, {"VRFY", ProtocolState::Vrfy},
      {"ETRN", ProtocolState::Etrn},
  };
  for (const auto& [name, state] : kStates) {
    if (equalsIgnoringCase(text, name)) return state;
  }
  return ProtocolState::Unknown;
}

const char* protocolStateName(ProtocolState state) {
  switch (state) {
    case ProtocolState::Connect: return "CONNECT";
    case ProtocolState::Ehlo: return "EHLO";
    case ProtocolState::Helo: return "HELO";
    case ProtocolState::Mail: return "MAIL";
    case ProtocolState::Rcpt: return "RCPT";
    case ProtocolState::Data: return "DATA";
    case ProtocolState::EndOfMessage: return "END-OF-MESSAGE";
    case ProtocolState::Vrfy: return "VRFY";
    case ProtocolState::Etrn: return "ETRN";
    case ProtocolState::Unknown: return "unknown";
  }
  return "unknown";
}

StageMapping stageOf(ProtocolState state) {
  using Kind = StageMapping::Kind;
  switch (state) {
    case ProtocolState::Connect: return {Kind::Check, ZETIAN_STAGE_CONNECT};
    case ProtocolState::Ehlo:
    case ProtocolState::Helo: return {Kind::Check, ZETIAN_STAGE_HELO};
    case ProtocolState::Mail: return {Kind::Check, ZETIAN_STAGE_MAIL};
    case ProtocolState::Rcpt: return {Kind::Check, ZETIAN_STAGE_RCPT};
    case ProtocolState::Data: return {Kind::Check, ZETIAN_STAGE_DATA};
    case ProtocolState::EndOfMessage: return {Kind::EndOfMessage, ZETIAN_STAGE_CONNECT};
    case ProtocolState::Vrfy:
    case ProtocolState::Etrn: return {Kind::NotChecked, ZETIAN_STAGE_CONNECT};
    case ProtocolState::Unknown: break;
  }
  return {Kind::Unknown, ZETIAN_STAGE_CONNECT};
}

std::optional<PolicyView> viewOf(const Request& request, std::string* error) {
  auto refuse = [error](std::string why) -> std::optional<PolicyView> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  auto text = [&request](std::string_view name) { return std::string(request.last(name).value_or("")); };

  PolicyView view;
  view.request = text("request");
  if (view.request.empty()) return refuse("no request attribute");
  if (view.request != "smtpd_access_policy") return refuse("request is not smtpd_access_policy");
  view.protocol_state = text("protocol_state");
  view.state = parseProtocolState(view.protocol_state);
  view.protocol_name = text("protocol_name");
  view.client_address = text("client_address");
  view.client_name = text("client_name");
  view.reverse_client_name = text("reverse_client_name");
  view.helo_name = text("helo_name");
  view.sender = text("sender");
  view.recipient = text("recipient");
  view.sasl_method = text("sasl_method");
  view.sasl_username = text("sasl_username");
  view.sasl_sender = text("sasl_sender");
  view.instance = text("instance");
  view.queue_id = text("queue_id");
  view.server_address = text("server_address");
  view.policy_context = text("policy_context");
  view.etrn_domain = text("etrn_domain");
  view.stress = equalsIgnoringCase(text("stress"), "yes");

  std::optional<std::uint64_t> count;
  if (!parseNumber(request.last("recipient_count").value_or(""), &count))
    return refuse("recipient_count is not a decimal number");
  view.recipient_count = count;
  std::optional<std::uint64_t> size;
  if (!parseNumber(request.last("size").value_or(""), &size)) return refuse("size is not a decimal number");
  view.size = size;
  std::optional<std::uint32_t> port;
  if (!parseNumber(request.last("client_port").value_or(""), &port) || (port && *port > 65535))
    return refuse("client_port is not a port number");
  view.client_port = port;
  if (!parseNumber(request.last("server_port").value_or(""), &port) || (port && *port > 65535))
    return refuse("server_port is not a port number");
  view.server_port = port;
  return view;
}

}  // namespace zetian::milter::policy
