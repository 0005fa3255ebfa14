#!/usr/bin/env bash
# One prepared GPU session: smoke test, epoch timing, then label-efficiency runs in parallel
# (one process per data set and seed; the small conv nets leave most of a large GPU idle).
# Usage: DATA=.data/fashion-mnist OUT=out bash benchmarks/gpu_run.sh
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DATA=${DATA:-.data/fashion-mnist}
OUT=${OUT:-runs/gpu}
LIMIT=${LIMIT:-400}
EXTRA=${EXTRA:-}
DEV=${DEV:-cuda}
W=$(mktemp -d)
mkdir -p "$OUT"
{
nvidia-smi -L
python3 -c "import torch, sklearn, numpy, scipy; print('torch', torch.__version__, 'sklearn', sklearn.__version__, 'numpy', numpy.__version__, torch.cuda.get_device_name(0))"
timeout 120 python3 - "$DEV" <<'PY'
import sys, numpy as np
sys.path.insert(0, ".")
from connectors.datasets import load_digits_dataset
from model.sae_classifier import SAEClassifier
ds = load_digits_dataset()
y = np.full(len(ds.y_train), -1); y[:100] = ds.y_train[:100]
m = SAEClassifier(epochs=30, device=sys.argv[1]).fit(ds.x_train, y)
print("smoke: digits on", m.sae_.device_, "test error", np.mean(m.predict(ds.x_test) != ds.y_test))
PY
timeout 90 python3 benchmarks/epoch_time.py --data-path "$DATA" --device $DEV --epochs 4 --json "$OUT/epoch_time.jsonl"
timeout 60 python3 benchmarks/epoch_time.py --data-path "$DATA" --device $DEV --epochs 4 --channels 16,32,64 --json "$OUT/epoch_time.jsonl"
} > "$OUT/gpu_log.txt" 2>&1
SEASONS="0,3,5,6|2,4,9|1,7,8"
for s in 0 1 2; do
  timeout "$LIMIT" python3 benchmarks/label_efficiency.py $EXTRA --data-path "$DATA" --seeds $s --tag fm10 --out "$W/fm10-s$s" > "$W/fm10-s$s.log" 2>&1 &
  timeout "$LIMIT" python3 benchmarks/label_efficiency.py $EXTRA --data-path "$DATA" --groups "$SEASONS" --seeds $s --tag seasons --out "$W/seasons-s$s" > "$W/seasons-s$s.log" 2>&1 &
done
A="--data-path $DATA --seeds 0 --runs sae+margin"
timeout "$LIMIT" python3 benchmarks/label_efficiency.py $A $EXTRA --lam 0.5 --tag fm10-lam0.5 --out "$W/abl-lam05" > "$W/abl-lam05.log" 2>&1 &
timeout "$LIMIT" python3 benchmarks/label_efficiency.py $A $EXTRA --lam 0.99 --tag fm10-lam0.99 --out "$W/abl-lam099" > "$W/abl-lam099.log" 2>&1 &
timeout "$LIMIT" python3 benchmarks/label_efficiency.py $A $EXTRA --labeled-per-batch 0 --tag fm10-nomix --out "$W/abl-nomix" > "$W/abl-nomix.log" 2>&1 &
timeout "$LIMIT" python3 benchmarks/label_efficiency.py $A $EXTRA --epochs 3 --warm-epochs 3 --tag fm10-e3 --out "$W/abl-e3" > "$W/abl-e3.log" 2>&1 &
wait
python3 benchmarks/report.py --merge "$W"/*/curve.json --out "$OUT/curves.json" >> "$OUT/gpu_log.txt" 2>&1
tar czf "$OUT/logs.tar.gz" -C "$W" .
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv >> "$OUT/gpu_log.txt" 2>&1
tail -n 40 "$OUT/gpu_log.txt"
