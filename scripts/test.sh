#!/usr/bin/env bash
# Runs the whole test suite in release mode (the numeric kernels are too slow unoptimised).
# Usage: scripts/test.sh [extra swift test arguments, e.g. --filter OpacityDataTests]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The ONNX tests' oracle (onnx, onnxruntime from PyPI) in a virtualenv outside the repo.
echo "onnx oracle: $(scripts/onnx-venv.sh)"
# The timm/PyTorch oracle of the weight-import tests (torch CPU, timm, safetensors from PyPI),
# also outside the repo; with OPACITY_PYTHON set, those tests fail rather than skip without it.
OPACITY_PYTHON=$(scripts/torch-venv.sh)
export OPACITY_PYTHON
echo "torch oracle: $OPACITY_PYTHON"
scripts/lint.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Any compiler warning in our own sources fails the run (dependencies' warnings do not count).
# A clean build shows every warning; an incremental one only those of recompiled files.
swift build -c release --build-tests 2>&1 | tee "$log"
if grep -E "^$PWD/(Sources|Plugins|Tests|Examples|Package\.swift)[^:]*:[0-9]+:[0-9]+: warning:" "$log"; then
  echo "error: compiler warnings in our sources (above); CI fails on any warning" >&2
  exit 1
fi
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
# The template plugin package (a separate build of the framework, a few minutes) and its
# three-line `opacity` with the plugin: on a full run only, not with a --filter.
if [ $status -eq 0 ] && [ $# -eq 0 ]; then scripts/check-example.sh || status=$?; fi
# The whole suite also runs a bounded fuzz smoke of every parser (Fuzz/: a few thousand runs
# per target from its seeds); any crash fails the run.
if [ $# -eq 0 ]; then
  scripts/fuzz.sh --smoke 3000 || status=1
fi
exit $status
