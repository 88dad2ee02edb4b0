#!/usr/bin/env bash
# One command from a fresh Debian 12 machine with Swift 6: install the system packages if
# missing, build in release mode, and run the main job (`opacity demo`) on the embedded
# synthetic chest X-ray set. Pictures and the model land in ./opacity-demo.
# Usage: scripts/demo.sh [opacity demo options]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release --product opacity
.build/release/opacity demo "$@"
