#!/usr/bin/env bash
# Data-parallel scaling of one training step (ResNet-50 RetinaNet at 512) on this machine:
# 1, 2, 4, 8 and 16 ranks (those that fit the cores), threads per rank = cores / ranks, the
# same global batch for every count, and a table of step time, communication wait and
# scaling efficiency. No GPU needed; Open MPI from scripts/install-deps.sh.
#
# Usage: scripts/mpi-scaling.sh [--global-batch B] [--repeat N] [--ranks 1,2,4] [any opacity-bench option]
# Memory: each rank holds the model and the activations of global-batch/ranks images
# (about 2.5 GB per 512 px image with ResNet-50); 16 ranks need roughly 16 x 3 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
cores=$(nproc)
ranks=""
for n in 1 2 4 8 16; do
  if [ "$n" -le "$cores" ]; then ranks="${ranks:+$ranks,}$n"; fi
done
max=${ranks##*,}
swift build -c release --product opacity-bench >/dev/null
exec .build/release/opacity-bench report scaling allreduce --ranks "$ranks" --global-batch "$max" --threads "$cores" --repeat 3 --no-pytorch "$@"
