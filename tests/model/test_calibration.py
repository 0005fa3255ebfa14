"""Reliability bins and ECE on hand-made confidences."""

from __future__ import annotations

import numpy as np
import pytest

from model.calibration import expected_calibration_error, reliability


def test_a_calibrated_confidence_has_ece_near_zero() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.0, 1.0, 200_000)
    correct = rng.random(len(conf)) < conf
    assert expected_calibration_error(conf, correct) < 0.01


def test_an_overconfident_model_has_the_gap_as_ece() -> None:
    conf = np.full(1000, 0.95)
    correct = np.arange(1000) < 700  # right 70 % of the time
    assert expected_calibration_error(conf, correct) == pytest.approx(0.25)


def test_bins_hold_counts_mean_confidence_and_accuracy() -> None:
    r = reliability(np.array([0.05, 0.15, 0.12, 1.0]), np.array([1, 0, 1, 1]), bins=10)
    assert r["count"][:2] == [1.0, 2.0] and r["count"][9] == 1.0
    assert r["confidence"][1] == pytest.approx(0.135) and r["accuracy"][1] == pytest.approx(0.5)
    assert np.isnan(r["accuracy"][5]), "empty bins are NaN, not zero"
    # ECE weights each bin by its count: (|1-.05| + 2*|.5-.135| + 0) / 4
    assert expected_calibration_error([0.05, 0.15, 0.12, 1.0], [1, 0, 1, 1]) == pytest.approx((0.95 + 0.73) / 4)


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="shape"):
        reliability(np.zeros(3), np.zeros(2))


def test_a_nan_confidence_counts_as_zero() -> None:
    r = reliability(np.array([np.nan, 0.95]), np.array([0, 1]))
    assert r["count"][0] == 1.0 and r["count"][9] == 1.0


def test_a_holdout_takes_its_share_by_id_and_keeps_its_members_as_the_ids_grow() -> None:
    from model.calibration import holdout

    ids = np.arange(100_000)
    held = holdout(ids, 0.1)
    assert abs(held.mean() - 0.1) < 0.005
    grown = holdout(np.concatenate([ids, np.arange(500_000, 520_000)]), 0.1)
    np.testing.assert_array_equal(grown[:100_000], held)
    shuffled = np.random.default_rng(0).permutation(ids)
    np.testing.assert_array_equal(holdout(shuffled, 0.1), held[shuffled]), "by id, not by position"
    assert not holdout(ids, 0.0).any()
