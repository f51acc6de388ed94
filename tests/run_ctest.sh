#!/usr/bin/env bash
# ctest with the project's rule for CI: under CI=true a skipped or not-run test is a
# failure (CI machines have root, Postfix, network namespaces and dnsmasq, so a skip
# means a test did not run that should have). Elsewhere skips stay skips, with their
# reason in the output.
#
#   tests/run_ctest.sh BUILD_DIR [ctest arguments...]
set -uo pipefail
build_dir=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT
ctest --test-dir "$build_dir" --output-on-failure "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
if [ "${CI:-}" = "true" ]; then
  skipped=$(grep -E '\((Skipped|Not Run|Disabled)\)$' "$log" || true)
  if [ -n "$skipped" ]; then
    echo
    echo "FAILED under CI=true: these tests did not run (a skip is a failure in CI; run one with"
    echo "ctest --test-dir $build_dir -V -R NAME to see why, and install or start what it needs):"
    echo "$skipped"
    exit 1
  fi
fi
exit 0
