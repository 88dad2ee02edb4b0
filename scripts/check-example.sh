#!/bin/sh
# Builds and runs the template backbone plugin, Examples/TinyBackbone: a package of its own
# that depends on this checkout by path, defines an encoder outside the framework, registers
# it and trains a RetinaNet on it for a few steps through the public API. Then runs its
# three-line executable tiny-opacity (the `opacity` command line with the plugin added): the
# plugin is listed, and `train` trains a detector on it for one short epoch. Fails if the
# package does not build, the encoder's maps do not follow its spec, the loss does not fall,
# or a command does not see the plugin. Takes a few minutes (it builds Opacity again, in the
# example's own .build).
#
#     scripts/check-example.sh            # release build
#     scripts/check-example.sh --clean    # from scratch
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
example="$root/Examples/TinyBackbone"
if [ "${1:-}" = "--clean" ]; then rm -rf "$example/.build"; fi
swift build -c release --package-path "$example"
bin="$(swift build -c release --package-path "$example" --show-bin-path)"
"$bin/tiny-backbone-demo"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/tiny-opacity" plugins > "$work/plugins.txt"
grep -q "encoder/tiny_backbone" "$work/plugins.txt" || { echo "tiny-opacity plugins does not list encoder/tiny_backbone" >&2; exit 1; }
"$bin/tiny-opacity" synth -o "$work/data" --count 24 --size 64 --seed 3 > /dev/null
OPACITY_THREADS=2 "$bin/tiny-opacity" train --data "$work/data" \
    --config "retinanet(encoder=tiny_backbone, size=64, neck=fpn(channels=16), head=retina(channels=16))" \
    --epochs 1 --batch 4 --aug none --freeze-bn off -o "$work/run" > "$work/train.txt"
test -f "$work/run/best.opb" || { cat "$work/train.txt"; echo "tiny-opacity train wrote no best.opb" >&2; exit 1; }
grep "model:" "$work/train.txt"
echo "ok: tiny-opacity lists and trains encoder/tiny_backbone"
