#!/usr/bin/env bash
# Makes (once) the Python virtual environment of the ONNX tests' oracle, OUTSIDE the
# repository, and prints its python. onnx, onnxruntime and numpy come from PyPI; they are
# test tools only, never a dependency of Opacity.
# Location: $OPACITY_ONNX_VENV, else $HOME/.cache/opacity-onnx-venv.
set -euo pipefail
venv="${OPACITY_ONNX_VENV:-$HOME/.cache/opacity-onnx-venv}"
py="$venv/bin/python"
if ! "$py" -c "import onnx, onnxruntime, numpy" >/dev/null 2>&1; then
  python3 -m venv "$venv" >&2
  "$py" -m pip install --quiet --disable-pip-version-check onnx onnxruntime numpy >&2
  "$py" -c "import onnx, onnxruntime, numpy" >&2
fi
echo "$py"
