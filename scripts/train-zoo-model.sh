#!/usr/bin/env bash
# Reproduces the zoo entry `retinanet-r34-composite`: synthetic opacities composited onto real
# chest films, a ResNet-34 RetinaNet at 256 px trained on fold 0 of 4, scored on the whole
# held-out fold, exported as int8 and added to zoo/manifest.json.
#
# The backgrounds are the real films in ../shared/realdata (the negative RSNA DICOMs and the
# two NIH films); pass another folder of chest films as $1 to use your own.
# Takes about 1.5 hours on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release/opacity
[ -x "$bin" ] || swift build -c release --product opacity
work=${WORK:-zoo-work}
mkdir -p "$work"
backgrounds=${1:-}
if [ -z "$backgrounds" ]; then
  backgrounds="$work/backgrounds"
  mkdir -p "$backgrounds"
  real=../shared/realdata
  # patients without boxes only (Target 0), so no real opacity goes unlabelled
  for id in $(awk -F, '$6 == "0" { print $1 }' "$real/rsna/example_train_labels.csv" | sort -u); do
    ln -sf "$(cd "$real/rsna/stage_1_train_images" && pwd)/$id.dcm" "$backgrounds/"
  done
  ln -sf "$(cd "$real/nih" && pwd)"/*.png "$backgrounds/"
fi
"$bin" synth -o "$work/data" --count 2400 --size 512 --backgrounds "$backgrounds" --seed 7
"$bin" train --data "$work/data" -o "$work/run" --seed 1234 \
  --config "retinanet(encoder=resnet34, neck=fpn(channels=64), head=retina(channels=64), size=256)" \
  --epochs 8 --batch 8 --lr 3e-4 --freeze-bn off --limit-val 300
"$bin" eval --model "$work/run" --data "$work/data" --fold 0 -o "$work/eval" | tee "$work/eval.txt"
metric=$(sed -nE 's/^metric ([0-9.]+) at score threshold ([0-9.]+).*/\1/p' "$work/eval.txt")
threshold=$(sed -nE 's/^metric ([0-9.]+) at score threshold ([0-9.]+).*/\2/p' "$work/eval.txt")
"$bin" export "$work/run" --storage int8 -o zoo/retinanet-r34-composite.opb --overwrite \
  --metric "heldout_metric=$metric" --metric "metric_threshold=$threshold" \
  --notes "fold 0 of 4 held out (600 images); trained by scripts/train-zoo-model.sh"
"$bin" zoo add retinanet-r34-composite zoo/retinanet-r34-composite.opb --manifest zoo/manifest.json --replace \
  --licence CC-BY-4.0 \
  --data "2400 synthetic opacities composited onto 11 real chest films (RSNA negatives, NIH ChestX-ray14), 512 px, seed 7" \
  --about "RetinaNet, ResNet-34 encoder, FPN and heads 64 wide, P2-P7, 256 px input; int8 weights"
