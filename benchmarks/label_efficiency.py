"""Label-efficiency benchmark: chosen model+strategy pairs, 100 -> 1,000 labels, several seeds.

Writes ``curve.json`` in the simulator's format, after every run, so a run cut short
still leaves its finished curves. Run one process per (data set, seed) to use a GPU's
spare capacity; ``report.py`` merges the files.

    python benchmarks/label_efficiency.py --dataset fashion-mnist --seeds 0 \
        --runs sae+margin,sae+random,classifier+margin,classifier+random,ae+margin --out runs/fm10-s0
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration_maps import CalibrationReadings
from latent_heads import probe_heads
from machine import where

from connectors.datasets import load_dataset
from service.simulate import SimulationError, add_flags, class_distances, from_flags, run_one


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-path", default=None)
    p.add_argument("--groups", default=None)
    p.add_argument("--runs", default="sae+margin,classifier+random,sae+random,classifier+margin,ae+margin")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--initial", type=int, default=100)
    p.add_argument("--per-round", type=int, default=100)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--warm-epochs", type=int, default=5)
    p.add_argument("--cold-start", action="store_true", help="train from scratch every round")
    add_flags(p)
    probes = p.add_mutually_exclusive_group()
    probes.add_argument("--probe-heads", action="store_true",
                        help="also read other classifiers on the latent codes every round (latent_heads.py)")
    probes.add_argument("--probe-calibration", action="store_true",
                        help="also keep every round's readings that maps from confidence to probability are fitted "
                             "on and read by (calibration_maps.py)")
    p.add_argument("--tag", default="")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    s = from_flags(a, dataset=a.dataset, data_path=a.data_path, groups=a.groups, initial=a.initial,
                   per_round=a.per_round, rounds=a.rounds, seeds=len(a.seeds.split(",")), epochs=a.epochs,
                   warm_epochs=a.warm_epochs, warm_start=not a.cold_start,
                   strategies=sorted({r.split("+")[1] for r in a.runs.split(",")}))
    s.validate()
    ds = load_dataset(a.dataset, a.data_path, a.groups)
    distances = class_distances(s, ds)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    result = {"settings": asdict(s) | {"class_names": ds.class_names, "tag": a.tag, "runs": a.runs},
              "where": where(), "runs": runs}
    if distances is not None:
        result["settings"]["class_distance_matrix"] = distances.tolist()
    for seed in (int(v) for v in a.seeds.split(",")):
        for pair in a.runs.split(","):
            model, strategy = pair.split("+")
            probe = None if model == "classifier" else probe_heads if a.probe_heads else (
                CalibrationReadings(out, seed) if a.probe_calibration else None)
            curve = run_one(ds, s, model, strategy, seed, log=lambda m: print(m, flush=True), probe=probe)
            runs.append({"model": model, "strategy": strategy, "seed": seed, "curve": curve, "tag": a.tag})
            (out / "curve.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    try:
        main()
    except SimulationError as e:  # a bad setting: one line, not a traceback
        sys.exit(f"label_efficiency.py: {e}")
