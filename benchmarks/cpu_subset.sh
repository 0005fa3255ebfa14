#!/usr/bin/env bash
# The five model+strategy pairs on a CPU-sized subset of Fashion-MNIST (10k pool, 2k test,
# conv 16/32/64, 5 epochs then 3 per round). One seed takes about 20 minutes on 2 cores.
#   SEEDS=0 bash benchmarks/cpu_subset.sh            # Fashion-MNIST-10
#   SEEDS=0 SPLIT=seasons bash benchmarks/cpu_subset.sh
# RUNS, TAG, OUT and EXTRA (more label_efficiency.py arguments, overriding these) change one run;
# benchmarks/cpu_ablation.sh uses them.
set -eu
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
SPLIT=${SPLIT:-fm10}
RUNS=${RUNS:-sae+margin,sae+random,classifier+margin,classifier+random,ae+margin}
TAG=${TAG:-$SPLIT-cpu-10k}
OUT=${OUT:-benchmarks/results/cpu-$SPLIT-10k-s${SEEDS//,/-}}
EXTRA=${EXTRA:-}
GROUPS_ARG=()
if [ "$SPLIT" = seasons ]; then GROUPS_ARG=(--groups "0,3,5,6|2,4,9|1,7,8"); fi
# shellcheck disable=SC2086
"$PY" benchmarks/label_efficiency.py ${DATA:+--data-path "$DATA"} "${GROUPS_ARG[@]}" --seeds "$SEEDS" \
  --pool-size 10000 --test-size 2000 --epochs 5 --warm-epochs 3 --channels 16,32,64 \
  --runs "$RUNS" --tag "$TAG" --out "$OUT" $EXTRA
"$PY" benchmarks/report.py --merge "$OUT/curve.json"
