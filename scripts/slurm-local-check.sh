#!/usr/bin/env bash
# Runs `opacity train` under Slurm on this one machine: munged, slurmctld and slurmd on
# localhost with a minimal slurm.conf (in a temporary folder, /etc untouched), then
# `srun --mpi=pmix -n 2` and `srun --mpi=pmi2 -n 2` on a tiny synthetic set, a SIGTERM to
# a running job step (what Slurm sends at a time limit) and `--resume` under srun. Every
# daemon it starts is stopped on exit. Not part of CI. See Documentation/Distributed.md
# ("Slurm") for what it printed.
#
# Usage (as root, Debian 12): scripts/slurm-local-check.sh [--install]
#   --install   apt-get install slurm-wlm slurmd slurmctld slurm-client munge first
# Needs: a built .build/release/opacity (swift build -c release), Open MPI from
# scripts/install-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
opacity=$repo/.build/release/opacity
[ -x "$opacity" ] || { echo "build first: swift build -c release" >&2; exit 1; }
if [ "${1:-}" = "--install" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm slurmd slurmctld slurm-client munge
fi
for tool in munged slurmctld slurmd srun sinfo; do
  command -v "$tool" >/dev/null || { echo "$tool missing: run with --install (Debian: slurm-wlm, munge)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/opacity-slurm.XXXXXX)
chmod 755 "$work"
host=$(hostname -s)
cpus=$(nproc)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# munge: its own socket and pid file in the work folder, as the munge user
mkdir -p "$work/munge"
chown munge:munge "$work/munge"
runuser -u munge -- munged --socket="$work/munge/socket" --pid-file="$work/munge/pid" \
  --log-file="$work/munge/log" --seed-file="$work/munge/seed" --foreground 2>"$work/munged.err" &
pids+=($!)
for _ in $(seq 1 50); do [ -S "$work/munge/socket" ] && break; sleep 0.1; done
[ -S "$work/munge/socket" ] || { echo "munged did not start:" >&2; cat "$work/munged.err" "$work/munge/log" >&2 2>/dev/null; exit 1; }

mkdir -p "$work/state" "$work/spool"
cat >"$work/slurm.conf" <<EOF
ClusterName=opacity-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$work/munge/socket
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=30
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF=$work/slurm.conf
sleep 1
slurmctld -D -f "$SLURM_CONF" 2>"$work/slurmctld.err" &
pids+=($!)
slurmd -D -f "$SLURM_CONF" 2>"$work/slurmd.err" &
pids+=($!)
for _ in $(seq 1 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1 || true)
  [ "$state" = "idle" ] && break
  sleep 1
done
echo "== sinfo"
sinfo -N || { tail -5 "$work"/slurm*.err; exit 1; }
echo "== srun --mpi=list"
srun --mpi=list 2>&1 || true

cd "$work"
"$opacity" synth --output data --count 24 --size 128 --seed 9 >/dev/null 2>&1
tiny="retinanet(encoder=resnet18(width=0.125), neck=fpn(channels=16), head=retina(channels=16), size=64)"
common=(train --data data --config "$tiny" --batch 4 --lr 1e-4 --seed 11 --threads 1 --freeze-bn off)

run() {  # run NAME srun-args... -- opacity-args...
  local name=$1; shift
  local launch=()
  while [ "$1" != "--" ]; do launch+=("$1"); shift; done
  shift
  echo "== ${launch[*]} opacity $*"
  set +e
  timeout 300 "${launch[@]}" "$opacity" "$@" >"$name.out" 2>"$name.err"
  local rc=$?
  set -e
  grep -E "^processes:|^batch:|^done:|^communication:|weights identical|rank .* failed|error|PMI|pmi" "$name.out" "$name.err" | sed 's/^/   /' | head -12 || true
  echo "   exit status $rc"
  return 0
}

run pmix srun --mpi=pmix -n 2 -- "${common[@]}" --epochs 1 --output run-pmix
run pmi2 srun --mpi=pmi2 -n 2 -- "${common[@]}" --epochs 1 --output run-pmi2
for r in run-pmix run-pmi2; do
  [ -f "$r/log.jsonl" ] && echo "   $r/log.jsonl: $(grep -o '"processes":[0-9]*' "$r/log.jsonl" | head -1)"
done

# SIGTERM to the job step while it trains (what Slurm does at the time limit), then resume
echo "== srun --mpi=pmix -n 2 opacity train --epochs 4 ..., scancel --signal=TERM JOB.0 in epoch 2, then --resume"
srun --mpi=pmix -n 2 "$opacity" "${common[@]}" --epochs 4 --output run-term >term.out 2>term.err &
srun_pid=$!
for _ in $(seq 1 600); do
  # a few steps into epoch 2
  if sed -n '/epoch 2\/4/,$p' term.err 2>/dev/null | grep -q "step 2/"; then break; fi
  sleep 0.1
done
job=$(squeue -h -o %i | head -1)
echo "   job $job; squeue -s: $(squeue -h -s -o '%i %j' | tr '\n' ' ')"
t0=$(date +%s.%N)
scancel --signal=TERM "$job.0" || true
set +e
wait $srun_pid
rc=$?
set -e
echo "   srun exit status $rc after $(echo "$(date +%s.%N) - $t0" | bc) s"
grep -E "stopping all ranks|srun:|error" term.err | sed 's/^/   /' || true
echo "   checkpoints: $(ls run-term/checkpoints | tr '\n' ' ')"
run resume srun --mpi=pmix -n 2 -- train --output run-term --resume --threads 1
grep -h "resumed from" resume.out resume.err | sed 's/^/   /' || true
echo "   run-term epochs in log.jsonl: $(grep -c . run-term/log.jsonl)"
