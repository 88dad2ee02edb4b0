#!/usr/bin/env bash
# One command from a fresh Debian 12 machine with Swift 6: install the system packages if
# missing, build in release mode, install `opacity` (scripts/install.sh; PREFIX, default
# /usr/local) and run the main job (`opacity demo`) on the embedded synthetic chest X-ray set.
# Pictures and the model land in ./opacity-demo; the closing "Try: opacity detect ..." line
# works as typed once PREFIX/bin is on PATH (it is for /usr/local).
# Usage: [PREFIX=DIR] scripts/demo.sh [opacity demo options]
set -euo pipefail
here=$(pwd)
cd "$(dirname "$0")/.."
scripts/install-deps.sh
prefix=${PREFIX:-/usr/local}
scripts/install.sh --prefix "$prefix"
cd "$here"
"$prefix/bin/opacity" demo "$@"
