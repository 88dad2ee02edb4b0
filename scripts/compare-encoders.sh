#!/usr/bin/env bash
# The paper's Fig. 2 on a small synthetic set: trains a RetinaNet with every encoder on the
# same data with the same recipe, then overlays their validation-loss curves with
# `opacity compare`. Results go to compare-encoders/ (runs, PNGs, curves.csv).
#
# Usage: scripts/compare-encoders.sh [epochs] [images] [size]
# Defaults: 8 epochs, 400 synthetic images, 128-pixel input (about an hour on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-8}
count=${2:-400}
size=${3:-128}
out=compare-encoders
bin=.build/release/opacity
[ -x "$bin" ] || swift build -c release --product opacity
mkdir -p "$out"
[ -f "$out/data/stage_2_train_labels.csv" ] || "$bin" synth -o "$out/data" --count "$count" --size 256 --seed 21
encoders=(resnet34 resnet50 resnet101 seresnext50_32x4d seresnext101_32x4d xception dpn92 nasnetamobile)
for e in "${encoders[@]}"; do
  run="$out/runs/$e"
  if [ -f "$run/log.jsonl" ] && [ "$(wc -l < "$run/log.jsonl")" -ge "$epochs" ]; then continue; fi
  start=$(date +%s)
  resume=()
  [ -d "$run/checkpoints" ] && resume=(--resume)
  "$bin" train --data "$out/data" -o "$run" "${resume[@]}" \
    --config "retinanet(encoder=$e, neck=fpn(channels=64), head=retina(channels=64), size=$size)" \
    --epochs "$epochs" --batch 8 --lr 3e-4 --clip 1 --freeze-bn off --aug light --seed 1 --workers 1
  echo "$e: $(( $(date +%s) - start )) s" >> "$out/times.txt"
done
# rerun after more epochs: the figures are drawn again (--overwrite)
"$bin" compare "${encoders[@]/#/$out/runs/}" -o "$out/figure" --overwrite
