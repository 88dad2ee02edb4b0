#!/bin/sh
# Builds and runs the template backbone plugin, Examples/TinyBackbone: a package of its own
# that depends on this checkout by path, defines an encoder outside the framework, registers
# it and trains a RetinaNet on it for a few steps through the public API. Fails if the
# package does not build, the encoder's maps do not follow its spec, or the loss does not
# fall. Takes a few minutes (it builds Opacity again, in the example's own .build).
#
#     scripts/check-example.sh            # release build
#     scripts/check-example.sh --clean    # from scratch
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
example="$root/Examples/TinyBackbone"
if [ "${1:-}" = "--clean" ]; then rm -rf "$example/.build"; fi
swift build -c release --package-path "$example"
"$(swift build -c release --package-path "$example" --show-bin-path)/tiny-backbone-demo"
