#!/usr/bin/env bash
# Issue 14's many-core figures in one call on a lent 16-core machine that has no Swift
# (Documentation/Benchmarks.md, "Many cores"): sgemm, the ResNet-50 convolutions as a fraction
# of it, every encoder's detector against PyTorch at 16 threads, and data-parallel scaling
# over 1 to 16 MPI ranks.
#
#   scripts/device-bench.sh pack          # here, after `swift build -c release`: packs
#                                         # opacity-bench and the libraries ldd lists (not libc,
#                                         # libm, libstdc++, libgcc_s) and the pure-Python
#                                         # pretrainedmodels the NASNet reference needs into
#                                         # .device/ (ignored by git)
#   scripts/device-bench.sh run [SECTIONS] # there, in the repository root: unpacks to /tmp and
#                                         # runs the sections (default: smoke detector blas conv
#                                         # scaling; conv-tiles is conv without the weight-row
#                                         # split of OPACITY_ROW_SPLIT_THREADS) within BUDGET
#                                         # seconds (default 540), each report in $OUT (or
#                                         # ./device-out)
#
# Our binary gets the packed libraries through LD_LIBRARY_PATH; Open MPI's are packed apart and
# used only where the machine has no libmpi.so.40 of its own (its mpirun must match its
# library). The PyTorch reference runs through a wrapper that unsets LD_LIBRARY_PATH, so torch
# loads its own OpenMP and BLAS. THREADS (default 16), SIZE (default 512) and REPEAT (default 2)
# adjust it; RANKS (1,4,16), GLOBAL_BATCH (16) and SCALING_CONFIG the scaling section. The smoke section stops the run at once if the binary or torch does not start.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pack_dir=$root/.device
archive=$pack_dir/opacity-device.tar.xz

pack() {
    local bin=$root/.build/release
    [ -x "$bin/opacity-bench" ] || { echo "device-bench: $bin/opacity-bench is missing: run 'swift build -c release' first" >&2; exit 1; }
    stage=$(mktemp -d)
    trap 'rm -rf "${stage:-}"' EXIT
    mkdir -p "$stage/bin" "$stage/lib" "$stage/libmpi" "$stage/py"
    cp "$bin/opacity-bench" "$stage/bin/"
    strip "$stage/bin/opacity-bench"
    ldd "$stage/bin/opacity-bench" | awk '/=> \// { print $3 }' | sort -u | while read -r lib; do
        case $(basename "$lib") in
            libc.so* | libm.so* | libstdc++.so* | libgcc_s.so* | ld-linux* | libpthread.so* | libdl.so* | librt.so*) ;;
            libmpi* | libopen-* | libhwloc* | libevent* | libpmix* | libfabric* | libucp* | libucs* | libuct* | libucm* | libpsm* | librdmacm* | libibverbs* | libnl-* | libefa*)
                cp -L "$lib" "$stage/libmpi/" ;;
            *) cp -L "$lib" "$stage/lib/" ;;
        esac
    done
    # the NASNet-A Mobile reference is pretrainedmodels' (pure Python), which that machine lacks
    local site
    site=$("${TORCH_PYTHON:-/root/.cache/opacity-torch-venv/bin/python}" -c 'import pretrainedmodels, os; print(os.path.dirname(os.path.dirname(pretrainedmodels.__file__)))')
    cp -r "$site/pretrainedmodels" "$site/munch" "$stage/py/"
    find "$stage/py" -name __pycache__ -prune -exec rm -rf {} +
    git -C "$root" rev-parse --short HEAD > "$stage/commit" 2>/dev/null || echo unknown > "$stage/commit"
    mkdir -p "$pack_dir"
    tar -C "$stage" -cf - . | xz -T0 -6 > "$archive.part"
    mv "$archive.part" "$archive"
    echo "device-bench: $(du -h "$archive" | cut -f1) in $archive ($(ls "$stage/lib" "$stage/libmpi" | wc -l) libraries, commit $(cat "$stage/commit"))"
}

run() {
    [ -f "$archive" ] || { echo "device-bench: $archive is missing: run 'scripts/device-bench.sh pack' here first" >&2; exit 1; }
    local sections=("$@")
    ((${#sections[@]})) || sections=(smoke detector blas conv scaling)
    local dir=/tmp/opacity-device out=${OUT:-$root/device-out}
    local threads=${THREADS:-16} size=${SIZE:-512} repeat=${REPEAT:-2} budget=${BUDGET:-540} start=$SECONDS
    rm -rf "$dir" && mkdir -p "$dir" "$out"
    xz -dc "$archive" | tar -C "$dir" -xf -
    local libs=$dir/lib
    if ! { ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | grep -q 'libmpi\.so\.40 '; then libs=$libs:$dir/libmpi; fi
    if ! [ -x /usr/bin/mpirun ] && command -v mpirun > /dev/null; then ln -sf "$(command -v mpirun)" /usr/bin/mpirun 2> /dev/null || true; fi
    printf '#!/bin/sh\nunset LD_LIBRARY_PATH\nexport PYTHONPATH=%s${PYTHONPATH:+:$PYTHONPATH}\nexec python3 "$@"\n' "$dir/py" > "$dir/python3"
    chmod +x "$dir/python3"
    export OB_LIBS=$libs OB_BIN=$dir/bin/opacity-bench
    {
        echo "commit $(cat "$dir/commit"); $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $(free -g | awk '/Mem:/ {print $2}') GiB"
        echo "threads $threads; size $size; repeat $repeat; budget ${budget}s; sections ${sections[*]}; libraries $libs"
        (mpirun --version 2>&1 || echo "no mpirun") | head -1
        "$dir/python3" -c 'import torch, timm, pretrainedmodels; print("torch", torch.__version__, "timm", timm.__version__, "threads", torch.get_num_threads())' 2>&1 | tail -1 || true
    } | tee "$out/machine.txt"
    local py=(--python "$dir/python3")
    for s in "${sections[@]}"; do
        case $s in
            smoke)
                section smoke 60 detector --threads "$threads" --size 128 --repeat 1 "${py[@]}" --config "retinanet(encoder=resnet18, size=128)"
                grep -Eq "resnet18 +forward [0-9.]+x" "$out/smoke.txt" || { echo "device-bench: smoke failed; stopping"; cat "$out/smoke.txt"; exit 1; } ;;
            blas) section blas 40 blas --threads "$threads" --repeat 3 ;;
            conv) section conv 60 conv --threads "$threads" --forward-only --repeat 3 "${py[@]}" ;;
            conv-tiles) # the same without the weight-row split of small maps (the kernels before it)
                OPACITY_ROW_SPLIT_THREADS=1000000 section conv-tiles 40 conv --threads "$threads" --forward-only --repeat 3 --no-pytorch ;;
            detector) section detector 300 detector --threads "$threads" --size "$size" --repeat "$repeat" "${py[@]}" ${CONFIGS:-} ;;
            scaling) section scaling 150 scaling --ranks "${RANKS:-1,4,16}" --global-batch "${GLOBAL_BATCH:-16}" --threads "$threads" --repeat 2 \
                --scaling-config "${SCALING_CONFIG:-retinanet(encoder=resnet34, size=256)}" --scaling-out "$out"
                rm -f "$out/scaling.svg" ;; # at most 8 files come back
            *) echo "device-bench: unknown section $s" ;;
        esac
    done
    echo "device-bench: done in $((SECONDS - start))s; reports in $out"
}

# section NAME LIMIT ARGS...: one opacity-bench run with what is left of the budget, at most LIMIT s.
section() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget - (SECONDS - start)))
    ((left < limit)) && limit=$left
    if ((limit < 15)); then
        echo "== $name: skipped, ${left}s of the budget left" | tee "$out/$name.txt"
        return 0
    fi
    echo "== $name (at most ${limit}s, at $((SECONDS - start))s): opacity-bench $*"
    LD_LIBRARY_PATH=$OB_LIBS OMP_WAIT_POLICY=PASSIVE timeout "$limit" "$OB_BIN" "$@" > "$out/$name.txt" 2>&1 || echo "   (exit $?: see $name.txt)"
    tail -n 40 "$out/$name.txt"
}

case ${1:-} in
    pack) pack ;;
    run) shift; run "$@" ;;
    *) sed -n '2,23p' "$0"; exit 64 ;;
esac
