"""Class targets: classical MDS, weighted SMACOF, Procrustes alignment, distance files."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest
from scipy.stats import ortho_group

from model.targets import (
    check_distance_matrix,
    class_positions,
    classical_mds,
    equal_distances,
    load_distance_matrix,
    procrustes_targets,
    stress,
    weighted_smacof,
)


def pairwise(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)


@pytest.mark.parametrize(("k", "d"), [(2, 1.0), (3, 2.5), (10, 1.0), (10, 4.0)])
def test_equal_distances_give_regular_simplex(k: int, d: float) -> None:
    pos, exact = classical_mds(equal_distances(k, d), k - 1)
    assert exact
    assert pos.shape == (k, k - 1)
    np.testing.assert_allclose(pairwise(pos), equal_distances(k, d), atol=1e-9)
    radius = np.linalg.norm(pos - pos.mean(0), axis=1)
    np.testing.assert_allclose(radius, d * np.sqrt((k - 1) / (2 * k)), rtol=1e-9)
    np.testing.assert_allclose(pos.mean(0), 0.0, atol=1e-9)


def test_class_positions_pads_extra_dimensions_with_zeros() -> None:
    pos = class_positions(equal_distances(4, 2.0), 10)
    assert pos.shape == (4, 10)
    np.testing.assert_allclose(pairwise(pos), equal_distances(4, 2.0), atol=1e-9)
    np.testing.assert_array_equal(pos[:, 3:], 0.0)


@pytest.mark.parametrize("dim", [4, 5, 8])
def test_non_uniform_euclidean_matrix_is_reproduced_exactly(dim: int) -> None:
    rng = np.random.default_rng(1)
    points = rng.normal(size=(5, 4)) * np.array([3.0, 1.0, 0.5, 2.0])  # 5 classes, spans 4 = K - 1 dims
    d = pairwise(points)
    pos, exact = classical_mds(d, dim)
    assert exact
    np.testing.assert_allclose(pairwise(pos), d, atol=1e-8)
    np.testing.assert_allclose(pairwise(class_positions(d, dim)), d, atol=1e-8)


def test_classical_mds_reports_inexact_when_dim_is_too_small() -> None:
    _, exact = classical_mds(equal_distances(5), 3)
    assert not exact


def test_classical_mds_reports_inexact_for_non_euclidean_matrix() -> None:
    # violates the triangle inequality: 0-2 is far longer than 0-1-2
    d = np.array([[0.0, 1.0, 5.0], [1.0, 0.0, 1.0], [5.0, 1.0, 0.0]])
    _, exact = classical_mds(d, 2)
    assert not exact


def test_procrustes_recovers_rotation_and_translation_with_unequal_counts() -> None:
    rng = np.random.default_rng(7)
    k, dim = 10, 4
    positions = class_positions(equal_distances(k, 1.5), dim) + rng.normal(scale=0.2, size=(k, dim))
    r = ortho_group.rvs(dim, random_state=3)
    shift = rng.normal(size=dim) * 5
    means = positions @ r.T + shift
    counts = np.array([1, 30, 2, 7, 12, 3, 50, 1, 4, 9], dtype=float)
    targets = procrustes_targets(positions, means, counts)
    np.testing.assert_allclose(targets, means, atol=1e-9)
    # a rigid motion: the distances between class targets are those between the positions
    np.testing.assert_allclose(pairwise(targets), pairwise(positions), atol=1e-9)


def test_procrustes_places_classes_without_labels_by_the_same_motion() -> None:
    rng = np.random.default_rng(8)
    positions = class_positions(equal_distances(6), 5)
    r = ortho_group.rvs(5, random_state=4)
    shift = rng.normal(size=5)
    truth = positions @ r.T + shift
    counts = np.array([5, 3, 8, 2, 6, 0], dtype=float)  # 5 classes are enough to fix a 5-D motion here
    means = np.where(counts[:, None] > 0, truth, 123.0)  # the mean of an empty class is garbage
    targets = procrustes_targets(positions, means, counts)
    np.testing.assert_allclose(targets, truth, atol=1e-9)


def test_procrustes_with_one_labeled_class_only_shifts() -> None:
    positions = class_positions(equal_distances(3), 2)
    means = np.zeros((3, 2))
    means[1] = [10.0, -4.0]
    targets = procrustes_targets(positions, means, np.array([0.0, 4.0, 0.0]))
    np.testing.assert_allclose(targets[1], means[1], atol=1e-12)
    np.testing.assert_allclose(targets - targets[1], positions - positions[1], atol=1e-12)


def test_procrustes_without_labels_returns_positions() -> None:
    positions = class_positions(equal_distances(3), 2)
    out = procrustes_targets(positions, np.ones((3, 2)), np.zeros(3))
    np.testing.assert_array_equal(out, positions)
    assert out is not positions


def test_smacof_lowers_stress_below_truncated_mds_without_collapse() -> None:
    k, dim = 10, 3
    d = equal_distances(k)
    truncated, exact = classical_mds(d, dim)
    assert not exact
    refined = class_positions(d, dim)
    assert refined.shape == (k, dim)
    s_trunc, s_ref = stress(truncated, d), stress(refined, d)
    assert s_ref < 0.5 * s_trunc
    min_ref = min(np.linalg.norm(refined[i] - refined[j]) for i, j in combinations(range(k), 2))
    min_trunc = min(np.linalg.norm(truncated[i] - truncated[j]) for i, j in combinations(range(k), 2))
    assert min_ref > 0.5  # every class keeps its own place (the truncated simplex nearly merges some)
    assert min_ref > min_trunc


def test_weighted_smacof_favours_heavily_weighted_pairs() -> None:
    k, dim = 10, 2
    d = equal_distances(k)
    counts = np.array([100, 100, 100, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    pos = class_positions(d, dim, counts=counts)
    heavy = [np.linalg.norm(pos[i] - pos[j]) for i, j in combinations(range(3), 2)]
    np.testing.assert_allclose(heavy, 1.0, atol=0.05)
    plain = class_positions(d, dim)
    plain_heavy = [np.linalg.norm(plain[i] - plain[j]) for i, j in combinations(range(3), 2)]
    assert np.abs(np.array(heavy) - 1).max() < np.abs(np.array(plain_heavy) - 1).max()


def test_weighted_smacof_never_increases_stress() -> None:
    rng = np.random.default_rng(0)
    d = pairwise(rng.normal(size=(8, 6)))
    init = rng.normal(size=(8, 2))
    out = weighted_smacof(d, init)
    assert stress(out, d) <= stress(init, d)
    assert stress(out, d) < 0.5 * stress(init, d)


def test_stress_is_zero_for_exact_configuration() -> None:
    x = np.random.default_rng(0).normal(size=(4, 3))
    assert stress(x, pairwise(x)) == pytest.approx(0.0, abs=1e-20)
    assert stress(x, pairwise(x) + 1 - np.eye(4)) == pytest.approx(6.0)


# --- distance files ----------------------------------------------------------------------


NAMES = ["summer", "winter", "all-year"]


def write(tmp_path, obj) -> str:
    p = tmp_path / "distances.json"
    p.write_text(json.dumps(obj))
    return str(p)


def test_load_nested_form_fills_the_other_direction(tmp_path) -> None:
    path = write(tmp_path, {"summer": {"winter": 2.0, "all-year": 1.0}, "winter": {"all-year": 1.5}})
    d = load_distance_matrix(path, NAMES)
    np.testing.assert_array_equal(d, [[0, 2, 1], [2, 0, 1.5], [1, 1.5, 0]])


def test_load_matrix_form_reorders_to_the_given_classes(tmp_path) -> None:
    path = write(tmp_path, {"classes": ["all-year", "summer", "winter"],
                            "distances": [[0, 1, 1.5], [1, 0, 2], [1.5, 2, 0]]})
    d = load_distance_matrix(path, NAMES)
    np.testing.assert_array_equal(d, [[0, 2, 1], [2, 0, 1.5], [1, 1.5, 0]])


def test_load_matrix_form_without_classes_uses_the_given_order(tmp_path) -> None:
    path = write(tmp_path, {"distances": [[0, 3, 1], [3, 0, 2], [1, 2, 0]]})
    np.testing.assert_array_equal(load_distance_matrix(path, NAMES), [[0, 3, 1], [3, 0, 2], [1, 2, 0]])


def test_load_rejects_asymmetric_matrix(tmp_path) -> None:
    path = write(tmp_path, {"classes": NAMES, "distances": [[0, 1, 1], [2, 0, 1], [1, 1, 0]]})
    with pytest.raises(ValueError, match="symmetric"):
        load_distance_matrix(path, NAMES)


def test_load_rejects_unknown_class_in_key(tmp_path) -> None:
    path = write(tmp_path, {"summer": {"winter": 1, "all-year": 1}, "spring": {"winter": 1}})
    with pytest.raises(ValueError, match="spring"):
        load_distance_matrix(path, NAMES)


def test_load_rejects_unknown_class_in_row(tmp_path) -> None:
    path = write(tmp_path, {"summer": {"winter": 1, "autumn": 1}, "winter": {"all-year": 1}})
    with pytest.raises(ValueError, match="autumn"):
        load_distance_matrix(path, NAMES)


def test_load_rejects_unknown_class_in_matrix_form(tmp_path) -> None:
    path = write(tmp_path, {"classes": ["summer", "winter", "spring"], "distances": np.eye(3).tolist()})
    with pytest.raises(ValueError, match="do not match"):
        load_distance_matrix(path, NAMES)


def test_load_rejects_missing_pair(tmp_path) -> None:
    path = write(tmp_path, {"summer": {"winter": 2.0, "all-year": 1.0}})
    with pytest.raises(ValueError, match=r"lacks the pairs.*winter.*all-year"):
        load_distance_matrix(path, NAMES)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.zeros((2, 3)), "square"),
        (np.zeros(3), "square"),
        (np.array([[0, np.inf], [np.inf, 0]]), "non-finite"),
        (np.array([[0, np.nan], [np.nan, 0]]), "non-finite"),
        (np.array([[0, 1.0], [2.0, 0]]), "symmetric"),
        (np.array([[1.0, 1.0], [1.0, 0]]), "diagonal"),
        (np.array([[0, -1.0], [-1.0, 0]]), "non-negative"),
    ],
)
def test_check_distance_matrix_errors(matrix: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_distance_matrix(matrix)


def test_check_distance_matrix_class_count() -> None:
    with pytest.raises(ValueError, match="3 classes"):
        check_distance_matrix(equal_distances(2), 3)
    out = check_distance_matrix([[0, 1], [1, 0]], 2)
    assert out.dtype == np.float64


@pytest.mark.parametrize(("obj", "message"), [
    ([[0, 1], [1, 0]], "must hold a JSON object, got list"),
    ({"classes": NAMES, "distances": [0, 1, 1]}, r"must be 3x3 for the classes listed, got shape \(3,\)"),
    ({"summer": [1, 2], "winter": {"all-year": 1}}, "'summer' must map to {class: distance}, got list"),
    ({"summer": {"winter": "far", "all-year": 1}, "winter": {"all-year": 1}}, "'summer'-'winter' must be a number"),
    ({"summer": {"winter": None, "all-year": 1}, "winter": {"all-year": 1}}, "must be a number, got None"),
])
def test_load_names_what_is_wrong_with_a_malformed_file(tmp_path, obj, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_distance_matrix(write(tmp_path, obj), NAMES)
