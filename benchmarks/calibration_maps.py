"""Which map from the SVM's confidence to a probability is honest, read on the very models a learning curve trains.

The served ``probability`` was an isotonic map fitted out of fold on the labeled codes (on the calibration holdout
alone where there is one). On a few dozen held items its top step is often exactly 1.0, and most of the pool sits
there. After every fit this probe keeps the raw readings any map is fitted on and read by: each labeled item's
out-of-fold confidence and whether it was right, which of them the model calibrates on, and the served confidence
(float16: a step of at most 0.0005) and correctness of every validation and test item
(``calibration-readings-s<seed>.npz`` beside ``curve.json``, arrays named ``<labels>/<what>``). ``map_readings``
fits every map of ``model.calibration.MAPS`` on them and reads expected calibration error and Brier score (proper:
a map that says the overall rate to every item cannot win by it), so a map added later is read on the same models
without training them again. The point's ``probe`` holds the ``check``: the largest gap between the model's own
map and the same kind of map fitted here (0 where the readings are what the model calibrates on).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from model.calibration import MAPS, brier_score, expected_calibration_error
from model.latent_svm import MIN_CALIBRATION, fit_map

FITTED_ON = ("held", "every label")


class CalibrationReadings:
    """A ``run_one`` probe for one seed's curve: keeps its rounds' readings in one ``.npz``, rewritten each round."""

    def __init__(self, out: Path | str, seed: int) -> None:
        self.path = Path(out) / f"calibration-readings-s{seed}.npz"
        self.arrays: dict[str, np.ndarray] = {}

    def __call__(self, model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 x_test: np.ndarray, y_test: np.ndarray) -> dict:
        labeled = np.flatnonzero(y >= 0)
        oof = model.svm_.out_of_fold(model.transform(x[labeled]), y[labeled])
        if oof is None:
            return {}
        conf, right, kept = oof
        held = model._held_out(y, None)[0][labeled]  # the items the model calibrated on, by its own rule
        if np.count_nonzero(held) < MIN_CALIBRATION:
            held = np.ones(len(labeled), bool)
        n = len(labeled)
        self.arrays |= {f"{n}/oof_confidence": conf.astype(np.float32), f"{n}/oof_right": right.astype(bool),
                        f"{n}/oof_held": held[kept]}
        for split, xs, ys in (("val", x_val, y_val), ("test", x_test, y_test)):
            if len(xs):
                pred, c = model.predict_confidence(xs)
                self.arrays |= {f"{n}/{split}_confidence": c.astype(np.float16), f"{n}/{split}_right": pred == ys}
        np.savez_compressed(self.path, **self.arrays)
        served = model.svm_.calibration_
        mine = fit_map(conf, right, held[kept], getattr(model.svm_, "calibration", "isotonic"))
        grid = np.linspace(0, 1, 1001)
        gap = None if served is None or mine is None else float(np.max(np.abs(
            np.interp(grid, served[0], served[1]) - np.interp(grid, mine[0], mine[1]))))
        return {"check": None if gap is None else round(gap, 6), "n_held": int(held[kept].sum()), "n_labels": n}


def map_readings(path: Path | str) -> dict[int, dict]:
    """Per label count: ``{"none" | fitted on: {map: {split: {"ece", "brier"}}}}`` from one readings file, the raw
    confidence under ``none``; a map the model would not fit is left out."""
    data = np.load(path)
    out: dict[int, dict] = {}
    for n in sorted({int(k.split("/")[0]) for k in data.files}):
        a = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith(f"{n}/")}
        splits = [s for s in ("val", "test") if f"{s}_confidence" in a]
        read = {s: (a[f"{s}_confidence"].astype(np.float64), a[f"{s}_right"]) for s in splits}
        point: dict = {"none": {s: _scores(c, ok) for s, (c, ok) in read.items()}}
        conf, right = a["oof_confidence"].astype(np.float64), a["oof_right"].astype(np.float64)
        for on, mask in zip(FITTED_ON, (a["oof_held"], np.ones(len(conf), bool)), strict=True):
            maps = {name: knots for name in MAPS if (knots := fit_map(conf, right, mask, name)) is not None}
            point[on] = {name: {s: _scores(np.interp(c, k[0], k[1]), ok) for s, (c, ok) in read.items()}
                         for name, k in maps.items()}
        out[n] = point
    return out


def _scores(prob: np.ndarray, right: np.ndarray) -> dict[str, float]:
    return {"ece": round(expected_calibration_error(prob, right), 5), "brier": round(brier_score(prob, right), 5)}
