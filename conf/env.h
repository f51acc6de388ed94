// Configuration from the environment: every key of the schema can be given as
// ZETIAN_<SECTION>_<KEY> (upper case, dots as underscores: ZETIAN_NODE_ID for node.id,
// ZETIAN_CLUSTER_TLS_CERT for cluster.tls.cert). The value is read exactly as a --set
// value, with the same checks; the host passes the variables as overrides named by the
// variable, before its --set ones, so the order of strength is file < environment <
// --set (docs/configuration.md, "Configuration from the environment").
//
// A variable name is resolved by matching it against the names of all schema keys,
// never by guessing where the section ends: "CLUSTER_SHARED_SECRET_FILE" could be split
// in four places. Two keys with the same name would make it ambiguous; that is an error
// naming both, not a guess.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "conf/schema.h"

namespace zetian::conf {

inline constexpr std::string_view kEnvPrefix = "ZETIAN_";

// Whether `name` is spelled as a configuration variable: ZETIAN_ then upper-case
// letters, digits and underscores. Dotted keys from --set never are.
bool isEnvName(std::string_view name);

// "cluster.shared_secret" -> "ZETIAN_CLUSTER_SHARED_SECRET".
std::string envNameOf(std::string_view path);

// ZETIAN_ variables that are used by something else and are not configuration keys:
// test hooks of the engine, the test harness, the unit-test simulators and the
// variables the event hook is given (so a hook that runs zetian-milter --check-config
// is not refused). They are skipped without a word. ZETIAN_HEALTH_SOCKET is not among
// them: it is health.socket, and zetianctl reads the same variable, so one export
// points both at the same socket.
bool isNonConfigEnvName(std::string_view name);

// What a variable names: the schema path of a key that may be set, or (path empty) an
// error message without the variable's name in front ("no such key; did you mean
// ZETIAN_NODE_ID?"). `schema` is schemaKeys() but for the tests.
struct EnvKey {
  std::string path;
  std::string error;
};
EnvKey resolveEnvName(std::string_view name, std::span<const KeySchema> schema);

}  // namespace zetian::conf
