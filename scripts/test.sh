#!/usr/bin/env bash
# Runs the whole test suite in release mode (the numeric kernels are too slow unoptimised).
# Usage: scripts/test.sh [extra swift test arguments, e.g. --filter OpacityDataTests]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
swift test -c release --skip-build --disable-swift-testing "$@" 2>&1 | tee "$log" || status=$?
# One plain closing line: "tests: N passed, N failed, N skipped".
summary=$(grep -E "Executed [0-9]+ tests?, with" "$log" | tail -1 || true)
if [ -n "$summary" ]; then
  total=$(echo "$summary" | sed -E 's/.*Executed ([0-9]+) tests?.*/\1/')
  failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
  skipped=$(echo "$summary" | grep -oE '[0-9]+ tests? skipped' | grep -oE '^[0-9]+' || echo 0)
  echo "tests: $((total - failed - skipped)) passed, $failed failed, $skipped skipped"
fi
exit $status
