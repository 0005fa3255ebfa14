"""Merge benchmark ``curve.json`` files, print tables and draw one learning-curve picture per tag.

    python benchmarks/report.py --merge runs/*/curve.json --out runs/curves.json --png-dir runs
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.simulate import summary_table


def labels_to_reach(runs: list[dict], model: str, strategy: str, error: float) -> int | None:
    """Fewest labels at which the seed-mean curve of model+strategy is at or below ``error``, read only where every
    seed has a point (as ``tables.labels_to_reach``: a mean of the seeds that got there would flatter it)."""
    rs = [r for r in runs if r["model"] == model and r["strategy"] == strategy]
    if not rs:
        return None
    by_n: dict[int, list[float]] = defaultdict(list)
    for r in rs:
        for p in r["curve"]:
            by_n[p["labeled"]].append(p["test_error"])
    for n in sorted(by_n):
        if len(by_n[n]) == len(rs) and np.mean(by_n[n]) <= error:
            return n
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--merge", nargs="+", required=True)
    p.add_argument("--out", default=None)
    p.add_argument("--png-dir", default=None)
    a = p.parse_args()
    runs, settings, wheres = [], {}, {}
    for f in a.merge:
        d = json.loads(Path(f).read_text())
        tag = d["settings"].get("tag", "")
        settings[tag] = d["settings"]
        wheres[tag] = d.get("where")
        for r in d["runs"]:
            r.setdefault("tag", tag)
            runs.append(r)
    by_tag: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_tag[r["tag"]].append(r)
    for tag, rs in sorted(by_tag.items()):
        seeds = sorted({r["seed"] for r in rs})
        print(f"\n## {tag} (seeds {seeds})")
        print(summary_table(rs))
        last = max(p["labeled"] for r in rs for p in r["curve"])
        ref = [p["test_error"] for r in rs if (r["model"], r["strategy"]) == ("classifier", "random")
               for p in r["curve"] if p["labeled"] == last]
        if ref:
            need = labels_to_reach(rs, "sae", "margin", float(np.mean(ref)))
            print(f"classifier+random at {last} labels: {100 * np.mean(ref):.1f} %; "
                  f"sae+margin reaches it with {need} labels")
        secs = [p["train_seconds"] for r in rs for p in r["curve"][1:] if r["model"] == "sae"]
        if secs:
            print(f"sae warm-start round: median {np.median(secs):.1f} s")
    if a.out:
        Path(a.out).write_text(json.dumps({"settings": settings, "where": wheres, "runs": runs}, indent=1))
    if a.png_dir:
        from service.plots import learning_curve_png

        for tag, rs in by_tag.items():
            Path(a.png_dir, f"curve-{tag or 'all'}.png").write_bytes(learning_curve_png(rs, title=tag))


if __name__ == "__main__":
    main()
