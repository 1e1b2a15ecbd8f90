#!/usr/bin/env bash
# The claims sweeps of #33 at nyc_cpu on a CPU, run in the background across sessions on a machine that is kept
# (the GPU path is tools/gpu/gpu_lease.sh). Two series, one per precision: `model.precision=auto` computes in bf16
# on a CPU with native bf16 (Zen 4, AMX Xeon) and in fp32 on one without (Zen 1/3, AVX2 only); seeds of the two
# differ by the machine as well as the seed, so they are never pooled, and `start` continues the series of the
# machine it runs on. Each series has
#   its commit      SWEEP_COMMIT, the commit every seed of the series runs (a sweep re-composes its config from disk,
#                   a job is reused only under the same code, and seeds run by different code would not be one
#                   sweep): bf16 22be351 (begun 2026-12-06 on a Zen 4), fp32 e8122e5 (begun 2026-12-05 on a Zen 1)
#   its committed folder   results/ (bf16) or results/avx2-fp32/ (fp32): <target>/ or <target>-rerun/
# and everything else lives under SWEEPS_HOME (default ~/sweeps), outside the work tree, which a new session lays
# anew:
#   src-<commit>/   the clone at the series' commit; at the same path on every machine (the pinned commits key a
#                   finished job by its input files' absolute paths), so keep SWEEPS_HOME=~/sweeps as root
#   results-<series>/<target>/runs   the sweep folders as `make <target> RESULTS=...` leaves them; on a machine
#                   that has none yet, `start` first restores the series' committed jobs into them (harvest
#                   --restore), and the rounds reuse those instead of running the committed seeds again
# and the caches in BEHAVIORLM_CACHE (default ~/.cache/behaviorlm; stages/ below it): models, tuned stages, test
# predictions, epoch checkpoints.
#
#   bash tools/sweeps/cpu_claims.sh start     # start, or resume after the last finished epoch (nice, setsid)
#   bash tools/sweeps/cpu_claims.sh status    # the series, completed jobs per target and seed, the log's last line
#   bash tools/sweeps/cpu_claims.sh pause     # SIGSTOP the sweep, e.g. for `make test` (two torch processes on 2
#   bash tools/sweeps/cpu_claims.sh resume    # cores slow each other 5-10x); SIGCONT it afterwards
#   bash tools/sweeps/cpu_claims.sh stop
#   bash tools/sweeps/cpu_claims.sh harvest   # complete seeds -> the series' committed folder, collected
# CLAIMS_SWEEPS picks the make targets, in order of value (make -k: a failed job does not stop the next target).
# Seed-major: one round per seed in CLAIMS_SEEDS, round k running every target over the seeds up to the k-th
# (`seed=0,1`: the sweep's jobs keep the folder numbers of the full grid, which is seed-major too, so the seeds of
# earlier rounds are reused, not rerun), so each claim gets a first seed before any gets a third. Seeds that do
# not start at the grid's first (CLAIMS_SEEDS="2": ablation-b-rate's seed 2, all the trade-off study reads) number
# their jobs from 0, over the folders of seed 0: harvest counts and copies only jobs at their grid place.
# Harvest and commit each seed as soon as it is complete (tools/sweeps/harvest.py): a session ends its background
# commands with it, and only a kept machine keeps SWEEPS_HOME.
set -euo pipefail
SWEEPS_HOME=${SWEEPS_HOME:-$HOME/sweeps}
CLAIMS_SWEEPS=${CLAIMS_SWEEPS:-paper-main ablation-components ablation-aux ablation-few-shot ablation-b-rate}
CLAIMS_SEEDS=${CLAIMS_SEEDS:-0 1 2}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
PIDFILE=$SWEEPS_HOME/claims.pgid
LOG=$SWEEPS_HOME/claims.log
# The series of this machine: SERIES, SWEEP_COMMIT, COMMITTED, RESULTS (start, status and harvest need them; the
# signals do not, and need not import torch)
choose_series() {
  [[ -x $REPO/.venv/bin/python ]] || { echo "cpu_claims: $REPO/.venv is missing: run make install first"; exit 2; }
  # what `model.precision=auto` computes in here, as the job keys have it (behaviorlm.cache_keys.computed_precision)
  SERIES=$("$REPO/.venv/bin/python" -c 'import torch; from behaviorlm.models import autocast_dtype
print("bf16" if autocast_dtype("auto", torch.device("cpu")) == torch.bfloat16 else "fp32")')
  if [[ $SERIES == bf16 ]]; then
    SWEEP_COMMIT=${SWEEP_COMMIT:-22be351ca287e7600ccd47f9421923a102bf580a} COMMITTED=$REPO/results
  else
    SWEEP_COMMIT=${SWEEP_COMMIT:-e8122e5c003818479f5a32812759ae587ed3a4d9} COMMITTED=$REPO/results/avx2-fp32
  fi
  RESULTS=$SWEEPS_HOME/results-$SERIES
}

running() { [[ -s $PIDFILE ]] && kill -0 -- "-$(cat "$PIDFILE")" 2>/dev/null; }
signal() { running || { echo "cpu_claims: no sweep is running"; exit 1; }; kill "-$1" -- "-$(cat "$PIDFILE")"; }
# tools/sweeps/harvest.py over every target, from the work tree's environment (the clone's would import its code)
harvest() {
  (cd "$REPO" && "$REPO/.venv/bin/python" -m tools.sweeps.harvest "$@" --results "$COMMITTED" "$RESULTS" \
    $CLAIMS_SWEEPS)
}

case ${1:?usage: cpu_claims.sh start|status|harvest|pause|resume|stop} in
start)
  if running; then echo "cpu_claims: already running (process group $(cat "$PIDFILE"))"; exit 0; fi
  choose_series
  mkdir -p "$SWEEPS_HOME"
  src=$SWEEPS_HOME/src-${SWEEP_COMMIT:0:7}
  if [[ ! -d $src ]]; then
    git clone -q "$REPO" "$src"
    git -C "$src" checkout -q "$SWEEP_COMMIT"
  fi
  if [[ $(git -C "$src" rev-parse HEAD) != "$SWEEP_COMMIT"* ]]; then
    echo "cpu_claims: $src is not at SWEEP_COMMIT $SWEEP_COMMIT"; exit 2
  fi
  echo "cpu_claims: the $SERIES series, from $src (commit $(git -C "$src" rev-parse --short HEAD)), log $LOG"
  harvest --restore "$SWEEP_COMMIT"
  # the clone's own environment: the work tree's editable install would import the work tree's code
  (cd "$src" && make install >> "$LOG" 2>&1)
  cache=${BEHAVIORLM_CACHE:-$HOME/.cache/behaviorlm}
  # round k: seed=<the first k seeds>, e.g. seed=0, then seed=0,1, then seed=0,1,2
  rounds=() seeds=""
  for seed in $CLAIMS_SEEDS; do seeds+=${seeds:+,}$seed; rounds+=("$seeds"); done
  setsid nohup env BEHAVIORLM_CACHE="$cache" BEHAVIORLM_STAGE_CACHE="$cache/stages" \
    nice -n 10 bash -c 'src=$1 results=$2 targets=$3; shift 3
      for seeds; do make -k -C "$src" $targets EXPERIMENT=nyc_cpu RESULTS="$results" ARGS="seed=$seeds"; done' \
    rounds "$src" "$RESULTS" "$CLAIMS_SWEEPS" "${rounds[@]}" >> "$LOG" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  echo "cpu_claims: started $CLAIMS_SWEEPS, rounds seed=${rounds[*]} (process group $!)"
  ;;
status)
  choose_series
  # how far each seed of each target is: what `harvest` counts (behaviorlm.sweeps.completed_jobs, as collect does)
  echo "the $SERIES series (this machine's precision), commit ${SWEEP_COMMIT:0:7}, sweeps in $RESULTS"
  harvest --dry-run
  running && echo "running (process group $(cat "$PIDFILE"))" || echo "not running"
  if [[ -s $LOG ]]; then  # the sweep's own count and estimate after its last job, then where the job is now
    grep -a -o '\[sweep\] .*' "$LOG" | tail -1 || true
    tr '\r' '\n' < "$LOG" | grep -v '^\s*$' | tail -1 | cut -c1-200
  fi
  ;;
harvest) choose_series; harvest ;;
pause) signal STOP ;;
resume) signal CONT ;;
stop) signal TERM ;;
*) echo "cpu_claims: unknown command '$1' (start | status | harvest | pause | resume | stop)"; exit 2 ;;
esac
