"""Pictures render from the data they are given."""

from __future__ import annotations

import numpy as np

from model.calibration import reliability
from service.plots import learning_curve_png, reliability_png

PNG = b"\x89PNG\r\n\x1a\n"


def _point(conf: np.ndarray, correct: np.ndarray) -> dict:
    return {"labeled": 100, "test_reliability": reliability(conf, correct)}


def test_reliability_diagram_from_binned_points() -> None:
    rng = np.random.default_rng(0)
    conf = rng.random(500)
    honest = [_point(conf, rng.random(500) < conf) for _ in range(3)]
    over = [_point(np.full(500, 0.95), rng.random(500) < 0.6)]  # all in one bin, the others empty
    a = reliability_png({"honest": honest, "overconfident": over}, title="t")
    b = reliability_png({"honest": honest})
    assert a.startswith(PNG) and b.startswith(PNG) and a != b


def test_learning_curve_png() -> None:
    runs = [{"model": "sae", "strategy": "margin", "seed": s,
             "curve": [{"labeled": 10, "test_error": 0.3}, {"labeled": 20, "test_error": 0.2}]} for s in (0, 1)]
    assert learning_curve_png(runs, title="x").startswith(PNG)
