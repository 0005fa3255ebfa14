"""Reliability diagram of the protocol runs: each model's own confidence on the test split.

Draws one line per model+strategy at one label budget, bins summed over seeds, from the
raw curves (``test_reliability``, and the SAE's calibrated probability where recorded) that
benchmarks/cpu_protocol.sh wrote.

    python benchmarks/reliability.py --labels 1000 --out benchmarks/results/reliability-fm10-10k.png \
        --glob 'protocol-fm10-10k/shift2/curve.json' --glob 'protocol-fm10-10k/wide-flip/curve.json' \
        --glob 'protocol-fm10-10k/baselines-wide-flip/curve.json'

One line per run folder: name the reference, the chosen setting and its baselines, or the
diagram holds every lever and cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.plots import reliability_png

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--glob", action="append", help="curves under results/ (repeatable; default: every protocol run)")
    p.add_argument("--labels", type=int, default=1000)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    curves: dict[str, list[dict]] = defaultdict(list)
    for path in sorted({q for pattern in a.glob or ["protocol-fm10-10k/*/curve.json"] for q in RESULTS.glob(pattern)}):
        data = json.loads(path.read_text())
        for r in data["runs"]:
            for point in r["curve"]:
                if point["labeled"] == a.labels and "test_reliability" in point:
                    curves[f"{r['model']}+{r['strategy']} ({path.parent.name})"].append(point)
                if point["labeled"] == a.labels and "test_reliability_calibrated" in point:
                    curves[f"{r['model']}+{r['strategy']} ({path.parent.name}), calibrated"].append(
                        {"test_reliability": point["test_reliability_calibrated"]})
    if not curves:
        sys.exit(f"no curve point at {a.labels} labels with reliability bins in {a.glob or 'the protocol runs'}")
    Path(a.out).write_bytes(reliability_png(dict(curves), title=f"Fashion-MNIST-10, {a.labels:,} labels"))
    print(f"wrote {a.out}: {', '.join(f'{k} (n={len(v)})' for k, v in curves.items())}")


if __name__ == "__main__":
    main()
