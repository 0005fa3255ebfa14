"""The README's (and deploy/README.md's) results, generated from the raw curves in benchmarks/results/.

Nothing in those sections is typed by hand: every cell is computed here from a raw file,
rows with fewer than three seeds are left out (and named), and the sd is the sample
standard deviation over seeds (ddof = 1).

    python benchmarks/tables.py            # print the sections
    python benchmarks/tables.py --write    # replace them in README.md
    python benchmarks/tables.py --check    # exit 1 when README.md differs (the tests run this)
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
MIN_SEEDS = 3
FM_BUDGETS = (100, 200, 300, 500, 700, 1000)
ROUNDS = tuple(range(100, 1001, 100))  # every round a curve records
LEAD_BUDGETS = ROUNDS[1:]  # a lead "at every budget from 200 to 1,000" is read at every round
SEASONS_LEAD_BUDGETS = ROUNDS
TARGET_ERROR, TARGET_LABELS, TARGET_LEAD = 0.13, 250, 2.0  # issue 10's Fashion-MNIST-10 targets


@dataclass(frozen=True)
class Row:
    """One table row: runs of one model+strategy (one run per seed) and where they came from."""

    label: str
    runs: tuple[dict, ...]
    files: tuple[str, ...]

    @property
    def seeds(self) -> list[int]:
        return sorted(r["seed"] for r in self.runs)

    def values(self, n: int, key: str = "test_error") -> dict[int, float]:
        """Seed -> value at ``n`` labels (seeds whose curve lacks that point are missing)."""
        return {r["seed"]: p[key] for r in self.runs for p in r["curve"] if p["labeled"] == n and key in p}


def row(label: str, files: Iterable[str], model: str, strategy: str, tag: str | None = None) -> Row:
    """The runs of ``model+strategy`` (and ``tag``) in the raw ``files`` (globs under results/)."""
    runs, used = [], []
    for pattern in files:
        for path in sorted(RESULTS.glob(pattern)):
            data = json.loads(path.read_text())
            for r in data["runs"]:
                if (r["model"], r["strategy"]) == (model, strategy) and (tag is None or r.get("tag", "") == tag):
                    runs.append(r)
                    used.append(str(path.relative_to(RESULTS)))
    seeds = [r["seed"] for r in runs]
    if len(seeds) != len(set(seeds)):
        raise ValueError(f"{label}: seed repeated in {sorted(set(used))}")
    return Row(label, tuple(runs), tuple(sorted(set(used))))


def _pct(values: Iterable[float], bold: bool = False, signed: bool = False, unit: str = " %") -> str:
    v = 100 * np.asarray(list(values), dtype=np.float64)
    if len(v) == 0:
        return ""
    text = f"{v.mean():+.1f} ± {v.std(ddof=1):.1f}" if signed else f"{v.mean():.1f} ± {v.std(ddof=1):.1f}{unit}"
    return f"**{text}**" if bold else text


def complete(rows: Iterable[Row], note: list[str]) -> list[Row]:
    """Rows with at least MIN_SEEDS seeds; the others are named in ``note``."""
    out = []
    for r in rows:
        if len(r.runs) >= MIN_SEEDS:
            out.append(r)
        elif r.runs:
            note.append(f"{r.label} ({len(r.runs)} seed{'s' if len(r.runs) > 1 else ''})")
    return out


def curve_table(title: str, rows: list[Row], budgets: Iterable[int], key: str = "test_error",
                unit: str = " %") -> str:
    """Mean ± sd over seeds per budget; the best mean per column in bold (values × 100, followed by ``unit``)."""
    budgets = list(budgets)
    note: list[str] = []
    rows = complete(rows, note)
    if not rows:
        return ""
    means = {(r.label, n): np.mean(list(r.values(n, key).values())) for r in rows for n in budgets
             if len(r.values(n, key)) >= MIN_SEEDS}
    best = {n: min((v for (_, m), v in means.items() if m == n), default=None) for n in budgets}
    lines = [f"| {title} | " + " | ".join(f"{n:,}" for n in budgets) + " labels |",
             "|---" * (len(budgets) + 1) + "|"]
    for r in rows:
        cells = []
        for n in budgets:
            v = r.values(n, key)
            cells.append(_pct(v.values(), bold=len(rows) > 1 and means.get((r.label, n)) == best[n], unit=unit)
                         if len(v) >= MIN_SEEDS else "")
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    files = sorted({f for r in rows for f in r.files})
    lines.append("")
    lines.append(f"Raw: {', '.join(f'`{f}`' for f in files)}.")
    if note:
        lines.append(f"Left out, fewer than {MIN_SEEDS} seeds: {'; '.join(note)}.")
    return "\n".join(lines)


def _paired_cells(a: Row, b: Row, key_a: str, key_b: str, budgets: Iterable[int]) -> list[str]:
    """Per budget, ``a[key_a] - b[key_b]`` per shared seed in points, mean ± sd (blank below 3 seeds)."""
    cells = []
    for n in budgets:
        va, vb = a.values(n, key_a), b.values(n, key_b)
        both = sorted(set(va) & set(vb))
        cells.append(_pct([va[s] - vb[s] for s in both], signed=True) if len(both) >= MIN_SEEDS else "")
    return cells


def paired_table(title: str, pairs: list[tuple[str, Row, Row]], budgets: Iterable[int]) -> str:
    """Per-seed difference A - B in points (negative: A has the lower error), mean ± sd over shared seeds."""
    budgets = list(budgets)
    lines = [f"| {title} | seeds | " + " | ".join(f"{n:,}" for n in budgets) + " labels |",
             "|---" * (len(budgets) + 2) + "|"]
    kept = 0
    for label, a, b in pairs:
        shared = sorted(set(a.seeds) & set(b.seeds))
        if len(shared) < MIN_SEEDS:
            continue
        cells = _paired_cells(a, b, "test_error", "test_error", budgets)
        lines.append(f"| {label} | {','.join(map(str, shared))} | " + " | ".join(cells) + " |")
        kept += 1
    return "\n".join(lines) if kept else ""


def labels_to_reach(r: Row, error: float, key: str = "test_error") -> int | None:
    """Fewest labels at which the seed-mean error is at or below ``error``."""
    budgets = sorted({p["labeled"] for run in r.runs for p in run["curve"]})
    for n in budgets:
        v = r.values(n, key)
        if len(v) == len(r.runs) and np.mean(list(v.values())) <= error:
            return n
    return None


def reach_table(title: str, rows: list[Row], reference: Row, at: int) -> tuple[str, float | None]:
    """Labels each row needs to reach the reference row's mean error at ``at`` labels, and further levels."""
    ref = reference.values(at)
    if len(ref) < MIN_SEEDS:
        return "", None
    target = float(np.mean(list(ref.values())))
    levels = [target, 0.20, 0.18, 0.16, 0.15, 0.14, 0.13]
    head = [f"{reference.label} at {at:,} ({100 * target:.1f} %)"] + [f"≤ {100 * v:.0f} %" for v in levels[1:]]
    lines = [f"| {title} | " + " | ".join(head) + " |", "|---" * (len(levels) + 1) + "|"]
    for r in complete(rows, []):
        cells = []
        for v in levels:
            n = labels_to_reach(r, v)
            cells.append(f"{n:,}" if n is not None else "not reached")
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines), target


def mean_at(r: Row, n: int, key: str = "test_error") -> float | None:
    v = r.values(n, key)
    return float(np.mean(list(v.values()))) if len(v) >= MIN_SEEDS else None


# ---- the sections ---------------------------------------------------------------------------------

FULL = "gpu-h200-*.json"


def section_full() -> str:
    fm = [row("sae+margin (H200)", [FULL], "sae", "margin", "fm10"),
          row("classifier+margin (CPU)", ["cpu-full-fm10-classifier-margin/curve.json"], "classifier", "margin"),
          row("classifier+random (H200)", [FULL], "classifier", "random", "fm10"),
          row("sae+random", [FULL], "sae", "random", "fm10")]
    seasons = [row("sae+margin (H200)", [FULL], "sae", "margin", "seasons"),
               row("classifier+margin (CPU)", ["cpu-full-seasons-classifier-margin-*/curve.json"],
                   "classifier", "margin"),
               row("classifier+random (seed 0 H200, seeds 1-2 CPU)",
                   [FULL, "cpu-full-seasons-classifier-random-*/curve.json"], "classifier", "random", "seasons")]
    parts = [curve_table("Fashion-MNIST-10, 60k pool", fm, FM_BUDGETS),
             curve_table("Seasons, 60k pool", seasons, FM_BUDGETS),
             paired_table("paired difference, points", [
                 ("sae+margin − classifier+margin", fm[0], fm[1]),
                 ("sae+margin − classifier+random", fm[0], fm[2])], FM_BUDGETS)]
    return "\n\n".join(p for p in parts if p)


def _subset(split: str) -> list[Row]:
    files = [f"cpu-{split}-10k-s*/curve.json"]
    return [row(f"{m}+{s}", files, m, s) for m, s in (("sae", "margin"), ("sae", "random"),
                                                       ("classifier", "margin"), ("classifier", "random"),
                                                       ("ae", "margin"))]


def section_subset() -> str:
    fm, seasons = _subset("fm10"), _subset("seasons")
    shift = [row("sae+margin, shifts ≤ 2 px", ["cpu-ablation-fm10-10k/shift2-s*/curve.json"], "sae", "margin"),
             row("classifier+random, shifts ≤ 2 px", ["cpu-ablation-fm10-10k/shift2-classifier-s*/curve.json"],
                 "classifier", "random"),
             row("classifier+margin, shifts ≤ 2 px", ["cpu-ablation-fm10-10k/shift2-classifier-s*/curve.json"],
                 "classifier", "margin")]
    for name in ("lam0.99", "latent5", "latent16", "cold", "shift2-e10"):
        shift.append(row(f"sae+margin, {name}", [f"cpu-ablation-fm10-10k/{name}-s*/curve.json"], "sae", "margin"))
    seasons_shift = [row(f"{m}+{s}, shifts ≤ 2 px", ["cpu-ablation-seasons-10k/shift2-*/curve.json"], m, s)
                     for m, s in (("sae", "margin"), ("classifier", "random"))]
    parts = [curve_table("Fashion-MNIST-10, 10k pool", fm, FM_BUDGETS),
             curve_table("Seasons, 10k pool", seasons, FM_BUDGETS),
             paired_table("Fashion-MNIST-10, 10k pool: paired difference, points", [
                 ("sae+margin − classifier+margin", fm[0], fm[2]),
                 ("sae+margin − classifier+random", fm[0], fm[3]),
                 ("sae+margin − ae+margin", fm[0], fm[4])], FM_BUDGETS),
             paired_table("Seasons, 10k pool: paired difference, points", [
                 ("sae+margin − classifier+margin", seasons[0], seasons[2]),
                 ("sae+margin − classifier+random", seasons[0], seasons[3])], FM_BUDGETS),
             curve_table("Fashion-MNIST-10, 10k pool, one setting changed", shift, FM_BUDGETS),
             curve_table("Seasons, 10k pool, one setting changed", seasons_shift, FM_BUDGETS)]
    return "\n\n".join(p for p in parts if p)


PROTOCOL = "protocol-fm10-10k"
_FLIP = "typicality start, conv 32/64/128, shifts and flips"  # the wide setting with flips, and the levers on it
_SEMI500 = _FLIP + " + self-training and consistency from 500 labels"
_LAM099 = _SEMI500 + ", λ 0.99"  # the levers named flip-semi500-lam099-* add to it
_WARM5 = _LAM099 + ", 5 epochs a round"  # the chosen setting; the levers named flip-semi500-lam099-warm5-* add to it
LEVERS = [  # name, row label, model, strategy: every lever is sae unless it says otherwise
    ("shift2", "sae+margin, shifts ≤ 2 px (reference)", "sae", "margin"),
    ("noshift", "sae+margin, no shifts", "sae", "margin"),
    ("cluster", "sae+cluster-margin", "sae", "cluster-margin"),
    ("selftrain", "sae+margin + self-training (weight 0.3, confidence ≥ 0.9)", "sae", "margin"),
    ("typical", "sae+margin, typicality start", "sae", "margin"),
    ("lam099", "sae+margin, λ 0.99", "sae", "margin"),
    ("epochs", "sae+margin, 10 / 5 epochs", "sae", "margin"),
    ("latent32", "sae+margin, latent size 32", "sae", "margin"),
    ("consistency", "sae+margin + shift consistency (weight 1)", "sae", "margin"),
    ("consistency03", "sae+margin + shift consistency (weight 0.3)", "sae", "margin"),
    ("combined", "sae+cluster-margin, typicality start (both levers that helped)", "sae", "cluster-margin"),
    ("typclust", "sae+typicality (covering the labeled) to 300 labels, then margin", "sae", "typicality-margin"),
    ("typclust200", "sae+typicality (covering the labeled) to 200 labels, then margin", "sae", "typicality-margin"),
    ("typclust500", "sae+typicality (covering the labeled) to 500 labels, then margin", "sae", "typicality-margin"),
    ("wide", "sae+margin, typicality start, conv 32/64/128", "sae", "margin"),
    ("typical-selftrain", "sae+margin, typicality start + self-training (0.3, ≥ 0.9)", "sae", "margin"),
    ("wide-bn", "sae+margin, typicality start, conv 32/64/128, batch-normalised encoder", "sae", "margin"),
    ("wide-flip", f"sae+margin, {_FLIP}", "sae", "margin"),
    ("flip-selftrain500", f"sae+margin, {_FLIP} + self-training (0.3, ≥ 0.9) from 500 labels", "sae", "margin"),
    ("flip-consistency500", f"sae+margin, {_FLIP} + consistency (weight 1) from 500 labels", "sae", "margin"),
    ("flip-semi500", f"sae+margin, {_SEMI500}", "sae", "margin"),
    ("flip-semi300", f"sae+margin, {_FLIP} + self-training and consistency from 300 labels", "sae", "margin"),
    ("flip-semi500-st1", f"sae+margin, {_FLIP} + self-training (weight 1) and consistency from 500 labels",
     "sae", "margin"),
    ("flip-semi500-again", f"sae+margin, {_SEMI500} (run again, on another machine)", "sae", "margin"),
    ("flip-semi500-tta", f"sae+margin, {_SEMI500}, test-time flips", "sae", "margin"),
    ("flip-semi500-latent16", f"sae+margin, {_SEMI500}, latent size 16", "sae", "margin"),
    ("flip-semi500-lam099", f"sae+margin, {_LAM099}", "sae", "margin"),
    ("flip-semi500-lam0999", f"sae+margin, {_SEMI500}, λ 0.999", "sae", "margin"),
    ("flip-semi500-lam099-latent16", f"sae+margin, {_LAM099}, latent size 16", "sae", "margin"),
    ("flip-semi500-lam099-mixup", f"sae+margin, {_LAM099}, mixup (weight 1)", "sae", "margin"),
    ("flip-semi500-lam099-warm5", f"sae+margin, {_WARM5}", "sae", "margin"),
    ("flip-semi500-lam099-warm10", f"sae+margin, {_LAM099}, 10 epochs a round", "sae", "margin"),
    ("flip-semi500-lam099-warm5-first10", f"sae+margin, {_WARM5}, 10 in the first training", "sae", "margin"),
    ("flip-semi500-lam099-warm5-cluster", f"sae+cluster-margin, {_WARM5}", "sae", "cluster-margin"),
    ("flip-semi500-lam099-warm5-lpb32", f"sae+margin, {_WARM5}, 32 labeled items a batch", "sae", "margin"),
    ("flip-semi500-lam099-warm5-st08", f"sae+margin, {_WARM5}, self-training from confidence 0.8", "sae", "margin"),
    ("flip-semi500-lam099-warm5-lpb128", f"sae+margin, {_WARM5}, 128 labeled items a batch", "sae", "margin"),
    ("flip-semi500-lam099-warm5-lr2e3", f"sae+margin, {_WARM5}, Adam step 2e-3", "sae", "margin"),
    ("flip-semi500-lam099-warm5-lr5e4", f"sae+margin, {_WARM5}, Adam step 5e-4", "sae", "margin"),
    ("flip-semi500-lam099-warm5-shift3", f"sae+margin, {_WARM5}, shifts of up to 3 pixels", "sae", "margin"),
    ("flip-semi500-lam099-warm5-cutout8", f"sae+margin, {_WARM5}, 8x8 cutout", "sae", "margin"),
    ("flip-semi500-lam099-warm5-cons3", f"sae+margin, {_WARM5}, consistency weight 3", "sae", "margin"),
    ("flip-semi500-lam099-warm5-cosine", f"sae+margin, {_WARM5}, Adam step annealed over each round (cosine)",
     "sae", "margin"),
    ("flip-semi500-lam099-warm5-wd01", f"sae+margin, {_WARM5}, weight decay 0.1 (AdamW)", "sae", "margin"),
    ("flip-semi500-lam099-warm5-wd05", f"sae+margin, {_WARM5}, weight decay 0.5 (AdamW)", "sae", "margin"),
    ("flip-semi500-lam099-warm10-wd01", f"sae+margin, {_LAM099}, 10 epochs a round, weight decay 0.1 (AdamW)",
     "sae", "margin"),
    ("flip-semi500-lam099-warm5-gn", f"sae+margin, {_WARM5}, group-normalised encoder", "sae", "margin"),
    ("flip-semi500-lam099-warm5-ema99", f"sae+margin, {_WARM5}, moving average of the weights (decay 0.99)",
     "sae", "margin"),
    ("flip-semi500-lam099-warm5-ema99-mt", f"sae+margin, {_WARM5}, moving average of the weights (decay 0.99) as"
     " the consistency term's mean teacher", "sae", "margin"),
    ("flip-semi500-lam099-warm5-ema98", f"sae+margin, {_WARM5}, moving average of the weights (decay 0.98)",
     "sae", "margin"),
    ("flip-semi500-lam099-warm5-ema95", f"sae+margin, {_WARM5}, moving average of the weights (decay 0.95)",
     "sae", "margin"),
    ("flip-semi500-lam099-warm10-ema98", f"sae+margin, {_LAM099}, 10 epochs a round, moving average of the"
     " weights (decay 0.98)", "sae", "margin"),
    ("flip-semi500-lam099-warm5-ema98-wd01", f"sae+margin, {_WARM5}, moving average of the weights (decay 0.98),"
     " weight decay 0.1 (AdamW)", "sae", "margin"),
    ("flip-semi500-lam099-warm5-res", f"sae+margin, {_WARM5}, residual encoder", "sae", "margin"),
    ("flip-semi500-lam099-warm5-semi200", f"sae+margin, {_FLIP} + self-training and consistency from 200 labels,"
     " λ 0.99, 5 epochs a round", "sae", "margin"),
    ("flip-semi500-lam099-warm5-semi300", f"sae+margin, {_FLIP} + self-training and consistency from 300 labels,"
     " λ 0.99, 5 epochs a round", "sae", "margin"),
    ("flip-semi500-lam099-warm5-ema95-simclr001", f"sae+margin, {_WARM5}, moving average of the weights (decay 0.95),"
     " contrastive codes (SimCLR, weight 0.01)", "sae", "margin"),
]
BASELINES = [("baselines-shift2", "classifier+margin, shifts ≤ 2 px", "classifier", "margin"),
             ("baselines-shift2", "classifier+random, shifts ≤ 2 px", "classifier", "random"),
             ("classifier-cluster", "classifier+cluster-margin, shifts ≤ 2 px", "classifier", "cluster-margin"),
             ("baselines-noshift", "classifier+margin, no shifts", "classifier", "margin"),
             ("baselines-noshift", "classifier+random, no shifts", "classifier", "random"),
             ("baselines-epochs", "classifier+margin, 10 / 5 epochs", "classifier", "margin"),
             ("baselines-epochs", "classifier+random, 10 / 5 epochs", "classifier", "random"),
             ("baselines-wide", "classifier+margin, conv 32/64/128", "classifier", "margin"),
             ("baselines-wide", "classifier+random, conv 32/64/128", "classifier", "random"),
             ("baselines-wide-bn", "classifier+margin, conv 32/64/128, batch-normalised", "classifier", "margin"),
             ("baselines-wide-bn", "classifier+random, conv 32/64/128, batch-normalised", "classifier", "random"),
             ("baselines-wide-flip", "classifier+margin, conv 32/64/128, shifts and flips", "classifier", "margin"),
             ("baselines-wide-flip", "classifier+random, conv 32/64/128, shifts and flips", "classifier", "random"),
             ("baselines-wide-flip-again", "classifier+margin, conv 32/64/128, shifts and flips (run again, on another"
              " machine)", "classifier", "margin"),
             ("baselines-wide-flip-again", "classifier+random, conv 32/64/128, shifts and flips (run again, on another"
              " machine)", "classifier", "random"),
             ("baselines-wide-flip-tta", "classifier+margin, conv 32/64/128, shifts and flips, test-time flips",
              "classifier", "margin"),
             ("baselines-wide-flip-tta", "classifier+random, conv 32/64/128, shifts and flips, test-time flips",
              "classifier", "random"),
             ("baselines-wide-flip-mixup", "classifier+margin, conv 32/64/128, shifts and flips, mixup (weight 1)",
              "classifier", "margin"),
             ("baselines-wide-flip-mixup", "classifier+random, conv 32/64/128, shifts and flips, mixup (weight 1)",
              "classifier", "random"),
             ("baselines-wide-flip-first10", "classifier+margin, conv 32/64/128, shifts and flips, 10 / 5 epochs",
              "classifier", "margin"),
             ("baselines-wide-flip-first10", "classifier+random, conv 32/64/128, shifts and flips, 10 / 5 epochs",
              "classifier", "random"),
             ("baselines-wide-flip-again-typical", "classifier+margin, conv 32/64/128, shifts and flips, typicality "
              "start", "classifier", "margin"),
             ("baselines-wide-flip-again-typical", "classifier+random, conv 32/64/128, shifts and flips, typicality "
              "start", "classifier", "random")]
SAME_START = {"baselines-wide-flip-again": "baselines-wide-flip-again-typical"}  # baselines -> the same from typicality
LEVER_NAME = {label: name for name, label, _, _ in LEVERS}  # row label -> variant name
BUILDS_ON = {"combined": "cluster", "typclust": "typical", "typclust200": "typical", "typclust500": "typical",
             "wide": "typical", "typical-selftrain": "typical", "wide-bn": "wide",
             "wide-flip": "wide", "flip-selftrain500": "wide-flip",
             "flip-consistency500": "wide-flip", "flip-semi500": "wide-flip",
             "flip-semi300": "flip-semi500-again", "flip-semi500-st1": "flip-semi500-again",
             "flip-semi500-again": "flip-semi500",
             "flip-semi500-tta": "flip-semi500-again", "flip-semi500-latent16": "flip-semi500-again",
             "flip-semi500-lam099": "flip-semi500-again", "flip-semi500-lam0999": "flip-semi500-lam099",
             "flip-semi500-lam099-latent16": "flip-semi500-lam099",
             "flip-semi500-lam099-mixup": "flip-semi500-lam099",
             "flip-semi500-lam099-warm5": "flip-semi500-lam099",
             "flip-semi500-lam099-warm10": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-first10": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-cluster": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-lpb32": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-st08": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-lpb128": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-lr2e3": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-lr5e4": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-shift3": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-cutout8": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-cons3": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-cosine": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-wd01": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-wd05": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm10-wd01": "flip-semi500-lam099-warm10",
             "flip-semi500-lam099-warm5-gn": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-ema99": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-ema99-mt": "flip-semi500-lam099-warm5-ema99",
             "flip-semi500-lam099-warm5-ema98": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm10-ema98": "flip-semi500-lam099-warm10",
             "flip-semi500-lam099-warm5-ema95": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-ema98-wd01": "flip-semi500-lam099-warm5-ema98",
             "flip-semi500-lam099-warm5-res": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-semi200": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-semi300": "flip-semi500-lam099-warm5",
             "flip-semi500-lam099-warm5-ema95-simclr001": "flip-semi500-lam099-warm5-ema95"}  # lever -> its base
MATCHED_BASELINES = {"noshift": "baselines-noshift", "epochs": "baselines-epochs",  # trained alike; else shift2
                     "wide": "baselines-wide", "wide-bn": "baselines-wide-bn",
                     "wide-flip": "baselines-wide-flip", "flip-selftrain500": "baselines-wide-flip",
                     "flip-consistency500": "baselines-wide-flip", "flip-semi500": "baselines-wide-flip",
                     "flip-semi300": "baselines-wide-flip-again",
                     "flip-semi500-st1": "baselines-wide-flip-again", "flip-semi500-again": "baselines-wide-flip-again",
                     "flip-semi500-tta": "baselines-wide-flip-tta",
                     "flip-semi500-latent16": "baselines-wide-flip-again",
                     "flip-semi500-lam099": "baselines-wide-flip-again",
                     "flip-semi500-lam0999": "baselines-wide-flip-again",
                     "flip-semi500-lam099-latent16": "baselines-wide-flip-again",
                     "flip-semi500-lam099-mixup": "baselines-wide-flip-mixup",
                     # 5 or 10 epochs a round change nothing for the classifier: its 300-step minimum rules at 10k
                     "flip-semi500-lam099-warm5": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm10": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-first10": "baselines-wide-flip-first10",
                     "flip-semi500-lam099-warm5-cluster": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-semi200": "baselines-wide-flip-again",  # like flip-semi300
                     "flip-semi500-lam099-warm5-semi300": "baselines-wide-flip-again",
                     # the labeled items a batch and the self-training threshold are the SAE's alone
                     "flip-semi500-lam099-warm5-lpb32": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-st08": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-lpb128": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-lr2e3": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-lr5e4": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-cons3": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-cosine": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-wd01": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-wd05": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm10-wd01": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-ema99": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-ema99-mt": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-ema98": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm10-ema98": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-ema95": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-ema95-simclr001": "baselines-wide-flip-again",  # the SAE's alone
                     "flip-semi500-lam099-warm5-ema98-wd01": "baselines-wide-flip-again",
                     # the classifier has not trained with these augmentations: if one is ever kept, run
                     # its baselines with the same flag and name them here
                     "flip-semi500-lam099-warm5-shift3": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-cutout8": "baselines-wide-flip-again",
                     # nor with the group-normalised or the residual encoder
                     "flip-semi500-lam099-warm5-gn": "baselines-wide-flip-again",
                     "flip-semi500-lam099-warm5-res": "baselines-wide-flip-again"}


REPLICATES = {"flip-semi500": "flip-semi500-again"}  # lever -> its rerun on another machine
MORE_SEEDS = "protocol-fm10-10k-seeds3-4"  # seeds 3-4 of a chosen setting and its matched baselines


def _baseline_pair(variant: str, base: list[Row]) -> tuple[Row, Row] | None:
    """classifier+margin and classifier+random of one baseline variant, or None when ``base`` lacks them."""
    by_label = {r.label: r for r in base}
    rows = [by_label.get(label) for v, label, _, _ in BASELINES if v == variant]
    return (rows[0], rows[1]) if len(rows) == 2 and None not in rows else None


def replicate(best: Row | None, levers: list[Row], base: list[Row]) -> tuple[Row, Row, Row] | None:
    """The chosen lever run again on another machine, with classifier baselines run on that machine.

    Training reproduces on one machine but not across machines, so a rerun of the chosen
    setting is set against baselines from its own machine (its ``MATCHED_BASELINES``); both
    readings of the targets are reported, neither replaces the other. None when the chosen
    lever has no complete rerun.
    """
    name = REPLICATES.get(LEVER_NAME.get(best.label, "") if best is not None else "")
    rerun = next((r for r in levers if LEVER_NAME.get(r.label) == name), None) if name else None
    pair = _baseline_pair(MATCHED_BASELINES.get(name, ""), base) if rerun is not None else None
    return (rerun, *pair) if pair is not None and len(complete([rerun, *pair], [])) == 3 else None


def more_seeds(best: Row | None, cm: Row, cr: Row, more: str | None = MORE_SEEDS) -> tuple[Row, Row, Row] | None:
    """A setting and its matched baselines with the runs of seeds 3-4 under ``more`` added.

    Seeds are only ever added to a setting that was chosen and to its baselines together, for
    the test reading; the choice stays with the three validation seeds every setting has. None
    until both sides have the extra seeds.
    """
    name = LEVER_NAME.get(best.label, "") if best is not None else ""
    base_name = next((v for v, label, _, _ in BASELINES if label == cm.label), "")
    there = in_folder(more or "")
    if not (more and name and base_name) or not all((RESULTS / there(n)).exists() for n in (name, base_name)):
        return None
    return _with_seeds(best, there(name)), _with_seeds(cm, there(base_name)), _with_seeds(cr, there(base_name))


def _with_seeds(r: Row, path: str) -> Row:
    """``r`` with the runs of its model+strategy in ``path`` (another folder's seeds) added."""
    return row(r.label, [*r.files, path], r.runs[0]["model"], r.runs[0]["strategy"])


def matched_baselines(best: Row | None, base: list[Row]) -> tuple[Row, Row]:
    """classifier+margin and classifier+random trained like the chosen lever (shifts, epochs).

    Like is compared with like: a lever that trains longer or without shifts is set against
    baselines that do the same. Falls back to the first two rows of ``base``.
    """
    want = MATCHED_BASELINES.get(LEVER_NAME.get(best.label, "") if best is not None else "", "baselines-shift2")
    return _baseline_pair(want, base) or (base[0], base[1])


def in_folder(root: str) -> Callable[[str], str]:
    """Where a protocol folder keeps a variant's curve.json, the layout `cpu_protocol.sh` writes."""
    return lambda name: f"{root}/{name}/curve.json"


def _protocol_rows(spec: list[tuple[str, str, str, str]], where: Callable[[str], str] | None = None) -> list[Row]:
    where = where or in_folder(PROTOCOL)
    return [row(label, [where(name)], m, s) for name, label, m, s in spec]


def chosen_lever(levers: list[Row], excluded: list[str] | None = None) -> Row | None:
    """The SAE setting with the lowest mean validation error over the budgets 200-1,000.

    Settings without 3 seeds at every one of those budgets cannot be chosen; they are named in ``excluded``.
    """
    scored = []
    for r in levers:
        vals = [mean_at(r, n, "val_error") for n in FM_BUDGETS[1:]]
        if len(r.runs) >= MIN_SEEDS and all(v is not None for v in vals):
            scored.append((float(np.mean(vals)), r.label, r))
        elif r.runs and excluded is not None:
            excluded.append(r.label)
    return min(scored)[2] if scored else None


def section_gpu_protocol() -> str:
    """The same protocol on the full training split (benchmarks/gpu_protocol.sh), once a GPU session ran it."""
    def where(name: str) -> str:
        return f"gpu-protocol-fm10/{'baselines' if name == 'baselines-shift2' else name}-s*/curve.json"

    levers = [x for x in LEVERS if x[0] in ("shift2", "wide-flip", "flip-semi500", "flip-semi500-lam099",
                                            "flip-semi500-lam099-warm5-ema95")]
    base = [x for x in BASELINES if x[0] in ("baselines-shift2", "baselines-wide-flip")]
    return section_protocol(_protocol_rows(levers, where), _protocol_rows(base, where),
                            "_Not run yet: `benchmarks/gpu_protocol.sh` needs a GPU session._", diagram=None)


VAL20K = "protocol-fm10-10k-val20k"  # the same training as PROTOCOL's, read on 20k validation items, not 2k
VAL20K_ROOTS = (VAL20K, VAL20K + "-again")  # the second: another machine, with its own rerun of the 2k choice
MORE_SEEDS_20K = {root: root + "-seeds3-4" for root in VAL20K_ROOTS}  # seeds 3-4 of a machine's readings
CHOSEN_2K = "flip-semi500-lam099-warm5"  # the 2k choice when the 20k machines ran: their control, its levers re-read


def reproduced(rerun: Row, first: Row, key: str = "test_error") -> tuple[int, int]:
    """(readings of ``rerun`` equal to ``first``'s at the same seed and labels, readings of ``rerun``).

    A rerun that only reads a larger validation set must train exactly as the first run did;
    equal test readings at every round are what shows it.
    """
    before = {(r["seed"], p["labeled"]): p[key] for r in first.runs for p in r["curve"]}
    after = [((r["seed"], p["labeled"]), p[key]) for r in rerun.runs for p in r["curve"]]
    return sum(before.get(k) == v for k, v in after), len(after)


def _adds_to_chosen(name: str) -> bool:
    """Whether a lever is the 2k choice or adds to it, directly or through another lever."""
    while name != CHOSEN_2K and name in BUILDS_ON:
        name = BUILDS_ON[name]
    return name == CHOSEN_2K


# Levers read on the 2k protocol only: they ran after AMD's 20k set had every lever, and a 20k machine reruns
# one (about an hour each) only once it leads the 2k choice, so they do not reopen a machine's choice
TWO_K_ONLY = {"flip-semi500-lam099-warm5-res", "flip-semi500-lam099-warm5-semi200",
              "flip-semi500-lam099-warm5-semi300", "flip-semi500-lam099-warm5-ema95-simclr001"}


def _on_chosen() -> list[tuple[str, str, str, str]]:
    """The levers a 20k machine reruns: the 2k choice (its control) and every lever that adds to it."""
    return [x for x in LEVERS if _adds_to_chosen(x[0]) and x[0] not in TWO_K_ONLY]


@dataclass(frozen=True)
class Machine:
    """One 20k machine's runs, read against its own control and baselines because training reproduces per processor."""

    root: str
    rows: list[Row]  # its complete levers, the control (the 2k choice rerun) first
    best: Row  # the lowest on 20k validation so far
    planned: int  # how many levers there are to rerun, the control among them
    base: list[Row]  # classifier baselines trained on this machine

    @property
    def control(self) -> Row:
        return self.rows[0]

    @property
    def done(self) -> bool:
        """Every lever on the 2k choice has run here, so ``best`` is the machine's 20k choice."""
        return len(self.rows) == self.planned

    def standing(self) -> list[Row]:
        """The settings read on test: the control, and the 20k choice once every lever ran and it differs."""
        return [self.control] + ([self.best] if self.done and self.best is not self.control else [])

    def baselines(self, r: Row) -> tuple[Row, Row] | None:
        """classifier+margin and classifier+random trained on this machine like ``r``, or None."""
        return _baseline_pair(MATCHED_BASELINES.get(LEVER_NAME[r.label], ""), self.base)

    def with_more_seeds(self, r: Row) -> tuple[Row, Row, Row] | None:
        """``r`` and its local baselines with this machine's seeds 3-4 added to both, or None until they ran."""
        local = self.baselines(r)
        return more_seeds(r, *local, MORE_SEEDS_20K.get(self.root)) if local is not None else None


def machine(results: str) -> Machine | None:
    """The runs under ``results``, or None until the 2k choice (the control) has run there with every seed."""
    here = in_folder(results)
    spec = _on_chosen()
    rows = complete(_protocol_rows(spec, here), [])
    if not rows or LEVER_NAME[rows[0].label] != CHOSEN_2K:
        return None
    return Machine(results, rows, chosen_lever(rows), len(spec), complete(_protocol_rows(BASELINES, here), []))


def _against_parents(rows: list[Row], control: Row, per_seed: bool = False) -> list[str]:
    """Each lever read against the setting it adds to, paired on 20k validation, where that is not the control."""
    by_name = {LEVER_NAME[r.label]: r for r in rows}
    out = []
    for r in rows:
        added = _against_parent(r, by_name)
        if added is not None and added[0] is not control:
            parent, d = added
            seeds = f", seeds {_seed_list(r)}" if per_seed else ""
            each = f" ({', '.join(f'{x:+.1f}' for x in d)})" if per_seed else ""
            out.append(f"{r.label}, against the setting it adds to ({parent.label}), paired on 20k validation{seeds}: "
                       f"{d.mean():+.1f} ± {d.std(ddof=1):.1f} points{each}.")
    return out


def _val20k_block(results: str, first: str) -> str:
    """One machine's reruns: each lever is read against the 2k choice rerun on the same machine.

    Classifier baselines trained in the same folder give that machine's reading of the targets for
    the standing choice, and for the 20k set's own choice once every lever is in and it differs,
    beside (never instead of) the reading on the runs that chose it.
    """
    m = machine(results)
    if m is None:
        return ""
    rows, control = m.rows, m.control
    firsts = {r.label: r for r in _protocol_rows(_on_chosen(), in_folder(first))}
    last = FM_BUDGETS[-1]
    lines = ["| setting | test readings equal to the 2k run's | vs the 2k choice on 2k validation, points (paired)"
             f" | the same on 20k validation, this machine | test error at {last:,} labels, this machine"
             " (report only) |",
             "|---|---|---|---|---|"]
    for r in rows:
        same, total = reproduced(r, firsts[r.label])
        equal = f"{same} of {total}" if firsts[r.label].runs else "not run on the 2k set"
        cells = []
        for a, b in ((firsts[r.label], firsts[control.label]), (r, control)):
            d = _paired_val(a, b) if r is not control else None
            cells.append(f"{d.mean():+.1f} ± {d.std(ddof=1):.1f}" if d is not None else "")
        lines.append(f"| {r.label} | {equal} | {cells[0]} | {cells[1]} | "
                     f"{_pct(r.values(last, 'test_error').values())} |")
    lines += ["\n" + x for x in _against_parents(rows, control)]
    who = "Chosen on the 20k set" if m.done else f"Lowest on the 20k set so far ({len(rows)} of {m.planned} rerun)"
    parts = [f"`{results}` (processor: {_processor(control.files[0])}):",
             curve_table("validation error, 20k items", rows, FM_BUDGETS, key="val_error"), "\n".join(lines),
             f"{who} (lowest mean validation error over 200-1,000 labels): **{m.best.label}**."]
    for standing in m.standing():
        local = m.baselines(standing)
        if local is None:
            if standing is not control:
                parts += _test_report(standing, *matched_baselines(standing, _protocol_rows(BASELINES)), _targets)
            continue
        if standing is control:
            variant = MATCHED_BASELINES.get(LEVER_NAME[standing.label], "")
            intro = ("The standing (2k) setting against classifier baselines trained on this machine (report only: "
                     "the targets stay read on the runs that chose the setting)."
                     + _same_baselines(variant, local, first) + ":")
        else:
            intro = "The 20k set's chosen setting against classifier baselines trained on this machine (report only):"
        parts += [intro, *_test_report(standing, *local, _targets, ", this machine")]
    if m.done:
        parts += _more_seeds_20k(m)
    return "\n\n".join(parts)


def _more_seeds_20k(m: Machine) -> list[str]:
    """A machine's control and the levers that led on its 20k set, with seeds 3-4 added after the choice.

    They show whether a lead found on three seeds holds on five: each lever is read paired
    against the control, and the control and the 20k choice on test against baselines with the
    same seeds. The choice itself stays on seeds 0-2, which every setting has. Empty until the
    control has the seeds.
    """
    more = MORE_SEEDS_20K.get(m.root)
    there = in_folder(more or "")
    control = m.control
    if not more or not (RESULTS / there(CHOSEN_2K)).exists():
        return []
    five = {r.label: _with_seeds(r, there(LEVER_NAME[r.label]))
            for r in m.rows if (RESULTS / there(LEVER_NAME[r.label])).exists()}
    parts = [f"Seeds 3 and 4 added on this machine (`{more}`), after the choice, to the control and to levers "
             "that led on the 20k set (the choice above stays on seeds 0-2):",
             curve_table("validation error, 20k items, seeds 0-4", list(five.values()), FM_BUDGETS, key="val_error")]
    lines = []
    for label, r in five.items():
        d = _paired_val(r, five[control.label]) if label != control.label else None
        if d is not None:
            lines.append(f"| {label} | {d.mean():+.1f} ± {d.std(ddof=1):.1f} | {', '.join(f'{x:+.1f}' for x in d)} "
                         f"| {int((d < 0).sum())} of {len(d)} |")
    if lines:
        head = f"| against the control, paired on 20k validation (seeds {_seed_list(five[control.label])})"
        parts.append("\n".join([head + " | points | per seed | lower on |", "|---|---|---|---|", *lines]))
    parts += _against_parents(list(five.values()), five[control.label], per_seed=True)
    for r in m.standing():
        extra = m.with_more_seeds(r)
        if extra is not None:
            seeds = f", seeds {_seed_list(extra[0])}, this machine"
            parts += [f"{r.label} against this machine's classifier baselines, seeds 3 and 4 added to both "
                      "(report only):", *_test_report(*extra, _targets, seeds)]
    return parts


SAME_BASELINES = {"baselines-wide-flip-again": ("baselines-wide-flip", "baselines-wide-flip-again")}  # same settings


def _processor(path: str, key: str = "processor") -> str:
    """The processor a curve.json recorded, or another entry of its ``where`` (older runs recorded none)."""
    return (json.loads((RESULTS / path).read_text()).get("where") or {}).get(key, "not recorded")


def _same_baselines(variant: str, pair: tuple[Row, Row], first: str) -> str:
    """How many of a machine's baseline test readings equal each earlier run of the same baselines, and where those ran.

    Equal readings at every round say two runs trained on the same kind of processor, which is
    how a run that recorded no processor can be placed.
    """
    names = SAME_BASELINES.get(variant, ())
    there = in_folder(first)
    base = _protocol_rows([x for x in BASELINES if x[0] in names], there)
    out = []
    for name in names:
        earlier = _baseline_pair(name, base)
        if earlier is None or not earlier[0].runs:
            continue
        counts = [reproduced(a, b) for a, b in zip(pair, earlier, strict=True)]
        out.append(f"`{first}/{name}` {sum(c[0] for c in counts)} of {sum(c[1] for c in counts)} "
                   f"(processor: {_processor(there(name))})")
    return f" Their test readings equal to earlier runs of the same baselines: {'; '.join(out)}" if out else ""


def section_protocol_val20k(roots: Iterable[str] = VAL20K_ROOTS, first: str = PROTOCOL) -> str:
    """The chosen setting and the levers on it, their training rerun and read on a 20k validation set.

    A 2k set carries a binomial sd of about 0.75 points a seed at 13 % error, more than the
    differences between these levers; 20k items bring it to about 0.24. The rule is unchanged.
    Training reproduces on one machine only, so each root holds one machine's runs, the 2k
    choice among them, and levers are read against that control.
    """
    blocks = [b for b in (_val20k_block(r, first) for r in roots) if b]
    return "\n\n".join(blocks) or (
        f"_Not run yet: `VAL_SIZE=20000 ROOT=benchmarks/results/{VAL20K} bash benchmarks/cpu_protocol.sh "
        f"{CHOSEN_2K}`._")


PILOT = "protocol-fm10-10k-pilot"  # screens to 200 labels, before a lever's full protocol run
PILOT_SEEDS = (5, 6, 7)  # outside every protocol seed, so no screen reuses a seed that a choice is read on
PILOT_BUDGETS = (100, 200)
PILOTS = [  # (folders, what it adds to the 2k choice); the first is that choice itself, the control
    (("ema95", "ema95-s67"), "nothing (the 2k choice, the control)"),
    (("ema95-simclr1",), "contrastive codes (SimCLR), weight 1"),
    (("ema95-simclr01",), "contrastive codes (SimCLR), weight 0.1"),
    (("ema95-simclr001",), "contrastive codes (SimCLR), weight 0.01"),
    (("ema95-typical20", "ema95-typical20-s67"), "20 epochs (not 5) for the typicality start's autoencoder"),
    (("ema95-start-simclr1",), "the typicality start's autoencoder with contrastive codes, weight 1"),
    (("ema95-start-latent32",), "the typicality start's autoencoder with 32 latent dimensions (not 10)"),
    (("ema95-start-simclr1-e20",), "the typicality start's autoencoder with contrastive codes, weight 1, "
                                   "and 20 epochs"),
    (("ema95-start-random",), "a random start (the first 100 labels drawn at random, not by typicality)"),
    (("ema95-start-init",), "the SAE's first training starts from the typicality start's autoencoder "
                            "(not from scratch)"),
    (("ema95-start-init-features",), "the same, but the linear maps to and from the code start fresh "
                                     "(the start's conv features only)"),
    (("ema95-lam1",), "λ 1, no reconstruction term (a probe of what the autoencoder adds early, not a lever)"),
    (("ema95-members2",), "two autoencoders from different seeds, the SVM on both codes (an ensemble; twice the "
                          "training)"),
    (("ema95-cd-garment-types",), "class distances by garment type: tops 0.5 apart, footwear 0.5 apart, 1 "
                                  "elsewhere (`fashion-garment-types.json`)"),
    (("ema95-cd-hard-apart",), "class distances that push the four confusable tops (T-shirt, pullover, coat, "
                               "shirt) 1.5 apart, 1 elsewhere (`fashion-hard-apart.json`)"),
]


def _screen_cell(values: list[float], signed: bool = False) -> str:
    """Mean ± sd (n-1) in points; one seed's value alone, as no spread can be read from it."""
    v = 100 * np.asarray(values, dtype=np.float64)
    mean = round(float(v.mean()), 1) + 0.0  # a tie reads +0.0, not -0.0
    text = f"{mean:+.1f}" if signed else f"{mean:.1f}"
    return text if len(v) == 1 else f"{text} ± {v.std(ddof=1):.1f}"


def section_pilots() -> str:
    """Screens of new levers on seeds outside the protocol, to 200 labels: validation only, paired by seed.

    A screen decides whether a lever is worth a full run (about 40 minutes) and, for a new weight,
    which one; it never chooses a setting, which stays the full protocol's rule. The first
    screens ran on one seed; later ones on three, as one seed's start moved 200 labels by points.
    """
    rows = [(label, row(label, [f"{PILOT}/{f}/curve.json" for f in folders], "sae", "margin"))
            for folders, label in PILOTS]
    rows = [(label, r) for label, r in rows if r.runs]
    if not rows:
        return "_No screens yet._"
    for label, r in rows:
        if set(r.seeds) - set(PILOT_SEEDS):
            raise ValueError(f"screen {label!r} ran on seeds {r.seeds}; screens use only {PILOT_SEEDS}")
    control = rows[0][1]
    head = " | ".join(f"{n:,} labels" for n in PILOT_BUDGETS)
    lines = [f"| added to the 2k choice | seeds | validation error (%) at {head} "
             f"| against the control (points, paired by seed) at {head} |",
             "|---|---|" + "---|" * (2 * len(PILOT_BUDGETS))]
    for label, r in rows:
        cells = [_screen_cell(list(r.values(n, "val_error").values())) for n in PILOT_BUDGETS]
        against = []
        for n in PILOT_BUDGETS:
            mine, base = r.values(n, "val_error"), control.values(n, "val_error")
            shared = sorted(set(mine) & set(base))
            against.append("" if r is control or not shared else
                           _screen_cell([mine[k] - base[k] for k in shared], signed=True))
        seeds = ", ".join(str(k) for k in r.seeds)
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells + against) + " |")
    files = ", ".join(f"`{f}`" for _, r in rows for f in r.files)
    return "\n".join(lines) + f"\n\nRaw: {files}."


ROUNDS_50 = "flip-semi500-lam099-warm5-r50"  # the 2k choice in rounds of 50 labels, to 500
ROUNDS_50_BASELINES = "baselines-wide-flip-again-r50"  # its classifier baselines in the same rounds
ROUNDS_50_BUDGETS = tuple(range(100, 501, 50))


def section_rounds50(roots: Iterable[str] = VAL20K_ROOTS) -> str:
    """The 2k choice in rounds of 50 labels, where a machine has run it, against its rounds of 100.

    A 100-label grid reads the 250-label target only as 200 or 300; rounds of 50 read 250 itself.
    Each machine is read against its own control and baselines (training reproduces per processor),
    and the bar stays classifier+random's 1,000-label error from that machine's rounds of 100.
    """
    blocks = [b for b in (_rounds50_block(r) for r in roots) if b]
    if readings := rounds50_2k():
        blocks.insert(0, "\n\n".join([f"`{PROTOCOL}`, the runs the targets are read on (processor: "
                                       f"{_processor(readings[0].sae.files[0])}):",
                                       *(part for x in readings for part in _rounds50_reading(x, "2k"))]))
    return "\n\n".join(blocks) or (
        f"_Not run yet: `VAL_SIZE=20000 ROOT=benchmarks/results/{VAL20K}-again bash benchmarks/cpu_protocol.sh "
        f"{ROUNDS_50} {ROUNDS_50_BASELINES}`._")


@dataclass(frozen=True)
class Rounds50:
    """One reading of the rounds of 50: the SAE and its baselines in those rounds, the control, and the bar's row."""

    sae: Row
    margin: Row  # classifier+margin in rounds of 50
    random: Row  # classifier+random in rounds of 50
    control: Row  # the same setting in rounds of 100, same machine and seeds (its own label)
    bar_row: Row  # classifier+random in rounds of 100, whose 1,000-label error is the bar

    @property
    def bar(self) -> float | None:
        return mean_at(self.bar_row, 1000) if set(self.bar_row.seeds) >= set(self.sae.seeds) else None

    def reach(self, r: Row) -> int | None:
        """Labels ``r`` needs to reach the bar (None when it does not, or there is no bar)."""
        return labels_to_reach(r, self.bar) if self.bar is not None else None

    def gaps(self) -> list[tuple[int, float]]:
        return _gaps(self.sae, self.margin, ROUNDS_50_BUDGETS[2:])

    def smallest_lead(self) -> tuple[int, float] | None:
        """(budget, lead) where the SAE is least ahead of classifier+margin in the same rounds, 200-500 labels."""
        return _smallest(self.gaps())


ROUNDS_50_2K = "flip-semi500-lam099-warm5-ema95-r50"  # the 2k choice in rounds of 50, on the 2k protocol's runs


def rounds50_2k(root: str = PROTOCOL, more: str = MORE_SEEDS) -> list[Rounds50]:
    """The 2k choice in rounds of 50 beside the runs the targets are read on: same machine, seeds and validation set.

    Its control is that choice in rounds of 100 and its bar that protocol's own classifier+random,
    so the 250-label target is read at 250 labels rather than at 200 or 300. Seeds 0-2 first, then
    seeds 0-4 once the rounds of 50, the control and the baselines all have seeds 3-4 under ``more``.
    """
    name = ROUNDS_50_2K.removesuffix("-r50")
    there = in_folder(root)
    if not (RESULTS / there(name)).exists():
        return []
    control = next(r for r in _protocol_rows(LEVERS, there) if LEVER_NAME[r.label] == name)
    cm, bar_row = matched_baselines(control, _protocol_rows(BASELINES, there))
    sets = [([there], control, bar_row)]
    if (five := more_seeds(control, cm, bar_row, more)) is not None:
        sets.append(([there, in_folder(more)], five[0], five[2]))
    return _rounds50_readings(ROUNDS_50_2K, sets)


def rounds50(results: str) -> list[Rounds50]:
    """A machine's rounds of 50 on seeds 0-2, then on seeds 0-4 once every side has seeds 3-4."""
    m = machine(results)
    local = m.baselines(m.control) if m is not None else None
    if local is None:
        return []
    sets = [([in_folder(results)], m.control, local[1])]
    if (five := m.with_more_seeds(m.control)) is not None:
        sets.append(([in_folder(results), in_folder(MORE_SEEDS_20K[results])], five[0], five[2]))
    return _rounds50_readings(ROUNDS_50, sets)


def _rounds50_readings(name: str, sets: list[tuple[list[Callable[[str], str]], Row, Row]]) -> list[Rounds50]:
    """One reading per (folders, control, bar row): the variant ``name`` and its baselines in rounds of 50 from
    those folders, once every file ran."""
    out = []
    for folders, control, bar_row in sets:
        sae, base = [there(name) for there in folders], [there(ROUNDS_50_BASELINES) for there in folders]
        if all((RESULTS / f).exists() for f in sae + base):
            out.append(Rounds50(row("sae+margin, the 2k choice, rounds of 50", sae, "sae", "margin"),
                                row("classifier+margin, rounds of 50", base, "classifier", "margin"),
                                row("classifier+random, rounds of 50", base, "classifier", "random"),
                                control, bar_row))
    return out


def _rounds50_block(results: str) -> str:
    readings = rounds50(results)
    if not readings:
        return ""
    parts = [f"`{results}` (processor: {_processor(readings[0].sae.files[0])}):"]
    for x in readings:
        parts += _rounds50_reading(x)
    return "\n\n".join(parts)


def _rounds50_reading(x: Rounds50, items: str = "20k") -> list[str]:
    """Validation against the control, test against the baselines in the same rounds, and the 250-label reading."""
    seeds = f"seeds {_seed_list(x.sae)}"
    shared = [n for n in FM_BUDGETS[1:] if n <= ROUNDS_50_BUDGETS[-1]]
    control = replace(x.control, label="sae+margin, the 2k choice, rounds of 100")
    d = _paired_val(x.sae, control, shared)
    parts = [curve_table(f"validation error, {items} items, {seeds}", [control, x.sae], ROUNDS_50_BUDGETS,
                         key="val_error"),
             curve_table(f"test error, {seeds} (report only)", [x.sae, x.margin, x.random, control],
                         ROUNDS_50_BUDGETS),
             paired_table(f"paired difference on test, {seeds}, points", [
                 ("rounds of 50 − classifier+margin in rounds of 50", x.sae, x.margin),
                 ("rounds of 50 − classifier+random in rounds of 50", x.sae, x.random)], ROUNDS_50_BUDGETS[2:])]
    out = []
    if d is not None:
        each = ", ".join(f"{v:+.1f}" for v in d)
        out.append(f"* Rounds of 50 against rounds of 100 on validation, paired, mean over "
                   f"{shared[0]:,}-{shared[-1]:,} labels: {d.mean():+.1f} ± {d.std(ddof=1):.1f} points ({each}).")
    if x.bar is not None:
        reach = [("rounds of 50", x.reach(x.sae)), ("rounds of 100", x.reach(control))]
        out.append(f"* Labels to reach classifier+random's 1,000-label error in rounds of 100 on this machine "
                   f"({100 * x.bar:.1f} %, seeds {_seed_list(x.bar_row)}): "
                   + "; ".join(f"{who} {n:,}" if n is not None else f"{who} not reached by {ROUNDS_50_BUDGETS[-1]:,}"
                               for who, n in reach)
                   + f" (target ≤ {TARGET_LABELS}: {_met(reach[0][1] is not None and reach[0][1] <= TARGET_LABELS)}).")
    if worst := x.smallest_lead():
        out.append(_lead(x.gaps()) + f" in rounds of 50 (≥ {TARGET_LEAD:g} at every budget: "
                   + ("met" if worst[1] >= TARGET_LEAD else f"not met; smallest {worst[1]:+.2f} at {worst[0]:,}")
                   + ").")
    return [*parts, "\n".join(out)]


HEADS = "flip-semi500-lam099-warm5-heads"  # the control's training again, other classifiers read on its codes
EMA_HEADS = "flip-semi500-lam099-warm5-ema95-heads"  # the targets' setting again, pool heads read too
HEADS_OF = {HEADS: CHOSEN_2K, EMA_HEADS: "flip-semi500-lam099-warm5-ema95"}  # heads run -> the run it trains again


def head_rows(path: str) -> list[Row]:
    """One row per head that ``latent_heads.py`` read on a curve's codes, in the order it read them."""
    data = json.loads((RESULTS / path).read_text())
    names = [k for r in data["runs"][:1] for k in r["curve"][0].get("probe", {})]
    return [Row(name, tuple({"model": r["model"], "strategy": r["strategy"], "seed": r["seed"],
                             "curve": [{"labeled": p["labeled"], **p["probe"][name]} for p in r["curve"]]}
                            for r in data["runs"]), (path,)) for name in names]


def section_latent_heads(roots: Iterable[str] = VAL20K_ROOTS) -> str:
    """Other classifiers on the very codes the chosen setting trains, read on validation every round.

    The curve acquires with the model's own SVM (C=1), so a head that wins here is a first-order
    reading; two checks say the readings are the control's: the head ``svm C=1`` must equal the
    curve's own validation error, and its training must reproduce the control's test readings.
    """
    blocks = []
    for root, (heads_run, trained_again) in itertools.product(roots, HEADS_OF.items()):
        here = in_folder(root)
        if not (RESULTS / here(heads_run)).exists():
            continue
        rows = head_rows(here(heads_run))
        own = row("own", [here(heads_run)], "sae", "margin")
        control = complete(_protocol_rows([x for x in LEVERS if x[0] == trained_again], here), [])
        ref = next(r for r in rows if r.label == "svm C=1")
        effects = {r.label: d for r in rows if r is not ref and (d := _paired_val(r, ref)) is not None}
        lines = ["| head on the codes (validation, mean over 200-1,000 labels) | vs svm C=1, points (paired) "
                 "| lower on every seed |", "|---|---|---|"]
        lines += [f"| {label} | {d.mean():+.1f} ± {d.std(ddof=1):.1f} | {'yes' if (d < 0).all() else 'no'} |"
                  for label, d in effects.items()]
        equal, points = reproduced(ref, own, "val_error")
        checks = f"Checks: svm C=1 equals the curve's own validation error at {equal} of {points} points"
        if control:
            same, total = reproduced(own, control[0])
            checks += (f"; the training's test readings equal the control's (`{root}/{trained_again}`) "
                       f"at {same} of {total}")
        parts = [f"`{root}/{heads_run}` (processor: {_processor(here(heads_run))}):",
                 curve_table("validation error, 20k items, same codes", rows, FM_BUDGETS, key="val_error"),
                 "\n".join(lines), checks + "."]
        if effects:
            best = min(effects, key=lambda label: effects[label].mean())
            parts.append(f"Lowest against svm C=1 on validation: **{best}** ({effects[best].mean():+.1f} points).")
        blocks.append("\n\n".join(parts))
    return "\n\n".join(blocks) or (
        f"_Not run yet: `VAL_SIZE=20000 ROOT=benchmarks/results/{VAL20K} bash benchmarks/cpu_protocol.sh {HEADS}`._")


SEASONS_PROTOCOL = "protocol-seasons-10k"
SEASONS_MORE_SEEDS = "protocol-seasons-10k-seeds3-4"  # seeds 3-4 of the seasons choice and its matched baselines
# the seasons choice run again, with its baselines from its own typicality start, on one machine
SEASONS_SAME_START = "protocol-seasons-10k-same-start"


CALIBRATION_HOLDOUT = ("flip-semi500-lam099-warm5-ema95", "flip-semi500-lam099-warm5-ema95-calib10")  # control, lever
# the thirty-fourth session's holdout run, whose self-training guesses came from an SVM that had learned the held labels
CALIBRATION_HOLDOUT_LEAKY = "flip-semi500-lam099-warm5-ema95-calib10-leaky"


def section_calibration_holdout(root: str = VAL20K + "-again") -> str:
    """The served probability calibrated on a tenth of the labels kept out of the structure term.

    Against the same setting calibrated on every label out of fold (its control, trained on the same
    machine, as training reproduces per processor): validation and test error say what the held-out
    labels cost, the expected calibration error on test what the map on them buys; and, on the very
    same model, the map fitted on every label, which isolates the map from the codes.
    """
    here = in_folder(root)
    control_name, lever_name = CALIBRATION_HOLDOUT
    control = row("every label pulls the codes and calibrates (the 2k choice)", [here(control_name)], "sae", "margin")
    lever = row("a tenth of the labels held out of the structure term, the map fitted on them alone",
                [here(lever_name)], "sae", "margin")
    if len(lever.runs) < MIN_SEEDS or len(control.runs) < MIN_SEEDS:
        return (f"_Not run yet: `VAL_SIZE=20000 ROOT=benchmarks/results/{root} bash benchmarks/cpu_protocol.sh "
                f"{lever_name}`._")
    if _processor(here(lever_name)) != _processor(here(control_name)):  # training reproduces per processor only
        return (f"_The holdout ran on {_processor(here(lever_name))}, its control on "
                f"{_processor(here(control_name))}: not comparable; run both on one machine._")
    leaky = row("the same, self-training's guesses from an SVM that learned the held labels (the first run)",
                [here(CALIBRATION_HOLDOUT_LEAKY)], "sae", "margin")
    leaky_rows = [leaky] if len(leaky.runs) >= MIN_SEEDS and \
        _processor(here(CALIBRATION_HOLDOUT_LEAKY)) == _processor(here(lever_name)) else []
    every = Row("the same held-out models, their map fitted on every label",
                tuple({**r, "curve": [{**p, "test_ece_calibrated": p["test_ece_calibrated_every_label"]}
                                      for p in r["curve"] if "test_ece_calibrated_every_label" in p]}
                      for r in lever.runs), lever.files)
    budgets = FM_BUDGETS
    head = "| paired on seeds " + ",".join(map(str, lever.seeds)) + ", points | " + \
        " | ".join(f"{n:,}" for n in budgets) + " labels |"
    lines = [head, "|---" * (len(budgets) + 1) + "|"]
    for label, a, b, ka, kb in (
            ("validation error, held out − control", lever, control, "val_error", "val_error"),
            ("test error, held out − control", lever, control, "test_error", "test_error"),
            ("calibration error, held out − control", lever, control, "test_ece_calibrated", "test_ece_calibrated"),
            ("calibration error, the held-out map − the every-label map, same models", lever, lever,
             "test_ece_calibrated", "test_ece_calibrated_every_label"),
            *((f"{what}, guesses without the held labels − with them", lever, leaky, key, key)
              for what, key in (("validation error", "val_error"), ("calibration error", "test_ece_calibrated"))
              for _ in leaky_rows)):
        lines.append(f"| {label} | " + " | ".join(_paired_cells(a, b, ka, kb, budgets)) + " |")
    d = _paired_val(lever, control)
    mean_val = "" if d is None else (f"Over 200-1,000 labels the holdout's mean validation error is "
                                     f"{d.mean():+.1f} ± {d.std(ddof=1):.1f} points from the control's (paired).")
    return "\n\n".join([
        f"`{root}` (processor: {_processor(here(lever_name))}, the holdout and its control alike):",
        curve_table("validation error, 20k items", [control, lever, *leaky_rows], budgets, key="val_error"),
        curve_table("test error", [control, lever, *leaky_rows], budgets),
        curve_table("calibration error of the served probability (ECE, test)", [control, lever, every, *leaky_rows],
                    budgets, key="test_ece_calibrated"),
        "\n".join(lines), mean_val])


CALIBRATION_MAPS = "flip-semi500-lam099-warm5-ema95-calib10-maps"  # the holdout's training again, maps read on it
FITTED_ON = {"held": "fitted on the held tenth", "every label": "fitted on every label"}


def map_rows(folder: str) -> list[Row]:
    """One row per map and the items it was fitted on, and the raw confidence, from the readings each seed's curve
    kept (``calibration_maps.py``): points carry ``val_ece``, ``val_brier``, ``test_ece`` and ``test_brier``."""
    sys.path[:0] = [d for d in (str(ROOT), str(ROOT / "benchmarks")) if d not in sys.path]  # the serving code fits
    from calibration_maps import FITTED_ON as ON
    from calibration_maps import map_readings

    from model.calibration import MAPS

    kinds = [("raw confidence, no map", ("none",))]
    kinds += [(f"{name}, {FITTED_ON[on]}", (on, name)) for on in ON for name in MAPS]
    found = sorted((RESULTS / folder).glob("calibration-readings-s*.npz"))
    runs = {int(f.stem.rsplit("-s", 1)[1]): map_readings(f) for f in found}

    def point(n: int, p: dict, keys: tuple[str, ...]) -> dict | None:
        for k in keys:
            p = p.get(k, {})
        return {"labeled": n, **{f"{split}_{m}": v for split, ms in p.items() for m, v in ms.items()}} if p else None

    files = tuple(f"{folder}/{f.name}" for f in found)
    return [Row(label, tuple({"model": "sae", "strategy": "margin", "seed": seed,
                              "curve": [q for n, p in points.items() if (q := point(n, p, keys)) is not None]}
                             for seed, points in runs.items()), files) for label, keys in kinds]


def chosen_map(rows: list[Row], on: str) -> tuple[Row, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The rule fixed before the run: among the maps fitted on ``on``, the lowest mean validation ECE over
    200-1,000 labels, of those whose mean validation Brier score there is not above the isotonic map's (paired);
    the isotonic map where none is. Returns it and each other map's paired (ECE, Brier) difference to isotonic."""
    mine = [r for r in rows if r.label.endswith(FITTED_ON[on])]
    iso = next(r for r in mine if r.label.startswith("isotonic"))
    effects = {}
    for r in mine:
        if r is not iso and (e := _paired_val(r, iso, key="val_ece")) is not None \
                and (b := _paired_val(r, iso, key="val_brier")) is not None:
            effects[r.label] = (e, b)
    fair = [r for r in mine if r is iso or (r.label in effects and effects[r.label][1].mean() <= 0)]
    best = min(fair, key=lambda r: 0.0 if r is iso else effects[r.label][0].mean())
    return best, effects


def section_calibration_maps(root: str = VAL20K + "-again") -> str:
    """Maps from the SVM's confidence to the served probability, every one read on the very same models.

    The run trains the calibration holdout's setting again (``CALIBRATION_HOLDOUT``'s lever, on its machine, so its
    test readings must reproduce that run's), and every round fits each map on the same out-of-fold readings of the
    held tenth and of every label. Chosen on the 20k validation set (``chosen_map``); test numbers reported.
    """
    here = in_folder(root)
    if not (RESULTS / here(CALIBRATION_MAPS)).exists():
        return (f"_Not run yet: `VAL_SIZE=20000 ROOT=benchmarks/results/{root} bash benchmarks/cpu_protocol.sh "
                f"{CALIBRATION_MAPS}`._")
    rows = map_rows(f"{root}/{CALIBRATION_MAPS}")
    own = row("own", [here(CALIBRATION_MAPS)], "sae", "margin")
    parts = [f"`{root}/{CALIBRATION_MAPS}` (processor: {_processor(here(CALIBRATION_MAPS))}):",
             curve_table("calibration error (ECE), validation, 20k items", rows, FM_BUDGETS, key="val_ece"),
             curve_table("Brier score × 100, validation, 20k items", rows, FM_BUDGETS, key="val_brier", unit="")]
    lines = ["| map (validation, mean over 200-1,000 labels) | ECE vs isotonic, points (paired) | Brier × 100 vs "
             "isotonic (paired) | lower ECE on every seed |", "|---|---|---|---|"]
    chosen = []
    for on in FITTED_ON:
        best, effects = chosen_map(rows, on)
        lines += [f"| {label} | {e.mean():+.1f} ± {e.std(ddof=1):.1f} | {b.mean():+.2f} ± {b.std(ddof=1):.2f} | "
                  f"{'yes' if (e < 0).all() else 'no'} |" for label, (e, b) in effects.items()]
        chosen.append(f"{FITTED_ON[on]}: **{best.label.split(',')[0]}**")
    parts += ["\n".join(lines), "Chosen on validation (lowest ECE of the maps whose Brier score is not above the "
              "isotonic map's): " + "; ".join(chosen) + ".",
              curve_table("calibration error (ECE), test", rows, FM_BUDGETS, key="test_ece"),
              curve_table("Brier score × 100, test", rows, FM_BUDGETS, key="test_brier", unit="")]
    held = {n: [p["probe"]["n_held"] for r in own.runs for p in r["curve"]
                if p["labeled"] == n and "n_held" in p.get("probe", {})] for n in FM_BUDGETS}
    parts.append("Items the maps of the held tenth were fitted on, per seed: " + "; ".join(
        f"{n:,} labels: {', '.join(map(str, v))}" for n, v in held.items() if v) +
        " (below 20 held, the model and these rows fit on every label).")
    checks = [p["probe"]["check"] for r in own.runs for p in r["curve"] if p.get("probe", {}).get("check") is not None]
    text = (f"Checks: the probe's map of the model's own kind on the held tenth equals the model's own at "
            f"{sum(c == 0 for c in checks)} of {len(checks)} points where the model had one")
    lever = CALIBRATION_HOLDOUT[1]
    if (RESULTS / here(lever)).exists():
        same, total = reproduced(own, row("lever", [here(lever)], "sae", "margin"))
        text += f"; the training's test readings equal the holdout run's (`{root}/{lever}`) at {same} of {total}"
        mine, theirs = (_processor(here(name), "cpu_kernels") for name in (CALIBRATION_MAPS, lever))
        if mine != theirs:
            text += (f" (that run's processor used {theirs} kernels, this one {mine}: training reproduces on one "
                     "kind of processor only, so these are other models of the same setting; every map here is "
                     "read on this run's own)")
    parts.append(text + ".")
    return "\n\n".join(parts)


def section_protocol_seasons() -> str:
    """The seasons split (3 classes of garments) under the same protocol, for the levers run there."""
    where = in_folder(SEASONS_PROTOCOL)
    levers = _protocol_rows(LEVERS, where)
    main = section_protocol(levers, _protocol_rows(BASELINES, where),
                            "_Not run yet: `SPLIT=seasons bash benchmarks/cpu_protocol.sh shift2 typical "
                            "baselines-shift2`._", _targets_seasons, diagram=None, more=SEASONS_MORE_SEEDS)
    best = chosen_lever(levers) if complete(levers, []) else None
    extra = seasons_same_start(LEVER_NAME[best.label]) if best is not None else ""
    return "\n\n".join(p for p in (main, extra) if p)


def seasons_same_start(name: str, root: str = SEASONS_SAME_START) -> str:
    """The seasons choice against classifier baselines from its own typicality start, all run on one machine.

    The seasons target is read against baselines from random labels; this report says how much of the lead
    is the start. Both sides run again together, since the start (an autoencoder's training) reproduces on
    one processor only.
    """
    here = in_folder(root)
    sae = _protocol_rows([x for x in LEVERS if x[0] == name], here)
    variant = SAME_START.get(MATCHED_BASELINES.get(name, ""))
    readings = same_start(sae[0], _protocol_rows(BASELINES, here), None) if sae and variant else []
    if not readings:
        if not variant:
            return ""
        done = [n for n in (variant, name) if (RESULTS / here(n)).exists()
                and complete(_protocol_rows([x for x in (*LEVERS, *BASELINES) if x[0] == n], here), [])]
        ran = "".join(f" `{root}/{n}` ran on {_processor(here(n))}, and needs its other half from the same processor."
                      for n in done)
        return (f"_Not run yet, the chosen setting against its baselines from the same start: `SPLIT=seasons "
                f"ROOT=benchmarks/results/{root} bash benchmarks/cpu_protocol.sh {variant} {name}`.{ran}_")
    processors = {_processor(here(n)) for n in (name, variant)}
    if len(processors) > 1:
        return (f"_`{root}`: the setting and its baselines ran on different processors "
                f"({', '.join(sorted(processors))})._")
    rows = readings[0]
    return "\n\n".join([
        f"The chosen setting run again with its classifier baselines from the same typicality start, all on "
        f"{processors.pop()} (`{root}`; report only: the target above keeps the plain classifier's random start), "
        f"seeds {_seed_list(rows[0])}:",
        *_test_report(*rows, _targets_seasons, ", baselines from the same start, run again", "that setting")])


def section_protocol(levers: list[Row] | None = None, base: list[Row] | None = None,
                     empty: str = "_No protocol runs yet: `bash benchmarks/cpu_protocol.sh`._",
                     targets: Callable[[Row, Row, Row, float | None], str] | None = None,
                     diagram: str | None = "reliability-fm10-10k.png", more: str | None = None) -> str:
    levers = _protocol_rows(LEVERS) if levers is None else levers
    base = _protocol_rows(BASELINES) if base is None else base
    if not complete(levers, []):
        return empty
    excluded: list[str] = []
    best = chosen_lever(levers, excluded)
    cm, cr = matched_baselines(best, base)
    parts = [curve_table("validation error (choose here)", levers + base, FM_BUDGETS, key="val_error"),
             _lever_effects(levers)]
    lines = []
    if best is not None:
        lines.append(f"Chosen on validation (lowest mean validation error over 200-1,000 labels): **{best.label}**"
                     + (f" (not complete, so not eligible: {'; '.join(excluded)})" if excluded else "") + ".")
        parts.append("\n".join(lines))
        parts += _test_report(best, cm, cr, targets or _targets)
        again = replicate(best, levers, base)
        if again is not None:
            parts.append("The chosen setting run again on another machine, against classifier baselines run on "
                         "that machine (the targets read on both runs; training does not reproduce across machines):")
            parts += _test_report(*again, targets or _targets, ", run again", "run again")
        for lever in levers:
            five = more_seeds(lever, *matched_baselines(lever, base), more) if lever.runs else None
            if five is not None:
                who = "The chosen setting" if lever is best else f"**{lever.label}** (chosen when they ran)"
                parts.append(f"{who} and its baselines with seeds 3 and 4 added (run for a closer test reading "
                             "after the choice; the choice above stays on seeds 0-2, which every setting has):")
                parts += _test_report(*five, targets or _targets, f", seeds {_seed_list(five[0])}", "that setting")
        for rows in same_start(best, base, more):
            parts.append(f"The chosen setting against its classifier baselines started from the same typicality start"
                         f" (report only; the targets keep the plain classifier's random start), seeds "
                         f"{_seed_list(rows[0])}:")
            parts += _test_report(*rows, targets or _targets, f", baselines from the same start, seeds "
                                  f"{_seed_list(rows[0])}", "that setting")
    parts.append(_calibration(levers + base, diagram))
    parts.append(_stop(levers + base))
    return "\n\n".join(p for p in parts if p)


def same_start(best: Row | None, base: list[Row], more: str | None = MORE_SEEDS) -> list[tuple[Row, Row, Row]]:
    """The chosen setting against its matched baselines started from its own typicality start, as a report.

    The matched baselines start at random, as a plain classifier would; these say how much of the
    lead is the start. Seeds 0-2, then seeds 0-4 once both sides have seeds 3-4 under ``more``.
    """
    if best is None:
        return []
    variant = SAME_START.get(MATCHED_BASELINES.get(LEVER_NAME.get(best.label, ""), ""))
    pair = _baseline_pair(variant, base) if variant else None
    if pair is None or len(complete([best, *pair], [])) < 3:
        return []
    return [rows for rows in ((best, *pair), more_seeds(best, *pair, more)) if rows is not None]


def _seed_list(r: Row) -> str:
    s = r.seeds
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) else ",".join(map(str, s))


def _test_report(best: Row, cm: Row, cr: Row, targets: Callable[[Row, Row, Row, float | None], str],
                 suffix: str = "", name: str | None = None) -> list[str]:
    """Test error, paired differences, labels needed and the target bullets of one run of the chosen setting."""
    name = name or best.label
    parts = [curve_table(f"test error{suffix} (report only)", [best, cm, cr], FM_BUDGETS),
             paired_table(f"paired difference on test{suffix}, points", [
                 (f"{name} − classifier+margin", best, cm),
                 (f"{name} − classifier+random", best, cr)], FM_BUDGETS)]
    reach, target = reach_table(f"labels needed (test, seed mean){suffix}", [best, cm, cr], cr, 1000)
    return [*parts, reach, targets(best, cm, cr, target)]


def _paired_val(r: Row, ref: Row, budgets: Iterable[int] = FM_BUDGETS[1:], key: str = "val_error") -> np.ndarray | None:
    """Per seed, ``r`` minus ``ref`` in points: mean validation error (or ``key``) over ``budgets`` (None below 3
    seeds)."""
    diffs = []
    for seed in sorted(set(r.seeds) & set(ref.seeds)):
        a = [r.values(n, key).get(seed) for n in budgets]
        b = [ref.values(n, key).get(seed) for n in budgets]
        if None not in a and None not in b:
            diffs.append(100 * float(np.mean(a) - np.mean(b)))
    return np.asarray(diffs) if len(diffs) >= MIN_SEEDS else None


def _against_parent(r: Row, by_name: dict[str, Row]) -> tuple[Row, np.ndarray] | None:
    """The lever ``r`` adds to (``BUILDS_ON``) in ``by_name``, and ``r`` minus it, paired (None when missing)."""
    parent = by_name.get(BUILDS_ON.get(LEVER_NAME.get(r.label, ""), ""))
    d = _paired_val(r, parent) if parent is not None else None
    return None if d is None else (parent, d)


def _lever_effects(levers: list[Row]) -> str:
    """Each lever against the reference on validation: per-seed mean over 200-1,000 labels, paired.

    A lever that adds to another (``BUILDS_ON``) is also set against that one: against the
    reference its effect would include the other's.
    """
    ref = levers[0]
    by_name = {LEVER_NAME[r.label]: r for r in levers if r.label in LEVER_NAME}
    lines = ["| lever (validation, mean over 200-1,000 labels) | vs reference, points (paired) | helps "
             "| vs the setting it adds to, points (paired) |", "|---|---|---|---|"]
    kept = 0
    for r in complete(levers[1:], []):
        d = _paired_val(r, ref)
        if d is None:
            continue
        helps = d.mean() + d.std(ddof=1) < 0
        against = _against_parent(r, by_name)
        added = "" if against is None else \
            f"{against[1].mean():+.1f} ± {against[1].std(ddof=1):.1f} against {against[0].label}"
        lines.append(f"| {r.label} | {d.mean():+.1f} ± {d.std(ddof=1):.1f} | "
                     f"{'yes (mean + 1 sd below 0)' if helps else 'no'} | {added} |")
        kept += 1
    return "\n".join(lines) if kept else ""


def _gaps(best: Row, other: Row, budgets: Iterable[int]) -> list[tuple[int, float]]:
    """(budget, mean paired lead of ``best`` over ``other`` in points) where 3 seeds are shared."""
    gaps = []
    for n in budgets:
        a, b = best.values(n), other.values(n)
        shared = [s for s in a if s in b]
        if len(shared) >= MIN_SEEDS:
            gaps.append((n, 100 * float(np.mean([b[s] - a[s] for s in shared]))))
    return gaps


def _targets_seasons(best: Row, cm: Row, cr: Row, target: float | None) -> str:
    """The seasons split's target: ahead of classifier+margin at every budget."""
    gaps = _gaps(best, cm, SEASONS_LEAD_BUDGETS)
    if len(gaps) < len(SEASONS_LEAD_BUDGETS):
        return "* Ahead of classifier+margin at every budget: incomplete, budgets missing."
    behind = [f"{n:,}" for n, g in gaps if g <= 0]
    return (_lead(gaps) + " (target: ahead at every budget: "
            + ("met" if not behind else f"not met at {', '.join(behind)}") + ").")


def _smallest(gaps: list[tuple[int, float]]) -> tuple[int, float] | None:
    """(budget, lead) where the lead is smallest: what a target of a lead at every budget turns on."""
    return min(gaps, key=lambda g: round(g[1], 6), default=None)  # ties (to float noise): the first budget


def _lead(gaps: list[tuple[int, float]]) -> str:
    return ("* Ahead of classifier+margin by " + ", ".join(f"{g:+.1f}" for _, g in gaps)
            + f" points at {', '.join(f'{n:,}' for n, _ in gaps)} labels")


def _targets(best: Row, cm: Row, cr: Row, target: float | None) -> str:
    at1000 = mean_at(best, 1000)
    out = []
    if at1000 is not None:
        out.append(f"* Error at 1,000 labels: {100 * at1000:.2f} % (target ≤ {100 * TARGET_ERROR:g} %: "
                   f"{_met(at1000 <= TARGET_ERROR)}).")
    if target is not None:
        n = labels_to_reach(best, target)
        out.append(f"* Labels to reach classifier+random's 1,000-label error ({100 * target:.1f} %): "
                   f"{n if n is not None else 'not reached'} (target ≤ {TARGET_LABELS}: "
                   f"{_met(n is not None and n <= TARGET_LABELS)}).")
    gaps = _gaps(best, cm, LEAD_BUDGETS)
    if gaps:
        worst = _smallest(gaps)
        ok = all(g >= TARGET_LEAD for _, g in gaps) and len(gaps) == len(LEAD_BUDGETS)
        out.append(_lead(gaps) + f" (target ≥ {TARGET_LEAD:g} at every budget: "
                   + ("met" if ok else f"not met; smallest {worst[1]:+.2f} at {worst[0]:,}"
                      if len(gaps) == len(LEAD_BUDGETS) else "incomplete: budgets missing") + ").")
    return "\n".join(out)


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def _target_cells(best: Row, cm: Row, cr: Row) -> list[str]:
    """The three Fashion-MNIST-10 targets of one reading, each with its figure and whether it is met."""
    at, ref = mean_at(best, 1000), mean_at(cr, 1000)
    n = labels_to_reach(best, ref) if ref is not None else None
    gaps = _gaps(best, cm, LEAD_BUDGETS)
    worst = _smallest(gaps) if len(gaps) == len(LEAD_BUDGETS) else None
    return [f"{100 * at:.2f} % ({_met(at <= TARGET_ERROR)})" if at is not None else "incomplete",
            f"{n:,} ({_met(n <= TARGET_LABELS)})" if n is not None else "not reached",
            f"{worst[1]:+.2f} at {worst[0]:,} ({_met(worst[1] >= TARGET_LEAD)})" if worst else "incomplete"]


def _machine_readings(results: str, control: str) -> list[tuple[str, tuple[Row, Row, Row]]]:
    """A 20k machine's test readings against its own baselines: its control, and its 20k choice once all levers ran."""
    m = machine(results)
    out = []
    for r in m.standing() if m is not None else []:
        who = f"{control} run again" if r is m.control else "that machine's 20k choice"
        local = m.baselines(r)
        if local is not None:
            out += _readings(who, (r, *local), m.with_more_seeds(r))
    return out


def _choice_readings(r: Row, base: list[Row], who: str) -> list[tuple[str, tuple[Row, Row, Row]]]:
    """A 2k setting's test readings against its matched baselines: seeds 0-2, and seeds 0-4 once they ran."""
    cm, cr = matched_baselines(r, base)
    return _readings(who, (r, cm, cr), more_seeds(r, cm, cr))


def _readings(who: str, three: tuple[Row, Row, Row], five: tuple[Row, Row, Row] | None,
              ) -> list[tuple[str, tuple[Row, Row, Row]]]:
    """One summary line per seed set: the setting with its baselines, and again once all three have seeds 3-4."""
    return [(f"{who}, seeds {_seed_list(rows[0])}", rows) for rows in (three, five) if rows is not None]


def section_summary() -> str:
    """Where the Fashion-MNIST-10 targets stand, one line per reading, drawn from the same runs as the sections below.

    The targets are read on the setting the 2k protocol chose, on the runs that chose it; the
    other machines' readings are reports that never move them.
    """
    levers = _protocol_rows(LEVERS)
    best = chosen_lever(levers)
    if best is None:
        return "_No protocol runs yet: `bash benchmarks/cpu_protocol.sh`._"
    base = _protocol_rows(BASELINES)
    readings = _choice_readings(best, base, "**the targets**: the 2k choice")
    control = "the 2k choice"
    if LEVER_NAME[best.label] != CHOSEN_2K:  # the choice moved after the 20k machines reran their control
        control = "the earlier 2k choice"
        earlier = [r for r in levers if LEVER_NAME[r.label] == CHOSEN_2K]
        readings += [(f"{label} (report only)", rows)
                     for r in earlier for label, rows in _choice_readings(r, base, control)]
    for root in VAL20K_ROOTS:
        readings += [(f"{label} (report only)", rows) for label, rows in _machine_readings(root, control)]
    readings += [(f"the 2k choice against baselines from its typicality start, seeds {_seed_list(rows[0])} "
                  "(report only)", rows) for rows in same_start(best, base)]
    small = [("the 2k choice", x) for x in rounds50_2k()]
    small += [(control, x) for root in VAL20K_ROOTS for x in rounds50(root)]
    lines = [f"| reading (test, seed mean) | processor | setting | error at 1,000 labels (≤ {100 * TARGET_ERROR:g} %) "
             f"| labels to reach classifier+random's 1,000-label error (≤ {TARGET_LABELS}) | smallest lead over "
             f"classifier+margin, 200-1,000 labels (≥ {TARGET_LEAD:g} points) |", "|---|---|---|---|---|---|"]
    for label, (r, m, c) in readings:
        where = ", ".join(sorted({_processor(f) for f in r.files}))
        lines.append(f"| {label} | {where} | {r.label} | " + " | ".join(_target_cells(r, m, c)) + " |")
    for who, x in small:
        lines.append(f"| {who} in rounds of 50, seeds {_seed_list(x.sae)} (report only) | "
                     f"{_processor(x.sae.files[0])} | {x.control.label}, rounds of 50 to "
                     f"{ROUNDS_50_BUDGETS[-1]:,} labels | " + " | ".join(_target_cells_50(x)) + " |")
    return "\n".join(lines)


def _target_cells_50(x: Rounds50) -> list[str]:
    """The targets a run to 500 labels can read: the 250-label one, and the lead up to 500."""
    n, worst = x.reach(x.sae), x.smallest_lead()
    return [f"not read (the rounds stop at {ROUNDS_50_BUDGETS[-1]:,})",
            f"{n:,} ({_met(n <= TARGET_LABELS)})" if n is not None else
            f"not reached by {ROUNDS_50_BUDGETS[-1]:,}",
            f"{worst[1]:+.2f} at {worst[0]:,}, up to {ROUNDS_50_BUDGETS[-1]:,} labels only "
            f"({'met' if worst[1] >= TARGET_LEAD else 'not met'} to {ROUNDS_50_BUDGETS[-1]:,}; not read beyond), "
            "against classifier+margin in rounds of 50"
            if worst else "incomplete"]


def _calibration(rows: list[Row], diagram: str | None = None) -> str:
    """ECE of each model's own confidence on the test split (SAE: normalised margin; classifier: softmax)."""
    have = [r for r in complete(rows, []) if r.values(FM_BUDGETS[0], "test_ece")]
    if not have:
        return ""
    text = ("Expected calibration error on the test split (10 equal-width bins; the SAE's normalised "
            "margin confidence, the classifier's softmax"
            + (f"; reliability diagram: `benchmarks/results/{diagram}`, by `benchmarks/reliability.py`"
               if diagram else "") + "):\n\n"
            + curve_table("ECE", have, FM_BUDGETS, key="test_ece"))
    calibrated = [Row(f"{r.label}, calibrated probability", r.runs, r.files) for r in have
                  if r.values(FM_BUDGETS[0], "test_ece_calibrated")]
    if complete(calibrated, []):
        text += ("\n\nThe SAE's calibrated probability (isotonic map fitted out of fold on the labeled items):\n\n"
                 + curve_table("ECE", calibrated, FM_BUDGETS, key="test_ece_calibrated"))
    return text


def _stop(rows: list[Row]) -> str:
    """Where the stabilising-predictions rule (κ ≥ 0.99 over 3 rounds) fires, per seed, and the error then."""
    lines = ["| stop estimate | κ at 500 | κ at 1,000 | rule fires at (per seed) |", "|---|---|---|---|"]
    kept = 0
    for r in complete(rows, []):
        if not r.values(1000, "stop_kappa"):
            continue
        fires = []
        for run in sorted(r.runs, key=lambda x: x["seed"]):
            hit = next((p["labeled"] for p in run["curve"] if p.get("stop")), None)
            done = any(p["labeled"] == 1000 for p in run["curve"])
            fires.append(f"{hit:,}" if hit else "not by 1,000" if done else "incomplete")

        def kappa(n: int, r: Row = r) -> str:
            v = r.values(n, "stop_kappa")
            return f"{np.mean(list(v.values())):.3f}" if len(v) >= MIN_SEEDS else ""

        lines.append(f"| {r.label} | {kappa(500)} | {kappa(1000)} | {', '.join(fires)} |")
        kept += 1
    return "\n".join(lines) if kept else ""


def section_digits() -> str:
    rows = [row(f"{m}+{s}", ["digits-3seeds/curve.json", "digits-3seeds/seed2-rest/curve.json"], m, s)
            for m, s in (("sae", "margin"), ("sae", "random"), ("ae", "margin"),
                         ("classifier", "margin"), ("classifier", "random"))]
    return curve_table("Digits", rows, (50, 100, 150, 200, 250))


def section_photos() -> str:
    """Reduced-scale JPEG decoding (benchmarks/photo_decode.py)."""
    path = RESULTS / "photo-decode-cpu.json"
    if not path.exists():
        return ""
    d = json.loads(path.read_text())
    return "\n".join([
        f"| {d['count']} JPEGs, {d['megapixels_min']}-{d['megapixels_max']} MP (mean {d['megapixels_mean']} MP, "
        f"{d['jpeg_mb_mean']} MB) → {d['size']}×{d['size']} RGB | photos/s |",
        "|---|---|",
        f"| full-resolution decode, then resize | {d['photos_per_s_full']} |",
        f"| reduced-scale decode (JPEG draft), then resize | {d['photos_per_s_reduced']} |",
        "",
        f"{d['speedup']}× faster on {d['machine']} (one thread); the two pictures differ by "
        f"{100 * d['mean_abs_pixel_difference']:.1f} % of the pixel range on average. Raw: `photo-decode-cpu.json`."])


def section_photo_ingest() -> str:
    """Ingesting 10k photos through the mirror (benchmarks/photo_ingest.py), one process per arm."""
    arms = {arm: RESULTS / "photo-ingest" / f"{arm}.json" for arm in ("full", "reduced")}
    if not all(p.exists() for p in arms.values()):
        return ""
    d = {arm: json.loads(p.read_text()) for arm, p in arms.items()}
    r, f = d["reduced"], d["full"]
    shape = "×".join(str(v) for v in r["item_shape"])
    lines = [f"| {r['count']:,} tasks over {r['distinct']:,} distinct JPEGs, {r['megapixels_min']}-"
             f"{r['megapixels_max']} MP (mean {r['megapixels_mean']} MP, {r['jpeg_mb_mean']} MB) → {shape} uint8 "
             "| photos/s | seconds | peak RSS (MB) |", "|---|---|---|---|"]
    for label, arm in (("full-resolution decode", "full"), ("reduced-scale decode (JPEG draft)", "reduced")):
        lines.append(f"| {label} | {d[arm]['photos_per_s']} | {d[arm]['seconds']} | {d[arm]['peak_rss_mb']} |")
    lines += ["", f"{f['seconds'] / r['seconds']:.2f}× faster; {r['stored']:,} of {r['count']:,} stored "
              f"({r['store_mb']} MB on disk); {r['machine']}, fetch and decode by the mirror's 8 threads, tasks "
              f"added {r['batch']} at a time. Raw: `photo-ingest/reduced.json`, `photo-ingest/full.json`."]
    return "\n".join(lines)


def _sd(values: list[float], digits: int = 1) -> str:
    m = f"{np.mean(values):,.{digits}f}"
    return f"{m} ± {np.std(values, ddof=1):,.{digits}f}" if len(values) > 1 else m


def section_ray() -> str:
    """Ray against one process on the same machine (benchmarks/ray_overhead.py)."""
    path = RESULTS / "ray" / "ray-overhead-cpu-60k.json"
    if not path.exists():
        return ""
    d = json.loads(path.read_text())
    tr, ips = d["train_seconds"], d["score_items_per_s"]
    over = [r - loc for r, loc in zip(tr["ray"], tr["local"], strict=True)]
    se = np.std(over, ddof=1) / np.sqrt(len(over)) if len(over) > 1 else float("inf")
    verdict = "within two standard errors of zero" if abs(np.mean(over)) < 2 * se else "beyond two standard errors"
    return "\n".join([
        f"| {d['cpu_count']} CPUs, Ray {d['ray']}, {d['repeats']} repeats (mean ± sd) | in one process | through Ray |",
        "|---|---|---|",
        f"| training: {d['train_items']:,} items, {d['labels']:,} labels, {d['epochs']} epochs, channels "
        f"{d['channels']} (s) | {_sd(tr['local'])} | {_sd(tr['ray'])} |",
        f"| scoring the {d['pool']:,}-item pool: items/s ({d['shards']} shards of {d['shard_size']:,} on one-CPU "
        f"tasks for Ray) | {_sd(ips['local'], 0)} | {_sd(ips['ray'], 0)} |",
        f"| peak RSS (MB) | service process {d['peak_rss_mb']['service_process']} | largest worker "
        f"{d['peak_rss_mb']['largest_ray_worker']} |",
        "",
        f"Ray's cost per training, paired by repeat: {_sd(over)} s ({verdict}); "
        f"the first job on a fresh cluster took {d['first_ray_train_seconds']:.1f} s, "
        f"{d['first_ray_train_seconds'] - np.mean(tr['ray']):.1f} s more than the next ones "
        "(a worker process starts and imports torch). "
        "Raw: `ray/ray-overhead-cpu-60k.json`."])


def _version_seconds(d: dict) -> float:
    return d["warm_retrain"]["seconds"] + d["encode_pool"]["seconds"] + d["svm_and_ranking"]["seconds"]


def section_ray_capacity() -> str:
    """What one GPU (and the 2-core CPU) does per model version, from the version-work benchmarks."""
    runs = [("one H100", RESULTS / "gpu-h100-loop" / "version-work-gpu-60k-16-32-64.json"),
            ("one H100", RESULTS / "gpu-h100-loop" / "version-work-gpu-1m.json"),
            ("2-core CPU", RESULTS / "version-work-cpu-1m.json")]
    every = 300
    lines = ["| where | pool | warm retrain (steps) | encode the pool | SVM + ranking | a version | versions/hour |",
             "|---|---|---|---|---|---|---|"]
    keep_up = []
    for where, path in runs:
        d = json.loads(path.read_text())
        v = _version_seconds(d)
        lines.append(f"| {where} | {d['n']:,} | {d['warm_retrain']['seconds']:.1f} s ({d['settings']['steps']}) | "
                     f"{d['encode_pool']['seconds']:.1f} s | {d['svm_and_ranking']['seconds']:.1f} s | {v:.1f} s | "
                     f"{3600 / v:,.0f} |")
        n = every / v
        keep_up.append(f"{n:,.0f} projects of {d['n']:,} items ({where})" if n >= 10
                       else f"{n:.1f} projects of {d['n']:,} items ({where})")
    lines += ["", f"Retraining every project every {every // 60} minutes, one machine keeps up with: "
              + "; ".join(keep_up) + "."]
    lines += ["", "Backend work only (`benchmarks/version_work.py`, channels 16/32/64, 1,000 labels); Label "
              "Studio's reads and writes come on top (O(changes + top-K) a version, see the main README). Raw: "
              "`gpu-h100-loop/version-work-gpu-*.json`, `version-work-cpu-1m.json`."]
    return "\n".join(lines)


SECTIONS: dict[str, Callable[[], str]] = {
    "summary": section_summary, "digits": section_digits, "full": section_full, "subset": section_subset,
    "protocol": lambda: section_protocol(more=MORE_SEEDS), "protocol-val20k": section_protocol_val20k,
    "protocol-seasons": section_protocol_seasons, "latent-heads": section_latent_heads,
    "rounds50": section_rounds50, "pilots": section_pilots, "gpu-protocol": section_gpu_protocol,
    "photos": section_photos, "photo-ingest": section_photo_ingest, "ray": section_ray,
    "ray-capacity": section_ray_capacity, "calibration-holdout": section_calibration_holdout,
    "calibration-maps": section_calibration_maps,
}
DOCUMENTS = (README, ROOT / "deploy" / "README.md")


def render(text: str) -> str:
    """``text`` with every ``<!-- tables:NAME -->`` ... ``<!-- /tables:NAME -->`` block regenerated."""
    for name, make in SECTIONS.items():
        start, end = f"<!-- tables:{name} -->", f"<!-- /tables:{name} -->"
        if start not in text:
            continue
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{make()}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", action="store_true")
    g.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    if a.write or a.check:
        for doc in DOCUMENTS:
            current = doc.read_text()
            new = render(current)
            if a.write:
                doc.write_text(new)
            elif new != current:
                print(f"{doc.relative_to(ROOT)}'s result tables differ from benchmarks/results/: "
                      "run python benchmarks/tables.py --write", file=sys.stderr)
                return 1
    else:
        for name, make in SECTIONS.items():
            print(f"<!-- {name} -->\n{make()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
