#!/usr/bin/env bash
# sae+margin (and any other pair) under one changed setting at a time, on the CPU subset of
# benchmarks/cpu_subset.sh. Each variant is NAME=ARGS; ARGS go to label_efficiency.py and
# override the subset's settings. About 4 minutes a variant and seed for sae+margin.
#   bash benchmarks/cpu_ablation.sh "lam0.99=--lam 0.99" "latent16=--latent-dim 16"
#   SPLIT=seasons SEEDS=0,1,2 RUNS=sae+margin,classifier+random bash benchmarks/cpu_ablation.sh "shift2=--max-shift 2"
set -eu
SEEDS=${SEEDS:-0}
SPLIT=${SPLIT:-fm10}
ROOT=${ROOT:-benchmarks/results/cpu-ablation-$SPLIT-10k}
export SEEDS SPLIT
export RUNS=${RUNS:-sae+margin}
for variant in "$@"; do
  name=${variant%%=*}
  TAG="$SPLIT-$name" OUT="$ROOT/$name-s${SEEDS//,/-}" EXTRA="${variant#*=}" bash benchmarks/cpu_subset.sh
done
