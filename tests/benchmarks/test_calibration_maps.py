"""Maps from confidence to probability, read on the very model a curve trains: the raw readings and what they give."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from model.calibration import MAPS, expected_calibration_error
from model.sae_classifier import SAEClassifier

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("calibration_maps", ROOT / "benchmarks" / "calibration_maps.py")
calibration_maps = importlib.util.module_from_spec(spec)
sys.modules["calibration_maps"] = calibration_maps
spec.loader.exec_module(calibration_maps)


def _digits(n_labeled: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    pool, test = order[:1400], order[1400:]
    y = np.full(len(pool), -1)
    y[:n_labeled] = d.target[pool][:n_labeled]
    return x[pool], y, x[test], d.target[test]


def test_the_readings_are_what_the_real_model_calibrates_on_and_serves(tmp_path) -> None:
    x, y, xt, yt = _digits(300)
    model = SAEClassifier(latent_dim=4, epochs=2, device="cpu", calibration_holdout=0.2,
                          sae_params={"network": "mlp"}).fit(x, y)
    probe = calibration_maps.CalibrationReadings(tmp_path, seed=7)
    point = probe(model, x, y, xt[:150], yt[:150], xt[150:], yt[150:])
    assert point["check"] == 0.0, "the isotonic map fitted on the readings is the model's own"
    assert point["n_labels"] == 300 and 35 < point["n_held"] < 85
    saved = np.load(tmp_path / "calibration-readings-s7.npz")
    held_by_model = model._held_out(y, None)[0][y >= 0]
    np.testing.assert_array_equal(saved["300/oof_held"], held_by_model)  # digits: no class has a single label
    pred, conf = model.predict_confidence(xt[150:])
    np.testing.assert_allclose(saved["300/test_confidence"], conf, atol=5e-4)
    np.testing.assert_array_equal(saved["300/test_right"], pred == yt[150:])
    assert saved["300/val_confidence"].shape == (150,)


def test_a_probe_that_does_not_read_the_model_s_own_holdout_shows_in_its_check(tmp_path) -> None:
    x, y, xt, yt = _digits(300)
    model = SAEClassifier(latent_dim=4, epochs=1, device="cpu", calibration_holdout=0.2,
                          sae_params={"network": "mlp"}).fit(x, y)
    model.calibration_holdout = 0.5  # the probe's rule now picks other items than the fit did
    point = calibration_maps.CalibrationReadings(tmp_path, seed=0)(model, x, y, xt[:0], yt[:0], xt, yt)
    assert point["check"] > 0


def _readings(path: Path, rounds: dict[int, int], seed: int = 0) -> None:
    """Hand-made readings whose true chance of being right is ``0.4 + 0.55 c`` everywhere."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for n, n_held in rounds.items():
        c = rng.uniform(0, 1, n)
        held = np.zeros(n, bool)
        held[:n_held] = True
        arrays |= {f"{n}/oof_confidence": c, f"{n}/oof_right": rng.uniform(0, 1, n) < 0.4 + 0.55 * c,
                   f"{n}/oof_held": held}
        for split in ("val", "test"):
            cs = rng.uniform(0, 1, 3000)
            arrays |= {f"{n}/{split}_confidence": cs.astype(np.float16),
                       f"{n}/{split}_right": rng.uniform(0, 1, 3000) < 0.4 + 0.55 * cs}
    np.savez_compressed(path, **arrays)


def test_map_readings_fits_every_map_on_the_held_and_on_every_label_and_reads_both_splits(tmp_path) -> None:
    _readings(tmp_path / "r.npz", {200: 20, 1000: 1000})
    out = calibration_maps.map_readings(tmp_path / "r.npz")
    assert sorted(out) == [200, 1000]
    for n in out:
        assert set(out[n]) == {"none", "held", "every label"} and set(out[n]["held"]) == set(MAPS)
    big = out[1000]
    assert big["held"] == big["every label"], "every item held: the same fit"
    assert all(big["held"][m]["val"]["ece"] < 0.05 for m in MAPS), "on 1,000 readings every map comes near the truth"
    assert big["none"]["val"]["ece"] > 0.15 and "brier" in big["none"]["test"]
    assert out[200]["held"]["logistic"]["val"] != out[200]["every label"]["logistic"]["val"]


def test_a_map_the_model_would_not_fit_is_left_out(tmp_path) -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0, 1, 60)
    right = np.ones(60, bool)
    right[30] = False  # one mistake among the held: no map on them, one on every label
    held = np.zeros(60, bool)
    held[25:45] = True
    right[:10] = False
    np.savez_compressed(tmp_path / "r.npz", **{"60/oof_confidence": conf, "60/oof_right": right, "60/oof_held": held,
                                               "60/test_confidence": conf.astype(np.float16), "60/test_right": right})
    out = calibration_maps.map_readings(tmp_path / "r.npz")[60]
    assert out["held"] == {} and set(out["every label"]) == set(MAPS)
    assert out["none"]["test"]["ece"] == round(expected_calibration_error(conf.astype(np.float16), right), 5)
