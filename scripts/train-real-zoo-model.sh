#!/usr/bin/env bash
# The exact recipe of the zoo entry retinanet-r34-rsna1k (Documentation/Zoo.md has the numbers).
#
# Data: ../shared/realdata/rsna1k (757 real RSNA challenge images, 207 with 343 boxes), made
# 256 px so that it travels to a 16-core machine (scripts/zoo/make-small-rsna.py: 8-bit JPEG
# Baseline DICOMs, boxes scaled by 1/4, headers and ViewPosition kept). Folds: 4, stratified by
# class and view (AP/PA), seed 42. Model: ResNet-34 RetinaNet, FPN and heads 64 wide, P2-P7,
# 256 px, started from every weight of the synthetic-composite zoo entry (transfer).
#
# Where it ran: the four fold runs and the two from-scratch comparison runs together on one
# 16-core Xeon (3 threads per transfer fold, 2 per comparison run), 420 s of training each
# (2 epochs: the machine's time was the limit), then fold 0 continued for more epochs on the
# 2-core development machine (below). Usage: scripts/train-real-zoo-model.sh [WORK]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.build/release/opacity
[ -x "$bin" ] || swift build -c release --product opacity
work=${1:-real-zoo-work}
real=../shared/realdata/rsna1k
mkdir -p "$work"
# 1. the 256-px copy (needs: python3 -m pip install pydicom pillow)
"$bin" convert "$real/stage_2_train_images" "$work/png256" --size 256
python3 scripts/zoo/make-small-rsna.py "$real" "$work/png256" "$work/rsna256"
# 2. folds stratified by class and view, from the DICOM headers
"$bin" folds --data "$real" --stratify view -o "$work/folds.csv"
config="retinanet(head=retina(channels=64), neck=fpn(channels=64), size=256)"
common=(--data "$work/rsna256" --folds-file "$work/folds.csv" --batch 8 --freeze-bn off --aug heavy --workers 1)
# 3. transfer from the synthetic-composite entry, every fold (each stopped after 420 s: SIGINT
#    writes a checkpoint; best.opb is the best finished epoch)
for k in 0 1 2 3; do
  timeout -s INT 420 "$bin" train "${common[@]}" --fold $k --config "$config" --init-weights zoo:retinanet-r34-composite \
    --epochs 40 --lr 1e-4 --threads 3 -o "$work/transfer_fold$k" &
done
# 4. from scratch, ResNet-34 and ResNet-18, fold 0 (the comparison)
timeout -s INT 420 "$bin" train "${common[@]}" --fold 0 --config "$config" --epochs 40 --lr 3e-4 --threads 2 \
  -o "$work/scratch_r34_fold0" &
timeout -s INT 420 "$bin" train "${common[@]}" --fold 0 --epochs 40 --lr 3e-4 --threads 2 \
  --config "retinanet(encoder=resnet18, head=retina(channels=64), neck=fpn(channels=64), size=256)" -o "$work/scratch_r18_fold0" &
wait
for k in 0 1 2 3; do "$bin" eval --model "$work/transfer_fold$k" --data "$work/rsna256" --folds-file "$work/folds.csv" --fold $k \
  -o "$work/transfer_fold$k/eval"; done
"$bin" compare "$work"/transfer_fold* "$work"/scratch_* -o "$work/compare"
# 5. fold 0 continued from its best epoch at half the rate (the 2-core machine)
"$bin" export "$work/transfer_fold0" --storage int8 -o "$work/fold0-epoch2.opb"
"$bin" train "${common[@]}" --fold 0 --config "$config" --init-weights "$work/fold0-epoch2.opb" --epochs 8 --lr 5e-5 \
  --threads 2 -o "$work/fold0-continued"
"$bin" eval --model "$work/fold0-continued" --data "$work/rsna256" --folds-file "$work/folds.csv" --fold 0 -o "$work/fold0-continued/eval"
# 6. the zoo entry (see Documentation/Zoo.md for the metrics passed here)
"$bin" export "$work/fold0-continued" --storage int8 -o zoo/retinanet-r34-rsna1k.opb --overwrite
"$bin" zoo add retinanet-r34-rsna1k zoo/retinanet-r34-rsna1k.opb --manifest zoo/manifest.json --replace --licence CC-BY-4.0 \
  --data "757 real RSNA challenge images (rsna1k), 256 px; 4 folds stratified by class and view; fold 0 held out"
# 7. the held-out list, so that `opacity eval --data rsna1k` scores fold 0 of this split by
#    default, and the trained-on list, so that eval warns on those images in any other folder
python3 - "$work/folds.csv" zoo/manifest.json <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
ids = sorted(r["patientId"] for r in rows if r["fold"] == "0")
trained = sorted(r["patientId"] for r in rows if r["fold"] != "0")
m = json.load(open(sys.argv[2]))
for e in m["entries"]:
    if e["name"] == "retinanet-r34-rsna1k":
        e["heldOut"] = ids
        e["trainedOn"] = trained
with open(sys.argv[2], "w") as f:
    json.dump(m, f, indent=2, sort_keys=True)
    f.write("\n")
PY
