#!/usr/bin/env bash
# sae+margin (and any other pair) under one changed setting at a time, on the CPU subset of
# benchmarks/cpu_subset.sh (10k pool, 2k test, conv 16/32/64, 5 epochs then 3 per round).
# Each variant is NAME=ARGS; ARGS go to label_efficiency.py and override the defaults here.
# About 4 minutes a variant and seed for sae+margin.
#   bash benchmarks/cpu_ablation.sh "lam0.99=--lam 0.99" "latent16=--latent-dim 16"
#   SPLIT=seasons SEEDS=0,1,2 RUNS=sae+margin,classifier+random bash benchmarks/cpu_ablation.sh "shift2=--max-shift 2"
set -eu
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
RUNS=${RUNS:-sae+margin}
SPLIT=${SPLIT:-fm10}
ROOT=${ROOT:-benchmarks/results/cpu-ablation-$SPLIT-10k}
GROUPS_ARG=()
if [ "$SPLIT" = seasons ]; then GROUPS_ARG=(--groups "0,3,5,6|2,4,9|1,7,8"); fi
for variant in "$@"; do
  name=${variant%%=*}
  args=${variant#*=}
  # shellcheck disable=SC2086
  "$PY" benchmarks/label_efficiency.py ${DATA:+--data-path "$DATA"} "${GROUPS_ARG[@]}" --seeds "$SEEDS" \
    --pool-size 10000 --test-size 2000 --epochs 5 --warm-epochs 3 --channels 16,32,64 \
    --runs "$RUNS" --tag "$SPLIT-$name" --out "$ROOT/$name-s${SEEDS//,/-}" $args
done
