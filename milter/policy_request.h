// Postfix policy delegation (SMTPD_POLICY_README), the request side: an incremental
// parser of the byte stream Postfix's check_policy_service writes, and a typed view of
// the attributes the engine needs. Pure: no sockets, threads or clocks, so the server
// that owns the connections (and every test) drives it with whatever bytes arrived.
//
// The protocol: a request is `name=value` lines, each ended by LF, and the request is
// ended by an empty line. Postfix keeps the connection open and sends the next request
// after our answer; a client may also pipeline several. The README forbids NUL and LF
// in names and values and `=` in names; nothing else about the bytes is promised.
//
// Invariants (they hold whatever the input, byte by byte or all at once):
// - The parser holds at most one request: at most max_request_bytes of attribute text
//   in at most max_attributes attributes, plus one partial line of at most
//   max_line_bytes. feed() stops after each complete request, so pipelined input stays
//   in the caller's buffer, not here.
// - A malformed request is an error that ends the connection (the README: "In case of
//   trouble the policy server must not send a reply ... log a warning and disconnect");
//   after an error feed() consumes nothing and the error stays.
// - Splitting the input differently never changes the result.
//
// What is refused, and why:
// - a line over max_line_bytes (8 KiB, the bound; the longest thing Postfix
//   sends is an address or a certificate subject, far below that);
// - more than max_attributes attributes in one request. 128: Postfix 3.7 sends 29
//   attributes at every stage and each release since 2.1 added a few, so 128 leaves
//   room for years of new ones while a peer that sends 1,000 is refused early;
// - more than max_request_bytes (64 KiB) in one request, which bounds memory when
//   every line stays just under the line limit;
// - a line without `=`, an empty name, or a name with a byte outside [A-Za-z0-9_.-]
//   (Postfix's names are fixed lower-case identifiers);
// - NUL anywhere (the README forbids it, and the engine's C ABI takes C strings, so a
//   NUL would silently cut a key short) and the other control bytes but TAB
//   (0x01-0x08, 0x0B-0x1F, 0x7F) anywhere. The values Postfix makes itself are
//   printable, and it replaces the unprintable bytes of a HELO name; a control byte
//   means a peer that is not Postfix or a stream out of step. Should a Postfix ever
//   forward one inside an address, the cost is that one request: Postfix retries, then
//   applies its smtpd_policy_service_default_action to it. CR is refused too: Postfix
//   ends lines with a bare LF, and a CRLF peer would have every value end in a CR.
//   Bytes 0x80-0xFF are accepted as they are: SMTPUTF8 addresses arrive in UTF-8;
// - an empty line with no attribute before it (an empty request);
// - end of input inside a request (finish()).
//
// Duplicates: every attribute is kept, in the order it came. The README allows a
// server to keep the first or the last value of a repeated name; the typed view keeps
// the last, as most policy servers do (they fill a hash table line by line).
#ifndef ZETIAN_MILTER_POLICY_REQUEST_H
#define ZETIAN_MILTER_POLICY_REQUEST_H

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "plugin/zetian.h"

namespace zetian::milter::policy {

struct Attribute {
  std::string name;
  std::string value;

  bool operator==(const Attribute&) const = default;
};

// One complete request: its attributes in the order they came, duplicates kept.
struct Request {
  std::vector<Attribute> attributes;

  // The value of the last attribute called `name`, or nullopt when there is none.
  // Valid as long as the Request is.
  std::optional<std::string_view> last(std::string_view name) const;
};

struct Limits {
  std::size_t max_line_bytes = 8192;  // without the LF
  std::size_t max_attributes = 128;
  std::size_t max_request_bytes = 65536;  // every line of one request, LFs included
};

enum class ParseError {
  None = 0,
  LineTooLong,
  TooManyAttributes,
  RequestTooLarge,
  MissingEquals,
  EmptyName,
  BadNameByte,
  NulByte,
  ControlByte,
  EmptyRequest,
  TruncatedRequest,  // the input ended inside a request (finish())
};

// A short, fixed, log-friendly text ("line_too_long") for the connection's log line
// and the malformed-request metric's label.
const char* errorName(ParseError error);

class RequestParser {
 public:
  enum class Status {
    NeedMore,  // every byte was consumed; no complete request yet
    Complete,  // a request is ready: take it with takeRequest()
    Failed,    // a malformed request: close the connection (error() says why)
  };

  struct Step {
    Status status = Status::NeedMore;
    std::size_t consumed = 0;  // bytes of the input used; the rest is not looked at
  };

  explicit RequestParser(Limits limits = {}) : limits_(limits) {}

  // Parse `bytes` until a request is complete, the bytes run out or an error is found.
  // After Complete, call takeRequest() before feeding the rest of the input; feeding
  // with a request still untaken consumes nothing and returns Complete again.
  Step feed(std::string_view bytes);

  // The complete request, moved out; the parser starts on the next one. Only after
  // feed() returned Complete; otherwise an empty Request.
  Request takeRequest();

  // The peer closed its side. ParseError::None when it did so between requests;
  // TruncatedRequest (and the parser fails) when part of a request was buffered.
  ParseError finish();

  ParseError error() const { return error_; }
  bool failed() const { return error_ != ParseError::None; }

  // Whether nothing of a next request has arrived (no attribute, no partial line).
  bool idle() const;

  // Bytes held for the request in progress (attribute text and the partial line):
  // the figure that the limits bound.
  std::size_t bufferedBytes() const { return request_bytes_ + line_.size(); }

 private:
  Step fail(ParseError error, std::size_t consumed);
  ParseError acceptLine();

  Limits limits_;
  std::string line_;          // the current line, without its LF
  bool line_has_equals_ = false;
  Request current_;
  std::size_t request_bytes_ = 0;  // completed lines of current_, LFs included
  bool complete_ = false;
  ParseError error_ = ParseError::None;
};

// protocol_state as Postfix names it (SMTPD_POLICY_README: "CONNECT, EHLO, HELO, MAIL,
// RCPT, DATA, END-OF-MESSAGE, VRFY or ETRN").
enum class ProtocolState { Connect, Ehlo, Helo, Mail, Rcpt, Data, EndOfMessage, Vrfy, Etrn, Unknown };

// Case-insensitive; anything else (or an empty value) is Unknown.
ProtocolState parseProtocolState(std::string_view text);

// The canonical upper-case name ("END-OF-MESSAGE"); "unknown" for Unknown.
const char* protocolStateName(ProtocolState state);

// What a state means to the engine.
struct StageMapping {
  enum class Kind {
    Check,         // zetian_session_check at `stage`
    EndOfMessage,  // zetian_session_eom: headers to add, quarantine
    NotChecked,    // VRFY, ETRN: outside any message; the engine has no rule for them
    Unknown,       // a state this host does not know
  };
  Kind kind = Kind::Unknown;
  zetian_stage stage = ZETIAN_STAGE_CONNECT;  // meaningful only for Kind::Check
};

// CONNECT → connect; EHLO and HELO → helo; MAIL → mail; RCPT → rcpt; DATA → data;
// END-OF-MESSAGE → end of message; VRFY and ETRN → not checked; others → unknown.
StageMapping stageOf(ProtocolState state);

// The attributes the engine and the server use, copied out of a Request (so the view
// outlives it). Text attributes that are absent read as "" (the README: an unavailable
// value is either not sent or sent empty); numbers that are absent or empty read as
// nullopt.
struct PolicyView {
  std::string request;  // "smtpd_access_policy"
  ProtocolState state = ProtocolState::Unknown;
  std::string protocol_state;  // as sent, for logs when state is Unknown
  std::string protocol_name;   // SMTP, ESMTP
  std::string client_address;
  std::string client_name;
  std::string reverse_client_name;
  std::string helo_name;
  std::string sender;
  std::string recipient;
  std::string sasl_method;
  std::string sasl_username;
  std::string sasl_sender;
  std::string instance;  // one message transaction on one policy connection
  std::string queue_id;
  std::string server_address;
  std::string policy_context;
  std::string etrn_domain;
  bool stress = false;  // "yes" under Postfix's stress mode
  std::optional<std::uint64_t> recipient_count;
  std::optional<std::uint64_t> size;
  std::optional<std::uint32_t> client_port;
  std::optional<std::uint32_t> server_port;
};

// Builds the view. A request that is not an SMTPD access policy request (request
// missing or another value), or that has a number that is not a decimal number in
// range, is refused: nullopt, and `error` (when not NULL) says which attribute and why.
std::optional<PolicyView> viewOf(const Request& request, std::string* error = nullptr);

}  // namespace zetian::milter::policy

#endif  // ZETIAN_MILTER_POLICY_REQUEST_H
