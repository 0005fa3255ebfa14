#!/usr/bin/env bash
# What the per-round training budget (SAE_WARM_STEPS) costs in accuracy on the CPU, at the
# live-loop benchmark's settings: the full Fashion-MNIST training split as the pool (2,000 of it
# carved out for validation), sae+margin, 100 labels then +50 a round, conv 16/32/64, 3 epochs
# first, then one warm epoch a round capped at the budget; 3 seeds; 2,000 test images.
# Usage: bash benchmarks/cpu_budget.sh [budget ...]   (default: 60 150)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-benchmarks/results/budget-cpu-60k}
for budget in "${@:-60 150}"; do
  for b in $budget; do
    .venv/bin/sae-backend simulate --dataset fashion-mnist --data-path "$DATA" --model sae --strategy margin \
      --initial 100 --per-round 50 --rounds 8 --seeds 3 --epochs 3 --warm-epochs 1 --channels 16,32,64 \
      --validation-size 2000 --test-size 2000 --warm-steps "$b" --out "$OUT/steps-$b"
    rm -f "$OUT/steps-$b/curve.png"
  done
done
