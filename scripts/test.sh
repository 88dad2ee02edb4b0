#!/usr/bin/env bash
# Runs the whole test suite in release mode (the numeric kernels are too slow unoptimised).
# Usage: scripts/test.sh [extra swift test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --build-tests
swift test -c release --skip-build "$@"
