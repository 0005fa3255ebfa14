#!/usr/bin/env bash
# One prepared GPU session: the backend's per-version work at a million items
# (benchmarks/version_work.py) with step budgets of 200 (the default), 50 and 1000.
# Each run has its own timeout, and a run that could push the session past MAX_SECONDS is
# skipped, so the whole session stays under 8 minutes. Nothing is installed: what is missing
# is printed and the runs go on (they fail on their own if torch itself is missing).
# Usage: OUT=gpu-out bash benchmarks/gpu_session.sh
# Dry run on a CPU: N=20000 DEVICE=auto VARIANTS="5 40" OUT=$(mktemp -d) bash benchmarks/gpu_session.sh
set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-./gpu-out}
N=${N:-1000000}
DEVICE=${DEVICE:-cuda}
LIMIT=${LIMIT:-150}
MAX_SECONDS=${MAX_SECONDS:-470}
PY=${PYTHON:-python3}
WORKDIR=${WORKDIR:-}
VARIANTS=${VARIANTS:-50 1000}
if [ "$N" = 1000000 ]; then TAG=1m; else TAG="n$N"; fi
mkdir -p "$OUT"
LOG="$OUT/gpu_session_log.txt"

probe() {
  date -u +"start %Y-%m-%dT%H:%M:%SZ"
  if command -v nvidia-smi > /dev/null; then nvidia-smi -L; else echo "nvidia-smi: not available"; fi
  if ! "$PY" -c "import torch; print('torch', torch.__version__, 'cuda available', torch.cuda.is_available())"; then
    echo "missing: torch (the runs below will fail)"
  fi
  for mod in numpy sklearn scipy tqdm; do
    "$PY" -c "import $mod; print('$mod', $mod.__version__)" 2>/dev/null || echo "missing: $mod"
  done
}

run() {
  local name=$1
  shift
  if [ $((SECONDS + LIMIT)) -gt "$MAX_SECONDS" ]; then
    echo "== $name: skipped, $SECONDS s used of $MAX_SECONDS"
    return
  fi
  local extra=()
  if [ -n "$WORKDIR" ]; then extra=(--workdir "$WORKDIR"); fi
  echo "== $name: --device $DEVICE --n $N $*"
  local t0=$SECONDS
  timeout "$LIMIT" "$PY" benchmarks/version_work.py --device "$DEVICE" --n "$N" ${extra[@]+"${extra[@]}"} "$@" \
    > "$OUT/$name.log" 2>&1
  echo "rc=$? after $((SECONDS - t0)) s"
  grep -E '^(pool|first_fit|stage_pool|warm_retrain|encode_pool|svm_and_ranking):|Error|error:' "$OUT/$name.log" | tail -n 12
}

{
  probe
  run "version-work-gpu-$TAG" --out "$OUT/version-work-gpu-$TAG.json"
  for steps in $VARIANTS; do
    run "version-work-gpu-$TAG-steps$steps" --steps "$steps" --out "$OUT/version-work-gpu-$TAG-steps$steps.json"
  done
  if command -v nvidia-smi > /dev/null; then nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv; fi
  echo "done in $SECONDS s"
} 2>&1 | tee "$LOG"
