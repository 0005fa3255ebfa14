"""Which map from the SVM's confidence to a probability is honest, read on the very model a learning curve trains.

The served ``probability`` is an isotonic map fitted out of fold on the labeled codes (on the calibration holdout
alone where there is one). On a few dozen held items its top step is often exactly 1.0, and most of the pool sits
there. Each round this fits every map of ``model.calibration.MAPS`` on the same out-of-fold readings, on the held
items and on every label, and reads each on the validation and the test split: expected calibration error and
Brier score (proper: a map that says the overall rate to every item cannot win by it). The raw confidence is the
reference. ``label_efficiency.py --probe-calibration`` stores the readings under each point's ``probe``; the
``check`` is the largest gap between the model's own map and this probe's isotonic map on the held items (0 where
the probe reads what the model serves).
"""

from __future__ import annotations

import numpy as np

from model.calibration import MAPS, brier_score, expected_calibration_error, holdout
from model.latent_svm import MIN_CALIBRATION


def _readings(prob: np.ndarray, right: np.ndarray) -> dict[str, float]:
    return {"ece": round(expected_calibration_error(prob, right), 5), "brier": round(brier_score(prob, right), 5)}


def probe_calibration(model, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                      x_test: np.ndarray, y_test: np.ndarray) -> dict:
    """``{fitted on: {map: {split: {ece, brier}}}}``, the raw confidence under ``none``, and the ``check``."""
    labeled = np.flatnonzero(y >= 0)
    svm = model.svm_
    oof = svm.out_of_fold(model.transform(x[labeled]), y[labeled])
    if oof is None:
        return {}
    conf, right, kept = oof
    held = holdout(labeled, model.calibration_holdout)
    if np.count_nonzero(held) < MIN_CALIBRATION:  # as the model: too few held, every label calibrates
        held = np.ones(len(labeled), bool)
    held = held[kept]
    splits = {"val": (x_val, y_val), "test": (x_test, y_test)}
    outcome = {}
    for name, (xs, ys) in splits.items():
        if len(xs):
            pred, c = model.predict_confidence(xs)
            outcome[name] = (c, pred == ys)
    out: dict = {"none": {s: _readings(c, ok) for s, (c, ok) in outcome.items()},
                 "n_held": int(np.count_nonzero(held)), "n_labels": len(conf)}
    for fitted_on, on in (("held", held), ("every label", np.ones(len(conf), bool))):
        wrong = np.count_nonzero(right[on] == 0)
        if wrong < 2 or np.count_nonzero(on) - wrong < 2:
            continue
        out[fitted_on] = {}
        for name, fit in MAPS.items():
            knots = fit(conf[on], right[on])
            out[fitted_on][name] = {s: _readings(np.interp(c, knots[0], knots[1]), ok)
                                    for s, (c, ok) in outcome.items()}
            if fitted_on == "held" and name == "isotonic":
                served = svm.calibration_
                grid = np.linspace(0, 1, 1001)
                out["check"] = (None if served is None else round(float(np.max(np.abs(
                    np.interp(grid, served[0], served[1]) - np.interp(grid, knots[0], knots[1])))), 6))
    return out
