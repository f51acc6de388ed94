// Postfix policy delegation requests (see policy_request.h for the protocol, the
// limits and what is refused).
#include "milter/policy_request.h"

#include <charconv>
#include <string>
#include <string_view>
#include <unordered_map>
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
  std::size_t i = 0;
  while (i < bytes.size()) {
    // The bytes up to the next LF (or the end) are checked one by one, then appended
    // to the line at once.
    const std::size_t lf = bytes.find('\n', i);
    const std::size_t end = lf == std::string_view::npos ? bytes.size() : lf;
    const std::size_t line_start = line_.size();
    for (std::size_t j = i; j < end; ++j) {
      const char c = bytes[j];
      const auto byte = static_cast<unsigned char>(c);
      if (byte == 0) return fail(ParseError::NulByte, j + 1);
      if (isControlByte(byte)) return fail(ParseError::ControlByte, j + 1);
      // Refuse a bad name byte as soon as it arrives, not only when the line ends, so
      // a peer that streams garbage without LF is cut off at once.
      if (!line_has_equals_) {
        if (c == '=') {
          line_has_equals_ = true;
        } else if (!isNameByte(c)) {
          return fail(ParseError::BadNameByte, j + 1);
        }
      }
      const std::size_t line_size = line_start + (j - i);
      if (line_size >= limits_.max_line_bytes) return fail(ParseError::LineTooLong, j + 1);
      // The request's cap counts the partial line and its LF to come, so a request is
      // refused as soon as it cannot fit, whatever its line lengths.
      if (request_bytes_ + line_size + 2 > limits_.max_request_bytes) return fail(ParseError::RequestTooLarge, j + 1);
    }
    line_.append(bytes.data() + i, end - i);
    if (lf == std::string_view::npos) break;
    i = lf + 1;
    if (line_.empty()) {
      if (current_.attributes.empty()) return fail(ParseError::EmptyRequest, i);
      complete_ = true;
      return Step{Status::Complete, i};
    }
    if (current_.attributes.empty()) current_.attributes.reserve(32);  // Postfix 3.7 sends 29
    if (const ParseError e = acceptLine(); e != ParseError::None) return fail(e, i);
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

namespace {

// Where each attribute goes in the view: a text field, or one of the numbers and flags
// read after the pass.
enum class Slot { Text, Request, RecipientCount, Size, ClientPort, ServerPort, Stress };

struct Field {
  Slot slot;
  std::string PolicyView::*text = nullptr;
};

const std::unordered_map<std::string_view, Field>& fields() {
  static const std::unordered_map<std::string_view, Field> table = {
      {"request", {Slot::Request}},
      {"protocol_state", {Slot::Text, &PolicyView::protocol_state}},
      {"protocol_name", {Slot::Text, &PolicyView::protocol_name}},
      {"client_address", {Slot::Text, &PolicyView::client_address}},
      {"client_name", {Slot::Text, &PolicyView::client_name}},
      {"reverse_client_name", {Slot::Text, &PolicyView::reverse_client_name}},
      {"helo_name", {Slot::Text, &PolicyView::helo_name}},
      {"sender", {Slot::Text, &PolicyView::sender}},
      {"recipient", {Slot::Text, &PolicyView::recipient}},
      {"sasl_method", {Slot::Text, &PolicyView::sasl_method}},
      {"sasl_username", {Slot::Text, &PolicyView::sasl_username}},
      {"sasl_sender", {Slot::Text, &PolicyView::sasl_sender}},
      {"instance", {Slot::Text, &PolicyView::instance}},
      {"queue_id", {Slot::Text, &PolicyView::queue_id}},
      {"server_address", {Slot::Text, &PolicyView::server_address}},
      {"policy_context", {Slot::Text, &PolicyView::policy_context}},
      {"etrn_domain", {Slot::Text, &PolicyView::etrn_domain}},
      {"recipient_count", {Slot::RecipientCount}},
      {"size", {Slot::Size}},
      {"client_port", {Slot::ClientPort}},
      {"server_port", {Slot::ServerPort}},
      {"stress", {Slot::Stress}},
  };
  return table;
}

}  // namespace

// One pass over the attributes (a request has about 30, read at every stage), each
// looked up once; a later duplicate overwrites an earlier one, so the last counts.
std::optional<PolicyView> viewOf(const Request& request, std::string* error) {
  auto refuse = [error](std::string why) -> std::optional<PolicyView> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  PolicyView view;
  std::string_view recipient_count, size, client_port, server_port, stress;
  const auto& table = fields();
  for (const Attribute& a : request.attributes) {
    const auto it = table.find(a.name);
    if (it == table.end()) continue;
    switch (it->second.slot) {
      case Slot::Text: view.*(it->second.text) = a.value; break;
      case Slot::Request: view.request = a.value; break;
      case Slot::RecipientCount: recipient_count = a.value; break;
      case Slot::Size: size = a.value; break;
      case Slot::ClientPort: client_port = a.value; break;
      case Slot::ServerPort: server_port = a.value; break;
      case Slot::Stress: stress = a.value; break;
    }
  }
  if (view.request.empty()) return refuse("no request attribute");
  if (view.request != "smtpd_access_policy") return refuse("request is not smtpd_access_policy");
  view.state = parseProtocolState(view.protocol_state);
  view.stress = equalsIgnoringCase(stress, "yes");

  std::optional<std::uint64_t> count;
  if (!parseNumber(recipient_count, &count)) return refuse("recipient_count is not a decimal number");
  view.recipient_count = count;
  std::optional<std::uint64_t> bytes;
  if (!parseNumber(size, &bytes)) return refuse("size is not a decimal number");
  view.size = bytes;
  std::optional<std::uint32_t> port;
  if (!parseNumber(client_port, &port) || (port && *port > 65535)) return refuse("client_port is not a port number");
  view.client_port = port;
  if (!parseNumber(server_port, &port) || (port && *port > 65535)) return refuse("server_port is not a port number");
  view.server_port = port;
  return view;
}

}  // namespace zetian::milter::policy
