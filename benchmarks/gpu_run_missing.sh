#!/usr/bin/env bash
# The full-data (60k pool) runs that the two earlier GPU sessions did not reach, all at once:
# one process per (split, pair, seed), 20 in all plus two augmentation runs, each cut at LIMIT
# seconds (curve.json is written after every finished curve, so a cut run keeps what it finished).
# The device gets the data from the working tree, so copy it in first and carry .data:
#   mkdir -p .data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/*.gz .data/fashion-mnist/
#   DATA=.data/fashion-mnist OUT=out bash benchmarks/gpu_run_missing.sh
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DATA=${DATA:-.data/fashion-mnist}
OUT=${OUT:-runs/gpu3}
LIMIT=${LIMIT:-540}
EXTRA=${EXTRA:-}
W=$(mktemp -d)
mkdir -p "$OUT"
SEASONS="0,3,5,6|2,4,9|1,7,8"
launch() {  # name, extra args...
  local name=$1; shift
  timeout "$LIMIT" python3 benchmarks/label_efficiency.py --data-path "$DATA" $EXTRA "$@" --out "$W/$name" > "$W/$name.log" 2>&1 &
}
for s in 0 1 2; do
  for pair in classifier+margin ae+margin sae+random; do
    launch "fm10-$pair-s$s" --seeds $s --runs $pair --tag fm10
    launch "seasons-$pair-s$s" --groups "$SEASONS" --seeds $s --runs $pair --tag seasons
  done
done
for s in 1 2; do
  launch "seasons-classifier+random-s$s" --groups "$SEASONS" --seeds $s --runs classifier+random --tag seasons
done
# augmentation on the full data (the CPU subset's best lead), seed 0
launch "fm10-shift2-s0" --seeds 0 --runs sae+margin,classifier+random --max-shift 2 --tag fm10-shift2
launch "fm10-shift2-lam0.99-s0" --seeds 0 --runs sae+margin --max-shift 2 --lam 0.99 --tag fm10-shift2-lam0.99
wait
python3 benchmarks/report.py --merge "$W"/*/curve.json --out "$OUT/curves3.json" > "$OUT/gpu_log3.txt" 2>&1
tar czf "$OUT/logs3.tar.gz" -C "$W" .
cat "$OUT/gpu_log3.txt"
