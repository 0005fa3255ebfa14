#!/usr/bin/env bash
# The GPU figures of the live loop in one call (Fashion-MNIST IDX files in DATA):
#   1. the backend's per-version work at 1M items (benchmarks/version_work.py, 200 steps),
#   2. the same at 60k items with the service's two networks (150 steps),
#   3. what the per-round step budget costs in accuracy: the simulator on the full 60k pool,
#      sae+margin, 100 labels then +50 a round, warm rounds of 150 steps vs full passes (235 steps).
# Each run has its own timeout; only JSON results and one log come back.
# Usage: OUT=gpu-out bash benchmarks/gpu_loop_session.sh
# Dry run on a CPU: N1M=5000 N60K=3000 POOL=600 TEST=300 ROUNDS=1 SEEDS=1 EPOCHS=1 DEVICE=cpu \
#   OUT=$(mktemp -d) bash benchmarks/gpu_loop_session.sh
set -u
cd "$(dirname "$0")/.." || exit 1
export PYTHONUNBUFFERED=1 PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-./gpu-out}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
N1M=${N1M:-1000000}
N60K=${N60K:-60000}
SEEDS=${SEEDS:-3}
ROUNDS=${ROUNDS:-8}
EPOCHS=${EPOCHS:-10}
POOL=${POOL:-}
TEST=${TEST:-}
mkdir -p "$OUT"
LOG="$OUT/session.log"

step() {
  local limit=$1
  shift
  echo "== $* (limit $limit s)"
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$LOG.runs" 2>&1
  echo "rc=$? after $((SECONDS - t0)) s"
}

{
  date -u +"start %Y-%m-%dT%H:%M:%SZ"
  if command -v nvidia-smi > /dev/null; then nvidia-smi -L; fi
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  step 170 "$PY" benchmarks/version_work.py --device "$DEVICE" --n "$N1M" --steps 200 \
    --out "$OUT/version-work-gpu-1m.json"
  for ch in 32,64,128 16,32,64; do
    step 90 "$PY" benchmarks/version_work.py --device "$DEVICE" --n "$N60K" --steps 150 --channels "$ch" \
      --out "$OUT/version-work-gpu-60k-${ch//,/-}.json"
  done
  sizes=()
  if [ -n "$POOL" ]; then sizes+=(--pool-size "$POOL"); fi
  if [ -n "$TEST" ]; then sizes+=(--test-size "$TEST"); fi
  for budget in 150 full; do
    extra=()
    if [ "$budget" != full ]; then extra=(--warm-steps "$budget"); fi
    step 220 "$PY" -m service.cli simulate --dataset fashion-mnist --data-path "$DATA" --model sae \
      --strategy margin --initial 100 --per-round 50 --rounds "$ROUNDS" --seeds "$SEEDS" --epochs "$EPOCHS" \
      --warm-epochs 1 --device "$DEVICE" --out "$OUT/budget-$budget" ${sizes[@]+"${sizes[@]}"} \
      ${extra[@]+"${extra[@]}"}
    rm -f "$OUT/budget-$budget/curve.png"
  done
  if command -v nvidia-smi > /dev/null; then nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv; fi
  echo "done in $SECONDS s"
} > "$LOG" 2>&1
cat "$LOG.runs" >> "$LOG"
rm -f "$LOG.runs"
cat "$LOG"
