#!/usr/bin/env bash
# Issue-10 protocol on the full Fashion-MNIST training split, for one GPU session: a 5k validation
# set carved from the 60k training items (the pool is the other 55k), the 10k test split, conv
# 32/64/128, 10 epochs then 5 per round, 100 -> 1,000 labels, seeds 0-2. Every (variant, seed) is
# one process, all in parallel (the small nets leave most of a large GPU idle); a run cut short by
# LIMIT still leaves the rounds it finished in its curve.json. Six variants x 3 seeds are 18
# processes (the typicality start alone, cluster-margin, always-on self-training and the step without
# λ 0.99, measured on the CPU, are left out to fit a 16-core host); the last SAE line is the CPU
# protocol's current choice (every line here already trains 5 epochs a round). On a smaller host set
# VARIANTS to a few lines at a time.
#   DATA=.data/fashion-mnist OUT=benchmarks/results/gpu-protocol-fm10 bash benchmarks/gpu_protocol.sh
# Tiny check on a CPU: DEV=cpu POOL=2000 EPOCHS=1 WARM=1 ROUNDS=1 VAL=200 TEST=200 LIMIT=300 ...
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
PY=${PY:-python3}
DATA=${DATA:-.data/fashion-mnist}
OUT=${OUT:-benchmarks/results/gpu-protocol-fm10}
DEV=${DEV:-cuda}
LIMIT=${LIMIT:-540}
SEEDS=${SEEDS:-0 1 2}
POOL=${POOL:-}
EPOCHS=${EPOCHS:-10}
WARM=${WARM:-5}
ROUNDS=${ROUNDS:-9}
VAL=${VAL:-5000}
TEST=${TEST:-}
VARIANTS=${VARIANTS:-"shift2:sae+margin:--max-shift 2
wide-flip:sae+margin:--max-shift 2 --flip --initial-strategy typicality
flip-semi500-lam099:sae+margin:--max-shift 2 --flip --initial-strategy typicality --self-training 0.3 --self-training-threshold 0.9 --consistency 1 --semi-supervised-from 500 --lam 0.99
flip-semi500-lam099-warm5-ema95:sae+margin:--max-shift 2 --flip --initial-strategy typicality --self-training 0.3 --self-training-threshold 0.9 --consistency 1 --semi-supervised-from 500 --lam 0.99 --ema-decay 0.95
baselines:classifier+margin,classifier+random:--max-shift 2
baselines-wide-flip:classifier+margin,classifier+random:--max-shift 2 --flip"}
mkdir -p "$OUT"
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } > "$OUT/device.txt" 2>&1
while IFS= read -r line; do
  [ -n "$line" ] || continue
  name=${line%%:*}; rest=${line#*:}; runs=${rest%%:*}; args=${rest#*:}
  for seed in $SEEDS; do
    dir="$OUT/$name-s$seed"
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    timeout "$LIMIT" "$PY" benchmarks/label_efficiency.py --dataset fashion-mnist --data-path "$DATA" \
      --seeds "$seed" --runs "$runs" --tag "fm10-$name" --out "$dir" --device "$DEV" \
      --epochs "$EPOCHS" --warm-epochs "$WARM" --rounds "$ROUNDS" --validation-size "$VAL" \
      ${POOL:+--pool-size "$POOL"} ${TEST:+--test-size "$TEST"} $args > "$dir/log.txt" 2>&1 &
  done
done <<< "$VARIANTS"
wait
"$PY" benchmarks/report.py --merge "$OUT"/*/curve.json || true
