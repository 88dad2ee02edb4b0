#!/usr/bin/env bash
# Fuzzes Opacity's parsers with libFuzzer (Fuzz/: one target per file in Fuzz/Targets).
#
#   scripts/fuzz.sh TARGET SECONDS    run one target for a time (corpus kept in Fuzz/corpus/TARGET)
#   scripts/fuzz.sh --smoke [RUNS]    every target for RUNS executions (default 3000) from its
#                                     seeds; fails on any crash (CI runs this from scripts/test.sh)
#   scripts/fuzz.sh --list            the targets
#
# Built with `swift build -Xswiftc -sanitize=fuzzer` in Fuzz/.build (a second, instrumented
# build of the framework).
# Seeds: Fuzz/Seeds/TARGET/ plus files gathered from ../shared/realdata. A crash leaves its
# input in Fuzz/artifacts/ (crash-*); rerun it with Fuzz/.build/release/fuzz-TARGET FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fuzz=$root/Fuzz
realdata=$root/../shared/realdata
targets=$(ls "$fuzz/Targets" | sed -n 's/\.swift$//p')
# libFuzzer's coverage instrumentation (FUZZ_SANITIZE=fuzzer,address adds AddressSanitizer;
# not tried with lld yet).
sanitize=${FUZZ_SANITIZE:-fuzzer}

if [ "${1:-}" = "--list" ]; then echo "$targets"; exit 0; fi

build() {
  local log
  log=$(mktemp)
  # lld: ld.gold stops with "internal error in format_file_lineno" on the instrumented objects
  if ! swift build --package-path "$fuzz" -c release -Xswiftc -sanitize="$sanitize" -Xswiftc -use-ld=lld > "$log" 2>&1; then
    grep -E "error" "$log" | head -40 >&2
    rm -f "$log"
    echo "fuzz.sh: the fuzz targets did not build" >&2
    exit 1
  fi
  grep -E "Build complete" "$log" || true
  rm -f "$log"
  for t in $targets; do
    [ -x "$fuzz/.build/release/fuzz-$t" ] || { echo "fuzz.sh: fuzz-$t was not built" >&2; exit 1; }
  done
}

# Seeds for a target: its committed seeds and real files of the kind it reads.
seeds() {
  local t=$1 dir=$fuzz/corpus/$t
  mkdir -p "$dir"
  [ -d "$fuzz/Seeds/$t" ] && cp -n "$fuzz/Seeds/$t"/* "$dir"/ 2>/dev/null || true
  case $t in
    csv)
      for f in rsna/example_train_labels.csv rsna/example_detailed_class_info.csv; do
        [ -f "$realdata/$f" ] && head -c 4096 "$realdata/$f" > "$dir/real-$(basename "$f")"
      done
      [ -f "$realdata/rsna/stage_2_sample_submission.csv" ] && head -c 4096 "$realdata/rsna/stage_2_sample_submission.csv" > "$dir/real-sample_submission.csv" ;;
    png)
      for f in "$realdata"/nih/*.png; do [ -f "$f" ] && cp -n "$f" "$dir/" ; done ;;
    dicom)
      # the conformance files (every transfer syntax we read) up to 300 KB, and a real RSNA image
      for f in "$realdata"/dicom_conformance/*.dcm "$realdata"/rsna/stage_1_train_images/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm; do
        [ -f "$f" ] && [ "$(stat -c %s "$f")" -le 307200 ] && cp -n "$f" "$dir/"
      done ;;
    jpeg)
      for f in "$realdata"/rsna/decoded_reference/*.jpg; do [ -f "$f" ] && cp -n "$f" "$dir/"; done ;;
    zoomanifest)
      cp -n "$root/zoo/manifest.json" "$dir/zoo-manifest.json" 2>/dev/null || true
      [ -f "$realdata/dicom_conformance/manifest.json" ] && cp -n "$realdata/dicom_conformance/manifest.json" "$dir/other.json" || true ;;
  esac
  echo "$dir"
}

run() {
  local t=$1; shift
  mkdir -p "$fuzz/artifacts"
  local dir
  dir=$(seeds "$t")
  (cd "$fuzz" && ./.build/release/fuzz-"$t" "$dir" -artifact_prefix="$fuzz/artifacts/$t-" -rss_limit_mb=2048 -timeout=20 "$@")
}

if [ "${1:-}" = "--smoke" ]; then
  runs=${2:-3000}
  build
  status=0
  for t in $targets; do
    # a fresh corpus from the seeds, so the smoke run is the same every time
    rm -rf "$fuzz/corpus/$t"
    if out=$(run "$t" -runs="$runs" -seed=1 2>&1); then
      echo "fuzz $t: $(echo "$out" | grep -E '^Done [0-9]+ runs' | tail -1)"
    else
      echo "$out" | tail -40
      echo "fuzz $t: FAILED (crash input in Fuzz/artifacts/)"
      status=1
    fi
  done
  exit $status
fi

[ $# -ge 2 ] || { echo "usage: scripts/fuzz.sh TARGET SECONDS | --smoke [RUNS] | --list" >&2; exit 64; }
target=$1 seconds=$2
echo "$targets" | grep -qx "$target" || { echo "fuzz.sh: no target '$target'; targets: $(echo $targets)" >&2; exit 64; }
build
run "$target" -max_total_time="$seconds" -print_final_stats=1
