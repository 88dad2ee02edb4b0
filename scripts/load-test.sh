#!/usr/bin/env bash
# Load test of `opacity serve` on loopback with wrk (Debian's package): 1, 4, 16 and 64
# concurrent clients for a bounded time each; requests/s and p50/p99 latency; the batching
# gain (--max-batch 1 against --max-batch N at 16 clients); resident memory after 100 and
# after 10,000 requests.
#
# Usage: scripts/load-test.sh [seconds per run (20)] [requests for the memory check (10000)]
# Env:   OPACITY_MODEL (retinanet-r34-composite), OPACITY_IMAGE (a real RSNA DICOM from ../shared),
#        OPACITY_THREADS (2), OPACITY_MAX_BATCH (4), OPACITY_BIN (.build/release/opacity)
# Prints a Markdown table to paste into Documentation/Serving.md.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
memreq=${2:-10000}
model=${OPACITY_MODEL:-retinanet-r34-composite}
image=${OPACITY_IMAGE:-../shared/realdata/rsna/stage_1_train_images/0004cfab-14fd-4e49-80ba-63a80b6bddd6.dcm}
threads=${OPACITY_THREADS:-2}
batch=${OPACITY_MAX_BATCH:-4}
bin=${OPACITY_BIN:-.build/release/opacity}
if ! command -v wrk >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk
fi
[ -x "$bin" ] || swift build -c release --product opacity
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/post.lua" <<'LUA'
local f = assert(io.open(os.getenv("OPACITY_IMAGE_PATH"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/dicom"
LUA
export OPACITY_IMAGE_PATH="$image"

start_server() { # $1 = max batch
  "$bin" serve --model "$model" --port 0 --threads "$threads" --max-batch "$1" --max-wait-ms 10 --max-queue 256 \
    2> "$work/serve.log" &
  pid=$!
  port=""
  for _ in $(seq 1 600); do
    port=$(grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$work/serve.log" | grep -oE '[0-9]+$' || true)
    [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  [ -n "$port" ] || { cat "$work/serve.log"; exit 1; }
}
stop_server() { kill -TERM "$pid"; wait "$pid" || true; pid=""; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
answered() { curl -s "http://127.0.0.1:$port/metrics" | awk '/^opacity_images_total / {print int($2)}'; }

run_wrk() { # $1 = connections; prints "req/s p50 p99 non2xx"
  local c=$1 t=$(( $1 < 2 ? 1 : 2 ))
  wrk -t"$t" -c"$c" -d"${secs}s" --timeout 60s --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/detect" > "$work/wrk.txt"
  local rps p50 p99 bad
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$work/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
  bad=$(awk '/Non-2xx/ {print $5}' "$work/wrk.txt"); bad=${bad:-0}
  echo "$rps $p50 $p99 $bad"
}

echo "# opacity serve load test: $(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# model $model, image $(basename "$image"), --threads $threads, ${secs}s per run"
echo
echo "| clients | --max-batch | requests/s | p50 | p99 | non-2xx |"
echo "|---|---|---|---|---|---|"
for b in "$batch" 1; do
  start_server "$b"
  for c in 1 4 16 64; do
    [ "$b" = 1 ] && [ "$c" != 16 ] && continue
    read -r rps p50 p99 bad < <(run_wrk "$c")
    echo "| $c | $b | $rps | $p50 | $p99 | $bad |"
  done
  stop_server
done

echo
start_server "$batch"
# wrk runs for a time, not a count: repeat short runs until the server has answered enough
until [ "$(answered)" -ge 100 ]; do wrk -t1 -c4 -d5s --timeout 60s -s "$work/post.lua" "http://127.0.0.1:$port/v1/detect" > /dev/null; done
n1=$(answered); r1=$(rss_kb)
until [ "$(answered)" -ge "$memreq" ]; do wrk -t2 -c16 -d30s --timeout 60s -s "$work/post.lua" "http://127.0.0.1:$port/v1/detect" > /dev/null; done
n2=$(answered); r2=$(rss_kb)
echo "resident memory: ${r1} kB after ${n1} requests, ${r2} kB after ${n2} requests ($(awk -v a="$r1" -v b="$r2" 'BEGIN {printf "%+.1f%%", 100 * (b - a) / a}'))"
stop_server
