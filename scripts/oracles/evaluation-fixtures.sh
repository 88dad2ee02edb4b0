#!/usr/bin/env bash
# Regenerates Tests/OpacityTrainingTests/Fixtures/{wbf,coco}.json from the reference
# implementations (ensemble-boxes, pycocotools), installed from PyPI into a virtualenv
# outside the repository ($OPACITY_ORACLE_VENV, default /tmp/venv-eval).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${OPACITY_ORACLE_VENV:-/tmp/venv-eval}"
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install -q "ensemble-boxes==1.0.9" "pycocotools==2.0.11" numpy
"$venv/bin/python" scripts/oracles/evaluation_fixtures.py Tests/OpacityTrainingTests/Fixtures
