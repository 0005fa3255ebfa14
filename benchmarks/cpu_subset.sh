#!/usr/bin/env bash
# The five model+strategy pairs on a CPU-sized subset of Fashion-MNIST (10k pool, 2k test,
# conv 16/32/64, 5 epochs then 3 per round). One seed takes about 20 minutes on 2 cores.
#   SEEDS=0 bash benchmarks/cpu_subset.sh            # Fashion-MNIST-10
#   SEEDS=0 SPLIT=seasons bash benchmarks/cpu_subset.sh
set -eu
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0}
SPLIT=${SPLIT:-fm10}
OUT=${OUT:-benchmarks/results/cpu-$SPLIT-10k-s${SEEDS//,/-}}
GROUPS_ARG=()
if [ "$SPLIT" = seasons ]; then GROUPS_ARG=(--groups "0,3,5,6|2,4,9|1,7,8"); fi
"$PY" benchmarks/label_efficiency.py ${DATA:+--data-path "$DATA"} "${GROUPS_ARG[@]}" --seeds "$SEEDS" \
  --pool-size 10000 --test-size 2000 --epochs 5 --warm-epochs 3 --channels 16,32,64 \
  --runs sae+margin,sae+random,classifier+margin,classifier+random,ae+margin --tag "$SPLIT-cpu-10k" --out "$OUT"
"$PY" benchmarks/report.py --merge "$OUT/curve.json"
