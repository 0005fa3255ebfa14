#!/usr/bin/env bash
# Second GPU session: the baselines and random-order runs (gpu_run.sh got through sae+margin only).
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DATA=${DATA:-.data/fashion-mnist}
OUT=${OUT:-runs/gpu2}
LIMIT=${LIMIT:-200}
W=$(mktemp -d)
mkdir -p "$OUT"
R="classifier+random,sae+random,classifier+margin,ae+margin"
for s in 0 1 2; do
  timeout "$LIMIT" python3 benchmarks/label_efficiency.py --data-path "$DATA" --seeds $s --runs "$R" --tag fm10 --out "$W/fm10-s$s" > "$W/fm10-s$s.log" 2>&1 &
done
timeout "$LIMIT" python3 benchmarks/label_efficiency.py --data-path "$DATA" --groups "0,3,5,6|2,4,9|1,7,8" --seeds 0 --runs "classifier+random,sae+random" --tag seasons --out "$W/seasons-s0" > "$W/seasons-s0.log" 2>&1 &
wait
python3 benchmarks/report.py --merge "$W"/*/curve.json --out "$OUT/curves2.json" > "$OUT/gpu_log2.txt" 2>&1
tar czf "$OUT/logs2.tar.gz" -C "$W" .
cat "$OUT/gpu_log2.txt"
