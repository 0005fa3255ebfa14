"""Reliability bins, ECE and Brier score on hand-made confidences, and the maps that make a confidence honest."""

from __future__ import annotations

import numpy as np
import pytest

from model.calibration import MAPS, beta_map, brier_score, expected_calibration_error, reliability


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


def _outcomes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Confidences whose chance of being right is ``0.4 + 0.55 c``: honest maps must come near that line."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 1, n)
    return c, (rng.uniform(0, 1, n) < 0.4 + 0.55 * c).astype(float)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_every_map_is_monotone_and_comes_near_the_true_chance(name: str) -> None:
    c, right = _outcomes(4000, 0)
    knots = MAPS[name](c, right)
    grid = np.linspace(0, 1, 201)
    p = np.interp(grid, knots[0], knots[1])
    assert np.all(np.diff(p) >= -1e-12)
    assert np.max(np.abs(p - (0.4 + 0.55 * grid))[20:-20]) < 0.08
    assert expected_calibration_error(np.interp(c, knots[0], knots[1]), right) < 0.03


def test_on_a_few_dozen_items_isotonic_says_certain_and_the_smooth_maps_do_not() -> None:
    """The served map's failure the smooth maps are for: 30 items, their surest all right."""
    c, right = _outcomes(30, 4)
    right[c > 0.8] = 1.0
    top = {name: float(np.interp(0.99, *MAPS[name](c, right))) for name in MAPS}
    assert top["isotonic"] == 1.0
    assert 0.5 < top["logistic"] < 1.0 and 0.5 < top["beta"] < 1.0


@pytest.mark.parametrize("name", ["logistic", "beta"])
def test_a_fit_that_falls_with_the_confidence_says_the_flat_rate(name: str) -> None:
    c, right = _outcomes(500, 1)
    right = 1.0 - right  # right less often the surer it says it is
    p = MAPS[name](c, right)[1]
    np.testing.assert_allclose(p, right.mean())


def test_the_beta_map_drops_the_end_that_would_make_it_fall() -> None:
    """Right less often at the very top: the full fit's ``-ln(1 - c)`` weight is negative and would make the map
    fall towards 1, so the map is the ``ln c`` side alone, and rises."""
    from model.calibration import GRID, _beta_features, _platt_fit

    rng = np.random.default_rng(2)
    c = rng.uniform(0, 1, 3000)
    right = (rng.uniform(0, 1, 3000) < np.where(c < 0.9, 0.3 + 0.6 * c, 0.5)).astype(float)
    assert _platt_fit(_beta_features(c), right).coef_[0, 1] < 0
    p = beta_map(c, right)[1]
    alone = _platt_fit(_beta_features(c)[:, :1], right).predict_proba(_beta_features(GRID)[:, :1])[:, 1]
    np.testing.assert_allclose(p, alone)
    assert np.all(np.diff(p) > 0)


def test_platt_s_targets_keep_a_separable_few_from_a_step_to_0_and_1() -> None:
    """Ten items, every one above 0.5 right and every one below wrong: an unpenalised fit on 0/1 would be a step."""
    c = np.linspace(0.05, 0.95, 10)
    p = MAPS["logistic"](c, (c > 0.5).astype(float))[1]
    assert 0.02 < p[0] < 0.2 and 0.8 < p[-1] < 0.98
    assert np.all(np.diff(p) > 0)


def test_the_brier_score_rewards_a_sharp_honest_map_over_the_flat_rate() -> None:
    c, right = _outcomes(5000, 3)
    flat = np.full(len(c), right.mean())
    assert expected_calibration_error(flat, right) < 0.01, "the ECE cannot tell the flat rate from a useful map"
    assert brier_score(0.4 + 0.55 * c, right) < brier_score(flat, right) - 0.01
    assert brier_score(np.ones(3), np.ones(3)) == 0.0 and np.isnan(brier_score(np.zeros(0), np.zeros(0)))
