#!/usr/bin/env bash
# Does pretraining on realistic (patchy) synthetic opacities help on real films more than the
# original ovals? The exact commands of the comparison in Documentation/Zoo.md ("Synthetic
# opacity styles"), on equal budgets:
#
#  1. two synthetic-composite sets that differ only in the opacity style (same seed, films,
#     class mix, sizes): `opacity synth --opacity-style ovals` and `--opacity-style patchy`;
#  2. each continues the zoo entry retinanet-r34-composite (ResNet-34 RetinaNet, 64-wide
#     heads, 256 px) for the same wall time, both at once (same load);
#  3. each result is transferred to real rsna1k fold 0 (folds stratified by class and view,
#     as scripts/train-real-zoo-model.sh) for the same wall time, both at once;
#  4. `opacity eval` on all 190 held-out fold-0 images (challenge metric, global ROC AUC; its
#     figures: metric against threshold, precision-recall, FROC) and `opacity compare` for the
#     training curves (these need at least one finished epoch).
#
#  5. the decision (STAGE=cv, after 1-2): each pretrained model transferred to every real fold
#     for CV_EPOCHS epochs (fixed work, not wall time), both styles at once per fold, each scored
#     by `opacity eval` on all of its fold's held-out images; cv.csv holds the metrics.
#
# Budget (the 2-core development machine shared with other jobs): PRETRAIN_S and TRANSFER_S
# seconds per run, 1 thread each, nice 10. Usage: [STAGE=all|cv] scripts/compare-synthetic-styles.sh [WORK]
# Needs: the rsna1k 256-px copy (scripts/train-real-zoo-model.sh step 1) in $RSNA256.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/.build/release/opacity
[ -x "$bin" ] || swift build -c release --product opacity
work=${1:-style-work}
rsna256=${RSNA256:-real-zoo-work/rsna256}
pretrain_s=${PRETRAIN_S:-1500}
transfer_s=${TRANSFER_S:-1800}
real=../shared/realdata
stage=${STAGE:-all}
cv_epochs=${CV_EPOCHS:-1}
mkdir -p "$work/bg"
# the composite zoo entry's films: RSNA patients without boxes and the two NIH films
for id in $(awk -F, '$6 == "0" { print $1 }' "$real/rsna/example_train_labels.csv" | sort -u); do
  ln -sf "$(cd "$real/rsna/stage_1_train_images" && pwd)/$id.dcm" "$work/bg/"
done
ln -sf "$(cd "$real/nih" && pwd)"/*.png "$work/bg/"
"$bin" folds --data "$real/rsna1k" --stratify view -o "$work/folds.csv"
config="retinanet(head=retina(channels=64), neck=fpn(channels=64), size=256)"
common=(--config "$config" --batch 8 --lr 1e-4 --freeze-bn off --aug heavy --workers 1 --threads 1 --seed 1234)
if [ "$stage" = cv ]; then
  for style in ovals patchy; do
    [ -f "$work/pre-$style/checkpoints/interrupted.opb" ] || { echo "error: $work/pre-$style has no pretrained model: run the script without STAGE=cv first" >&2; exit 1; }
  done
  echo "style,fold,metric,threshold,roc_auc,metric_ap,metric_pa" > "$work/cv.csv"
  for fold in 0 1 2 3; do
    for style in ovals patchy; do
      # a finished run (its epoch-CV_EPOCHS checkpoint exists) is only scored again
      (if [ -f "$work/cv-$style-f$fold/checkpoints/epoch_$(printf %03d "$cv_epochs").opb" ]; then true; else
        "$bin" train "${common[@]}" --epochs "$cv_epochs" --data "$rsna256" --folds-file "$work/folds.csv" \
          --fold "$fold" --limit-val 8 --init-weights "$work/pre-$style/checkpoints/interrupted.opb" -o "$work/cv-$style-f$fold" \
          > "$work/cv-$style-f$fold.log" 2>&1; fi &&
        "$bin" eval --model "$work/cv-$style-f$fold" --data "$rsna256" --folds-file "$work/folds.csv" --fold "$fold" \
          --threads 1 -o "$work/cv-eval-$style-f$fold" --overwrite > "$work/cv-eval-$style-f$fold.txt" 2>&1) &
    done
    wait
    for style in ovals patchy; do
      python3 - "$work/cv-eval-$style-f$fold/report.json" "$style" "$fold" >> "$work/cv.csv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = r.get("classifier") or {}
ch = r["challenge"]
views = {v["view"]: v["metric"] for v in (r.get("by_view") or {}).get("views", [])}
print(f"{sys.argv[2]},{sys.argv[3]},{ch['bestMetric']},{ch['bestThreshold']},{c.get('rocAUCLungOpacity')},{views.get('AP')},{views.get('PA')}")
PY
    done
  done
  cat "$work/cv.csv"
  python3 - "$work/cv.csv" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for style in ("ovals", "patchy"):
    for key in ("metric", "roc_auc", "metric_ap", "metric_pa"):
        v = [float(r[key]) for r in rows if r["style"] == style and r[key] not in ("", "None")]
        if len(v) > 1:
            print(f"{style} {key}: mean {statistics.mean(v):.4f} +- {statistics.stdev(v):.4f} (sd over {len(v)} folds)")
d = [float(p["metric"]) - float(o["metric"]) for o, p in zip([r for r in rows if r["style"] == "ovals"], [r for r in rows if r["style"] == "patchy"])]
if len(d) > 1:
    print(f"patchy - ovals per fold: {' '.join(f'{x:+.4f}' for x in d)}; mean {statistics.mean(d):+.4f} +- {statistics.stdev(d):.4f}")
PY
  exit 0
fi
for style in ovals patchy; do
  "$bin" synth -o "$work/synth-$style" --count 800 --size 512 --backgrounds "$work/bg" --seed 7 --opacity-style "$style"
done
# 2. pretraining: both at once, stopped after the same wall time (SIGINT writes
#    checkpoints/interrupted.opb)
for style in ovals patchy; do
  timeout -s INT "$pretrain_s" nice -n 10 "$bin" train "${common[@]}" --epochs 100 --data "$work/synth-$style" --fold 0 --limit-val 16 \
    --init-weights zoo:retinanet-r34-composite -o "$work/pre-$style" > "$work/pre-$style.log" 2>&1 &
done
wait
# 2b. each pretrained model as it is, on all 190 held-out real fold-0 images (no real training)
for style in ovals patchy; do
  nice -n 10 "$bin" eval --model "$work/pre-$style/checkpoints/interrupted.opb" --data "$rsna256" --folds-file "$work/folds.csv" \
    --fold 0 --threads 1 -o "$work/eval-pre-$style" > "$work/eval-pre-$style.txt" 2>&1 &
done
wait
# 3. transfer to real fold 0 from the last pretraining weights, both at once, same wall time
for style in ovals patchy; do
  timeout -s INT "$transfer_s" nice -n 10 "$bin" train "${common[@]}" --epochs 100 --data "$rsna256" --folds-file "$work/folds.csv" --fold 0 \
    --limit-val 48 --init-weights "$work/pre-$style/checkpoints/interrupted.opb" -o "$work/transfer-$style" > "$work/transfer-$style.log" 2>&1 &
done
wait
# 4. the last weights of each, scored on all 190 held-out real images
for style in ovals patchy; do
  nice -n 10 "$bin" eval --model "$work/transfer-$style/checkpoints/interrupted.opb" --data "$rsna256" --folds-file "$work/folds.csv" \
    --fold 0 --threads 1 -o "$work/eval-$style" | tee "$work/eval-$style.txt" &
done
wait
"$bin" compare "$work/transfer-ovals" "$work/transfer-patchy" -o "$work/compare"
