#!/usr/bin/env bash
# Builds and runs the template backbone plugin, Examples/TinyBackbone: a package of its own
# that depends on this checkout by path, defines an encoder outside the framework, registers
# it and trains a RetinaNet on it for a few steps through the public API. Then runs its
# three-line executable tiny-opacity (the `opacity` command line with the plugin added): the
# plugin is listed, and `train` trains a detector on it for one short epoch. Fails if the
# package does not build, the encoder's maps do not follow its spec, the loss does not fall,
# or a command does not see the plugin. Then loads the same encoder built as a shared library
# (libTinyBackbonePlugin.so, linked against Opacity's OpacityDynamic product) into the STOCK
# .build/release/opacity with --plugin / OPACITY_PLUGINS: plugins, train, detect and eval with
# the trained run, and the refusal of a library built against another Opacity version. Takes a
# few minutes (it builds Opacity again, in the example's own .build).
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

# The stock opacity with the plugin library (built from the same checkout as the example's Opacity).
swift build -c release --package-path "$root" --product opacity
opacity="$(swift build -c release --package-path "$root" --show-bin-path)/opacity"
lib="$bin/libTinyBackbonePlugin.so"
fail() { cat "$work/out.txt" 2>/dev/null; echo "check-example: $1" >&2; exit 1; }
"$opacity" plugins --plugin "$lib" > "$work/out.txt" || fail "opacity plugins --plugin failed"
grep -q "encoder/tiny_backbone  \[TinyBackbone\]" "$work/out.txt" || fail "opacity plugins --plugin does not list encoder/tiny_backbone"
if "$opacity" plugins > "$work/out.txt"; then grep -q tiny_backbone "$work/out.txt" && fail "stock opacity lists tiny_backbone without the plugin"; fi
config="retinanet(encoder=tiny_backbone, size=64, neck=fpn(channels=16), head=retina(channels=16))"
OPACITY_THREADS=2 "$opacity" train --plugin "$lib" --data "$work/data" --config "$config" \
    --epochs 1 --batch 4 --aug none --freeze-bn off --limit-train 8 --limit-val 4 -o "$work/dynrun" > "$work/out.txt" 2>&1 \
    || fail "opacity train --plugin failed"
test -f "$work/dynrun/best.opb" || fail "opacity train --plugin wrote no best.opb"
# detect through OPACITY_PLUGINS, eval through --plugin, both with the trained run
mkdir "$work/few"
for f in $(ls "$work/data/stage_2_train_images" | head -n 2); do cp "$work/data/stage_2_train_images/$f" "$work/few/"; done
OPACITY_THREADS=2 OPACITY_PLUGINS="$lib" "$opacity" detect "$work/few" --model "$work/dynrun" \
    --threshold 0 --no-overlays -o "$work/dyndet" > "$work/out.txt" 2>&1 || fail "opacity detect with OPACITY_PLUGINS failed"
OPACITY_THREADS=2 "$opacity" eval --plugin "$lib" --model "$work/dynrun" --data "$work/data" --limit 4 -o "$work/dyneval" > "$work/out.txt" 2>&1 \
    || fail "opacity eval --plugin failed"
grep -q tiny_backbone "$work/out.txt" || fail "opacity eval --plugin does not name the model's config"
# without the plugin the run's model does not load, and the message says which encoder is missing
if "$opacity" detect "$work/few" --model "$work/dynrun" -o "$work/nodet" > "$work/out.txt" 2>&1; then
    fail "stock opacity loaded a tiny_backbone model without the plugin"
fi
grep -q tiny_backbone "$work/out.txt" || fail "the error without the plugin does not name tiny_backbone"
# a library built against another Opacity version is refused, naming the file and both versions
modules="$bin/Modules"; test -d "$modules" || modules="$bin"
# every system-library module the Opacity modules import (CBLAS, CDNNL, ...) needs its module map
maps=()
for m in "$root"/Sources/C*/module.modulemap; do maps+=(-Xcc "-fmodule-map-file=$m"); done
swiftc -emit-library -parse-as-library -O -module-name MismatchedPlugin -I "$modules" -L "$bin" -lOpacityDynamic \
    "${maps[@]}" "$root/scripts/fixtures/mismatched-plugin.swift" -o "$work/libMismatched.so" \
    || fail "the mismatched-version fixture plugin did not build"
if "$opacity" plugins --plugin "$work/libMismatched.so" > "$work/out.txt" 2>&1; then fail "a mismatched plugin was accepted"; fi
grep -q "libMismatched.so was built against Opacity 0.0.9, plugin format 1" "$work/out.txt" || fail "no version-mismatch message"
grep -q "this program is Opacity $("$opacity" --version)" "$work/out.txt" || fail "the mismatch message does not name this opacity's version"
# a program with its own static copy of Opacity (tiny-opacity: no exported symbols) would bind the
# plugin to a second copy (the example's libOpacityDynamic.so): refused, naming that copy
if "$bin/tiny-opacity" plugins --plugin "$lib" > "$work/out.txt" 2>&1; then fail "tiny-opacity accepted a plugin library"; fi
grep -q "bound to its own copy of Opacity (.*libOpacityDynamic.so)" "$work/out.txt" || fail "no second-copy message from tiny-opacity"
echo "ok: the stock opacity loads libTinyBackbonePlugin.so (--plugin, OPACITY_PLUGINS): plugins, train, detect, eval; refuses a mismatched build and a second copy of Opacity"
