#!/usr/bin/env bash
# Load test of `opacity serve` on loopback with wrk (Debian's package): 1, 4, 16 and 64
# concurrent clients for a bounded time each, with --max-batch N and with --max-batch 1
# alternating (the batching gain: requests/s batched over unbatched, same clients, measured
# back to back, ROUNDS times); requests/s
# and p50/p99 latency; resident memory after 100 and after 10,000 requests.
#
# Usage: scripts/load-test.sh [seconds per run (20)] [requests for the memory check (10000; 0 skips it)]
# Env:   ROUNDS (2), OPACITY_MODEL (retinanet-r34-composite; a bundle path works), OPACITY_IMAGE (a real RSNA
#        DICOM from ../shared; a .png is sent as image/png), OPACITY_THREADS (2),
#        OPACITY_MAX_BATCH (4), OPACITY_BIN (.build/release/opacity)
# Prints Markdown tables to paste into Documentation/Serving.md.
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
wrk.headers["Content-Type"] = os.getenv("OPACITY_IMAGE_TYPE")
LUA
export OPACITY_IMAGE_PATH="$image"
case "$image" in *.png) export OPACITY_IMAGE_TYPE=image/png ;; *) export OPACITY_IMAGE_TYPE=application/dicom ;; esac

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

cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
run_wrk() { # $1 = connections; prints "req/s p50 p99 non2xx cpu-ms-per-image"
  local c=$1 t=$(( $1 < 2 ? 1 : 2 ))
  local k0 i0 k1 i1 cpu
  k0=$(cpu_ticks); i0=$(answered)
  wrk -t"$t" -c"$c" -d"${secs}s" --timeout 60s --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/detect" > "$work/wrk.txt"
  k1=$(cpu_ticks); i1=$(answered)
  # the server's CPU time (user + system, all threads) per image answered: less disturbed
  # by other jobs on the machine than requests/s
  cpu=$(awk -v a="$k0" -v b="$k1" -v i="$i0" -v j="$i1" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f", (b - a) / hz * 1000 / (j > i ? j - i : 1)}')
  local rps p50 p99 bad
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$work/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
  bad=$(awk '/Non-2xx/ {print $5}' "$work/wrk.txt"); bad=${bad:-0}
  echo "$rps $p50 $p99 $bad $cpu"
}

echo "# opacity serve load test: $(date -u +%FT%TZ), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# model $model, image $(basename "$image"), --threads $threads, ${secs}s per run"
echo
# batched and unbatched alternate, each client count in turn, so that both see the same
# load from other jobs on the machine; ROUNDS (2) pairs per client count
rounds=${ROUNDS:-2}
echo "| clients | round | requests/s (--max-batch $batch) | p50 | p99 | CPU ms/image | requests/s (--max-batch 1) | p50 | p99 | CPU ms/image | gain (requests/s) | gain (CPU/image) | non-2xx |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for c in 1 4 16 64; do
  for r in $(seq 1 "$rounds"); do
    start_server "$batch"; read -r r1 a1 b1 n1 c1 < <(run_wrk "$c"); stop_server
    start_server 1; read -r r2 a2 b2 n2 c2 < <(run_wrk "$c"); stop_server
    gain=$(awk -v a="$r1" -v b="$r2" 'BEGIN {printf "%.2fx", a / b}')
    cgain=$(awk -v a="$c1" -v b="$c2" 'BEGIN {printf "%.2fx", b / a}')
    echo "| $c | $r | $r1 | $a1 | $b1 | $c1 | $r2 | $a2 | $b2 | $c2 | $gain | $cgain | $(( n1 + n2 )) |"
  done
done
echo "# load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"

[ "$memreq" -gt 0 ] || exit 0
echo
start_server "$batch"
# the same load throughout (16 clients): wrk runs for a time, not a count, so repeat short
# runs and sample the resident memory after each; a leak grows with the count, warm-up does not
until [ "$(answered)" -ge 100 ]; do wrk -t2 -c16 -d3s --timeout 60s -s "$work/post.lua" "http://127.0.0.1:$port/v1/detect" > /dev/null; done
n1=$(answered); r1=$(rss_kb)
samples="$n1:$r1"
until [ "$(answered)" -ge "$memreq" ]; do
  wrk -t2 -c16 -d30s --timeout 60s -s "$work/post.lua" "http://127.0.0.1:$port/v1/detect" > /dev/null
  samples="$samples $(answered):$(rss_kb)"
done
n2=$(answered); r2=$(rss_kb)
echo "resident memory (requests:kB): $samples"
echo "resident memory: ${r1} kB after ${n1} requests, ${r2} kB after ${n2} requests ($(awk -v a="$r1" -v b="$r2" 'BEGIN {printf "%+.1f%%", 100 * (b - a) / a}')); load average $(cut -d' ' -f1-3 /proc/loadavg)"
stop_server
