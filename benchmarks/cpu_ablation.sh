#!/usr/bin/env bash
# sae+margin (and any other pair) under one changed setting at a time, on the CPU subset of
# benchmarks/cpu_subset.sh (10k pool, 2k test, conv 16/32/64, 5 epochs then 3 per round).
# Each variant is NAME=ARGS; ARGS go to label_efficiency.py. About 4 minutes a variant and seed.
#   bash benchmarks/cpu_ablation.sh "lam0.99=--lam 0.99" "latent16=--latent-dim 16"
set -eu
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
RUNS=${RUNS:-sae+margin}
ROOT=${ROOT:-benchmarks/results/cpu-ablation-fm10-10k}
for variant in "$@"; do
  name=${variant%%=*}
  args=${variant#*=}
  # shellcheck disable=SC2086
  "$PY" benchmarks/label_efficiency.py ${DATA:+--data-path "$DATA"} --seeds "$SEEDS" \
    --pool-size 10000 --test-size 2000 --epochs 5 --warm-epochs 3 --channels 16,32,64 \
    --runs "$RUNS" --tag "$name" --out "$ROOT/$name-s${SEEDS//,/-}" $args
done
