#!/usr/bin/env bash
# Data-parallel scaling of one training step on this machine in one command: 1, 2, 4, 8 and
# 16 ranks (those that fit the cores), threads per rank = cores / ranks, the same global
# batch for every count. Writes into OUT the report (report.txt: step time, communication
# wait, step and CPU efficiency, load average per count), the table as scaling.csv and the
# curve as scaling.png. No GPU needed; Open MPI from scripts/install-deps.sh.
#
# Usage: scripts/mpi-scaling.sh [--out DIR] [--ranks 1,2,4,8,16] [--global-batch B]
#            [--config CONFIG] [--repeat N] [--allreduce] [any other opacity-bench option]
#   --out DIR        where the files go (default: mpi-scaling-<UTC time> in the current folder)
#   --ranks LIST     process counts (default: 1,2,4,8,16 up to the cores)
#   --global-batch B images per step over all ranks (default: the largest count)
#   --config CONFIG  the detector (default: retinanet(encoder=resnet50, size=512), the issue's)
#   --repeat N       timed steps per count after one warm-up (default 3; the median is used)
#   --allreduce      also run the allreduce section (1-256 MiB buffers, the largest count)
# Memory: each rank holds the model and the activations of global-batch/ranks images (about
# 2.5 GB per 512 px image with ResNet-50); 16 ranks need roughly 16 x 3 GB. Each count runs
# repeat + 1 steps of the whole global batch; start it on an otherwise idle machine (the
# report prints the load average after every count).
#
# A small check on 2 cores: scripts/mpi-scaling.sh --ranks 1,2 --global-batch 2 \
#     --config "retinanet(encoder=resnet18, size=256)" --repeat 3
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cores=$(nproc)
ranks=""
for n in 1 2 4 8 16; do
  if [ "$n" -le "$cores" ]; then ranks="${ranks:+$ranks,}$n"; fi
done
out="$PWD/mpi-scaling-$(date -u +%Y%m%dT%H%M%SZ)"
config="retinanet(encoder=resnet50, size=512)"
repeat=3
batch=""
sections=(scaling)
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --ranks) ranks=$2; shift 2 ;;
    --global-batch) batch=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --allreduce) sections+=(allreduce); shift ;;
    *) extra+=("$1"); shift ;;
  esac
done
max=${ranks##*,}
batch=${batch:-$max}
mkdir -p "$out"
out=$(cd "$out" && pwd)
(cd "$repo" && swift build -c release --product opacity-bench >/dev/null)
echo "machine: $cores cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load average $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$out/report.txt"
echo "$(mpirun --version 2>&1 | head -1)" | tee -a "$out/report.txt"
"$repo/.build/release/opacity-bench" report "${sections[@]}" --ranks "$ranks" --global-batch "$batch" --threads "$cores" \
  --repeat "$repeat" --scaling-config "$config" --scaling-out "$out" --no-pytorch "${extra[@]}" | tee -a "$out/report.txt"
echo "files: $out/report.txt $out/scaling.csv $out/scaling.png"
