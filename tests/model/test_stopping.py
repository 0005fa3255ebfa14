"""The stabilising-predictions stop rule on sequences of known predictions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from model.stopping import agreement, should_stop, stop_set


def test_agreement_is_cohens_kappa() -> None:
    a = np.array([0, 0, 1, 1])
    b = np.array([0, 1, 1, 1])
    # observed agreement 3/4; expected (2/4 * 1/4) + (2/4 * 3/4) = 1/2; kappa = (0.75 - 0.5) / 0.5
    assert agreement(a, b) == pytest.approx(0.5)
    assert agreement(a, a) == 1.0
    assert agreement(np.zeros(5), np.zeros(5)) == 1.0, "identical constant predictions agree fully"
    assert agreement(a, 1 - a) == pytest.approx(-1.0)


def test_agreement_needs_the_same_items() -> None:
    with pytest.raises(ValueError, match="predicted"):
        agreement(np.zeros(3), np.zeros(4))


def test_stop_after_a_window_of_stable_versions() -> None:
    rng = np.random.default_rng(0)
    versions = [rng.integers(0, 5, 1000)]
    for flips in (400, 200, 100, 5, 3, 2):  # each version changes its mind on fewer items
        p = versions[-1].copy()
        p[rng.choice(1000, flips, replace=False)] = (p[:flips] + 1) % 5
        versions.append(p)
    kappas = [agreement(a, b) for a, b in itertools.pairwise(versions)]
    assert np.all(np.diff(kappas) > 0)
    decisions = [should_stop(kappas[: i + 1]) for i in range(len(kappas))]
    assert decisions == [False, False, False, False, False, True], kappas
    assert should_stop(kappas[:5], threshold=0.97) is False, "one unstable version in the window keeps it going"
    assert not should_stop([0.995, 0.999]), "fewer than a window of versions never stops"
    assert not should_stop([1.0, float("nan"), 1.0]), "a missing comparison does not count"


def test_stop_set_is_stable_as_the_pool_grows() -> None:
    ids = np.arange(1, 5001) * 3
    first = stop_set(ids, 200)
    assert len(first) == 200 and len(np.unique(first)) == 200
    grown = stop_set(np.concatenate([ids, np.arange(20000, 20050)]), 200)
    assert len(np.intersect1d(first, grown)) >= 195, "new tasks displace few of the old stop set"
    assert not np.array_equal(first, ids[:200]), "not simply the oldest tasks"
